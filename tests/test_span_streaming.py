"""Span streaming (``trace_lifecycle="stream"``): OTel spans arrive as Sentry ``span`` v2 items.

Real middleware, real span processor or exporter, sentry-sdk's own span batcher and a real loopback
endpoint. Relay's Python package (sentry-relay 0.10) normalizes events only, so span items are checked
here against the span v2 protocol (develop.sentry.dev/sdk/telemetry/spans/span-protocol/); error events
still go through Relay's normalizer.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Optional

import pytest
import sentry_sdk
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from sentry_sdk.consts import DEFAULT_OPTIONS

from otel_bridge import SentrySpanExporter, SentrySpanProcessor
from otel_bridge._convert.span_items import (
    RequestFacts,
    is_localhost,
    keep_allowed_changes,
    request_scope_attributes,
    span_items,
    without_ignored,
)
from otel_bridge._tracing import sampling
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.receiver import Envelope, EnvelopeReceiver
from tests.relay import assert_relay_valid, transaction_from_spans
from tests.test_middleware import call, http_scope

STREAMING = "trace_lifecycle" in DEFAULT_OPTIONS  # sentry-sdk 2.66+

needs_streaming = pytest.mark.skipif(not STREAMING, reason="this sentry-sdk has no span streaming")

SPAN_CONTENT_TYPE = "application/vnd.sentry.items.span.v2+json"
# Built at run time, so that the source lines sent as frame context cannot contain them.
SECRET = "-".join(("very", "secret", "4711"))

Tracing = tuple[TracerProvider, SentrySpanProcessor, InMemorySpanExporter]


# -- the span v2 protocol, checked on what arrived


_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_TYPES: Mapping[str, Callable[[Any], bool]] = {
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "double": lambda value: isinstance(value, float),
    "array": lambda value: (
        isinstance(value, list)
        and all(type(item) is type(value[0]) for item in value)
        and all(isinstance(item, (str, bool, int, float)) for item in value)
    ),
}


def assert_span_v2(span: Mapping[str, Any]) -> None:
    assert _HEX32.match(span["trace_id"]), span
    assert _HEX16.match(span["span_id"]), span
    if "parent_span_id" in span:
        assert _HEX16.match(span["parent_span_id"]), span
    assert isinstance(span["name"], str) and span["name"], span
    assert span["status"] in ("ok", "error"), span
    assert isinstance(span["is_segment"], bool), span
    assert isinstance(span["start_timestamp"], float), span
    assert isinstance(span["end_timestamp"], float), span
    assert span["end_timestamp"] >= span["start_timestamp"], span
    assert set(span) <= {
        "trace_id",
        "span_id",
        "parent_span_id",
        "name",
        "status",
        "is_segment",
        "start_timestamp",
        "end_timestamp",
        "attributes",
        "links",
    }, span
    for key, typed in span.get("attributes", {}).items():
        assert set(typed) == {"type", "value"}, (key, typed)
        assert _TYPES[typed["type"]](typed["value"]), (key, typed)


def span_envelopes(receiver: EnvelopeReceiver) -> list[Envelope]:
    return [envelope for envelope in receiver.envelopes if envelope.items_of("span")]


def streamed(receiver: EnvelopeReceiver) -> list[dict[str, Any]]:
    """Every span received, checked against the protocol and, as the transaction each envelope's trace
    stands for, by Relay's normalizer; with plain attribute values."""
    spans = []
    for envelope in span_envelopes(receiver):
        for item in envelope.items_of("span"):
            assert item.headers["content_type"] == SPAN_CONTENT_TYPE
            payload = item.json()
            assert payload["version"] == 2
            assert item.headers["item_count"] == len(payload["items"])
            if any(span.get("is_segment") for span in payload["items"]):
                assert_relay_valid(transaction_from_spans(payload["items"]))
            for span in payload["items"]:
                assert_span_v2(span)
                plain = {key: value for key, value in span.items() if key != "attributes"}
                plain["attributes"] = {
                    key: typed["value"] for key, typed in span.get("attributes", {}).items()
                }
                spans.append(plain)
    return spans


def wait_for_spans(receiver: EnvelopeReceiver, n: int) -> list[dict[str, Any]]:
    assert receiver.wait_for(lambda r: len(streamed(r)) >= n, timeout=10), receiver.summary()
    return streamed(receiver)


def lost(receiver: EnvelopeReceiver, category: str) -> dict[str, int]:
    counted: dict[str, int] = {}
    for report in receiver.client_reports():
        for entry in report.get("discarded_events", ()):
            if entry["category"] == category:
                counted[entry["reason"]] = counted.get(entry["reason"], 0) + entry["quantity"]
    return counted


# -- fixtures


@pytest.fixture
def streaming(receiver: EnvelopeReceiver) -> Iterator[Callable[..., Tracing]]:
    """``streaming(**options)``: a client in stream mode sending to ``receiver``, a private provider with the
    bridge's processor, and an in-memory exporter holding the same OTel spans for comparison."""
    providers: list[TracerProvider] = []

    def start(**options: Any) -> Tracing:
        sentry_sdk.init(dsn=receiver.dsn, instrumenter="otel", trace_lifecycle="stream", **options)
        provider = TracerProvider()
        processor = SentrySpanProcessor()
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        provider.add_span_processor(processor)
        providers.append(provider)
        return provider, processor, memory

    yield start
    for provider in providers:
        provider.shutdown()


@pytest.fixture
def no_sentry_sampling() -> Iterator[None]:
    sampling.configure(0.0)
    yield
    sampling.configure(1.0)


def serve(
    provider: TracerProvider, processor: SentrySpanProcessor, app: Any, scope: dict[str, Any], **kwargs: Any
) -> None:
    try:
        asyncio.run(call(SentryAsgiMiddleware(app, tracer_provider=provider, **kwargs), scope))
    finally:
        processor.force_flush(5000)
        sentry_sdk.flush()


def shop_app(
    provider: TracerProvider, status: int = 200, work: Optional[Callable[[trace.Tracer], None]] = None
):
    tracer = provider.get_tracer("tests")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        sentry_sdk.set_user({"id": "user-7", "email": "ada@example.com"})
        cart = tracer.start_as_current_span("load cart", attributes={"db.system": "postgresql"})
        row = tracer.start_as_current_span("read row", attributes={"db.statement": "SELECT 1"})
        with cart, row:
            pass
        if work is not None:
            work(tracer)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def shop_scope(query: bytes = b"page=2") -> dict[str, Any]:
    scope = http_scope("/cart", query)
    scope["headers"] = [
        (b"host", b"shop.test"),
        (b"user-agent", b"tests/1.0"),
        (b"authorization", f"Bearer {SECRET}".encode()),
        (b"x-forwarded-for", b"203.0.113.9"),
    ]
    return scope


def by_name(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {span["name"]: span for span in spans}


# -- the middleware path


@needs_streaming
def test_a_request_arrives_as_a_segment_and_its_children_with_the_otel_ids(
    streaming: Callable[..., Tracing], receiver: EnvelopeReceiver
) -> None:
    provider, processor, memory = streaming(send_default_pii=True, environment="prod", release="shop@1")
    serve(provider, processor, shop_app(provider), shop_scope())

    spans = wait_for_spans(receiver, 3)
    assert receiver.transactions() == []
    [envelope] = span_envelopes(receiver)
    otel = {span.name: span for span in memory.get_finished_spans()}
    server = otel["GET /cart"]
    trace_id = format_trace_id(server.context.trace_id)
    segment_id = format_span_id(server.context.span_id)
    assert envelope.headers["trace"]["trace_id"] == trace_id
    assert envelope.headers["trace"]["sampled"] == "true"
    assert envelope.headers["trace"]["public_key"] == "0123456789abcdef0123456789abcdef"
    assert envelope.headers["trace"]["environment"] == "prod"
    assert envelope.headers["trace"]["release"] == "shop@1"

    named = by_name(spans)
    segment, cart, row = named["/cart"], named["load cart"], named["SELECT 1"]
    assert spans[-1] is segment or spans[-1] == segment
    assert segment["is_segment"] is True and cart["is_segment"] is False and row["is_segment"] is False
    assert {span["trace_id"] for span in spans} == {trace_id}
    assert segment["span_id"] == segment_id and "parent_span_id" not in segment
    assert cart["span_id"] == format_span_id(otel["load cart"].context.span_id)
    assert cart["parent_span_id"] == segment_id
    assert row["parent_span_id"] == cart["span_id"]
    assert segment["start_timestamp"] == pytest.approx(server.start_time / 1e9)
    assert segment["end_timestamp"] == pytest.approx(server.end_time / 1e9)
    assert segment["status"] == "ok"

    attributes = segment["attributes"]
    assert attributes["sentry.op"] == "http.server"
    assert attributes["sentry.origin"] == "auto.otel"
    assert attributes["sentry.segment.name.source"] == "url"
    assert attributes["network.protocol.name"] == "http"
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.request.header.host"] == "shop.test"
    assert attributes["http.request.header.user-agent"] == "tests/1.0"
    assert attributes["http.request.header.authorization"] == "[Filtered]"
    assert attributes["url.full"] == "http://shop.test/cart?page=2"
    assert attributes["url.path"] == "/cart"
    assert attributes["http.query"] == "page=2"
    assert attributes["client.address"] == "203.0.113.9"
    assert attributes["http.response.status_code"] == 200
    assert attributes["sentry.environment"] == "prod"
    assert attributes["sentry.release"] == "shop@1"
    assert attributes["sentry.sdk.name"].startswith("sentry.python")
    assert attributes["sentry.platform"] == "python"
    assert attributes["sentry.is_localhost"] is False
    for span in spans:
        assert span["attributes"]["sentry.segment.id"] == segment_id
        assert span["attributes"]["sentry.segment.name"] == "/cart"
        assert span["attributes"]["user_agent.original"] == "tests/1.0"
        assert span["attributes"]["user.ip_address"] == "203.0.113.9"
        assert span["attributes"]["user.id"] == "user-7"
        assert span["attributes"]["user.email"] == "ada@example.com"
    assert cart["attributes"]["sentry.op"] == "db"
    assert cart["attributes"]["db.system"] == "postgresql"
    assert row["attributes"]["db.statement"] == "SELECT 1"
    assert SECRET.encode() not in b"".join(request.raw_body for request in receiver.requests)


@needs_streaming
def test_without_pii_no_url_query_address_or_user_is_streamed(
    streaming: Callable[..., Tracing], receiver: EnvelopeReceiver
) -> None:
    provider, processor, _ = streaming()
    serve(provider, processor, shop_app(provider), shop_scope(f"token={SECRET}&page=2".encode()))

    spans = wait_for_spans(receiver, 3)
    segment = by_name(spans)["/cart"]["attributes"]
    for absent in ("url.full", "url.path", "http.query", "client.address", "user.ip_address", "user.id"):
        assert absent not in segment, absent
    for key in segment:
        assert not key.startswith(("http.url", "http.target", "url.", "net.peer", "http.client_ip")), key
    assert segment["http.request.header.x-forwarded-for"] == "[Filtered]"
    assert segment["http.request.method"] == "GET"
    assert segment["user_agent.original"] == "tests/1.0"
    raw = b"".join(request.raw_body for request in receiver.requests)
    assert SECRET.encode() not in raw
    assert b"203.0.113.9" not in raw
    assert b"ada@example.com" not in raw


@needs_streaming
def test_data_collection_decides_the_streamed_url_and_address(
    streaming: Callable[..., Tracing], receiver: EnvelopeReceiver
) -> None:
    try:
        provider, processor, _ = streaming(
            send_default_pii=True,
            data_collection={
                "user_info": False,
                "url_query_params": {"mode": "allowlist", "terms": ["page"]},
            },
        )
    except TypeError:
        pytest.skip("this sentry-sdk has no data_collection")
    serve(provider, processor, shop_app(provider), shop_scope(b"page=2&color=red"))

    segment = by_name(wait_for_spans(receiver, 3))["/cart"]["attributes"]
    assert segment["url.path"] == "/cart"
    assert "color=red" not in segment["url.full"] and "page=2" in segment["url.full"]
    assert segment["http.query"] == "page=2&color=%5BFiltered%5D"
    assert "client.address" not in segment and "user.ip_address" not in segment and "user.id" not in segment


@needs_streaming
def test_before_send_span_renames_and_rewrites_attributes_but_cannot_drop(
    streaming: Callable[..., Tracing], receiver: EnvelopeReceiver
) -> None:
    seen: list[dict[str, Any]] = []

    def before_send_span(span: dict[str, Any], hint: Any) -> Optional[dict[str, Any]]:
        seen.append(span)
        if span["name"] == "SELECT 1":
            return None
        if span["name"] == "load cart":
            raise RuntimeError("a broken callback")
        span["name"] = span["name"].upper()
        span["attributes"] = {**span["attributes"], "team": "checkout"}
        span["attributes"].pop("user_agent.original")
        span["span_id"] = "f" * 16
        return span

    provider, processor, _ = streaming(before_send_span=before_send_span)
    serve(provider, processor, shop_app(provider), shop_scope())

    named = by_name(wait_for_spans(receiver, 3))
    assert set(named) == {"/CART", "load cart", "SELECT 1"}
    segment = named["/CART"]
    assert segment["attributes"]["team"] == "checkout"
    assert "user_agent.original" not in segment["attributes"]
    assert segment["span_id"] != "f" * 16
    assert named["load cart"]["attributes"]["user_agent.original"] == "tests/1.0"
    # the callback saw what sentry-sdk shows it: scope attributes applied, values untyped
    shown = next(span for span in seen if span["is_segment"])
    assert shown["attributes"]["sentry.sdk.name"].startswith("sentry.python")
    assert "_segment_span" not in shown


@needs_streaming
def test_ignore_spans_drops_a_child_and_keeps_its_children_under_the_nearest_kept_span(
    streaming: Callable[..., Tracing], receiver: EnvelopeReceiver
) -> None:
    provider, processor, _ = streaming(ignore_spans=["load cart"])
    serve(provider, processor, shop_app(provider), shop_scope())

    spans = wait_for_spans(receiver, 2)
    named = by_name(spans)
    assert set(named) == {"/cart", "SELECT 1"}
    assert named["SELECT 1"]["parent_span_id"] == named["/cart"]["span_id"]
    assert receiver.wait_for(lambda r: lost(r, "span").get("ignored") == 1, timeout=5), (
        receiver.client_reports()
    )


def decline_card(tracer: trace.Tracer) -> None:
    """A handled error recorded on a child span."""
    try:
        with tracer.start_as_current_span("charge card"):
            raise ValueError("card declined")
    except ValueError:
        pass


@needs_streaming
def test_an_ignored_segment_takes_its_trace_but_not_its_errors(
    streaming: Callable[..., Tracing], receiver: EnvelopeReceiver
) -> None:
    provider, processor, _ = streaming(ignore_spans=[{"name": re.compile(r"/ca.*")}])
    serve(provider, processor, shop_app(provider, work=decline_card), shop_scope())

    [error] = receiver.wait_for_events(1)
    assert_relay_valid(error)
    assert error["exception"]["values"][-1]["type"] == "ValueError"
    assert receiver.wait_for(lambda r: lost(r, "span").get("ignored") == 4, timeout=5), (
        receiver.client_reports()
    )
    assert streamed(receiver) == []
    assert receiver.transactions() == []


@needs_streaming
def test_errors_are_events_linked_to_the_span_that_recorded_them(
    streaming: Callable[..., Tracing], receiver: EnvelopeReceiver
) -> None:
    def fail(tracer: trace.Tracer) -> None:
        decline_card(tracer)
        raise KeyError("cart")

    provider, processor, _ = streaming()
    with pytest.raises(KeyError):
        serve(provider, processor, shop_app(provider, work=fail), shop_scope())

    spans = wait_for_spans(receiver, 4)
    errors = receiver.wait_for_events(2)
    named = by_name(spans)
    by_type = {error["exception"]["values"][-1]["type"]: error for error in errors}
    for error in errors:
        assert_relay_valid(error)
        assert error["contexts"]["trace"]["trace_id"] == named["/cart"]["trace_id"]
    assert by_type["ValueError"]["contexts"]["trace"]["span_id"] == named["charge card"]["span_id"]
    assert by_type["KeyError"]["contexts"]["trace"]["span_id"] == named["/cart"]["span_id"]
    assert named["charge card"]["status"] == "error"
    assert named["/cart"]["status"] == "error"
    [span_envelope] = span_envelopes(receiver)
    for error in errors:
        envelope = receiver.envelope_of(error["event_id"])
        assert envelope is not None
        assert envelope.headers["trace"] == span_envelope.headers["trace"]


@needs_streaming
def test_a_name_set_on_the_scope_names_the_segment_and_its_trace(
    streaming: Callable[..., Tracing], receiver: EnvelopeReceiver
) -> None:
    def rename(tracer: trace.Tracer) -> None:
        # with span streaming only an explicit custom source tells the app's name from the one sentry-sdk's
        # own span API leaves on the scope
        sentry_sdk.get_current_scope().set_transaction_name("checkout", source="custom")

    provider, processor, _ = streaming()
    serve(provider, processor, shop_app(provider, work=rename), shop_scope())

    spans = wait_for_spans(receiver, 3)
    segment = by_name(spans)["checkout"]
    assert segment["attributes"]["sentry.segment.name.source"] == "custom"
    assert {span["attributes"]["sentry.segment.name"] for span in spans} == {"checkout"}
    [envelope] = span_envelopes(receiver)
    assert envelope.headers["trace"]["transaction"] == "checkout"


@needs_streaming
def test_an_error_status_code_makes_the_segment_an_error(
    streaming: Callable[..., Tracing], receiver: EnvelopeReceiver
) -> None:
    provider, processor, _ = streaming()
    serve(provider, processor, shop_app(provider, status=503), shop_scope())

    segment = by_name(wait_for_spans(receiver, 3))["/cart"]
    assert segment["status"] == "error"
    assert segment["attributes"]["http.response.status_code"] == 503


@needs_streaming
def test_an_unsampled_trace_streams_nothing_and_counts_its_spans(
    streaming: Callable[..., Tracing], receiver: EnvelopeReceiver, no_sentry_sampling: None
) -> None:
    provider, processor, _ = streaming()
    serve(provider, processor, shop_app(provider), shop_scope())

    assert receiver.wait_for(lambda r: lost(r, "span").get("sample_rate") == 3, timeout=5), receiver.summary()
    assert streamed(receiver) == []
    assert receiver.transactions() == []
    assert lost(receiver, "transaction") == {}


@needs_streaming
def test_a_client_without_a_usable_span_batcher_sends_transactions_and_says_so(
    streaming: Callable[..., Tracing], receiver: EnvelopeReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    provider, processor, _ = streaming()
    sentry_sdk.get_client().span_batcher = None
    with caplog.at_level(logging.WARNING, logger="otel_bridge"):
        serve(provider, processor, shop_app(provider), shop_scope())
        serve(provider, processor, shop_app(provider), shop_scope())

    transactions = receiver.wait_for_transactions(2)
    assert_relay_valid(transactions[0])
    assert streamed(receiver) == []
    said = [record.getMessage() for record in caplog.records if "span streaming" in record.getMessage()]
    assert len(said) == 1 and "transactions instead" in said[0]


@pytest.mark.skipif(STREAMING, reason="this sentry-sdk streams spans")
def test_an_old_sentry_sdks_experimental_streaming_gets_transactions(
    receiver: EnvelopeReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    sentry_sdk.init(dsn=receiver.dsn, instrumenter="otel", _experiments={"trace_lifecycle": "stream"})
    provider = TracerProvider()
    processor = SentrySpanProcessor()
    provider.add_span_processor(processor)
    with caplog.at_level(logging.WARNING, logger="otel_bridge"):
        serve(provider, processor, shop_app(provider), shop_scope())
    provider.shutdown()
    [transaction] = receiver.wait_for_transactions(1)
    assert len(transaction["spans"]) == 2
    assert span_envelopes(receiver) == []
    assert any("transactions instead" in record.getMessage() for record in caplog.records)


def test_the_default_lifecycle_still_sends_transactions(
    traced: tuple[TracerProvider, SentrySpanProcessor], receiver: EnvelopeReceiver
) -> None:
    provider, processor = traced
    serve(provider, processor, shop_app(provider), shop_scope())
    [transaction] = receiver.wait_for_transactions(1)
    assert len(transaction["spans"]) == 2
    assert span_envelopes(receiver) == []


# -- the exporter path


@needs_streaming
def test_the_exporter_streams_spans_rebuilt_from_span_data(
    receiver: EnvelopeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY_DSN", receiver.dsn)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SentrySpanExporter(trace_lifecycle="stream")))
    tracer = provider.get_tracer("tests")
    attributes = {
        "http.method": "GET",
        "http.scheme": "http",
        "http.host": "localhost:8000",
        "http.target": f"/items/3?token={SECRET}",
        "http.route": "/items/{item_id}",
        "http.status_code": 500,
        "http.request.header.authorization": (f"Bearer {SECRET}",),
        "http.request.header.accept": ("text/html",),
    }
    with tracer.start_as_current_span("GET /items/{item_id}", kind=SpanKind.SERVER, attributes=attributes):
        try:
            with tracer.start_as_current_span("load item"):
                raise LookupError("item 3 is gone")
        except LookupError:
            pass
    sentry_sdk.flush()

    spans = wait_for_spans(receiver, 2)
    [error] = receiver.wait_for_events(1)
    provider.shutdown()
    named = by_name(spans)
    segment, child = named["/items/{item_id}"], named["load item"]
    assert segment["is_segment"] is True and child["parent_span_id"] == segment["span_id"]
    assert segment["status"] == "error"
    assert segment["attributes"]["sentry.segment.name.source"] == "route"
    assert segment["attributes"]["sentry.op"] == "http.server"
    assert segment["attributes"]["http.request.method"] == "GET"
    assert segment["attributes"]["http.request.header.accept"] == "text/html"
    assert segment["attributes"]["http.request.header.authorization"] == "[Filtered]"
    assert segment["attributes"]["http.response.status_code"] == 500
    assert segment["attributes"]["sentry.is_localhost"] is True
    assert "url.full" not in segment["attributes"] and "http.target" not in segment["attributes"]
    assert_relay_valid(error)
    assert error["contexts"]["trace"]["span_id"] == child["span_id"]
    assert error["contexts"]["trace"]["trace_id"] == segment["trace_id"]
    assert SECRET.encode() not in b"".join(request.raw_body for request in receiver.requests)


# -- the pure conversion


def _transaction(**overrides: Any) -> dict[str, Any]:
    transaction: dict[str, Any] = {
        "type": "transaction",
        "transaction": "/orders/{id}",
        "transaction_info": {"source": "route"},
        "start_timestamp": 10.0,
        "timestamp": 12.5,
        "environment": "staging",
        "contexts": {
            "trace": {
                "trace_id": "a" * 32,
                "span_id": "b" * 16,
                "parent_span_id": "c" * 16,
                "op": "http.server",
                "status": "not_found",
                "origin": "auto.otel",
                "data": {"http.target": "/orders/1?x=1", "net.peer.ip": "10.0.0.1", "http.flavor": "1.1"},
            },
            "response": {"status_code": 404},
            "otel": {"resource": {"service.name": "orders", "service.version": "3"}},
        },
        "spans": [
            {
                "trace_id": "a" * 32,
                "span_id": "d" * 16,
                "parent_span_id": "b" * 16,
                "op": "db",
                "description": "SELECT *",
                "status": "ok",
                "start_timestamp": 10.5,
                "timestamp": 11.0,
                "origin": "auto.otel",
                "data": {"db.system": "postgresql", "rows": (1, 2)},
            }
        ],
    }
    transaction.update(overrides)
    return transaction


def test_span_items_put_children_first_and_map_the_transaction_onto_the_segment() -> None:
    request = {
        "method": "get",
        "url": "http://shop.test/orders/1",
        "query_string": "x=1",
        "headers": {"Host": "h"},
    }
    child, segment = span_items(_transaction(), RequestFacts(request=request, protocol="http", with_url=True))
    assert segment["is_segment"] and not child["is_segment"]
    assert (segment["name"], segment["status"], segment["parent_span_id"]) == (
        "/orders/{id}",
        "error",
        "c" * 16,
    )
    assert (segment["start_timestamp"], segment["end_timestamp"]) == (10.0, 12.5)
    assert segment["attributes"]["url.full"] == "http://shop.test/orders/1?x=1"
    assert segment["attributes"]["url.path"] == "/orders/1"
    assert segment["attributes"]["http.request.method"] == "GET"
    assert segment["attributes"]["http.request.header.host"] == "h"
    assert segment["attributes"]["http.response.status_code"] == 404
    assert segment["attributes"]["sentry.environment"] == "staging"
    assert segment["attributes"]["service.name"] == "orders"
    assert "http.target" not in segment["attributes"]
    assert "net.peer.ip" not in segment["attributes"]
    assert segment["attributes"]["http.flavor"] == "1.1"
    assert (child["name"], child["status"], child["end_timestamp"]) == ("SELECT *", "ok", 11.0)
    assert child["attributes"]["rows"] == [1, 2]
    assert child["attributes"]["service.name"] == "orders"
    assert child["attributes"]["sentry.segment.id"] == "b" * 16


def test_the_url_is_left_out_unless_allowed() -> None:
    request = {"method": "GET", "url": "http://shop.test/orders/1", "query_string": "x=1"}
    [_, segment] = span_items(_transaction(), RequestFacts(request=request, with_url=False))
    assert not {"url.full", "url.path", "http.query"} & set(segment["attributes"])


def test_request_wide_attributes_follow_what_was_collected() -> None:
    collected = {"headers": {"User-Agent": "tests/1.0"}, "env": {"REMOTE_ADDR": "10.0.0.1"}}
    assert request_scope_attributes(RequestFacts(request=collected, is_localhost=False)) == {
        "sentry.is_localhost": False,
        "user_agent.original": "tests/1.0",
        "user.ip_address": "10.0.0.1",
    }
    filtered = {"headers": {"User-Agent": "[Filtered]"}}
    assert request_scope_attributes(RequestFacts(request=filtered)) == {}


def test_without_ignored_reparents_to_the_nearest_kept_ancestor() -> None:
    def item(span_id: str, parent: Optional[str], name: str, segment: bool = False) -> dict[str, Any]:
        return {
            "span_id": span_id,
            "parent_span_id": parent,
            "name": name,
            "is_segment": segment,
            "attributes": {},
        }

    items = [
        item("3", "2", "leaf"),
        item("2", "1", "noise"),
        item("4", "2", "noise"),
        item("1", None, "root", True),
    ]
    kept, dropped = without_ignored(items, lambda name, attributes: name == "noise")
    assert dropped == 2
    assert [(span["span_id"], span["parent_span_id"]) for span in kept] == [("3", "1"), ("1", None)]
    kept, dropped = without_ignored(items, lambda name, attributes: name == "root")
    assert (kept, dropped) == ([], 4)


def test_keep_allowed_changes_takes_name_and_attributes_only() -> None:
    span = {"name": "a", "span_id": "1", "attributes": {"k": 1}}
    assert keep_allowed_changes(span, {"name": "b", "span_id": "2", "attributes": {"n": (1, 2)}}, list)
    assert span == {"name": "b", "span_id": "1", "attributes": {"n": [1, 2]}}
    assert not keep_allowed_changes(span, None, list)
    assert not keep_allowed_changes(span, {"attributes": {}}, list)
    assert span["name"] == "b"


@pytest.mark.parametrize(
    ("client_ip", "url_host", "host", "forwarded", "expected"),
    [
        ("127.0.0.1", None, None, None, True),
        ("[::1]", None, None, None, True),
        ("10.1.1.1", "app.localhost", None, None, True),
        (None, None, "localhost:8000", None, True),
        (None, None, "[::1]:8000", None, True),
        (None, None, "shop.test", "localhost", True),
        ("10.1.1.1", "shop.test", "shop.test:80", None, False),
        (None, None, "notlocalhost", None, False),
    ],
)
def test_is_localhost_follows_relays_rule(
    client_ip: Optional[str],
    url_host: Optional[str],
    host: Optional[str],
    forwarded: Optional[str],
    expected: bool,
) -> None:
    assert is_localhost(client_ip, url_host, host, forwarded) is expected
