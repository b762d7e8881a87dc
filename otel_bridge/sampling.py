"""The Sentry-only sample rate: thins what goes to Sentry, not what other OTel backends get.

The decision is deterministic in the trace: ``sample_rand`` comes from the caller's dynamic sampling
context when a Sentry SDK sent one, else from the trace id exactly as sentry-sdk derives it, so every
service of a trace (ours or sentry-sdk's) agrees. A Sentry caller's ``sampled`` decision is honoured.
Errors are never thinned by it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from random import Random
from typing import Any, Optional

import sentry_sdk
from opentelemetry.trace import SpanContext, format_trace_id

_rate = 1.0


def configure(rate: float) -> None:
    global _rate
    _rate = rate


def sentry_sample_rate() -> float:
    return _rate


@dataclass(frozen=True)
class Decision:
    sampled: bool
    sample_rand: float
    sample_rate: float


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


def decide(trace_id: int, incoming: Optional[Mapping[str, str]], rate: Optional[float] = None) -> Decision:
    rate = _rate if rate is None else rate
    rand = _incoming_rand(incoming)
    if rand is None:
        rand = sample_rand_of(trace_id)
    caller_said = (incoming or {}).get("sampled")
    if caller_said in ("true", "false"):
        return Decision(caller_said == "true", rand, rate)
    return Decision(rand < rate, rand, rate)


class _FrozenContexts:
    """The DSC of each trace this service started and already sent on: Sentry freezes it at that moment,
    so the trace's own events must carry the very same one (bounded; oldest forgotten first)."""

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


def started_dsc(span_context: SpanContext, transaction: Optional[str]) -> dict[str, str]:
    """The DSC of a trace this service started: made at its first use (sent on, or put on an error event)
    with the transaction name known by then, and frozen for every later use."""
    frozen = frozen_contexts.get(span_context.trace_id)
    if frozen is not None:
        return frozen
    dsc = head_dsc(span_context)
    if not dsc:
        return dsc
    if transaction:
        dsc["transaction"] = transaction
    return frozen_contexts.freeze(span_context.trace_id, dsc)


def head_dsc(span_context: SpanContext, decision: Optional[Decision] = None) -> dict[str, str]:
    """The dynamic sampling context this service starts for a trace no Sentry caller gave one for."""
    client = sentry_sdk.get_client()
    if not client.is_active():
        return {}
    decision = decision or decide(span_context.trace_id, None)
    options: Mapping[str, Any] = client.options or {}
    dsc = {"trace_id": format_trace_id(span_context.trace_id)}
    parsed_dsn = client.parsed_dsn
    if parsed_dsn is not None:
        dsc["public_key"] = parsed_dsn.public_key
        if parsed_dsn.org_id:
            dsc["org_id"] = parsed_dsn.org_id
    dsc["sample_rate"] = repr(decision.sample_rate)
    dsc["sample_rand"] = f"{decision.sample_rand:.6f}"
    dsc["sampled"] = "true" if decision.sampled and span_context.trace_flags.sampled else "false"
    for option in ("environment", "release"):
        value = options.get(option)
        if isinstance(value, str) and value:
            dsc[option] = value
    return dsc
