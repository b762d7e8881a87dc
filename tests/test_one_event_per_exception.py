"""One Sentry error event per exception object: never two for one exception (recorded on spans, reported
live, logged by the server), never one for two exceptions that only share their type and message."""

from __future__ import annotations

import asyncio
import logging
from contextlib import nullcontext
from typing import Any

import pytest
import sentry_sdk
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from sentry_sdk.integrations.dedupe import DedupeIntegration

from otel_bridge import SentrySpanProcessor
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.conftest import StartTraced
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.test_middleware import call, http_scope


class PaymentDeclined(Exception):
    pass


def charge() -> None:
    raise PaymentDeclined("card declined")


def errors_of(receiver: EnvelopeReceiver, processor: SentrySpanProcessor, count: int) -> list[dict[str, Any]]:
    assert processor.force_flush(5000)
    receiver.wait_for_transactions(1)
    events = receiver.wait_for_events(count)
    for event in events:
        assert_relay_valid(event)
    assert len(receiver.events()) == count, [event["exception"]["values"] for event in receiver.events()]
    return sorted(events, key=lambda event: event["exception"]["values"][-1]["mechanism"]["type"])


def serve(provider: TracerProvider, app: Any) -> BaseException:
    with pytest.raises(PaymentDeclined) as caught:
        asyncio.run(call(SentryAsgiMiddleware(app, tracer_provider=provider), http_scope("/pay")))
    return caught.value


def fail_and_log_as_uvicorn(provider: TracerProvider) -> BaseException:
    """A request whose app raises, then the server's log record of it, as uvicorn writes it."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        charge()

    raised = serve(provider, app)
    exc_info = (type(raised), raised, raised.__traceback__)
    logging.getLogger("uvicorn.error").error("Exception in ASGI application\n", exc_info=exc_info)
    return raised


@pytest.mark.parametrize("recorded_on", ["child span", "server span"])
def test_two_exceptions_with_the_same_type_and_message_in_one_request_are_two_events(
    traced: tuple[TracerProvider, SentrySpanProcessor], receiver: EnvelopeReceiver, recorded_on: str
) -> None:
    provider, processor = traced
    tracer = provider.get_tracer("shop")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        # the first attempt fails and is handled: recorded on a span of its own, or on the server span
        with tracer.start_as_current_span("first attempt") if recorded_on == "child span" else nullcontext():
            try:
                charge()
            except PaymentDeclined as handled:
                trace.get_current_span().record_exception(handled)
        # the second fails the same way, on the same line, and escapes
        charge()

    raised = serve(provider, app)
    unhandled, handled = errors_of(receiver, processor, 2)  # by mechanism: asgi, otel
    assert unhandled["exception"]["values"][-1]["mechanism"] == {"type": "asgi", "handled": False}
    assert handled["exception"]["values"][-1]["mechanism"]["type"] == "otel"
    if recorded_on == "child span":
        # (on the failed server span, conversion cannot tell it from the one that escaped the request)
        assert handled["exception"]["values"][-1]["mechanism"]["handled"] is True
    for event in (handled, unhandled):
        assert event["exception"]["values"][-1]["value"] == str(raised)
    assert handled["contexts"]["trace"]["trace_id"] == unhandled["contexts"]["trace"]["trace_id"]


@pytest.mark.parametrize("how", ["escaping a child span", "recorded, then raised"])
def test_one_exception_recorded_on_spans_and_raised_out_of_the_app_is_one_event(
    traced: tuple[TracerProvider, SentrySpanProcessor], receiver: EnvelopeReceiver, how: str
) -> None:
    provider, processor = traced
    tracer = provider.get_tracer("shop")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with tracer.start_as_current_span("charge") as span:
            if how == "escaping a child span":
                charge()
            try:
                charge()
            except PaymentDeclined as exc:
                span.record_exception(exc)
                raise

    serve(provider, app)
    [event] = errors_of(receiver, processor, 1)
    assert event["exception"]["values"][-1]["mechanism"] == {"type": "asgi", "handled": False}


def test_the_servers_log_record_of_an_exception_already_reported_is_no_second_event(
    start_traced: StartTraced, receiver: EnvelopeReceiver
) -> None:
    from otel_bridge._setup import install_event_processor

    # without sentry-sdk's own dedupe, which would drop the log record's event too
    provider, processor = start_traced(disabled_integrations=[DedupeIntegration()])
    install_event_processor()

    fail_and_log_as_uvicorn(provider)
    [event] = errors_of(receiver, processor, 1)
    assert event["exception"]["values"][-1]["mechanism"]["type"] == "asgi"


def test_a_logged_exception_recorded_on_a_sampled_span_is_reported_once_from_the_span(
    start_traced: StartTraced, receiver: EnvelopeReceiver
) -> None:
    from otel_bridge._setup import install_event_processor

    provider, processor = start_traced(disabled_integrations=[DedupeIntegration()])
    install_event_processor()
    tracer = provider.get_tracer("worker")
    try:
        with tracer.start_as_current_span("job"):
            charge()
    except PaymentDeclined:
        logging.getLogger("worker").exception("job failed")
    [event] = errors_of(receiver, processor, 1)
    assert event["exception"]["values"][-1]["mechanism"] == {"type": "otel", "handled": False}


@pytest.mark.parametrize("dedupe", ["sentry-sdk's dedupe on", "sentry-sdk's dedupe off"])
def test_no_event_is_built_for_the_servers_log_record_of_a_reported_exception(
    start_traced: StartTraced, receiver: EnvelopeReceiver, monkeypatch: pytest.MonkeyPatch, dedupe: str
) -> None:
    """The record is never made an event (which would cost a full ``event_from_exception`` of its traceback
    and locals) only for that event to be dropped: nothing is built, so nothing is discarded either."""
    import sentry_sdk.integrations.logging as sentry_logging

    from otel_bridge._setup import install_event_processor

    built: list[Any] = []
    original = sentry_logging.event_from_exception

    def counting(exc_info: Any, **kwargs: Any) -> Any:
        built.append(exc_info[1])
        return original(exc_info, **kwargs)

    monkeypatch.setattr(sentry_logging, "event_from_exception", counting)
    options = {} if dedupe.endswith("on") else {"disabled_integrations": [DedupeIntegration()]}
    provider, processor = start_traced(send_client_reports=True, **options)
    install_event_processor()

    raised = fail_and_log_as_uvicorn(provider)
    try:
        charge()
    except PaymentDeclined:
        logging.getLogger("shop").exception("a failure nobody reported")

    events = errors_of(receiver, processor, 2)
    assert [event["exception"]["values"][-1]["mechanism"]["type"] for event in events] == ["asgi", "logging"]
    assert built == [events and built[0]] and built[0] is not raised
    sentry_sdk.flush(timeout=5)
    discarded = [
        entry for report in receiver.client_reports() for entry in report.get("discarded_events", [])
    ]
    assert not [entry for entry in discarded if entry["category"] == "error"], discarded
