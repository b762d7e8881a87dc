"""Every reach into sentry-sdk's and OTel's internals holds on the installed versions; where one is broken
(the library changed under the bridge), it is named once and the public path still delivers.

Breaking a reach here means changing the library the way a new release could: a method with another
signature, an attribute gone, a function that no longer gives the same output.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
import sentry_sdk.client
import sentry_sdk.serializer

from otel_bridge import _compat
from otel_bridge._compat import otel_sdk, sentry_client
from otel_bridge._deliver import serializer
from otel_bridge._deliver.serializer import fast_serialize
from tests.conftest import StartTraced
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.test_init import run_python
from tests.test_sdk_flush import SLOW, assert_sdk_flush_sends_the_exporter_paths_trace

README = Path(__file__).resolve().parent.parent / "README.md"


def broken_warnings(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if f"no longer has what {name} relies on" in record.getMessage()
    ]


def test_every_reach_holds_on_the_installed_versions(fresh_reaches: None) -> None:
    assert _compat.verify() == []
    assert _compat.failing() == []


def test_every_reach_says_what_it_touches_where_it_was_verified_and_what_replaces_it() -> None:
    reaches = _compat.reaches()
    assert len(reaches) >= 8
    for entry in reaches:
        assert entry.target and entry.fallback
        assert "sentry-sdk 2." in entry.verified or "opentelemetry-sdk 1." in entry.verified


def test_the_readme_lists_every_reach_as_the_code_says() -> None:
    assert _compat.markdown_table() in README.read_text()


def test_a_broken_reach_is_named_once_and_avoided(
    fresh_reaches: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sentry_sdk.client._Client, "flush", lambda self, timeout=None: None)
    caplog.set_level(logging.WARNING, "otel_bridge")
    assert _compat.holds(sentry_client.CLIENT_FLUSH) is False
    assert sentry_client.CLIENT_FLUSH in _compat.verify()
    assert _compat.holds(sentry_client.CLIENT_FLUSH) is False
    [warning] = broken_warnings(caplog, sentry_client.CLIENT_FLUSH)
    assert "verified on sentry-sdk 2.57, 2.75" in warning
    assert f"sentry-sdk {sentry_sdk.VERSION}" in warning
    assert "call otel_bridge.flush()" in warning


def test_a_check_that_raises_counts_as_broken(
    fresh_reaches: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def gone(*args: Any, **kwargs: Any) -> Any:
        raise AttributeError("'TracerProvider' object has no attribute '_active_span_processor'")

    monkeypatch.setattr(otel_sdk, "_processors", gone)
    assert _compat.holds(otel_sdk.PROVIDER_PROCESSORS) is False
    [warning] = broken_warnings(caplog, otel_sdk.PROVIDER_PROCESSORS)
    assert "_active_span_processor" in warning


def test_a_serializer_whose_output_changed_is_not_replaced(
    fresh_reaches: None,
    monkeypatch: pytest.MonkeyPatch,
    start_traced: StartTraced,
    receiver: EnvelopeReceiver,
) -> None:
    original = sentry_sdk.serializer.serialize

    def changed(event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        result = original(event, **kwargs)
        result["serialized_by"] = "a newer sentry-sdk"
        return result

    serializer.uninstall()
    monkeypatch.setattr(sentry_sdk.serializer, "serialize", changed)
    monkeypatch.setattr(sentry_sdk.client, "serialize", changed)
    try:
        serializer.install()
        assert sentry_sdk.client.serialize is changed  # type: ignore[attr-defined]
        provider, _ = start_traced()
        with provider.get_tracer("t").start_as_current_span("job"):
            pass
        provider.force_flush()
        sentry_sdk.flush(timeout=5)
        [transaction] = receiver.transactions()
        assert transaction["serialized_by"] == "a newer sentry-sdk"
    finally:
        serializer.uninstall()


def test_the_serializer_check_compares_real_output() -> None:
    event = sentry_client._probe_event()
    assert fast_serialize(sentry_client._probe_event()) == sentry_sdk.serializer.serialize(event)
    assert len(fast_serialize(event)["extra"]["argv"]) < len(event["extra"]["argv"])


def test_without_the_client_flush_reach_otel_bridge_flush_still_sends(receiver: EnvelopeReceiver) -> None:
    """sentry-sdk's ``flush`` changed its signature: it is left alone, and ``otel_bridge.flush()`` (what the
    warning says to call) still sends what the bridge held."""
    result = run_python(
        SLOW
        + """
import sentry_sdk.client
original = sentry_sdk.client._Client.flush
def flush(self, timeout=None, callback=None, *, wait=True):
    return original(self, timeout, callback)
sentry_sdk.client._Client.flush = flush
otel_bridge.init(before_send_transaction=slow)
work()
print("FLUSHED", otel_bridge.flush(timeout=5))
os._exit(0)
""",
        {"SENTRY_DSN": receiver.dsn},
    )
    assert result.returncode == 0, result.stderr
    assert "FLUSHED True" in result.stdout
    assert "no longer has what client flush and close relies on" in result.stderr
    [transaction] = receiver.transactions()
    assert_relay_valid(transaction)
    assert transaction["transaction"] == "nightly import"


def test_without_the_provider_layout_sentry_flush_flushes_the_whole_provider(
    receiver: EnvelopeReceiver,
) -> None:
    assert_sdk_flush_sends_the_exporter_paths_trace(
        receiver,
        before="""
from otel_bridge._compat import otel_sdk
otel_sdk._processors = lambda provider: None
""",
    )


def test_doctor_names_a_broken_reach() -> None:
    result = run_python(
        """
import sys
import sentry_sdk.client
sentry_sdk.client._Client._prepare_event = lambda self, event, hint, scope, options=None: event
from otel_bridge._dev.cli import main
sys.exit(main(["doctor"]))
""",
        {"SENTRY_DSN": "http://key@127.0.0.1:9/1"},
    )
    assert result.returncode == 3, result.stderr
    assert "breaks what client _prepare_event relies on" in result.stderr
    assert "not trimmed to Sentry's size limit" in result.stderr


def test_without_the_logging_handler_a_reported_exceptions_log_record_is_still_no_second_event(
    fresh_reaches: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    start_traced: StartTraced,
    receiver: EnvelopeReceiver,
) -> None:
    from sentry_sdk.integrations.dedupe import DedupeIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    from otel_bridge._compat.sentry_logging import LOGGING_EVENT_HANDLER
    from otel_bridge._setup import install_event_processor
    from tests.test_one_event_per_exception import errors_of, fail_and_log_as_uvicorn

    original = LoggingIntegration._handle_record

    def handle_record(self: Any, record: Any, *, sentry_logs: bool = False) -> None:
        original(self, record)

    monkeypatch.setattr(LoggingIntegration, "_handle_record", handle_record)
    provider, processor = start_traced(disabled_integrations=[DedupeIntegration()])
    install_event_processor()
    assert _compat.holds(LOGGING_EVENT_HANDLER) is False
    [warning] = broken_warnings(caplog, LOGGING_EVENT_HANDLER)
    assert "built into an event before it is dropped" in warning

    fail_and_log_as_uvicorn(provider)
    [event] = errors_of(receiver, processor, 1)
    assert event["exception"]["values"][-1]["mechanism"]["type"] == "asgi"
