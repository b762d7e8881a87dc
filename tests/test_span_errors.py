"""Exceptions recorded on spans become Sentry error events: one per exception, at the innermost span."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer

from otel_bridge._collect.request_state import exception_key
from otel_bridge._convert.events import ConvertOptions, FinishedTrace, to_error_events
from tests.relay import assert_relay_valid

OPTIONS = ConvertOptions(denylist=("password", "token"), public_key="abc")


class OutOfStock(Exception):
    pass


@pytest.fixture
def recorded() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("tests"), exporter
    provider.shutdown()


def finished(exporter: InMemorySpanExporter) -> FinishedTrace:
    spans = list(exporter.get_finished_spans())
    root = next(span for span in spans if span.parent is None)
    return FinishedTrace(root=root, children=[span for span in spans if span is not root])


def reserve(sku: str) -> None:
    raise OutOfStock(f"no stock for {sku}")


def test_an_exception_propagating_through_nested_spans_is_one_unhandled_event_at_the_innermost(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = recorded
    with (
        pytest.raises(OutOfStock),
        tracer.start_as_current_span(
            "POST /orders", kind=SpanKind.SERVER, attributes={"http.method": "POST"}
        ),
        tracer.start_as_current_span("place order"),
        tracer.start_as_current_span("reserve stock") as innermost,
    ):
        reserve("sku-1")
    trace = finished(exporter)
    [event] = to_error_events(trace, OPTIONS)
    assert_relay_valid(event)
    [exception] = event["exception"]["values"]
    assert exception["type"] == "OutOfStock"
    assert exception["module"] == __name__
    assert exception["value"] == "no stock for sku-1"
    assert exception["mechanism"] == {"type": "otel", "handled": False}
    last = exception["stacktrace"]["frames"][-1]
    assert last["function"] == "reserve"
    assert "raise OutOfStock" in last["context_line"]
    assert last["in_app"] is True
    assert event["contexts"]["trace"]["span_id"] == format(innermost.get_span_context().span_id, "016x")
    assert event["transaction"] == "POST /orders"


def test_an_exception_recorded_and_swallowed_is_handled(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = recorded
    with (
        tracer.start_as_current_span("GET /stock", kind=SpanKind.SERVER, attributes={"http.method": "GET"}),
        tracer.start_as_current_span("check stock") as span,
    ):
        try:
            reserve("sku-2")
        except OutOfStock as exc:
            span.record_exception(exc)
    [event] = to_error_events(finished(exporter), OPTIONS)
    assert_relay_valid(event)
    assert event["exception"]["values"][-1]["mechanism"] == {"type": "otel", "handled": True}


def test_an_exception_escaping_a_child_but_caught_by_the_app_is_handled(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = recorded
    with tracer.start_as_current_span("GET /stock", kind=SpanKind.SERVER, attributes={"http.method": "GET"}):
        try:
            with tracer.start_as_current_span("check stock"):
                reserve("sku-3")
        except OutOfStock:
            pass
    [event] = to_error_events(finished(exporter), OPTIONS)
    assert event["exception"]["values"][-1]["mechanism"]["handled"] is True


def test_same_message_on_sibling_spans_is_two_events(recorded: tuple[Tracer, InMemorySpanExporter]) -> None:
    tracer, exporter = recorded
    with tracer.start_as_current_span("batch"):
        for attempt in range(2):
            with tracer.start_as_current_span(f"attempt {attempt}") as span:
                try:
                    reserve("sku-4")
                except OutOfStock as exc:
                    span.record_exception(exc)
    assert len(to_error_events(finished(exporter), OPTIONS)) == 2


def test_exceptions_reported_live_are_not_sent_again(recorded: tuple[Tracer, InMemorySpanExporter]) -> None:
    tracer, exporter = recorded
    with pytest.raises(OutOfStock) as caught, tracer.start_as_current_span("job"):
        reserve("sku-5")
    assert to_error_events(finished(exporter), OPTIONS, {exception_key(caught.value)}) == []
    assert len(to_error_events(finished(exporter), OPTIONS)) == 1


def test_chained_exceptions_are_kept_in_sentrys_order(recorded: tuple[Tracer, InMemorySpanExporter]) -> None:
    tracer, exporter = recorded
    with pytest.raises(RuntimeError), tracer.start_as_current_span("job"):
        try:
            reserve("sku-6")
        except OutOfStock as exc:
            raise RuntimeError("order failed") from exc
    [event] = to_error_events(finished(exporter), OPTIONS)
    assert_relay_valid(event)
    assert [value["type"] for value in event["exception"]["values"]] == ["OutOfStock", "RuntimeError"]


def test_odd_exception_attributes_still_make_a_valid_event(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = recorded
    with tracer.start_as_current_span("job") as span:
        span.add_event("exception", {"exception.type": "java.lang.IllegalStateException"})
        span.add_event(
            "exception", {"exception.message": "x" * 10, "exception.stacktrace": "at Foo.bar(Foo.java:1)"}
        )
        span.add_event("exception", {})
    events = to_error_events(finished(exporter), OPTIONS)
    assert len(events) == 3
    for event in events:
        assert_relay_valid(event)
