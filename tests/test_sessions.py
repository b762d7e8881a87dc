"""Release-health sessions in request mode: one per request served by the middleware, aggregated and sent by
sentry-sdk's session flusher, crashed when an exception escapes the app."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import httpx
import pytest
import sentry_sdk
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from otel_bridge.asgi import SentryAsgiMiddleware
from tests.conftest import StartTraced
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid

Start = Callable[..., TracerProvider]


@pytest.fixture
def bridge(start_traced: StartTraced) -> Start:
    def start(**options: Any) -> TracerProvider:
        options.setdefault("release", "shop@1.0")
        provider, _processor = start_traced(
            environment="staging", auto_enabling_integrations=False, **options
        )
        return provider

    return start


def shop(provider: TracerProvider) -> Any:
    """``/fail`` raises; ``/handled`` reports a handled error itself; ``/recorded`` only records one on a
    span, which the bridge reports later from the span's events."""
    tracer = provider.get_tracer("shop")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/fail":
            raise ZeroDivisionError("division by zero")
        if path == "/handled":
            try:
                raise ValueError("bad coupon")
            except ValueError as exc:
                sentry_sdk.capture_exception(exc)
        if path == "/recorded":
            with tracer.start_as_current_span("charge") as span:
                span.record_exception(TimeoutError("card network slow"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return SentryAsgiMiddleware(app, tracer_provider=provider)


def get(app: Any, *paths: str) -> list[int]:
    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            return [(await client.get(path)).status_code for path in paths]

    return asyncio.run(run())


def aggregates(receiver: EnvelopeReceiver) -> list[dict[str, Any]]:
    return [item.json() for item in receiver.items("sessions")]


def counts(aggregate: dict[str, Any]) -> dict[str, int]:
    [bucket] = aggregate["aggregates"]
    return {key: value for key, value in bucket.items() if key != "started"}


def test_requests_are_counted_in_one_aggregate_with_their_crashes(
    bridge: Start, receiver: EnvelopeReceiver
) -> None:
    app = shop(bridge())
    assert get(app, "/cart", "/cart", "/fail") == [200, 200, 500]
    sentry_sdk.flush(timeout=5)
    assert len(receiver.transactions()) == 3
    [error] = receiver.events()
    assert_relay_valid(error)
    [aggregate] = aggregates(receiver)
    assert aggregate["attrs"] == {"release": "shop@1.0", "environment": "staging"}
    assert counts(aggregate) == {"exited": 2, "crashed": 1}
    # the aggregate is sent after the transactions and errors of the requests it counts
    assert [envelope.items[0].type for envelope in receiver.envelopes][-1] == "sessions"


def test_a_handled_error_marks_its_request_errored_one_recorded_on_a_span_does_not(
    bridge: Start, receiver: EnvelopeReceiver
) -> None:
    app = shop(bridge())
    assert get(app, "/handled", "/recorded") == [200, 200]
    sentry_sdk.flush(timeout=5)
    errors = receiver.events()
    assert sorted(error["exception"]["values"][-1]["type"] for error in errors) == [
        "TimeoutError",
        "ValueError",
    ]
    [aggregate] = aggregates(receiver)
    assert counts(aggregate) == {"errored": 1, "exited": 1}


def test_an_error_a_framework_turns_into_a_500_crashes_the_session(
    bridge: Start, receiver: EnvelopeReceiver
) -> None:
    async def checkout(request: Request) -> PlainTextResponse:
        raise RuntimeError("out of stock")

    app = Starlette(routes=[Route("/checkout", checkout)])
    assert get(SentryAsgiMiddleware(app, tracer_provider=bridge()), "/checkout") == [500]
    sentry_sdk.flush(timeout=5)
    assert len(receiver.events()) == 1
    [aggregate] = aggregates(receiver)
    assert counts(aggregate) == {"crashed": 1}


def test_auto_session_tracking_false_tracks_none(bridge: Start, receiver: EnvelopeReceiver) -> None:
    app = shop(bridge(auto_session_tracking=False))
    get(app, "/cart", "/fail")
    sentry_sdk.flush(timeout=5)
    assert len(receiver.transactions()) == 2
    assert aggregates(receiver) == []


def test_sessions_are_sent_at_close_too(bridge: Start, receiver: EnvelopeReceiver) -> None:
    app = shop(bridge())
    get(app, "/cart")
    sentry_sdk.get_client().close(timeout=5)
    [aggregate] = aggregates(receiver)
    assert counts(aggregate) == {"exited": 1}
