"""The Sentry-only sample rate: thins what goes to Sentry, not what other OTel backends get.

The decision is deterministic in the trace: ``sample_rand`` comes from the caller's dynamic sampling
context when a Sentry SDK sent one, else from the trace id exactly as sentry-sdk derives it, so every
service of a trace (ours or sentry-sdk's) agrees. A Sentry caller's ``sampled`` decision is honoured.
Errors are never thinned by it.

A ``traces_sampler`` (the sentry-sdk option) replaces the rate: it is asked once per local root, and its
answer is what ``decide`` returns for that trace from then on: for the root's transaction (pinned while it
is sent) and, kept per trace (bounded, like the frozen contexts), for its error events' envelope headers
and outgoing propagation.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from random import Random
from typing import Any, Callable, Optional

import sentry_sdk
from opentelemetry.trace import format_trace_id
from sentry_sdk.utils import is_valid_sample_rate

from otel_bridge._drops import RateLimitedLogger

_rate = 1.0
_sampler_failed = RateLimitedLogger(logging.getLogger("otel_bridge"), interval=math.inf)
TracesSampler = Callable[[dict[str, Any]], Any]


def configure(rate: float) -> None:
    global _rate
    _rate = rate


@dataclass(frozen=True)
class Decision:
    sampled: bool
    sample_rand: float
    # ``None`` when a ``traces_sampler`` answered with something that is not a rate (sentry-sdk then
    # leaves the rate out of the dynamic sampling context)
    sample_rate: Optional[float]


def _incoming_rand(incoming: Optional[Mapping[str, str]]) -> Optional[float]:
    if not incoming:
        return None
    try:
        value = float(incoming.get("sample_rand", ""))
    except ValueError:
        return None
    return value if 0.0 <= value < 1.0 else None


def sample_rand_of(trace_id: int) -> float:
    """sentry-sdk's ``_generate_sample_rand`` for a trace id: a PRNG seeded with the 32-hex id."""
    return Random(format_trace_id(trace_id)).randrange(0, 1_000_000) / 1_000_000


def _rand(trace_id: int, incoming: Optional[Mapping[str, str]]) -> float:
    rand = _incoming_rand(incoming)
    return sample_rand_of(trace_id) if rand is None else rand


def decide(trace_id: int, incoming: Optional[Mapping[str, str]], rate: Optional[float] = None) -> Decision:
    """The trace's ``traces_sampler`` decision when one was made, else the rate's (``rate`` or the
    configured one; an explicit ``rate`` ignores the sampler's decision)."""
    if rate is None:
        sending = _sending.get()
        if sending is not None and sending[0] == trace_id:
            return sending[1]
        sampled_by_sampler = sampler_decisions.get(trace_id)
        if sampled_by_sampler is not None:
            return sampled_by_sampler
    return _decide_by_rate(trace_id, incoming, _rate if rate is None else rate)


def _decide_by_rate(trace_id: int, incoming: Optional[Mapping[str, str]], rate: float) -> Decision:
    rand = _rand(trace_id, incoming)
    caller_said = (incoming or {}).get("sampled")
    if caller_said in ("true", "false"):
        return Decision(caller_said == "true", rand, rate)
    return Decision(rand < rate, rand, rate)


def traces_sampler() -> Optional[TracesSampler]:
    """The active client's ``traces_sampler`` option, when it is a callable (``enable_tracing=False``
    turns it off, as in sentry-sdk)."""
    client = sentry_sdk.get_client()
    if not client.is_active():
        return None
    options = client.options or {}
    sampler = options.get("traces_sampler")
    return sampler if callable(sampler) and options.get("enable_tracing") is not False else None


def sample_with(
    sampler: TracesSampler,
    trace_id: int,
    incoming: Optional[Mapping[str, str]],
    sampling_context: dict[str, Any],
) -> Decision:
    """Ask ``sampler`` about a local root of ``trace_id``; its decision then holds for the whole trace.

    As in sentry-sdk: ``True``/``False`` or a rate from 0 to 1, rolled against the trace's ``sample_rand``;
    anything else is not sampled. A sampler that raises is said once and the configured rate decides.
    """
    rand = _rand(trace_id, incoming)
    try:
        answer = sampler(sampling_context)
    except Exception:
        _sampler_failed.warning(
            "otel_bridge: traces_sampler raised; traces_sample_rate decides instead (said once)",
            exc_info=True,
        )
        decision = _decide_by_rate(trace_id, incoming, _rate)
    else:
        # sentry-sdk's own check (it logs the invalid value with ``debug=True``)
        if is_valid_sample_rate(answer, source="[Tracing] traces_sampler:"):
            rate = float(answer)
            decision = Decision(rand < rate, rand, rate)
        else:
            decision = Decision(False, rand, None)
    sampler_decisions.put(trace_id, decision)
    return decision


_sending: ContextVar[Optional[tuple[int, Decision]]] = ContextVar("otel_bridge_sending", default=None)


@contextmanager
def deciding(trace_id: int, decision: Optional[Decision]) -> Iterator[None]:
    """While one local root's trace is converted and sent, ``decide`` answers with that root's own
    ``traces_sampler`` decision, even when a later root of the same trace was decided differently."""
    if decision is None:
        yield
        return
    token = _sending.set((trace_id, decision))
    try:
        yield
    finally:
        _sending.reset(token)


class _SamplerDecisions:
    """The ``traces_sampler`` decision of each trace (bounded; oldest forgotten first). A later local root
    of the same trace asks the sampler again, and its answer holds from then on."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._by_trace: OrderedDict[int, Decision] = OrderedDict()

    def put(self, trace_id: int, decision: Decision) -> None:
        with self._lock:
            self._by_trace[trace_id] = decision
            self._by_trace.move_to_end(trace_id)
            while len(self._by_trace) > self._size:
                self._by_trace.popitem(last=False)

    def get(self, trace_id: int) -> Optional[Decision]:
        if not self._by_trace:
            return None
        with self._lock:
            return self._by_trace.get(trace_id)

    def clear(self) -> None:
        with self._lock:
            self._by_trace.clear()

    def __len__(self) -> int:
        return len(self._by_trace)


sampler_decisions = _SamplerDecisions()


class _FrozenContexts:
    """The DSC of each trace this service started, frozen at its first use (``dsc.started_dsc``: sent on,
    or put on an error event): Sentry takes the first one it sees as the trace's, so every later use must
    carry the very same one (bounded; oldest forgotten first)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._by_trace: OrderedDict[int, dict[str, str]] = OrderedDict()

    def freeze(self, trace_id: int, dsc: dict[str, str]) -> dict[str, str]:
        with self._lock:
            frozen = self._by_trace.setdefault(trace_id, dsc)
            self._by_trace.move_to_end(trace_id)
            while len(self._by_trace) > self._size:
                self._by_trace.popitem(last=False)
        return dict(frozen)

    def clear(self) -> None:
        with self._lock:
            self._by_trace.clear()

    def get(self, trace_id: int) -> Optional[dict[str, str]]:
        with self._lock:
            frozen = self._by_trace.get(trace_id)
        return dict(frozen) if frozen is not None else None


frozen_contexts = _FrozenContexts()
