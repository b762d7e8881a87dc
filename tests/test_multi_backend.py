"""The bridge in code (``otel_bridge.init()`` + ``SentryAsgiMiddleware``) next to another OTel backend named
in ``OTEL_TRACES_EXPORTER``: both get the same traces, and the other backend gets the spans exactly as
OTel's own ASGI middleware alone makes them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from tests.otlp_receiver import OtlpReceiver, SpanDict
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.servers import RunningServer, run_app

BRIDGE_APP = "tests.apps.shop_otlp:app"
PLAIN_APP = "tests.apps.shop_otlp_plain:app"
SECRET = "multi-backend-secret-4731"
HEADERS = {"X-Request-Id": "req-multi", "Authorization": f"Bearer {SECRET}"}
REQUESTS = {"/items/7?color=red": 200, "/stock/7": 200, "/checkout/5": 500}
PER_RUN_RESOURCE = ("service.instance.id",)
SERVER_PORT_ATTRIBUTES = ("net.host.port", "server.port")
CLIENT_PORT_ATTRIBUTES = ("net.peer.port", "client.port")


@dataclass
class BackendRun:
    port: int
    spans: list[SpanDict]
    transactions: list[dict[str, Any]]
    events: list[dict[str, Any]]
    raw_sentry_bytes: bytes
    downstream_answer: dict[str, Any]

    def server_span(self, path: str) -> SpanDict:
        [found] = [s for s in self.spans if s["kind"] == "SERVER" and s["attributes"]["http.target"] == path]
        return found

    def trace_of(self, span: SpanDict) -> list[SpanDict]:
        return [s for s in self.spans if s["trace_id"] == span["trace_id"]]

    def transaction_for(self, path: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}{path}"
        [found] = [t for t in self.transactions if t["request"]["url"] == url]
        return found


def otlp_environment(otlp: OtlpReceiver, downstream: RunningServer) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp.traces_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_SERVICE_NAME": "multi-backend",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-request-id,authorization",
        "DOWNSTREAM_URL": downstream.url,
    }


def exercise(
    target: str, env: dict[str, str], otlp: OtlpReceiver, sentry: Optional[EnvelopeReceiver]
) -> BackendRun:
    with run_app(target, env=env) as server:
        statuses: dict[str, int] = {}
        answers: dict[str, Any] = {}
        for path in REQUESTS:
            response = httpx.get(f"{server.url}{path}", headers=HEADERS)
            statuses[path] = response.status_code
            if response.status_code == 200:
                answers[path] = response.json()
        assert statuses == REQUESTS, server.output()
        otlp.wait_for_spans(lambda spans: sum(s["kind"] == "SERVER" for s in spans) >= len(REQUESTS))
        if sentry is not None:
            sentry.wait_for_transactions(len(REQUESTS))
            sentry.wait_for_events(1)
        server.stop()
        assert not server.killed, server.output()
    assert otlp.errors == []
    return BackendRun(
        port=server.port,
        spans=otlp.spans,
        transactions=sentry.transactions() if sentry is not None else [],
        events=sentry.events() if sentry is not None else [],
        raw_sentry_bytes=b"".join(r.raw_body for r in sentry.requests) if sentry is not None else b"",
        downstream_answer=answers["/stock/7"]["downstream"],
    )


@pytest.fixture(scope="module")
def downstream() -> Iterator[RunningServer]:
    with run_app("tests.apps.downstream:app") as server:
        yield server


@pytest.fixture(scope="module")
def bridge(downstream: RunningServer) -> Iterator[BackendRun]:
    with EnvelopeReceiver() as sentry, OtlpReceiver() as otlp:
        env = {
            **otlp_environment(otlp, downstream),
            "OTEL_TRACES_EXPORTER": "otlp_proto_http",
            "SENTRY_DSN": sentry.dsn,
        }
        yield exercise(BRIDGE_APP, env, otlp, sentry)


@pytest.fixture(scope="module")
def plain(downstream: RunningServer) -> Iterator[BackendRun]:
    with OtlpReceiver() as otlp:
        yield exercise(PLAIN_APP, otlp_environment(otlp, downstream), otlp, None)


def _normalized_attributes(attributes: dict[str, Any], port: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in SERVER_PORT_ATTRIBUTES and value == port:
            value = "<port>"
        elif key in CLIENT_PORT_ATTRIBUTES and isinstance(value, int):
            value = "<client port>"
        elif isinstance(value, str):
            value = value.replace(f":{port}", ":<port>")
        result[key] = value
    return result


def _normalized_event(event: dict[str, Any]) -> dict[str, Any]:
    return {"name": event["name"], "attributes": event["attributes"]}


def _comparable(span: SpanDict, port: int) -> dict[str, Any]:
    """What an OTLP backend sees of a span, less what differs from run to run (ids, times, ports)."""
    return {
        "name": span["name"],
        "kind": span["kind"],
        "scope": span["scope"],
        "status": span["status"],
        "attributes": _normalized_attributes(span["attributes"], port),
        "events": [_normalized_event(event) for event in span["events"]],
        "resource": {k: v for k, v in span["resource"].items() if k not in PER_RUN_RESOURCE},
    }


def _shape(trace: list[SpanDict]) -> list[tuple[str, str, Optional[str]]]:
    """Each span's kind and name with its parent's name."""
    names = {span["span_id"]: span["name"] for span in trace}
    return sorted((span["kind"], span["name"], names.get(span["parent_span_id"] or "")) for span in trace)


@pytest.mark.parametrize("path", [path.split("?", 1)[0] for path in REQUESTS])
def test_otlp_backend_gets_the_spans_otel_alone_makes(
    path: str, bridge: BackendRun, plain: BackendRun
) -> None:
    ours, theirs = bridge.server_span(path), plain.server_span(path)
    assert _comparable(ours, bridge.port) == _comparable(theirs, plain.port)
    our_trace, their_trace = bridge.trace_of(ours), plain.trace_of(theirs)
    assert _shape(our_trace) == _shape(their_trace)
    our_children = sorted(
        (_comparable(s, bridge.port) for s in our_trace if s is not ours), key=lambda s: s["name"]
    )
    their_children = sorted(
        (_comparable(s, plain.port) for s in their_trace if s is not theirs), key=lambda s: s["name"]
    )
    assert our_children == their_children


def test_both_backends_get_the_same_traces(bridge: BackendRun) -> None:
    for item in [*bridge.transactions, *bridge.events]:
        assert_relay_valid(item)
    otlp_servers = {span["trace_id"]: span for span in bridge.spans if span["kind"] == "SERVER"}
    sentry_traces = {t["contexts"]["trace"]["trace_id"]: t for t in bridge.transactions}
    assert set(sentry_traces) == set(otlp_servers)
    for trace_id, transaction in sentry_traces.items():
        assert transaction["contexts"]["trace"]["span_id"] == otlp_servers[trace_id]["span_id"]
    [error] = bridge.events
    failed = bridge.server_span("/checkout/5")
    assert error["contexts"]["trace"]["trace_id"] == failed["trace_id"]
    assert error["contexts"]["trace"]["span_id"] == failed["span_id"]
    assert failed["attributes"]["http.status_code"] == 500
    assert failed["status"]["code"] == "ERROR"
    assert SECRET.encode() not in bridge.raw_sentry_bytes


def test_downstream_call_is_an_http_client_span_in_both_backends(
    bridge: BackendRun, downstream: RunningServer
) -> None:
    transaction = bridge.transaction_for("/stock/7")
    assert transaction["transaction"] == "/stock/{item_id}"
    trace_id = transaction["contexts"]["trace"]["trace_id"]
    [client] = [span for span in transaction["spans"] if span["op"] == "http.client"]
    assert client["description"] == f"GET http://127.0.0.1:{downstream.port}/warehouse/7"
    assert client["parent_span_id"] == transaction["contexts"]["trace"]["span_id"]
    assert client["trace_id"] == trace_id

    [otlp_client] = [span for span in bridge.spans if span["kind"] == "CLIENT"]
    assert otlp_client["trace_id"] == trace_id
    assert otlp_client["span_id"] == client["span_id"]
    assert otlp_client["parent_span_id"] == client["parent_span_id"]
    assert otlp_client["scope"] == "opentelemetry.instrumentation.httpx"

    traceparent = bridge.downstream_answer["traceparent"]
    assert traceparent is not None
    assert traceparent.split("-")[1] == trace_id
    assert bridge.downstream_answer["query"] == "shelf=north"


def test_otlp_exporter_is_chosen_by_protocol(downstream: RunningServer) -> None:
    with EnvelopeReceiver() as sentry, OtlpReceiver() as otlp:
        env = {
            **otlp_environment(otlp, downstream),
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "SENTRY_DSN": sentry.dsn,
        }
        with run_app(BRIDGE_APP, env=env) as server:
            assert httpx.get(f"{server.url}/items/1").status_code == 200
            [transaction] = sentry.wait_for_transactions(1)
            spans = otlp.wait_for_spans(lambda spans: any(s["kind"] == "SERVER" for s in spans))
    [server_span] = [span for span in spans if span["kind"] == "SERVER"]
    assert server_span["trace_id"] == transaction["contexts"]["trace"]["trace_id"]


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_otlp_receiver_decodes_what_the_otlp_exporter_sends(compression: Compression) -> None:
    attributes: dict[str, AttributeValue] = {
        "text": "a",
        "count": 3,
        "flag": True,
        "ratio": 0.5,
        "names": ("x", "y"),
        "sizes": (1, 2),
    }
    with OtlpReceiver() as otlp:
        provider = TracerProvider(resource=Resource.create({"service.name": "receiver-check"}))
        exporter = OTLPSpanExporter(endpoint=otlp.traces_endpoint, compression=compression)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("receiver-check")
        outer = tracer.start_span("outer", kind=SpanKind.SERVER)
        with trace.use_span(outer, end_on_exit=True), tracer.start_as_current_span("inner") as inner:
            inner.set_attributes(attributes)
            inner.record_exception(ValueError("bad"))
        provider.shutdown()
        spans = {span["name"]: span for span in otlp.wait_for_spans(2)}
    assert spans["inner"]["attributes"] == attributes
    assert spans["inner"]["kind"] == "INTERNAL"
    assert spans["outer"]["kind"] == "SERVER"
    assert spans["outer"]["span_id"] == f"{outer.get_span_context().span_id:016x}"
    assert spans["inner"]["parent_span_id"] == spans["outer"]["span_id"]
    assert spans["outer"]["parent_span_id"] is None
    assert spans["inner"]["trace_id"] == f"{inner.get_span_context().trace_id:032x}"
    assert spans["inner"]["events"][0]["attributes"]["exception.type"] == "ValueError"
    assert spans["outer"]["resource"]["service.name"] == "receiver-check"
    assert spans["outer"]["scope"] == "receiver-check"
