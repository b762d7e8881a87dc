"""Two private reaches, checked: sentry-sdk's ``_asgi_middleware_applied`` flag and the OTel SDK's
``Span.record_exception``. Where one no longer holds, it is said once and the public path still delivers."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
import sentry_sdk
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace import TracerProvider
from sentry_sdk.integrations import asgi as sentry_asgi
from sentry_sdk.integrations.asgi import SentryAsgiMiddleware as SentrysMiddleware

from otel_bridge import SentrySpanProcessor
from otel_bridge._collect.reported import link_recorded_exceptions
from otel_bridge._compat import holds
from otel_bridge._compat.otel_span import SPAN_RECORD_EXCEPTION
from otel_bridge._compat.sentry_asgi import SENTRY_ASGI_APPLIED
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.conftest import StartTraced
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.test_middleware import call, hello, http_scope


def warnings_about(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "otel_bridge" and f"no longer has what {name} relies on" in record.getMessage()
    ]


def test_both_reaches_hold_on_the_installed_libraries(fresh_reaches: None) -> None:
    assert holds(SENTRY_ASGI_APPLIED)
    assert holds(SPAN_RECORD_EXCEPTION)


def test_sentry_sdks_middleware_inside_ours_passes_the_request_through(
    traced: tuple[TracerProvider, SentrySpanProcessor], receiver: EnvelopeReceiver
) -> None:
    provider, processor = traced
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["inside sentry-sdk's"] = sentry_sdk.get_isolation_scope()
        await hello(scope, receive, send)

    sentrys = SentrysMiddleware(app)

    async def between(scope: Any, receive: Any, send: Any) -> None:
        seen["inside ours"] = sentry_sdk.get_isolation_scope()
        await sentrys(scope, receive, send)

    asyncio.run(call(SentryAsgiMiddleware(between, tracer_provider=provider), http_scope("/through")))
    assert seen["inside sentry-sdk's"] is seen["inside ours"]
    assert processor.force_flush(5000)
    [transaction] = receiver.wait_for_transactions(1)
    assert transaction["transaction"] == "/through"


def test_without_sentry_sdks_flag_the_middleware_says_so_once_and_still_reports(
    fresh_reaches: None,
    start_traced: StartTraced,
    receiver: EnvelopeReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delattr(sentry_asgi, "_asgi_middleware_applied")
    provider, processor = start_traced()

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("flagless")

    for _ in range(2):
        with pytest.raises(KeyError):
            asyncio.run(call(SentryAsgiMiddleware(broken, tracer_provider=provider), http_scope("/flagless")))
    assert not holds(SENTRY_ASGI_APPLIED)
    assert len(warnings_about(caplog, SENTRY_ASGI_APPLIED)) == 1
    assert processor.force_flush(5000)
    errors = receiver.wait_for_events(2)
    transactions = receiver.wait_for_transactions(2)
    for event in (*errors, *transactions):
        assert_relay_valid(event)
        assert event["transaction"] == "/flagless"
    assert [error["exception"]["values"][-1]["mechanism"]["type"] for error in errors] == ["asgi", "asgi"]


class Declined(Exception):
    pass


def test_a_changed_record_exception_is_said_once_and_span_events_are_matched_by_text(
    fresh_reaches: None,
    start_traced: StartTraced,
    receiver: EnvelopeReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrapped = SdkSpan.record_exception
    original = getattr(wrapped, "__wrapped__", wrapped)
    assert list(inspect.signature(original).parameters)[:2] == ["self", "exception"]

    def record_exception(self: SdkSpan, exception: BaseException, attributes: Any = None) -> None:
        """A future SDK whose record_exception takes other arguments."""
        original(self, exception, attributes)

    monkeypatch.setattr(SdkSpan, "record_exception", record_exception)
    provider, processor = start_traced()
    assert not link_recorded_exceptions()
    assert SdkSpan.record_exception is record_exception, "nothing is wrapped"
    assert not holds(SPAN_RECORD_EXCEPTION)
    assert len(warnings_about(caplog, SPAN_RECORD_EXCEPTION)) == 1
    tracer = provider.get_tracer("shop")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with tracer.start_as_current_span("first attempt") as span:
            try:
                raise Declined("card declined (text fallback)")
            except Declined as handled:
                span.record_exception(handled)
        with tracer.start_as_current_span("second attempt"):
            # recorded on this span and on the server span as it escapes, and reported live: one event
            raise Declined("card declined (text fallback)")

    with pytest.raises(Declined):
        asyncio.run(call(SentryAsgiMiddleware(app, tracer_provider=provider), http_scope("/pay")))
    assert processor.force_flush(5000)
    receiver.wait_for_transactions(1)
    errors = receiver.wait_for_events(2)
    assert len(receiver.events()) == 2
    for event in errors:
        assert_relay_valid(event)
    mechanisms = sorted(error["exception"]["values"][-1]["mechanism"]["type"] for error in errors)
    assert mechanisms == ["asgi", "otel"]
