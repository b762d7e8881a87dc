"""Reassemble local traces from spans that arrive in batches, in any order. Pure: the clock is injected."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Callable

from opentelemetry.sdk.trace import ReadableSpan

from otel_bridge._convert.events import FinishedTrace


@dataclass
class _Waiting:
    first_seen: float
    spans: list[ReadableSpan] = field(default_factory=list)


@dataclass
class Assembled:
    finished: list[FinishedTrace]
    dropped_spans: int = 0


def is_local_root(span: ReadableSpan) -> bool:
    return span.parent is None or span.parent.is_remote


def _span_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    return context.span_id if context is not None else 0


def _trace_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    return context.trace_id if context is not None else 0


class TraceAssembler:
    """Children wait (bounded) for their local root; a root takes the waiting spans that descend from it.

    Children normally end, and so are exported, before their root. A span whose root does not arrive within
    ``root_timeout_seconds`` is dropped; so are spans over ``max_pending_spans`` or ``max_spans_per_trace``.
    """

    def __init__(
        self,
        *,
        max_pending_spans: int = 20_000,
        max_spans_per_trace: int = 1000,
        root_timeout_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_pending = max_pending_spans
        self._max_per_trace = max_spans_per_trace
        self._timeout = root_timeout_seconds
        self._clock = clock
        self._waiting: dict[int, _Waiting] = {}
        self._pending = 0

    @property
    def pending_spans(self) -> int:
        return self._pending

    def add(self, spans: Iterable[ReadableSpan]) -> Assembled:
        now = self._clock()
        result = Assembled(finished=[])
        roots: list[ReadableSpan] = []
        for span in spans:
            if is_local_root(span):
                roots.append(span)
                continue
            waiting = self._waiting.get(_trace_id(span))
            if self._pending >= self._max_pending or (
                waiting is not None and len(waiting.spans) >= self._max_per_trace
            ):
                result.dropped_spans += 1
                continue
            if waiting is None:
                waiting = self._waiting[_trace_id(span)] = _Waiting(now)
            waiting.spans.append(span)
            self._pending += 1
        for root in roots:
            result.finished.append(self._take(root))
        result.dropped_spans += self._evict(now)
        return result

    def _take(self, root: ReadableSpan) -> FinishedTrace:
        trace_id = _trace_id(root)
        waiting = self._waiting.get(trace_id)
        if waiting is None:
            return FinishedTrace(root=root)
        by_parent: dict[int, list[ReadableSpan]] = {}
        for span in waiting.spans:
            if span.parent is not None:
                by_parent.setdefault(span.parent.span_id, []).append(span)
        children: list[ReadableSpan] = []
        frontier = [_span_id(root)]
        while frontier:
            for child in by_parent.pop(frontier.pop(), ()):
                children.append(child)
                frontier.append(_span_id(child))
        if children:
            taken = {id(span) for span in children}
            waiting.spans = [span for span in waiting.spans if id(span) not in taken]
            self._pending -= len(children)
        if not waiting.spans:
            del self._waiting[trace_id]
        children.sort(key=lambda span: span.start_time or 0)
        return FinishedTrace(root=root, children=children)

    def _evict(self, now: float) -> int:
        stale = [
            trace_id
            for trace_id, waiting in self._waiting.items()
            if now - waiting.first_seen > self._timeout
        ]
        dropped = 0
        for trace_id in stale:
            dropped += len(self._waiting.pop(trace_id).spans)
        self._pending -= dropped
        return dropped

    def drain(self) -> int:
        """Forget every waiting span (at shutdown); returns how many were dropped."""
        dropped = self._pending
        self._waiting.clear()
        self._pending = 0
        return dropped
