"""``SentrySpanProcessor`` on a private ``TracerProvider``: grouping, bounds, eviction, flushing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import sentry_sdk
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from otel_bridge import SentrySpanProcessor
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid


@pytest.fixture
def sentry(receiver: EnvelopeReceiver) -> Iterator[EnvelopeReceiver]:
    sentry_sdk.init(dsn=receiver.dsn, instrumenter="otel")
    yield receiver


def make_provider(**options: float) -> tuple[TracerProvider, SentrySpanProcessor]:
    provider = TracerProvider()
    processor = SentrySpanProcessor(**options)  # type: ignore[arg-type]
    provider.add_span_processor(processor)
    return provider, processor


def test_children_from_other_threads_join_their_local_root(sentry: EnvelopeReceiver) -> None:
    provider, processor = make_provider()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("job") as root:
        ctx = context.get_current()

        def work() -> None:
            token = context.attach(ctx)
            with tracer.start_as_current_span("in thread"), tracer.start_as_current_span("nested"):
                pass
            context.detach(token)

        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
    with tracer.start_as_current_span("other job"):
        pass
    assert processor.force_flush(5000)
    transactions = sentry.wait_for_transactions(2)
    by_name = {transaction["transaction"]: transaction for transaction in transactions}
    job = by_name["job"]
    assert_relay_valid(job)
    assert sorted(span["description"] for span in job["spans"]) == ["in thread", "nested"]
    assert by_name["other job"]["spans"] == []
    assert job["contexts"]["trace"]["span_id"] == format(root.get_span_context().span_id, "016x")
    assert processor.open_trace_count() == 0


def test_two_local_roots_of_one_remote_trace_stay_apart(sentry: EnvelopeReceiver) -> None:
    provider, processor = make_provider()
    tracer = provider.get_tracer("t")
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent = trace.set_span_in_context(NonRecordingSpan(remote))
    first = tracer.start_span("first request", context=parent, kind=SpanKind.SERVER)
    second = tracer.start_span("second request", context=parent, kind=SpanKind.SERVER)
    with tracer.start_as_current_span("first child", context=trace.set_span_in_context(first)):
        pass
    with tracer.start_as_current_span("second child", context=trace.set_span_in_context(second)):
        pass
    second.end()
    first.end()
    processor.force_flush(5000)
    by_name = {tx["transaction"]: tx for tx in sentry.wait_for_transactions(2)}
    assert [span["description"] for span in by_name["first request"]["spans"]] == ["first child"]
    assert [span["description"] for span in by_name["second request"]["spans"]] == ["second child"]
    for transaction in by_name.values():
        assert transaction["contexts"]["trace"]["parent_span_id"] == format(0xDEF, "016x")


def test_spans_beyond_the_per_trace_bound_are_dropped_and_reported(sentry: EnvelopeReceiver) -> None:
    provider, processor = make_provider(max_spans_per_trace=5)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("big job"):
        for index in range(12):
            with tracer.start_as_current_span(f"step {index}"):
                pass
    processor.force_flush(5000)
    [transaction] = sentry.wait_for_transactions(1)
    assert len(transaction["spans"]) == 5
    assert_relay_valid(transaction)
    sentry_sdk.flush(2)
    sentry_sdk.get_client().close(timeout=2)
    reports = sentry.client_reports()
    discarded = [entry for report in reports for entry in report.get("discarded_events", [])]
    assert {"reason": "buffer_overflow", "category": "span", "quantity": 7} in discarded


def test_open_traces_are_bounded_and_drops_counted(sentry: EnvelopeReceiver) -> None:
    provider, processor = make_provider(max_open_traces=2)
    tracer = provider.get_tracer("t")
    spans = [tracer.start_span(f"open {index}") for index in range(3)]
    assert processor.open_trace_count() == 2
    assert processor.drops.totals() == {("buffer_overflow", "transaction"): 1}
    for span in spans:
        span.end()
    processor.force_flush(5000)
    assert {tx["transaction"] for tx in sentry.wait_for_transactions(2)} == {"open 0", "open 1"}


def test_a_root_that_never_ends_is_evicted_after_the_timeout(sentry: EnvelopeReceiver) -> None:
    provider, processor = make_provider(root_timeout_seconds=0.2)
    tracer = provider.get_tracer("t")
    forgotten = tracer.start_span("never ends")
    with tracer.start_as_current_span("child", context=trace.set_span_in_context(forgotten)):
        pass
    deadline = time.monotonic() + 5
    while processor.open_trace_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processor.open_trace_count() == 0
    assert processor.drops.totals()[("insufficient_data", "transaction")] == 1
    forgotten.end()
    processor.force_flush(2000)
    assert sentry.transactions() == []


def test_unsampled_spans_are_not_sent(sentry: EnvelopeReceiver) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    provider = TracerProvider(sampler=ALWAYS_OFF)
    processor = SentrySpanProcessor()
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("dropped by sampler"):
        pass
    processor.force_flush(2000)
    assert processor.open_trace_count() == 0
    assert sentry.transactions() == []


def test_shutting_down_twice_sends_once_and_does_not_wait(sentry: EnvelopeReceiver) -> None:
    provider, processor = make_provider()
    with provider.get_tracer("t").start_as_current_span("job"):
        pass
    processor.shutdown()
    started = time.monotonic()
    provider.shutdown()  # shuts the processor down a second time
    processor.force_flush(1000)
    assert time.monotonic() - started < 0.5
    [transaction] = sentry.wait_for_transactions(1)
    assert transaction["transaction"] == "job"
