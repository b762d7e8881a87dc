"""The zero-code path in-process: ``TraceAssembler`` alone, and ``SentrySpanExporter`` behind a processor."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from otel_bridge import SentrySpanExporter
from otel_bridge._collect.assembly import TraceAssembler
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid

# Built at run time, so that the source lines sent as frame context cannot contain them.
SECRET_TOKEN = "-".join(("very", "secret", "4711"))
SECRET_PASSWORD = "".join(("hunter", "42"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def spans() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("tests"), exporter
    provider.shutdown()


def _trace_with_children(tracer: trace.Tracer, name: str, children: int) -> None:
    with tracer.start_as_current_span(name):
        for index in range(children):
            with tracer.start_as_current_span(f"{name} child {index}"):
                pass


def test_children_in_earlier_batches_join_their_root(
    spans: tuple[trace.Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = spans
    _trace_with_children(tracer, "job", 3)
    *children, root = exporter.get_finished_spans()
    assembler = TraceAssembler()
    assert assembler.add(children[:2]).finished == []
    assert assembler.add(children[2:]).finished == []
    [done] = assembler.add([root]).finished
    assert done.root is root
    assert [span.name for span in done.children] == ["job child 0", "job child 1", "job child 2"]
    assert assembler.pending_spans == 0


def test_two_local_roots_of_one_remote_trace_take_only_their_own_spans(
    spans: tuple[trace.Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = spans
    remote = SpanContext(0xFEED, 0xBEEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent = trace.set_span_in_context(NonRecordingSpan(remote))
    for name in ("first", "second"):
        with (
            tracer.start_as_current_span(name, context=parent),
            tracer.start_as_current_span(f"{name} child"),
        ):
            pass
    first_child, first, second_child, second = exporter.get_finished_spans()
    assembler = TraceAssembler()
    result = assembler.add([first_child, second_child, second, first])
    by_root = {done.root.name: [child.name for child in done.children] for done in result.finished}
    assert by_root == {"first": ["first child"], "second": ["second child"]}


def test_spans_whose_root_never_comes_are_dropped_after_the_timeout(
    spans: tuple[trace.Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = spans
    _trace_with_children(tracer, "lost", 2)
    *children, _root = exporter.get_finished_spans()
    clock = Clock()
    assembler = TraceAssembler(root_timeout_seconds=10, clock=clock)
    assert assembler.add(children).dropped_spans == 0
    clock.now = 11
    assert assembler.add([]).dropped_spans == 2
    assert assembler.pending_spans == 0


def test_waiting_spans_are_bounded(spans: tuple[trace.Tracer, InMemorySpanExporter]) -> None:
    tracer, exporter = spans
    _trace_with_children(tracer, "wide", 6)
    *children, root = exporter.get_finished_spans()
    per_trace = TraceAssembler(max_spans_per_trace=4)
    assert per_trace.add(children).dropped_spans == 2
    [done] = per_trace.add([root]).finished
    assert len(done.children) == 4
    overall = TraceAssembler(max_pending_spans=3)
    assert overall.add(children).dropped_spans == 3


def _server_request(tracer: trace.Tracer) -> None:
    attributes = {
        "http.method": "GET",
        "http.scheme": "http",
        "http.host": "shop.test",
        "http.target": f"/items/3?password={SECRET_PASSWORD}",
        "http.route": "/items/{item_id}",
        "http.status_code": 500,
        "http.request.header.authorization": (f"Bearer {SECRET_TOKEN}",),
    }
    with tracer.start_as_current_span("GET /items/{item_id}", kind=SpanKind.SERVER, attributes=attributes):
        try:
            with tracer.start_as_current_span("load item"):
                raise LookupError("item 3 is gone")
        except LookupError:
            pass


def test_the_exporter_sends_transactions_and_errors_from_span_data_alone(
    receiver: EnvelopeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY_DSN", receiver.dsn)
    provider = TracerProvider()
    exporter = SentrySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    tracer = provider.get_tracer("tests")
    _server_request(tracer)
    provider.force_flush()
    [transaction] = receiver.wait_for_transactions(1)
    [error] = receiver.wait_for_events(1)
    provider.shutdown()

    assert_relay_valid(transaction)
    assert_relay_valid(error)
    assert transaction["transaction"] == "/items/{item_id}"
    assert transaction["transaction_info"]["source"] == "route"
    assert transaction["contexts"]["trace"]["status"] == "internal_error"
    assert [span["description"] for span in transaction["spans"]] == ["load item"]
    request = transaction["request"]
    assert request["method"] == "GET"
    assert request["url"] == "http://shop.test/items/3"
    assert request["headers"]["Authorization"] == "[Filtered]"
    assert error["exception"]["values"][-1]["type"] == "LookupError"
    assert error["exception"]["values"][-1]["mechanism"]["handled"] is True
    assert error["contexts"]["trace"]["trace_id"] == transaction["contexts"]["trace"]["trace_id"]
    assert error["request"]["url"] == "http://shop.test/items/3"
    raw = b"".join(request.raw_body for request in receiver.requests)
    assert SECRET_TOKEN.encode() not in raw
    assert SECRET_PASSWORD.encode() not in raw


def test_the_exporter_without_a_dsn_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENTRY_DSN", raising=False)
    exporter = SentrySpanExporter()
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    _trace_with_children(provider.get_tracer("t"), "job", 1)
    finished: list[ReadableSpan] = list(memory.get_finished_spans())
    assert exporter.export(finished).name == "SUCCESS"
    exporter.shutdown()
