"""The private reaches of ``ConcurrentHttpTransport`` into sentry-sdk's ``HttpTransport``: each checked, and
when one no longer holds, one warning and sentry-sdk's own transport, which still delivers."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import pytest
import sentry_sdk
import sentry_sdk.transport
from sentry_sdk.transport import HttpTransport

from otel_bridge import _compat
from otel_bridge._compat import sentry_transport
from otel_bridge.transport import ConcurrentHttpTransport, default_transport_class
from tests.conftest import StartTraced
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("fresh_reaches")]

REACHES = (
    sentry_transport.TRANSPORT_METHODS,
    sentry_transport.TRANSPORT_STATE,
    sentry_transport.RATE_LIMIT_PARSER,
)


def test_every_reach_holds_on_the_installed_sentry_sdk_and_the_probe_leaves_nothing_running() -> None:
    threads_before = set(threading.enumerate())
    assert [_compat.holds(name) for name in REACHES] == [True, True, True]
    assert set(threading.enumerate()) <= threads_before
    assert default_transport_class() is ConcurrentHttpTransport
    variant = default_transport_class(max_queue_bytes=1000)
    assert issubclass(variant, ConcurrentHttpTransport) and variant.max_queue_bytes == 1000


def _renamed_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new sentry-sdk renames a parameter of a method we override (calls by position still work)."""
    original = HttpTransport._prepare_envelope

    def _prepare_envelope(self: Any, env: Any) -> Any:
        return original(self, env)

    monkeypatch.setattr(HttpTransport, "_prepare_envelope", _prepare_envelope)


def _limits_kept_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new sentry-sdk keeps its rate limits somewhere other than ``_disabled_until``."""

    def _update_rate_limits(self: Any, response: Any) -> None:
        self._limits = self._get_header_value(response, "x-sentry-rate-limits")

    monkeypatch.setattr(HttpTransport, "_update_rate_limits", _update_rate_limits)


def _parser_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(sentry_sdk.transport, "_parse_rate_limits")


@pytest.mark.parametrize(
    ("reach", "breaks"),
    [
        (sentry_transport.TRANSPORT_METHODS, _renamed_parameter),
        (sentry_transport.TRANSPORT_STATE, _limits_kept_elsewhere),
        (sentry_transport.RATE_LIMIT_PARSER, _parser_gone),
    ],
)
def test_a_reach_that_no_longer_holds_gives_sentry_sdks_own_transport_which_delivers(
    reach: str,
    breaks: Callable[[pytest.MonkeyPatch], None],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    receiver: EnvelopeReceiver,
    start_traced: StartTraced,
) -> None:
    breaks(monkeypatch)
    caplog.set_level(logging.WARNING, logger="otel_bridge")

    assert _compat.holds(reach) is False
    assert default_transport_class() is HttpTransport
    # passed explicitly, as a user would: sentry-sdk's transport, none of our overrides
    provider, _ = start_traced(transport=ConcurrentHttpTransport.with_max_connections(4))
    transport = sentry_sdk.get_client().transport
    assert type(transport) is HttpTransport

    with provider.get_tracer("test").start_as_current_span("GET /fallback"):
        pass
    sentry_sdk.capture_message("through the fallback")
    assert sentry_sdk.get_client().is_active()
    [transaction] = receiver.wait_for_transactions(1)
    [event] = receiver.wait_for_events(1)
    assert transaction["transaction"] == "GET /fallback"
    assert event["message"] == "through the fallback"
    assert_relay_valid(transaction)
    assert_relay_valid(event)

    warnings = [record.getMessage() for record in caplog.records if reach in record.getMessage()]
    assert len(warnings) == 1, warnings
    assert "sentry-sdk's own HttpTransport" in warnings[0]
