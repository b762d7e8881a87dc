"""Every header that carries the client's address stays home without ``send_default_pii``: in the request
data of each event, in the captured-header attributes of the transaction and its spans, in the local
variables of the app's frames, and in the request the exporter rebuilds from span attributes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import MutableMapping
from typing import Any, Callable

import httpx
import pytest
import sentry_sdk
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from otel_bridge import SentrySpanExporter
from otel_bridge._setup import install_event_processor
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.conftest import StartTraced
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.servers import ServerName, run_app
from tests.test_middleware import call
from tests.test_middleware import http_scope as middleware_scope

Message = MutableMapping[str, Any]

# Each header with a value found nowhere else: documentation addresses, none a prefix of another.
CLIENT_ADDRESSES = {
    "x-forwarded-for": "198.51.100.101, 198.51.100.102",
    "x-real-ip": "198.51.100.103",
    "forwarded": "for=198.51.100.104;proto=https;by=198.51.100.110",
    "true-client-ip": "198.51.100.105",
    "cf-connecting-ip": "2001:db8:cafe::106",
    "x-client-ip": "198.51.100.107",
    "fastly-client-ip": "198.51.100.108",
    "x-cluster-client-ip": "198.51.100.109",
}
PLANTED = [
    "198.51.100.101",
    "198.51.100.102",
    "198.51.100.103",
    "198.51.100.104",
    "198.51.100.105",
    "2001:db8:cafe::106",
    "198.51.100.107",
    "198.51.100.108",
    "198.51.100.109",
    "198.51.100.110",
]
# The headers a client instrumentation captured on the app's own call onward, where the app passes the
# client's address on (as proxies do).
FORWARDED_ON = ("x-forwarded-for", "forwarded", "true-client-ip")


def attribute(name: str) -> str:
    return "http.request.header." + name.replace("-", "_")


def checkout_scope() -> dict[str, Any]:
    scope = middleware_scope("/checkout")
    scope["headers"] += [(name.encode(), value.encode()) for name, value in CLIENT_ADDRESSES.items()]
    return scope


def checkout_app(provider: TracerProvider, with_message: bool) -> Callable[..., Any]:
    tracer = provider.get_tracer("tests.privacy_headers")
    # Unique, so that no earlier test's report of the same exception makes this one a duplicate.
    order = uuid.uuid4().hex[:8]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with tracer.start_as_current_span("POST payments", kind=SpanKind.CLIENT) as call:
            call.set_attribute("http.request.method", "POST")
            call.set_attribute("url.full", "http://payments.test/charge")
            for name in FORWARDED_ON:
                call.set_attribute(attribute(name), (CLIENT_ADDRESSES[name],))
        if with_message:
            sentry_sdk.capture_message("charging the card")
        # ``scope`` (with the raw headers) and ``headers`` are local variables of this in-app frame
        headers = {bytes(name).decode(): bytes(value).decode() for name, value in scope["headers"]}
        raise RuntimeError(f"card declined for order {order} at {headers['host']}{scope['path']}")

    return app


def serve_one_failing_request(app: Any) -> None:
    with pytest.raises(RuntimeError, match="card declined"):
        asyncio.run(call(app, checkout_scope()))


@pytest.fixture
def processor_provider(start_traced: StartTraced) -> Callable[[bool], TracerProvider]:
    def start(send_default_pii: bool) -> TracerProvider:
        provider, _processor = start_traced(send_default_pii=send_default_pii)
        install_event_processor()
        return provider

    return start


def run_through_the_middleware(start: Callable[[bool], TracerProvider], send_default_pii: bool) -> None:
    provider = start(send_default_pii)
    app = SentryAsgiMiddleware(
        checkout_app(provider, with_message=True),
        tracer_provider=provider,
        http_capture_headers_server_request=list(CLIENT_ADDRESSES),
    )
    serve_one_failing_request(app)
    provider.force_flush(5000)


def run_through_the_exporter(receiver: EnvelopeReceiver, send_default_pii: bool) -> TracerProvider:
    exporter = SentrySpanExporter(dsn=receiver.dsn, send_default_pii=send_default_pii)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # The exporter path knows nothing of the request outside span data: no message from the app here.
    app = OpenTelemetryMiddleware(
        checkout_app(provider, with_message=False),
        tracer_provider=provider,
        http_capture_headers_server_request=list(CLIENT_ADDRESSES),
    )
    serve_one_failing_request(app)
    provider.force_flush()
    return provider


def sent_bytes(receiver: EnvelopeReceiver) -> bytes:
    return b"".join(request.raw_body for request in receiver.requests)


def message_and_error(events: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    [message] = [event for event in events if "exception" not in event]
    [error] = [event for event in events if "exception" in event]
    return message, error


def header(headers: dict[str, str], name: str) -> str:
    [value] = [value for key, value in headers.items() if key.lower() == name]
    return value


def test_no_header_carrying_the_clients_address_is_sent_by_default(
    receiver: EnvelopeReceiver, processor_provider: Callable[[bool], TracerProvider]
) -> None:
    run_through_the_middleware(processor_provider, send_default_pii=False)
    message, error = message_and_error(receiver.wait_for_events(2))
    [transaction] = receiver.wait_for_transactions(1)

    sent = sent_bytes(receiver)
    for address in PLANTED:
        assert address.encode() not in sent, f"{address} reached Sentry"
    for event in (message, error, transaction):
        assert_relay_valid(event)
        assert "env" not in event["request"]
        for name in CLIENT_ADDRESSES:
            assert event["request"]["headers"][name] == "[Filtered]", name
    root_data = transaction["contexts"]["trace"]["data"]
    [onward] = transaction["spans"]
    for name in CLIENT_ADDRESSES:
        assert root_data[attribute(name)] == "[Filtered]", name
    for name in FORWARDED_ON:
        assert onward["data"][attribute(name)] == "[Filtered]", name
    assert onward["data"]["url.full"] == "http://payments.test/charge"
    assert error["exception"]["values"][-1]["value"].endswith("at shop.test/checkout")
    [app_frame] = [
        frame
        for frame in error["exception"]["values"][-1]["stacktrace"]["frames"]
        if frame["function"] == "app"
    ]
    raw_headers = dict(app_frame["vars"]["scope"]["headers"])
    for name in CLIENT_ADDRESSES:
        assert raw_headers[repr(name.encode())] == "[Filtered]", name
        assert app_frame["vars"]["headers"][name] == "[Filtered]", name


def test_with_send_default_pii_the_headers_carrying_the_clients_address_are_sent(
    receiver: EnvelopeReceiver, processor_provider: Callable[[bool], TracerProvider]
) -> None:
    run_through_the_middleware(processor_provider, send_default_pii=True)
    message, error = message_and_error(receiver.wait_for_events(2))
    [transaction] = receiver.wait_for_transactions(1)

    for event in (message, error, transaction):
        assert_relay_valid(event)
        # sentry-sdk's default deny-list names x_forwarded_for: its first address is the client's IP
        assert event["request"]["env"] == {"REMOTE_ADDR": "198.51.100.101"}
        for name, value in CLIENT_ADDRESSES.items():
            if name != "x-forwarded-for":
                assert event["request"]["headers"][name] == value
    root_data = transaction["contexts"]["trace"]["data"]
    [onward] = transaction["spans"]
    for name, value in CLIENT_ADDRESSES.items():
        if name != "x-forwarded-for":
            assert root_data[attribute(name)] == [value]
    assert onward["data"][attribute("true-client-ip")] == ["198.51.100.105"]
    assert onward["data"][attribute("forwarded")] == [CLIENT_ADDRESSES["forwarded"]]


def test_the_exporter_sends_no_header_carrying_the_clients_address_by_default(
    receiver: EnvelopeReceiver,
) -> None:
    provider = run_through_the_exporter(receiver, send_default_pii=False)
    [error] = receiver.wait_for_events(1)
    [transaction] = receiver.wait_for_transactions(1)
    provider.shutdown()

    sent = sent_bytes(receiver)
    for address in PLANTED:
        assert address.encode() not in sent, f"{address} reached Sentry"
    for event in (error, transaction):
        assert_relay_valid(event)
        assert "env" not in event["request"]
        for name in CLIENT_ADDRESSES:
            assert header(event["request"]["headers"], name) == "[Filtered]", name
    for name in CLIENT_ADDRESSES:
        assert transaction["contexts"]["trace"]["data"][attribute(name)] == "[Filtered]", name


def test_with_send_default_pii_the_exporter_sends_the_headers_carrying_the_clients_address(
    receiver: EnvelopeReceiver,
) -> None:
    provider = run_through_the_exporter(receiver, send_default_pii=True)
    [error] = receiver.wait_for_events(1)
    [transaction] = receiver.wait_for_transactions(1)
    provider.shutdown()

    for event in (error, transaction):
        assert_relay_valid(event)
        for name, value in CLIENT_ADDRESSES.items():
            if name != "x-forwarded-for":
                assert header(event["request"]["headers"], name) == value
    assert transaction["contexts"]["trace"]["data"][attribute("cf-connecting-ip")] == ["2001:db8:cafe::106"]


def test_the_span_attributes_name_the_headers_the_way_the_tests_plant_them() -> None:
    """Guards the tests above: OpenTelemetry's ASGI middleware captures the planted headers under these
    attribute names, so that a missing attribute cannot pass for a filtered one."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    app = OpenTelemetryMiddleware(
        checkout_app(provider, with_message=False),
        tracer_provider=provider,
        http_capture_headers_server_request=list(CLIENT_ADDRESSES),
    )
    serve_one_failing_request(app)
    [server] = [span for span in memory.get_finished_spans() if span.kind is trace.SpanKind.SERVER]
    attributes = server.attributes or {}
    for name, value in CLIENT_ADDRESSES.items():
        assert attributes[attribute(name)] == (value,)
    provider.shutdown()


ACCESS_LOGGING = {"uvicorn": ["--log-level", "info"], "hypercorn": ["--access-logfile", "-"]}


@pytest.mark.parametrize("server", sorted(ACCESS_LOGGING))
@pytest.mark.parametrize("send_default_pii", [False, True])
def test_the_client_address_of_access_log_breadcrumbs_is_filtered(
    receiver: EnvelopeReceiver, server: ServerName, send_default_pii: bool
) -> None:
    """Servers log each request at INFO starting with the client's address; sentry-sdk's logging integration
    keeps such records as breadcrumbs of the request's later events (its transaction, at least)."""
    env = {"SENTRY_DSN": receiver.dsn, "SENTRY_SEND_DEFAULT_PII": str(send_default_pii).lower()}
    with run_app(
        "tests.apps.shop_bridge:app", env=env, server=server, extra_args=ACCESS_LOGGING[server]
    ) as app:
        assert httpx.get(f"{app.url}/items/3").status_code == 200
        assert httpx.get(f"{app.url}/checkout/4").status_code == 500
        receiver.wait_for_transactions(2)
        app.stop()
    crumbs = [
        crumb
        for event in receiver.transactions() + receiver.events()
        for crumb in (event.get("breadcrumbs") or {}).get("values", [])
        if crumb.get("category") == f"{server}.access"
    ]
    assert crumbs, "the server's access log reached the events as breadcrumbs"
    for crumb in crumbs:
        if send_default_pii:
            assert crumb["message"].startswith("127.0.0.1:")
        else:
            assert crumb["message"].startswith("[Filtered] - "), crumb["message"]
            assert "127.0.0.1:" not in crumb["message"]
