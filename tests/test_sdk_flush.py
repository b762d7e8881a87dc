"""``sentry_sdk.flush()`` and ``Client.close()`` wait for the bridge's queues too, within their timeout.

Each case runs a script in a fresh interpreter that ends with ``os._exit`` right after the call, so only
what the call itself waited for reaches the receiver. ``before_send_transaction`` sleeps on the bridge's
worker thread, so a flush that did not wait for the bridge would return before the transaction exists.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.test_init import run_python

SLOW = """
import json, os, time
import sentry_sdk
from opentelemetry import trace
import otel_bridge

def slow(event, hint):
    time.sleep(0.3)
    return event

def work():
    with trace.get_tracer("job").start_as_current_span("nightly import"):
        with trace.get_tracer("job").start_as_current_span("load rows"):
            pass
"""


# the zero-code path, with a batch processor that would export only after a minute
EXPORTER_PATH = """
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from otel_bridge import SentrySpanExporter

provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(SentrySpanExporter()))
trace.set_tracer_provider(provider)
"""


def assert_sdk_flush_sends_the_exporter_paths_trace(receiver: EnvelopeReceiver, before: str = "") -> None:
    """``sentry_sdk.flush()`` on the exporter path (after the code ``before``) sends the finished trace."""
    result = run_python(
        SLOW
        + before
        + EXPORTER_PATH
        + """
work()
sentry_sdk.flush(timeout=5)
os._exit(0)
""",
        # the batch processor itself would export only after a minute
        {"SENTRY_DSN": receiver.dsn, "OTEL_BSP_SCHEDULE_DELAY": "60000"},
    )
    assert result.returncode == 0, result.stderr
    [transaction] = receiver.transactions()
    assert transaction["transaction"] == "nightly import"


def report(result: Any) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    found: dict[str, Any] = json.loads(line.removeprefix("REPORT "))
    return found


@pytest.mark.parametrize(
    "call", ["sentry_sdk.flush(timeout=5)", "sentry_sdk.get_client().close(timeout=5)", "sentry_sdk.flush()"]
)
def test_the_sdks_flush_and_close_send_what_the_bridge_still_holds(
    receiver: EnvelopeReceiver, call: str
) -> None:
    result = run_python(
        SLOW
        + f"""
otel_bridge.init(before_send_transaction=slow)
work()
{call}
os._exit(0)
""",
        {"SENTRY_DSN": receiver.dsn},
    )
    assert result.returncode == 0, result.stderr
    [transaction] = receiver.transactions()
    assert_relay_valid(transaction)
    assert transaction["transaction"] == "nightly import"
    assert len(transaction["spans"]) == 1


def test_an_adopted_client_waits_too(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        SLOW
        + f"""
sentry_sdk.init(dsn={receiver.dsn!r}, before_send_transaction=slow)
otel_bridge.init()
otel_bridge.init()
work()
sentry_sdk.flush(timeout=5)
os._exit(0)
""",
    )
    assert result.returncode == 0, result.stderr
    assert len(receiver.transactions()) == 1


def test_the_exporter_paths_batch_queue_is_flushed(receiver: EnvelopeReceiver) -> None:
    assert_sdk_flush_sends_the_exporter_paths_trace(receiver)


def test_the_callers_timeout_bounds_the_whole_wait(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        SLOW
        + """
def stuck(event, hint):
    time.sleep(3)
    return event

otel_bridge.init(before_send_transaction=stuck)
work()
started = time.monotonic()
sentry_sdk.flush(timeout=0.5)
flushed = time.monotonic() - started
started = time.monotonic()
sentry_sdk.get_client().close(timeout=0.5)
closed = time.monotonic() - started
print("REPORT", json.dumps({"flushed": flushed, "closed": closed}))
os._exit(0)
""",
        {"SENTRY_DSN": receiver.dsn},
    )
    waited = report(result)
    assert 0.45 <= waited["flushed"] < 1.5
    assert waited["closed"] < 1.5


def test_otel_bridge_flush_still_answers_and_does_not_wait_twice(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        SLOW
        + """
otel_bridge.init(before_send_transaction=slow)
work()
work()
started = time.monotonic()
flushed = otel_bridge.flush(5)
elapsed = time.monotonic() - started
print("REPORT", json.dumps({"flushed": flushed, "elapsed": elapsed}))
os._exit(0)
""",
        {"SENTRY_DSN": receiver.dsn},
    )
    answered = report(result)
    assert answered["flushed"] is True
    # two transactions of 0.3 s each on the worker; draining the queue a second time would find it empty
    assert answered["elapsed"] < 1.5
    assert len(receiver.transactions()) == 2


def test_a_client_initialised_after_the_bridge_waits_too(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        SLOW
        + f"""
otel_bridge.init()
sentry_sdk.init(dsn={receiver.dsn!r}, instrumenter="otel", before_send_transaction=slow)
work()
sentry_sdk.flush(timeout=5)
os._exit(0)
""",
        {"SENTRY_DSN": receiver.dsn},
    )
    assert result.returncode == 0, result.stderr
    assert len(receiver.transactions()) == 1
