"""Hand a finished trace to sentry-sdk's client, inside the scopes of the request it came from."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Optional, cast

import sentry_sdk
from sentry_sdk.scope import Scope, use_isolation_scope, use_scope

from otel_bridge._collect.reported import LIVE
from otel_bridge._compat import holds
from otel_bridge._compat.sentry_event import EVENT_DROPPED_SPANS
from otel_bridge._compat.sentry_scope import custom_name_of
from otel_bridge._convert.event_filters import has_ignored_status, is_ignored_error
from otel_bridge._convert.events import FinishedTrace, to_events, transaction_name
from otel_bridge._convert.options import convert_options
from otel_bridge._deliver.stream_capture import span_stream
from otel_bridge._tracing import dsc
from otel_bridge._tracing.sampling import decide

if TYPE_CHECKING:
    from sentry_sdk._types import Event


def send_trace(
    trace: FinishedTrace,
    isolation: Optional[Scope],
    current: Optional[Scope],
) -> None:
    """The trace's transaction and one error event per exception its spans recorded, inside its scopes."""
    client = sentry_sdk.get_client()
    if not client.is_active():
        return
    options = convert_options(client)
    stream = span_stream(client)
    trace_id = _trace_id(trace)
    # the trace's DSC is decided here, before conversion: the caller's, else the one frozen at its first
    # use (an outgoing request, an error sent live), else a new one from the same builder
    adopted = dsc.adopted(trace_id, trace.incoming_dsc)
    decision = decide(trace_id, adopted)
    trace = replace(trace, custom_name=custom_name_of(current, isolation))
    name, source = transaction_name(trace)
    root_context = trace.root.get_span_context()
    decided = dsc.decided(
        client,
        trace_id,
        adopted,
        decision,
        transaction=name,
        source=source,
        resource=dsc.resource_of(trace.root),
        trace_sampled=root_context is None or root_context.trace_flags.sampled,
    )
    trace = replace(trace, dsc=decided)
    dropped_by = None if decision.sampled else "sample_rate"
    # sentry-sdk ignores trace_ignore_status_codes when it streams spans
    if (
        dropped_by is None
        and stream is None
        and has_ignored_status(
            trace.root.attributes or {}, client.options.get("trace_ignore_status_codes") or ()
        )
    ):
        dropped_by = "event_processor"
    if trace.dropped_spans and dropped_by is None and not holds(EVENT_DROPPED_SPANS):
        # sentry-sdk no longer reads the event's ``_dropped_spans``: say it to the transport ourselves
        if client.transport is not None:
            client.transport.record_lost_event(
                "buffer_overflow", data_category="span", quantity=trace.dropped_spans
            )
        trace = replace(trace, dropped_spans=0)
    # exceptions sent live (by the middleware, a framework hook, sentry-sdk) are not sent again
    events = to_events(trace, options, LIVE, with_transaction=dropped_by is None)
    ignored = client.options.get("ignore_errors") or ()
    if ignored:
        events = [event for event in events if not is_ignored_error(event, ignored)]
    if dropped_by is not None and stream is not None:
        stream.record_unsampled(trace)
    elif dropped_by is not None and client.transport is not None:
        client.transport.record_lost_event(dropped_by, data_category="transaction")
        client.transport.record_lost_event(dropped_by, data_category="span", quantity=len(trace.children) + 1)
    with _scopes_of(isolation, current):
        spans = None
        if stream is not None and events and events[0].get("type") == "transaction":
            spans = stream.prepare(events.pop(0), trace, options)
        for event in events:
            sentry_sdk.capture_event(cast("Event", event))
        if spans is not None and stream is not None:
            # errors first, as sentry-sdk sends them while the spans are still open
            stream.send(spans)


def _trace_id(trace: FinishedTrace) -> int:
    context = trace.root.get_span_context()
    return context.trace_id if context is not None else 0


@contextmanager
def _scopes_of(isolation: Optional[Scope], current: Optional[Scope]) -> Iterator[None]:
    if isolation is None:
        with sentry_sdk.new_scope():
            yield
        return
    with use_isolation_scope(isolation):
        if current is not None and current is not isolation:
            with use_scope(current):
                yield
        else:
            yield


def pending_envelopes(client: Any) -> Optional[int]:
    """Envelopes the client's transport still holds (queued, in flight or waiting to be tried again);
    ``None`` for a transport that cannot tell (only ``ConcurrentHttpTransport`` can)."""
    pending = getattr(client.transport, "pending", None)
    return pending() if callable(pending) else None


def flush_client(timeout: float) -> bool:
    """sentry-sdk's ``Client.flush``, and whether it really emptied the transport; a transport that cannot
    tell is taken at its word."""
    client = sentry_sdk.get_client()
    if not client.is_active():
        return True
    client.flush(timeout=timeout)
    return not pending_envelopes(client)
