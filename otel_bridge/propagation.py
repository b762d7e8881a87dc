"""``SentryPropagator``: Sentry's ``sentry-trace`` and ``baggage`` headers, in and out, as an OTel propagator.

Registered as the ``sentry`` entry point of ``opentelemetry_propagator``, so
``OTEL_PROPAGATORS=tracecontext,baggage,sentry`` picks it up.

Sampled flag: ``-1`` → sampled, ``-0`` → not sampled. A header without the flag means Sentry's "deferred"
decision; sentry-sdk's ``extract_sentrytrace_data`` leaves it to the local sampler (``parent_sampled=None``)
and its own OTel propagator marks such contexts SAMPLED "and leaves the sampling to sentry". We do the
same: absent → SAMPLED, so a ParentBased OTel sampler records the trace and the bridge's Sentry-side
sampling decides.

Precedence when ``traceparent`` arrived too (the composite propagator runs ``tracecontext`` first): if the
incoming context already holds a valid remote span context, that W3C context is kept (it carries trace
state, and every OTel service speaks it). When the ``sentry-trace`` names the same trace id, the Sentry
``baggage`` entries become the trace's dynamic sampling context; when it names another trace, the header
and its ``sentry-*`` baggage are ignored. Without any ``sentry-trace``, ``sentry-*`` baggage is kept only
when its ``sentry-trace_id`` equals the W3C trace id.

A trace continued from a Sentry caller keeps the caller's dynamic sampling context unchanged; otherwise
(also when the caller sent no Sentry baggage) ``inject`` sends the one this service starts for the trace
(``_tracing.dsc``), frozen at its first use, which the trace's transaction and error events carry too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Optional
from urllib.parse import quote, unquote

import sentry_sdk
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, create_key, get_current, get_value, set_value
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_bridge._convert.naming import current_route_name
from otel_bridge._tracing.dsc import resource_of, started_dsc
from otel_bridge._tracing.sampling import decide

__all__ = [
    "BAGGAGE_HEADER",
    "SENTRY_BAGGAGE_KEY",
    "SENTRY_TRACE_HEADER",
    "SentryPropagator",
    "default_propagator",
    "get_dynamic_sampling_context",
]

SENTRY_TRACE_HEADER = "sentry-trace"
BAGGAGE_HEADER = "baggage"
SENTRY_BAGGAGE_KEY = create_key("otel_bridge.propagation.dynamic_sampling_context")
_DSC_TRACE_ID_KEY = create_key("otel_bridge.propagation.dynamic_sampling_context_trace_id")

MAX_BAGGAGE_BYTES = 8192
MAX_BAGGAGE_MEMBERS = 180
_SENTRY_PREFIX = "sentry-"
# A valid header is 51 characters; anything much longer is not worth running a regex over.
_MAX_SENTRY_TRACE_CHARS = 512
_SENTRY_TRACE = re.compile(r"[ \t]*([0-9a-f]{32})-([0-9a-f]{16})(?:-([01]))?[ \t]*", re.IGNORECASE | re.ASCII)
_OWS = " \t"


def _string_values(raw: object) -> list[str]:
    """The header's values as strings; anything that is not text (bytes, numbers...) is ignored."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, (list, tuple)):
        return [value for value in raw if isinstance(value, str)]
    return []


def _parse_sentry_trace(values: list[str]) -> Optional[tuple[int, int, bool]]:
    """``(trace_id, span_id, sampled)`` from the first value, or None when it is not a valid header."""
    if not values or len(values[0]) > _MAX_SENTRY_TRACE_CHARS:
        return None
    header = values[0]
    if "," in header:
        # Repeated headers joined per RFC 9110 §5.3; sentry-sdk uses the first non-empty one.
        header = next((part for part in header.split(",") if part.strip(_OWS)), "")
    match = _SENTRY_TRACE.fullmatch(header)
    if match is None:
        return None
    trace_id = int(match.group(1), 16)
    span_id = int(match.group(2), 16)
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, match.group(3) != "0"


def _utf8_length(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _parse_sentry_baggage(values: list[str]) -> Optional[dict[str, str]]:
    """The ``sentry-*`` members, prefix stripped and values decoded; None when there is no usable header."""
    if not values:
        return None
    if sum(len(value) for value in values) > MAX_BAGGAGE_BYTES:
        return None
    header = ",".join(values)
    if _utf8_length(header) > MAX_BAGGAGE_BYTES:
        return None
    members = [member for member in header.split(",") if member.strip(_OWS)]
    if len(members) > MAX_BAGGAGE_MEMBERS:
        return None
    entries: dict[str, str] = {}
    for member in members:
        if not member.isascii() or "=" not in member:
            continue
        key, _, value = member.partition("=")
        key = key.strip(_OWS)
        if not key.startswith(_SENTRY_PREFIX):
            continue
        name = unquote(key[len(_SENTRY_PREFIX) :])
        if not name:
            continue
        entries[name] = unquote(value.split(";", 1)[0].strip(_OWS))
    return entries


def _with_dsc(context: Context, trace_id: int, dsc: dict[str, str]) -> Context:
    context = set_value(SENTRY_BAGGAGE_KEY, dsc, context)
    return set_value(_DSC_TRACE_ID_KEY, trace_id, context)


def _incoming_dsc(raw_baggage: object, trace_id: int) -> Optional[dict[str, str]]:
    """The caller's ``sentry-*`` baggage, unless its ``trace_id`` entry names a trace other than ours."""
    dsc = _parse_sentry_baggage(_string_values(raw_baggage))
    if dsc is None:
        return None
    named = dsc.get("trace_id")
    if named is not None and named.strip().lower() != trace.format_trace_id(trace_id):
        return None
    return dsc


def get_dynamic_sampling_context(context: Optional[Context] = None) -> Optional[dict[str, str]]:
    """The dynamic sampling context a Sentry caller sent for the trace of ``context``'s span, if any.

    Keys without the ``sentry-`` prefix, values decoded. An empty dict means the trace was continued from
    a Sentry caller that sent no Sentry baggage; None means it was not continued from a Sentry caller.
    """
    if context is None:
        context = get_current()
    dsc = get_value(SENTRY_BAGGAGE_KEY, context)
    if not isinstance(dsc, dict):
        return None
    span_context = trace.get_current_span(context).get_span_context()
    if not span_context.is_valid or get_value(_DSC_TRACE_ID_KEY, context) != span_context.trace_id:
        return None
    return dict(dsc)


def _existing_baggage(carrier: object) -> Optional[tuple[list[str], str]]:
    """The keys holding ``baggage`` in a mapping carrier (any case) and their values joined.

    None when the values are not text we could merge without losing them.
    """
    if not isinstance(carrier, Mapping):
        return [], ""
    keys = [key for key in list(carrier.keys()) if isinstance(key, str) and key.lower() == BAGGAGE_HEADER]
    texts: list[str] = []
    for key in keys:
        raw = carrier[key]
        for value in raw if isinstance(raw, (list, tuple)) else [raw]:
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).decode("latin-1")
            if not isinstance(value, str):
                return None
            texts.append(value)
    return keys, ",".join(text for text in texts if text.strip(_OWS))


def _merge_baggage(existing: str, ours: list[str]) -> str:
    """Others' members unchanged, stale ``sentry-*`` ones replaced by ours, within W3C limits.

    Our entries go in together or not at all: a partial DSC would be a different, wrong one.
    """
    kept = [
        member.strip(_OWS)
        for member in existing.split(",")
        if member.strip(_OWS) and not member.strip(_OWS).startswith(_SENTRY_PREFIX)
    ]
    if ours:
        merged = [*kept, *ours]
        text = ",".join(merged)
        if len(merged) <= MAX_BAGGAGE_MEMBERS and _utf8_length(text) <= MAX_BAGGAGE_BYTES:
            return text
    return ",".join(kept)


def continues_sentry_sampling(dsc: Mapping[str, str]) -> bool:
    """sentry-sdk's rule for continuing a Sentry caller's trace: not when the caller's ``org_id`` differs
    from this client's (the DSN's, or the ``org_id`` option), nor, with ``strict_trace_continuation``, when
    only one side has one.

    Where sentry-sdk starts a new trace, the OTel trace is kept for every backend; only the caller's Sentry
    sampling (its dynamic sampling context and sampled flag) is not adopted: this service decides.
    """
    client = sentry_sdk.get_client()
    parsed_dsn = getattr(client, "parsed_dsn", None)
    ours = getattr(parsed_dsn, "org_id", None)
    theirs = dsc.get("org_id")
    if ours and theirs and ours != theirs:
        return False
    options = getattr(client, "options", None) or {}
    return not (options.get("strict_trace_continuation") and bool(ours) != bool(theirs))


class SentryPropagator(TextMapPropagator):
    """Reads and writes Sentry's ``sentry-trace`` and the ``sentry-*`` members of ``baggage``."""

    def extract(
        self,
        carrier: CarrierT,
        context: Optional[Context] = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        if context is None:
            context = get_current()
        sentry_trace = _parse_sentry_trace(_string_values(getter.get(carrier, SENTRY_TRACE_HEADER)))
        existing = trace.get_current_span(context).get_span_context()
        w3c = existing if existing.is_valid and existing.is_remote else None
        if sentry_trace is None:
            if w3c is None:
                return context
            dsc = _incoming_dsc(getter.get(carrier, BAGGAGE_HEADER), w3c.trace_id)
            if not dsc or "trace_id" not in dsc or not continues_sentry_sampling(dsc):
                return context
            return _with_dsc(context, w3c.trace_id, dsc)

        trace_id, span_id, sampled = sentry_trace
        if w3c is not None and w3c.trace_id != trace_id:
            return context
        dsc = _incoming_dsc(getter.get(carrier, BAGGAGE_HEADER), trace_id) or {}
        adopted = continues_sentry_sampling(dsc)
        if w3c is not None:
            return _with_dsc(context, trace_id, dsc) if adopted else context
        span_context = SpanContext(
            trace_id=trace_id,
            span_id=span_id,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled or not adopted else TraceFlags.DEFAULT),
        )
        context = trace.set_span_in_context(NonRecordingSpan(span_context), context)
        return _with_dsc(context, trace_id, dsc) if adopted else context

    def inject(
        self,
        carrier: CarrierT,
        context: Optional[Context] = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        if context is None:
            context = get_current()
        span = trace.get_current_span(context)
        span_context = span.get_span_context()
        if not span_context.is_valid:
            return
        dsc = get_dynamic_sampling_context(context) or started_dsc(
            span_context, current_route_name(), resource_of(span)
        )
        sampled = span_context.trace_flags.sampled and decide(span_context.trace_id, dsc).sampled
        setter.set(
            carrier,
            SENTRY_TRACE_HEADER,
            f"{trace.format_trace_id(span_context.trace_id)}-{trace.format_span_id(span_context.span_id)}"
            f"-{'1' if sampled else '0'}",
        )
        ours = [
            f"{_SENTRY_PREFIX}{quote(key, safe='')}={quote(value, safe='')}" for key, value in dsc.items()
        ]
        existing = _existing_baggage(carrier)
        if existing is None:
            return
        keys, text = existing
        merged = _merge_baggage(text, ours)
        if isinstance(carrier, MutableMapping):
            for key in keys:
                if key != BAGGAGE_HEADER or not merged:
                    carrier.pop(key, None)
        if merged:
            setter.set(carrier, BAGGAGE_HEADER, merged)

    @property
    def fields(self) -> set[str]:
        return {SENTRY_TRACE_HEADER, BAGGAGE_HEADER}


def current_otel_ids() -> Optional[tuple[str, str]]:
    """The trace and span id of the current OTel span, for sentry-sdk's scopes: registered with
    ``sentry_sdk.scope.register_external_propagation_context``, so that what sentry-sdk sends by itself
    (logs, metrics, events outside the bridge's reach) is linked to the OTel trace, and sentry-sdk's own
    integrations leave outgoing headers to the OTel propagators."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return trace.format_trace_id(span_context.trace_id), trace.format_span_id(span_context.span_id)


def default_propagator() -> TextMapPropagator:
    """W3C trace context, W3C baggage and Sentry, in the order that lets Sentry merge into baggage."""
    return CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), SentryPropagator()])
