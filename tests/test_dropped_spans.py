"""Spans a trace dropped (``max_spans_per_trace``) reach Sentry's client reports: through the event key
sentry-sdk's client reads (``_compat.sentry_event``), else through the transport's public
``record_lost_event``."""

from __future__ import annotations

import logging
from typing import Any, Optional

import pytest
import sentry_sdk
import sentry_sdk.client
from opentelemetry.sdk.trace import TracerProvider

from otel_bridge import SentrySpanProcessor, _compat
from otel_bridge._compat.sentry_event import EVENT_DROPPED_SPANS
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid

KEY = "_dropped" + "_spans"


def send_a_trace_with_too_many_spans(receiver: EnvelopeReceiver) -> dict[str, Any]:
    """A root with four children, of which the processor keeps two: two spans are dropped."""
    sentry_sdk.init(dsn=receiver.dsn, instrumenter="otel")
    provider = TracerProvider()
    provider.add_span_processor(SentrySpanProcessor(max_spans_per_trace=2))
    tracer = provider.get_tracer("t")
    try:
        with tracer.start_as_current_span("job"):
            for n in range(4):
                with tracer.start_as_current_span(f"step {n}"):
                    pass
        sentry_sdk.flush(timeout=5)
        [transaction] = receiver.wait_for_transactions(1)
    finally:
        provider.shutdown()
    sentry_sdk.get_client().close(timeout=2)
    return transaction


def lost_spans(receiver: EnvelopeReceiver) -> list[dict[str, Any]]:
    return [
        entry
        for report in receiver.client_reports()
        for entry in report.get("discarded_events", [])
        if entry["category"] == "span"
    ]


def test_sentry_sdk_counts_the_dropped_spans(fresh_reaches: None, receiver: EnvelopeReceiver) -> None:
    assert _compat.holds(EVENT_DROPPED_SPANS)
    transaction = send_a_trace_with_too_many_spans(receiver)
    assert len(transaction["spans"]) == 2
    assert KEY not in transaction
    assert lost_spans(receiver) == [{"reason": "buffer_overflow", "category": "span", "quantity": 2}]


def test_a_sentry_sdk_that_ignores_the_key_gets_the_count_from_the_transport(
    fresh_reaches: None,
    receiver: EnvelopeReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    original = sentry_sdk.client._Client._prepare_event

    def ignores_the_key(self: Any, event: Any, hint: Any, scope: Any) -> Optional[Any]:
        """A sentry-sdk that neither counts the key nor removes it."""
        kept = event.pop(KEY, None)
        prepared = original(self, event, hint, scope)
        if prepared is not None and kept is not None:
            prepared[KEY] = kept
        return prepared

    monkeypatch.setattr(sentry_sdk.client._Client, "_prepare_event", ignores_the_key)
    caplog.set_level(logging.WARNING, logger="otel_bridge")
    transaction = send_a_trace_with_too_many_spans(receiver)

    assert not _compat.holds(EVENT_DROPPED_SPANS)
    warnings = [record for record in caplog.records if EVENT_DROPPED_SPANS in record.getMessage()]
    assert len(warnings) == 1
    assert "record_lost_event" in warnings[0].getMessage()
    assert KEY not in transaction
    assert len(transaction["spans"]) == 2
    assert_relay_valid(transaction)
    assert lost_spans(receiver) == [{"reason": "buffer_overflow", "category": "span", "quantity": 2}]
