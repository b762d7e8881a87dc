"""Exceptions recorded on spans become Sentry error events: one per exception, at the innermost span."""

from __future__ import annotations

import json
import pickle
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, SpanKind, Tracer

from otel_bridge._collect import reported
from otel_bridge._collect.reported import LIVE, link_recorded_exceptions, note_reported
from otel_bridge._convert.events import ConvertOptions, FinishedTrace, to_error_events
from tests.relay import assert_relay_valid

OPTIONS = ConvertOptions(denylist=("password", "token"), public_key="abc")


class OutOfStock(Exception):
    pass


@pytest.fixture
def recorded() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    link_recorded_exceptions()
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
    assert len(to_error_events(finished(exporter), OPTIONS, LIVE)) == 1
    assert note_reported(caught.value)
    assert not note_reported(caught.value), "a second report of the same object is a duplicate"
    assert to_error_events(finished(exporter), OPTIONS, LIVE) == []
    assert len(to_error_events(finished(exporter), OPTIONS)) == 1, "conversion alone knows of no live report"


def record_failures(span: Span, count: int, sku: str) -> list[OutOfStock]:
    """``count`` distinct exceptions of one type and message, raised on one line, recorded on ``span``."""
    caught = []
    for _ in range(count):
        try:
            reserve(sku)
        except OutOfStock as exc:
            span.record_exception(exc)
            caught.append(exc)
    return caught


def test_distinct_exceptions_with_the_same_text_on_one_span_are_distinct_events(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = recorded
    with tracer.start_as_current_span("retry") as span:
        first, _second = record_failures(span, 2, "sku-7")
    events = to_error_events(finished(exporter), OPTIONS, LIVE)
    assert [event["exception"]["values"][-1]["value"] for event in events] == ["no stock for sku-7"] * 2
    note_reported(first)
    [left] = to_error_events(finished(exporter), OPTIONS, LIVE)
    assert left["timestamp"] == events[1]["timestamp"], "only the exception reported live is skipped"


def test_one_exception_recorded_on_a_span_and_its_parent_is_one_event(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = recorded
    with tracer.start_as_current_span("job") as outer:
        with tracer.start_as_current_span("step") as inner:
            [failure] = record_failures(inner, 1, "sku-8")
        outer.record_exception(failure)
        [other] = record_failures(outer, 1, "sku-8")
    events = to_error_events(finished(exporter), OPTIONS, LIVE)
    assert [event["contexts"]["trace"]["span_id"] for event in events] == [
        format(inner.get_span_context().span_id, "016x"),
        format(outer.get_span_context().span_id, "016x"),
    ]
    assert other is not failure


def test_span_events_without_a_live_object_are_matched_by_text_and_raise_site(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = recorded
    with pytest.raises(OutOfStock) as caught:
        reserve("sku-9")
    stacktrace = "".join(traceback.format_exception(caught.value))
    text = {"exception.type": f"{__name__}.OutOfStock", "exception.message": "no stock for sku-9"}
    with tracer.start_as_current_span("job"):
        # written by hand, as another library might: no object to link
        with tracer.start_as_current_span("attempt 1") as span:
            span.add_event("exception", {**text, "exception.stacktrace": stacktrace})
        with tracer.start_as_current_span("attempt 2") as span:
            elsewhere = stacktrace.replace(", line ", ", line 1")
            span.add_event("exception", {**text, "exception.stacktrace": elsewhere})
    assert len(to_error_events(finished(exporter), OPTIONS, LIVE)) == 2
    note_reported(caught.value)
    [other_line] = to_error_events(finished(exporter), OPTIONS, LIVE)
    assert other_line["exception"]["values"][-1]["stacktrace"]["frames"][-1]["lineno"] > 100
    reported._recent_texts.clear()


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


@dataclass(frozen=True)
class FrozenFailure(Exception):
    code: int


def test_an_exception_that_refuses_attributes_is_still_told_apart(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = recorded
    first, second = FrozenFailure(7), FrozenFailure(7)
    with tracer.start_as_current_span("job") as span:
        span.record_exception(first)
        span.record_exception(second)
    assert note_reported(first)
    assert not note_reported(first)
    [left] = to_error_events(finished(exporter), OPTIONS, LIVE)
    assert left["exception"]["values"][-1]["type"] == "FrozenFailure"


def test_a_failing_link_never_fails_the_apps_record_exception(
    recorded: tuple[Tracer, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    tracer, exporter = recorded

    def broken(*args: object) -> None:
        raise RuntimeError("bridge bug")

    monkeypatch.setattr(reported, "_by_event", broken)
    with tracer.start_as_current_span("job") as span:
        span.record_exception(OutOfStock("no stock for sku-10"))
    assert len(to_error_events(finished(exporter), OPTIONS)) == 1


def test_what_an_exception_carries_serializes_and_is_not_a_report_in_another_process() -> None:
    failure = OutOfStock("no stock for sku-11")
    assert note_reported(failure)
    json.dumps(vars(failure))  # code that logs or returns an exception's attributes keeps working
    elsewhere = pickle.loads(pickle.dumps(failure))
    assert note_reported(elsewhere), "unpickled in another process, it is that process's first report"
    assert not note_reported(elsewhere)
