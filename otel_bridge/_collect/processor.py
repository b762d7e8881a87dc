"""``SentrySpanProcessor``: notes spans under their local root and hands each finished trace to the worker.

On the request path it costs a dictionary lookup and a list append per span; everything else happens on
the worker thread. Memory is bounded by ``max_open_traces``, ``max_spans_per_trace`` and the worker's
queue; a root that never ends is evicted after ``root_timeout_seconds``. Drops are counted.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional

import sentry_sdk
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from sentry_sdk.scope import Scope

from otel_bridge._collect.client_hooks import hook_client
from otel_bridge._collect.live_errors import build_errors_on, stop_building_on
from otel_bridge._collect.reported import link_recorded_exceptions
from otel_bridge._collect.request_state import RequestContext, current_request
from otel_bridge._convert.events import FinishedTrace
from otel_bridge._deliver import flush_hooks
from otel_bridge._deliver.capture import flush_client, send_trace
from otel_bridge._deliver.trace_worker import TraceWorker
from otel_bridge._drops import DropCounter
from otel_bridge._tracing.sampler_context import parent_sampled, sampling_context
from otel_bridge._tracing.sampling import Decision, deciding, sample_with, traces_sampler
from otel_bridge.propagation import get_dynamic_sampling_context

logger = logging.getLogger("otel_bridge")
_warned_without_client = threading.Event()


def warn_without_client(component: str) -> None:
    """Said once per process, at the first finished trace that finds no active sentry-sdk client: the
    client may well be initialised after the processor or exporter was made."""
    if not _warned_without_client.is_set():
        _warned_without_client.set()
        logger.warning(
            "otel_bridge: %s got a finished trace but no sentry-sdk client is active, so nothing is sent to "
            "Sentry; call otel_bridge.init() (or sentry_sdk.init(dsn=...)) at start-up",
            component,
        )


class _OpenTrace:
    __slots__ = (
        "children",
        "current",
        "decision",
        "dropped",
        "incoming_dsc",
        "isolation",
        "members",
        "request",
        "root_ended",
        "root_id",
        "started",
    )

    def __init__(
        self,
        root_id: int,
        isolation: Scope,
        current: Scope,
        request: Optional[RequestContext],
        incoming_dsc: Optional[dict[str, str]],
        decision: Optional[Decision],
    ) -> None:
        self.root_id = root_id
        self.decision = decision
        self.incoming_dsc = incoming_dsc
        self.isolation = isolation
        self.current = current
        self.request = request
        self.members: list[int] = [root_id]
        self.children: list[ReadableSpan] = []
        self.dropped = 0
        self.started = time.monotonic()
        self.root_ended = False


class SentrySpanProcessor(SpanProcessor):
    """Add to any ``TracerProvider``: every local root span with its children becomes a Sentry transaction."""

    def __init__(
        self,
        *,
        max_spans_per_trace: int = 1000,
        max_open_traces: int = 10_000,
        max_queued_traces: int = 1000,
        root_timeout_seconds: float = 300.0,
    ) -> None:
        self._max_spans = max_spans_per_trace
        self._max_open = max_open_traces
        self._root_timeout = root_timeout_seconds
        self._owner: dict[int, _OpenTrace] = {}
        self._open: dict[int, _OpenTrace] = {}
        self.drops = DropCounter()
        self._worker = TraceWorker(max_queued_traces, self.drops, tick=self._evict_stale_roots)
        self._worker.start()
        build_errors_on(self._worker.run_soon)
        # sentry_sdk.flush() and Client.close() wait for this processor's queue too
        flush_hooks.register(self)
        hook_client(sentry_sdk.get_client())
        # exceptions recorded on spans stay linked to their objects, so that one reported live is not sent
        # again from its spans, and another with the same type and message is
        link_recorded_exceptions()

    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        context = span.get_span_context()
        if context is None or not context.trace_flags.sampled:
            return
        parent = span.parent
        if parent is None or parent.is_remote:
            if len(self._open) >= self._max_open:
                self.drops.count("buffer_overflow", "transaction")
                return
            request = current_request.get()
            incoming = get_dynamic_sampling_context(parent_context) if parent is not None else None
            sampler = traces_sampler()
            decision = None
            if sampler is not None:
                decision = sample_with(
                    sampler,
                    context.trace_id,
                    incoming,
                    sampling_context(span, parent, parent_sampled(parent, incoming), request),
                )
            trace = _OpenTrace(
                context.span_id,
                sentry_sdk.get_isolation_scope(),
                sentry_sdk.get_current_scope(),
                request,
                incoming,
                decision,
            )
            self._open[context.span_id] = trace
            self._owner[context.span_id] = trace
            return
        owner = self._owner.get(parent.span_id)
        if owner is None:
            return
        if len(owner.members) > self._max_spans:
            owner.dropped += 1
            return
        self._owner[context.span_id] = owner
        owner.members.append(context.span_id)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.get_span_context()
        if context is None:
            return
        owner = self._owner.get(context.span_id)
        if owner is None:
            return
        if owner.root_id != context.span_id:
            owner.children.append(span)
            return
        owner.root_ended = True
        request = owner.request
        if request is None:
            self._hand_off(owner, span)
            return
        # Spans that end after the root but within the request (a framework's own middleware spans, which
        # end after the server span's final body) still belong to the transaction.
        request.hand_off_when_done(lambda: self._hand_off(owner, span))

    def _hand_off(self, owner: _OpenTrace, root: ReadableSpan) -> None:
        self._forget(owner)
        request = owner.request
        finished = FinishedTrace(
            root=root,
            children=owner.children,
            asgi_scope=request.asgi_scope if request is not None else None,
            transaction_style=request.transaction_style if request is not None else None,
            route=request.current_route() if request is not None else None,
            dropped_spans=owner.dropped,
            incoming_dsc=owner.incoming_dsc or None,
        )
        isolation, current = owner.isolation, owner.current
        client = sentry_sdk.get_client()
        if not client.is_active():
            warn_without_client("SentrySpanProcessor")
        # a client initialised after this processor was made waits for it too (a no-op once it does)
        hook_client(client)
        root_context = root.get_span_context()
        trace_id = root_context.trace_id if root_context is not None else 0
        decision = owner.decision

        def send() -> None:
            with deciding(trace_id, decision):
                send_trace(finished, isolation, current)

        self._worker.submit(send)

    def _forget(self, trace: _OpenTrace) -> None:
        self._open.pop(trace.root_id, None)
        for span_id in trace.members:
            self._owner.pop(span_id, None)

    def _evict_stale_roots(self) -> None:
        deadline = time.monotonic() - self._root_timeout
        stale = [
            trace for trace in list(self._open.values()) if trace.started < deadline and not trace.root_ended
        ]
        for trace in stale:
            self._forget(trace)
            self.drops.count("insufficient_data", "transaction")
            if trace.children:
                self.drops.count("insufficient_data", "span", len(trace.children))

    def open_trace_count(self) -> int:
        return len(self._open)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """``True`` only when every trace finished before the call was converted and its envelopes were
        sent (or dropped and counted) within the timeout; ``False`` when time ran out."""
        deadline = time.monotonic() + timeout_millis / 1000
        converted = self.drain(timeout_millis / 1000)
        with flush_hooks.flushing_client():
            return converted and flush_client(max(0.0, deadline - time.monotonic()))

    def drain(self, timeout: float) -> bool:
        """Hand every trace finished so far to sentry-sdk's client (not yet its transport); ``False`` when
        ``timeout`` ran out first. On the worker's own thread (a ``before_send`` that flushes) there is
        nothing to wait for."""
        if self._worker.on_own_thread():
            return True
        return self._worker.flush(timeout)

    def shutdown(self) -> None:
        flush_hooks.unregister(self)
        stop_building_on(self._worker.run_soon)
        self._worker.stop(timeout=2.0)
        with flush_hooks.flushing_client():
            flush_client(2.0)
