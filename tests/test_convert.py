"""Spans to Sentry events, with real OTel SDK spans and Relay's normalizer as the judge."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from otel_bridge._convert.events import (
    ConvertOptions,
    FinishedTrace,
    http_status_to_sentry,
    span_description,
    span_op,
    span_status,
    to_transaction,
)
from tests.relay import assert_relay_valid

DENYLIST = ("password", "token", "secret", "api_key", "auth", "cookie", "session")
OPTIONS = ConvertOptions(denylist=DENYLIST, public_key="abc")


class SpanFactory:
    def __init__(self, resource: Resource | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=resource or Resource.create({"service.name": "shop"}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def one(
        self,
        name: str = "span",
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
        status: Status | None = None,
        exception: BaseException | None = None,
        context: Any = None,
    ) -> ReadableSpan:
        with self.tracer.start_as_current_span(
            name, kind=kind, attributes=attributes, context=context, record_exception=False
        ) as span:
            if exception is not None:
                span.record_exception(exception)
            if status is not None:
                span.set_status(status)
        return self.exporter.get_finished_spans()[-1]


@pytest.fixture
def spans() -> Iterator[SpanFactory]:
    factory = SpanFactory()
    yield factory
    factory.provider.shutdown()


@pytest.mark.parametrize(
    ("kind", "attributes", "op"),
    [
        (SpanKind.SERVER, {"http.method": "GET"}, "http.server"),
        (SpanKind.SERVER, {"http.request.method": "GET"}, "http.server"),
        (SpanKind.CLIENT, {"http.request.method": "POST"}, "http.client"),
        (SpanKind.SERVER, {"url.scheme": "ws", "url.path": "/ws"}, "websocket.server"),
        (SpanKind.SERVER, {"http.scheme": "wss", "http.target": "/ws"}, "websocket.server"),
        (SpanKind.CLIENT, {"db.system": "postgresql"}, "db"),
        (SpanKind.CLIENT, {"db.system.name": "sqlite"}, "db"),
        (SpanKind.CLIENT, {"rpc.service": "Greeter"}, "rpc"),
        (SpanKind.PRODUCER, {"messaging.system": "kafka"}, "message"),
        (SpanKind.SERVER, {"faas.trigger": "timer"}, "timer"),
        (SpanKind.SERVER, {"sentry.op": "queue.process", "http.method": "GET"}, "queue.process"),
        (SpanKind.INTERNAL, {}, "default"),
    ],
)
def test_op_follows_the_mapping_rules(
    spans: SpanFactory, kind: SpanKind, attributes: dict[str, Any], op: str
) -> None:
    assert span_op(spans.one(kind=kind, attributes=attributes)) == op


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (200, "ok"),
        (302, "ok"),
        (400, "invalid_argument"),
        (401, "unauthenticated"),
        (403, "permission_denied"),
        (404, "not_found"),
        (409, "already_exists"),
        (413, "failed_precondition"),
        (418, "invalid_argument"),
        (429, "resource_exhausted"),
        (500, "internal_error"),
        (501, "unimplemented"),
        (502, "internal_error"),
        (503, "unavailable"),
        (504, "deadline_exceeded"),
    ],
)
def test_http_status_codes_map_to_sentry_statuses(code: int, status: str) -> None:
    assert http_status_to_sentry(code) == status


def test_status_prefers_the_http_code_of_either_semconv_generation(spans: SpanFactory) -> None:
    old = spans.one(kind=SpanKind.SERVER, attributes={"http.method": "GET", "http.status_code": 404})
    new = spans.one(
        kind=SpanKind.SERVER, attributes={"http.request.method": "GET", "http.response.status_code": 503}
    )
    assert span_status(old) == "not_found"
    assert span_status(new) == "unavailable"


def test_status_without_http_code_comes_from_grpc_then_otel_status(spans: SpanFactory) -> None:
    assert span_status(spans.one(attributes={"rpc.grpc.status_code": 5})) == "not_found"
    assert span_status(spans.one(status=Status(StatusCode.ERROR))) == "internal_error"
    assert span_status(spans.one(status=Status(StatusCode.OK))) == "ok"
    assert span_status(spans.one()) == "ok"


def test_exception_after_a_200_makes_the_status_internal_error(spans: SpanFactory) -> None:
    span = spans.one(
        kind=SpanKind.SERVER,
        attributes={"http.method": "GET", "http.status_code": 200},
        exception=RuntimeError("stream broke"),
        status=Status(StatusCode.ERROR),
    )
    assert span_status(span) == "internal_error"


def test_descriptions(spans: SpanFactory) -> None:
    client = spans.one(
        "GET",
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": "get",
            "url.full": "https://user:pw@api.example/v1/items?token=abc",
        },
    )
    old_client = spans.one(
        "GET", kind=SpanKind.CLIENT, attributes={"http.method": "GET", "http.url": "http://host/path?q=1"}
    )
    db = spans.one(
        "SELECT", kind=SpanKind.CLIENT, attributes={"db.system": "sqlite", "db.statement": "SELECT 1"}
    )
    plain = spans.one("render template")
    assert span_description(client, DENYLIST) == "GET https://api.example/v1/items"
    assert span_description(old_client, DENYLIST) == "GET http://host/path"
    assert span_description(db, DENYLIST) == "SELECT 1"
    assert span_description(plain, DENYLIST) == "render template"


def _server_trace(spans: SpanFactory, attributes: dict[str, Any], children: int = 2) -> FinishedTrace:
    with spans.tracer.start_as_current_span("GET /items/42", kind=SpanKind.SERVER, attributes=attributes):
        for index in range(children):
            with spans.tracer.start_as_current_span(f"child {index}"):
                pass
    finished = spans.exporter.get_finished_spans()
    return FinishedTrace(root=finished[-1], children=list(finished[:-1]))


def test_transaction_named_by_route_with_children(spans: SpanFactory) -> None:
    trace_ = _server_trace(
        spans,
        {
            "http.method": "GET",
            "http.route": "/items/{id}",
            "http.target": "/items/42",
            "http.status_code": 200,
        },
    )
    event = to_transaction(trace_, OPTIONS)
    assert_relay_valid(event)
    assert event["transaction"] == "/items/{id}"
    assert event["transaction_info"]["source"] == "route"
    assert event["contexts"]["trace"]["op"] == "http.server"
    assert event["contexts"]["trace"]["status"] == "ok"
    assert [span["description"] for span in event["spans"]] == ["child 0", "child 1"]
    root_id = event["contexts"]["trace"]["span_id"]
    assert {span["parent_span_id"] for span in event["spans"]} == {root_id}
    assert {span["trace_id"] for span in event["spans"]} == {event["contexts"]["trace"]["trace_id"]}
    assert event["contexts"]["otel"]["resource"]["service.name"] == "shop"
    assert event["contexts"]["response"]["status_code"] == 200


@pytest.mark.parametrize(
    "attributes",
    [
        {"http.method": "GET", "http.target": "/items/42?page=2"},
        {"http.request.method": "GET", "url.path": "/items/42", "url.query": "page=2"},
    ],
)
def test_without_route_the_name_is_the_path_of_either_generation(
    spans: SpanFactory, attributes: dict[str, Any]
) -> None:
    event = to_transaction(_server_trace(spans, attributes, children=0), OPTIONS)
    assert_relay_valid(event)
    assert event["transaction"] == "/items/42"
    assert event["transaction_info"]["source"] == "url"


def test_route_from_the_asgi_scope_wins_over_the_raw_path(spans: SpanFactory) -> None:
    class Route:
        path = "/items/{item_id}"

    def item_view() -> None:
        pass

    base = _server_trace(spans, {"http.method": "GET", "http.target": "/items/42"}, children=0)
    scope = {"type": "http", "path": "/items/42", "route": Route(), "endpoint": item_view, "root_path": ""}
    by_url = FinishedTrace(root=base.root, asgi_scope=scope, transaction_style="url")
    by_endpoint = FinishedTrace(root=base.root, asgi_scope=scope, transaction_style="endpoint")
    assert to_transaction(by_url, OPTIONS)["transaction"] == "/items/{item_id}"
    endpoint_event = to_transaction(by_endpoint, OPTIONS)
    assert endpoint_event["transaction"].endswith("item_view")
    assert endpoint_event["transaction_info"]["source"] == "component"


def test_remote_parent_becomes_parent_span_id(spans: SpanFactory) -> None:
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    context = trace.set_span_in_context(NonRecordingSpan(remote))
    root = spans.one("GET /", kind=SpanKind.SERVER, attributes={"http.method": "GET"}, context=context)
    event = to_transaction(FinishedTrace(root=root), OPTIONS)
    assert_relay_valid(event)
    assert event["contexts"]["trace"]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert event["contexts"]["trace"]["parent_span_id"] == "b7ad6b7169203331"


def test_environment_release_server_name_from_resource_unless_options_say() -> None:
    factory = SpanFactory(
        Resource.create(
            {
                "service.name": "shop",
                "service.version": "1.2.3",
                "deployment.environment.name": "staging",
                "host.name": "web-1",
            }
        )
    )
    root = factory.one("GET /", kind=SpanKind.SERVER, attributes={"http.method": "GET"})
    from_resource = to_transaction(FinishedTrace(root=root), OPTIONS)
    assert (from_resource["environment"], from_resource["release"], from_resource["server_name"]) == (
        "staging",
        "1.2.3",
        "web-1",
    )
    explicit = ConvertOptions(environment="prod", release="9.9", server_name="explicit", denylist=DENYLIST)
    from_options = to_transaction(FinishedTrace(root=root), explicit)
    assert (from_options["environment"], from_options["release"], from_options["server_name"]) == (
        "prod",
        "9.9",
        "explicit",
    )
    assert_relay_valid(from_resource)


def test_dynamic_sampling_context_names_routes_but_never_raw_urls(spans: SpanFactory) -> None:
    routed = to_transaction(
        _server_trace(spans, {"http.method": "GET", "http.route": "/items/{id}"}, children=0), OPTIONS
    )
    raw = to_transaction(
        _server_trace(spans, {"http.method": "GET", "http.target": "/items/42"}, children=0), OPTIONS
    )
    assert routed["contexts"]["trace"]["dynamic_sampling_context"]["transaction"] == "/items/{id}"
    assert "transaction" not in raw["contexts"]["trace"]["dynamic_sampling_context"]
    assert raw["contexts"]["trace"]["dynamic_sampling_context"]["public_key"] == "abc"


def test_request_rebuilt_from_attributes_keeps_secrets_out(spans: SpanFactory) -> None:
    attributes = {
        "http.request.method": "POST",
        "url.scheme": "https",
        "server.address": "shop.example",
        "url.path": "/login",
        "url.query": "next=/home&password=hunter2",
        "client.address": "203.0.113.9",
        "user_agent.original": "curl/8",
        "http.request.header.authorization": ("Bearer sekrit",),
        "http.request.header.x_request_id": ("abc-1",),
        "http.response.status_code": 302,
    }
    event = to_transaction(_server_trace(spans, attributes, children=0), OPTIONS)
    assert_relay_valid(event)
    request = event["request"]
    assert request["method"] == "POST"
    assert request["url"] == "https://shop.example/login"
    assert "hunter2" not in request["query_string"]
    assert request["headers"]["X-Request-Id"] == "abc-1"
    assert request["headers"]["Authorization"] == "[Filtered]"
    assert "env" not in request
    data = event["contexts"]["trace"]["data"]
    assert "client.address" not in data
    assert data["http.request.header.authorization"] == "[Filtered]"
    assert "hunter2" not in repr(event)
    assert "sekrit" not in repr(event)


def test_dropped_spans_are_announced_to_the_client(spans: SpanFactory) -> None:
    base = _server_trace(spans, {"http.method": "GET", "http.target": "/"}, children=1)
    event = to_transaction(FinishedTrace(root=base.root, children=base.children, dropped_spans=7), OPTIONS)
    assert event["_dropped_spans"] == 7
