"""The URLs an app calls, recorded by sentry-sdk's HTTP client integrations as breadcrumbs (and by the HTTP
client's own log lines), keep no secret of their query string or fragment: on every kind of event that
carries the request's breadcrumbs."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator, MutableMapping
from typing import Any

import httpx
import pytest
import sentry_sdk
from opentelemetry.sdk.trace import TracerProvider
from sentry_sdk.integrations.httpx import HttpxIntegration

from otel_bridge import SentrySpanProcessor
from otel_bridge._setup import install_event_processor
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.apps import downstream
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.test_middleware import call, http_scope

Message = MutableMapping[str, Any]


def planted(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"


@pytest.fixture
def secrets() -> dict[str, str]:
    return {name: planted(name) for name in ("api_key", "token", "access_token")}


@pytest.fixture
def traced_with_httpx(receiver: EnvelopeReceiver) -> Iterator[tuple[TracerProvider, SentrySpanProcessor]]:
    sentry_sdk.init(dsn=receiver.dsn, instrumenter="otel", integrations=[HttpxIntegration()])
    install_event_processor()
    provider = TracerProvider()
    processor = SentrySpanProcessor()
    provider.add_span_processor(processor)
    yield provider, processor
    provider.shutdown()


def shop_app(provider: TracerProvider, secrets: dict[str, str]) -> Any:
    """Asks the stock service (a real httpx call, answered in-process) with its credentials in the query
    string and a token in the fragment, then reports in each way an app can."""
    tracer = provider.get_tracer("tests.breadcrumb_urls")
    order = uuid.uuid4().hex[:8]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        transport = httpx.ASGITransport(app=downstream.app)
        async with httpx.AsyncClient(transport=transport) as client:
            # (no local variable holds the URL: frames' local variables are not what this test is about)
            answer = await client.get(
                f"http://stock.test/items?api_key={secrets['api_key']}&token={secrets['token']}&page=2"
                f"#access_token={secrets['access_token']}&view=list"
            )
        assert answer.json()["query"].startswith("api_key=")
        sentry_sdk.capture_message(f"stock checked for order {order}")
        logging.getLogger("tests.shop").error("stock is low for order %s", order)
        try:
            with tracer.start_as_current_span("reserve"):
                raise LookupError(f"item of order {order} is gone")
        except LookupError:
            pass
        raise RuntimeError(f"order {order} failed")

    return app


@pytest.mark.skipif(
    tuple(int(part) for part in sentry_sdk.VERSION.split(".")[:2]) < (2, 68),
    reason="sentry-sdk < 2.68 records no httpx breadcrumb with instrumenter='otel' "
    "(it made the breadcrumb from its own span, a no-op then)",
)
def test_breadcrumb_urls_keep_no_secret_on_any_event(
    traced_with_httpx: tuple[TracerProvider, SentrySpanProcessor],
    receiver: EnvelopeReceiver,
    secrets: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # httpx logs every request it makes, URL included, at INFO: a level apps commonly log at
    caplog.set_level(logging.INFO, logger="httpx")
    provider, processor = traced_with_httpx
    app = SentryAsgiMiddleware(shop_app(provider, secrets), tracer_provider=provider)
    with pytest.raises(RuntimeError):
        asyncio.run(call(app, http_scope("/checkout")))
    processor.force_flush(5000)
    events = receiver.wait_for_events(4)
    receiver.wait_for_transactions(1)

    sent = b"".join(request.raw_body for request in receiver.requests)
    for name, value in secrets.items():
        assert value.encode() not in sent, f"{name} reached Sentry"

    kinds = set()
    for event in events:
        assert_relay_valid(event)
        if "logentry" in event:
            kinds.add("log")
        elif "message" in event:
            kinds.add("message")
        else:
            kinds.add(event["exception"]["values"][-1]["type"])
        crumbs = event["breadcrumbs"]["values"]
        [http] = [crumb for crumb in crumbs if crumb.get("type") == "http"]
        assert http["data"]["url"] == "http://stock.test/items"
        assert http["data"]["http.query"] == "api_key=[Filtered]&token=[Filtered]&page=2"
        assert http["data"]["http.fragment"] == "access_token=[Filtered]&view=list"
        [logged] = [crumb for crumb in crumbs if crumb.get("category") == "httpx"]
        assert (
            "http://stock.test/items?api_key=[Filtered]&token=[Filtered]&page=2"
            "#access_token=[Filtered]&view=list" in logged["message"]
        )
    assert kinds == {"log", "message", "LookupError", "RuntimeError"}
