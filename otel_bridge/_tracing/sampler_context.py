"""What a ``traces_sampler`` is given for a local root, shaped as sentry-sdk's ASGI middleware shapes it.

``transaction_context`` holds the ids, ``name``, ``op`` and ``source`` known when the root starts (for a
request: the endpoint or route when the scope already names one, else the URL path with source ``url``),
``parent_sampled`` the decision of a Sentry caller, and ``asgi_scope`` the request's ASGI scope when
``SentryAsgiMiddleware`` serves it. Pure: built from the starting span and the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Optional

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, format_span_id, format_trace_id

from otel_bridge._collect.request_state import RequestContext
from otel_bridge._convert.events import ORIGIN, span_op
from otel_bridge._convert.naming import SOURCE_URL, name_from_asgi, name_from_span


def parent_sampled(
    parent: Optional[SpanContext], incoming_dsc: Optional[Mapping[str, str]]
) -> Optional[bool]:
    """The sampling decision a Sentry caller made, ``None`` when it made none (or was not a Sentry SDK).

    The propagator marks a ``sentry-trace`` without a flag (a "deferred" decision) as sampled, so a
    sampled parent counts as a decision only when the caller's baggage says ``sampled`` too, or when the
    caller sent no Sentry baggage at all.
    """
    if parent is None or incoming_dsc is None:
        return None
    if not parent.trace_flags.sampled:
        return False
    said = incoming_dsc.get("sampled")
    if said in ("true", "false"):
        return said == "true"
    return True if not incoming_dsc else None


def _serves(span: ReadableSpan, request: Optional[RequestContext]) -> bool:
    """Whether ``span`` is the server span of the request the middleware is serving (its hook has not
    run yet when the span starts)."""
    return request is not None and span.kind is SpanKind.SERVER and request.server_span is None


def _name_at_start(request: RequestContext) -> tuple[str, str]:
    named = name_from_asgi(request.asgi_scope, request.transaction_style, request.route)
    if named is not None:
        return named
    scope = request.asgi_scope
    return f"{scope.get('root_path', '')}{scope.get('path', '')}", SOURCE_URL


def sampling_context(
    span: ReadableSpan,
    parent: Optional[SpanContext],
    parent_decision: Optional[bool],
    request: Optional[RequestContext],
) -> dict[str, Any]:
    context = span.get_span_context()
    attributes = span.attributes or {}
    served = _serves(span, request)
    tags: dict[str, str] = {}
    if served and request is not None:
        name, source = _name_at_start(request)
        kind = str(request.asgi_scope.get("type", "http"))
        op = f"{kind}.server"
        tags["asgi.type"] = kind
    else:
        name, source = name_from_span(span.name, attributes)
        op = span_op(span)
    started = datetime.fromtimestamp((span.start_time or 0) / 1e9, UTC)
    transaction_context: dict[str, Any] = {
        "trace_id": format_trace_id(context.trace_id) if context is not None else None,
        "span_id": format_span_id(context.span_id) if context is not None else None,
        "parent_span_id": format_span_id(parent.span_id) if parent is not None else None,
        "same_process_as_parent": parent is None,
        "op": op,
        "description": None,
        "start_timestamp": started,
        "timestamp": None,
        "origin": ORIGIN,
        "name": name,
        "source": source,
        "sampled": None,
    }
    if tags:
        transaction_context["tags"] = tags
    if attributes:
        transaction_context["data"] = dict(attributes)
    result: dict[str, Any] = {"transaction_context": transaction_context, "parent_sampled": parent_decision}
    if served and request is not None:
        result["asgi_scope"] = request.asgi_scope
    return result
