"""Frameworks that trace themselves: whatever else starts a span for the request (FastAPI's native telemetry,
Starlette's ``OpenTelemetryMiddleware``, contrib's ``FastAPIInstrumentor``), every backend gets exactly one
SERVER span per request and Sentry one transaction holding the request's spans, errors and messages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import httpx
import pytest
import sentry_sdk
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_trace_id
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from otel_bridge import SentrySpanProcessor
from otel_bridge._setup import install_event_processor
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid

Traced = tuple[TracerProvider, InMemorySpanExporter, SentrySpanProcessor]


def starlette_otel_middleware() -> Any:
    """Starlette's ``OpenTelemetryMiddleware``; the test is skipped on a Starlette without it."""
    module = pytest.importorskip(
        "starlette.middleware.opentelemetry",
        reason="Starlette < 1.7 has no OpenTelemetryMiddleware (starlette.middleware.opentelemetry)",
    )
    return module.OpenTelemetryMiddleware


@pytest.fixture
def tracing(receiver: EnvelopeReceiver) -> Iterator[Traced]:
    sentry_sdk.init(dsn=receiver.dsn, instrumenter="otel")
    install_event_processor()
    provider = TracerProvider()
    other_backend = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(other_backend))
    processor = SentrySpanProcessor()
    provider.add_span_processor(processor)
    yield provider, other_backend, processor
    provider.shutdown()


def fastapi_app(provider: TracerProvider) -> FastAPI:
    app = FastAPI(telemetry={"tracer_provider": provider})

    @app.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        sentry_sdk.capture_message(f"looking at {item_id}")
        return {"id": item_id}

    @app.get("/boom")
    async def boom() -> None:
        raise KeyError("gone")

    return app


def fastapi_native(provider: TracerProvider) -> FastAPI:
    # An older FastAPI takes ``telemetry=`` as an extra keyword and traces nothing: the case would pass
    # without testing anything.
    pytest.importorskip(
        "fastapi.telemetry",
        reason="FastAPI < 0.142 has no native telemetry (fastapi.telemetry, FastAPI(telemetry=...))",
    )
    return fastapi_app(provider)


def fastapi_with_starlette_otel(provider: TracerProvider) -> Any:
    middleware = starlette_otel_middleware()
    app = fastapi_app(provider)
    app.add_middleware(middleware, tracer_provider=provider)
    return app


def fastapi_instrumented(provider: TracerProvider) -> Any:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = fastapi_app(provider)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


def starlette_with_its_otel(provider: TracerProvider) -> Any:
    async def get_item(request: Any) -> PlainTextResponse:
        sentry_sdk.capture_message(f"looking at {request.path_params['item_id']}")
        return PlainTextResponse("item")

    async def boom(request: Any) -> PlainTextResponse:
        raise KeyError("gone")

    middleware = starlette_otel_middleware()
    app = Starlette(routes=[Route("/items/{item_id:int}", get_item), Route("/boom", boom)])
    app.add_middleware(middleware, tracer_provider=provider)
    return app


APPS: dict[str, Callable[[TracerProvider], Any]] = {
    "fastapi-native": fastapi_native,
    "fastapi+starlette-otel": fastapi_with_starlette_otel,
    "fastapi+instrumentor": fastapi_instrumented,
    "starlette+its-otel": starlette_with_its_otel,
}


async def _serve(app: Any) -> list[int]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        return [(await client.get(path)).status_code for path in ("/items/7", "/boom")]


@pytest.mark.parametrize("name", list(APPS))
def test_one_server_span_and_one_transaction_per_request(
    name: str, tracing: Traced, receiver: EnvelopeReceiver
) -> None:
    import asyncio

    provider, other_backend, processor = tracing
    app = SentryAsgiMiddleware(APPS[name](provider), tracer_provider=provider, transaction_style="url")
    assert asyncio.run(_serve(app)) == [200, 500]
    processor.force_flush(5000)

    spans = other_backend.get_finished_spans()
    servers = [span for span in spans if span.kind is SpanKind.SERVER]
    assert len(servers) == 2, [(span.name, span.instrumentation_scope.name) for span in servers]
    assert {span.instrumentation_scope.name for span in servers} == {"opentelemetry.instrumentation.asgi"}
    traces = {span.context.trace_id for span in servers}
    assert {span.context.trace_id for span in spans} == traces, "every span is in a request's trace"

    transactions = receiver.wait_for_transactions(2)
    errors = receiver.wait_for_events(2)
    assert len(receiver.transactions()) == 2
    for event in transactions + errors:
        assert_relay_valid(event)
    by_name = {transaction["transaction"]: transaction for transaction in transactions}
    assert set(by_name) == {"/items/{item_id}", "/boom"}
    for transaction in transactions:
        root_id = transaction["contexts"]["trace"]["span_id"]
        members = {root_id} | {child["span_id"] for child in transaction.get("spans", [])}
        for child in transaction.get("spans", []):
            assert child["parent_span_id"] in members, f"{child['description']} has a parent outside"
    [message] = [event for event in errors if "message" in event or "logentry" in event]
    [error] = [event for event in errors if "exception" in event]
    assert (
        message["contexts"]["trace"]["trace_id"]
        == by_name["/items/{item_id}"]["contexts"]["trace"]["trace_id"]
    )
    assert error["contexts"]["trace"]["trace_id"] == by_name["/boom"]["contexts"]["trace"]["trace_id"]
    assert error["transaction"] == "/boom"
    assert {format_trace_id(trace_id) for trace_id in traces} == {
        transaction["contexts"]["trace"]["trace_id"] for transaction in transactions
    }
