"""Hand a finished trace to sentry-sdk's client, inside the scopes of the request it came from."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Optional, cast

import sentry_sdk
from sentry_sdk.scope import Scope, use_isolation_scope, use_scope
from sentry_sdk.scrubber import DEFAULT_DENYLIST, DEFAULT_PII_DENYLIST
from sentry_sdk.utils import Dsn

from otel_bridge._collect.request_state import ExceptionKey, Reported, recent_reports
from otel_bridge._compat.sentry_scope import custom_name_of
from otel_bridge._convert.collection import data_collection_from_options
from otel_bridge._convert.event_filters import has_ignored_status, is_ignored_error
from otel_bridge._convert.events import ConvertOptions, FinishedTrace, to_events
from otel_bridge._deliver.stream_capture import span_stream
from otel_bridge._tracing.sampling import decide, frozen_contexts

if TYPE_CHECKING:
    from sentry_sdk._types import Event

_cached: list[tuple[Any, ConvertOptions]] = []


def convert_options(client: Any) -> ConvertOptions:
    """The client's settings that conversion needs, computed once per client."""
    if _cached and _cached[0][0] is client:
        return _cached[0][1]
    options = client.options
    data_collection = data_collection_from_options(options)
    if data_collection is not None:
        # sentry-sdk then ignores send_default_pii and drops its EventScrubber; our deny-list still applies
        send_default_pii = data_collection.user_info
    else:
        send_default_pii = bool(options.get("send_default_pii"))
    scrubber = options.get("event_scrubber")
    if scrubber is not None:
        denylist = tuple(scrubber.denylist)
    else:
        denylist = tuple(DEFAULT_DENYLIST) + (() if send_default_pii else tuple(DEFAULT_PII_DENYLIST))
    public_key: Optional[str] = None
    if options.get("dsn"):
        public_key = Dsn(options["dsn"]).public_key
    result = ConvertOptions(
        send_default_pii=send_default_pii,
        denylist=tuple(word.lower() for word in denylist),
        data_collection=data_collection,
        environment=options.get("environment"),
        release=options.get("release"),
        server_name=options.get("server_name"),
        public_key=public_key,
        in_app_include=tuple(options.get("in_app_include") or ()),
        in_app_exclude=tuple(options.get("in_app_exclude") or ()),
        project_root=options.get("project_root"),
        include_source_context=options.get("include_source_context") is not False,
        org_id=getattr(getattr(client, "parsed_dsn", None), "org_id", None),
    )
    _cached[:] = [(client, result)]
    return result


def send_trace(
    trace: FinishedTrace,
    isolation: Optional[Scope],
    current: Optional[Scope],
    already_reported: Collection[ExceptionKey] = (),
) -> None:
    """The trace's transaction and one error event per exception its spans recorded, inside its scopes."""
    client = sentry_sdk.get_client()
    if not client.is_active():
        return
    options = convert_options(client)
    stream = span_stream(client)
    trace_id = _trace_id(trace)
    incoming = trace.incoming_dsc or frozen_contexts.get(trace_id)
    decision = decide(trace_id, incoming)
    trace = replace(
        trace,
        incoming_dsc=incoming,
        sampled=decision.sampled,
        sample_rand=decision.sample_rand,
        sample_rate=decision.sample_rate,
        custom_name=custom_name_of(current, isolation),
    )
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
    events = to_events(
        trace, options, Reported(already_reported, recent_reports), with_transaction=dropped_by is None
    )
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
