"""A loopback OTLP/HTTP trace receiver: what another OpenTelemetry backend (a collector, Jaeger, Tempo) gets.

It accepts ``POST /v1/traces`` with ``application/x-protobuf`` bodies (gzip or not), answers with an empty
``ExportTraceServiceResponse`` and keeps every span as a plain dict::

    {"trace_id": "<32 hex>", "span_id": "<16 hex>", "parent_span_id": "<16 hex>" or None,
     "name": ..., "kind": "SERVER", "attributes": {...}, "events": [{"name", "attributes", "time_unix_nano"}],
     "status": {"code": "ERROR", "message": ...}, "start_time_unix_nano": ..., "end_time_unix_nano": ...,
     "resource": {...}, "scope": "opentelemetry.instrumentation.asgi"}
"""

from __future__ import annotations

import copy
import gzip
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.loopback import LoopbackServer

SpanDict = dict[str, Any]
SpanPredicate = Callable[[list[SpanDict]], bool]

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"


def any_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as the Python value the SDK was given (arrays become tuples, as in the SDK)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(any_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_of(pairs: Any) -> dict[str, Any]:
    return {pair.key: any_value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def _hex(raw: bytes) -> Optional[str]:
    return raw.hex() if raw else None


def _kind(kind: int) -> str:
    return str(Span.SpanKind.Name(kind)).removeprefix("SPAN_KIND_")


def _status_code(code: int) -> str:
    return str(Status.StatusCode.Name(code)).removeprefix("STATUS_CODE_")


def spans_of(request: ExportTraceServiceRequest) -> list[SpanDict]:
    found: list[SpanDict] = []
    for resource_spans in request.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    {
                        "trace_id": _hex(span.trace_id),
                        "span_id": _hex(span.span_id),
                        "parent_span_id": _hex(span.parent_span_id),
                        "name": span.name,
                        "kind": _kind(span.kind),
                        "attributes": attributes_of(span.attributes),
                        "events": [
                            {
                                "name": event.name,
                                "attributes": attributes_of(event.attributes),
                                "time_unix_nano": event.time_unix_nano,
                            }
                            for event in span.events
                        ],
                        "status": {"code": _status_code(span.status.code), "message": span.status.message},
                        "start_time_unix_nano": span.start_time_unix_nano,
                        "end_time_unix_nano": span.end_time_unix_nano,
                        "resource": dict(resource),
                        "scope": scope_spans.scope.name,
                    }
                )
    return found


def _decode(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding in ("", "identity"):
        return body
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?", 1)[0] != TRACES_PATH:
            self._answer(404, b"unknown path", "text/plain")
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != PROTOBUF:
            self._answer(415, b"only application/x-protobuf", "text/plain")
            return
        try:
            request = ExportTraceServiceRequest.FromString(
                _decode(body, self.headers.get("Content-Encoding", ""))
            )
        except Exception as exc:
            self.server.receiver._record_error(f"{type(exc).__name__}: {exc}")
            self._answer(400, str(exc).encode(), "text/plain")
            return
        self.server.receiver._record(spans_of(request))
        self._answer(200, ExportTraceServiceResponse().SerializeToString(), PROTOBUF)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class OtlpReceiver(LoopbackServer):
    """An OTLP/HTTP endpoint on 127.0.0.1 that keeps every span it was sent, in arrival order."""

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition()
        self._spans: list[SpanDict] = []
        self._errors: list[str] = []

    def _make_server(self) -> _Server:
        return _Server(self)

    @property
    def endpoint(self) -> str:
        """For ``OTEL_EXPORTER_OTLP_ENDPOINT``: the exporter appends ``/v1/traces`` itself."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_endpoint(self) -> str:
        """For ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, which is used as given."""
        return f"{self.endpoint}{TRACES_PATH}"

    def _record(self, spans: list[SpanDict]) -> None:
        with self._cond:
            self._spans.extend(spans)
            self._cond.notify_all()

    def _record_error(self, text: str) -> None:
        with self._cond:
            self._errors.append(text)

    @property
    def spans(self) -> list[SpanDict]:
        with self._cond:
            return copy.deepcopy(self._spans)

    @property
    def errors(self) -> list[str]:
        with self._cond:
            return list(self._errors)

    def trace_ids(self) -> set[str]:
        return {span["trace_id"] for span in self.spans}

    def spans_of_trace(self, trace_id: str) -> list[SpanDict]:
        return [span for span in self.spans if span["trace_id"] == trace_id]

    def clear(self) -> None:
        with self._cond:
            self._spans.clear()
            self._errors.clear()

    def wait_for_spans(
        self, predicate_or_count: Union[int, SpanPredicate], timeout: float = 10.0
    ) -> list[SpanDict]:
        """All spans received, once there are at least ``n`` or ``predicate(spans)`` holds."""
        predicate: SpanPredicate
        if isinstance(predicate_or_count, int):
            count = predicate_or_count
            predicate = lambda spans: len(spans) >= count  # noqa: E731
        else:
            predicate = predicate_or_count
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._spans), timeout=timeout):
                names = [(span["kind"], span["name"]) for span in self._spans]
                raise AssertionError(
                    f"OTLP receiver: condition not met within {timeout}s; {len(names)} span(s): {names}; "
                    f"errors: {self._errors}"
                )
            return copy.deepcopy(self._spans)


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    """A started loopback OTLP/HTTP receiver (import this fixture into a test module to use it)."""
    with OtlpReceiver() as started:
        yield started
