"""Span streaming (``trace_lifecycle="stream"``): a trace's spans through sentry-sdk's own span batcher.

sentry-sdk (>= 2.66) sends each span as an item of a ``span`` envelope, batched per trace by
``client.span_batcher``. Its path for one span is: scope attributes and the user's applied
(``Scope.apply_to_telemetry``), ``before_send_span`` (may rename and change attributes, cannot drop), then
the batcher, which reads the trace's dynamic sampling context from the segment at flush time. This module
walks the same path with spans built by ``span_items``. Its reaches into sentry-sdk internals live in
``_compat.sentry_spans`` and are probed once per client before they are trusted; when one does not hold
the bridge says so once and sends transactions instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

from sentry_sdk import tracing_utils
from sentry_sdk import utils as sentry_utils

from otel_bridge._compat import note_broken
from otel_bridge._compat.sentry_spans import (
    SPAN_STREAMING,
    Segment,
    apply_scope,
    merged_scope,
    streaming_unusable,
)
from otel_bridge._convert import semconv
from otel_bridge._convert.events import ConvertOptions, FinishedTrace
from otel_bridge._convert.request_interface import asgi_headers, client_ip, request_from_asgi
from otel_bridge._convert.span_items import (
    ClientFacts,
    RequestFacts,
    attribute_value,
    is_localhost,
    keep_allowed_changes,
    span_items,
    without_ignored,
)

logger = logging.getLogger("otel_bridge")


def _sentry_function(module: Any, name: str) -> Optional[Callable[..., Any]]:
    """A public function of sentry-sdk 2.66+ (absent on 2.57, where nothing here is used)."""
    found = getattr(module, name, None)
    return found if callable(found) else None


def streaming_requested(options: Mapping[str, Any]) -> bool:
    """sentry-sdk's own reading of ``trace_lifecycle`` (and of its ``_experiments`` spelling)."""
    check = _sentry_function(tracing_utils, "has_span_streaming_enabled")
    return check is not None and bool(check(options))


def _is_ignored(name: str, attributes: Mapping[str, Any]) -> bool:
    """sentry-sdk's ``ignore_spans`` rules (``is_ignored_span``: strings and patterns for the name, dicts of
    name and attribute rules)."""
    check = _sentry_function(tracing_utils, "is_ignored_span")
    return check is not None and bool(check(name, dict(attributes)))


def _format_attribute(value: Any) -> Any:
    """A value a callback returned, made an attribute value as sentry-sdk's ``set_attribute`` makes it."""
    convert = _sentry_function(sentry_utils, "format_attribute") or attribute_value
    return convert(value)


def _data_collection_given(options: Mapping[str, Any]) -> bool:
    check = _sentry_function(sentry_utils, "has_data_collection_enabled")
    return check is not None and bool(check(options))


@dataclass(frozen=True)
class PreparedSpans:
    items: list[dict[str, Any]]
    segment: Segment


class SpanStream:
    """Where one client's streamed spans go."""

    def __init__(self, client: Any, batcher: Any) -> None:
        self._client = client
        self._batcher = batcher
        options = client.options
        self._with_url = bool(options.get("send_default_pii")) or _data_collection_given(options)
        self._client_facts = ClientFacts(
            integrations=tuple(sorted(getattr(client, "integrations", {}) or {})),
            dist=str(options["dist"]) if options.get("dist") else None,
            command_args=tuple(sys.argv),
        )

    def prepare(
        self, transaction: Mapping[str, Any], trace: FinishedTrace, options: ConvertOptions
    ) -> PreparedSpans:
        """The span items of the transaction converted from ``trace``, sent instead of it, without what
        ``ignore_spans`` drops (counted). They share nothing with the transaction, which other events of the
        trace share parts of (and sentry-sdk's scrubber edits in place)."""
        facts = self._request_facts(transaction, trace, options)
        items, ignored = without_ignored(span_items(transaction, facts, self._client_facts), _is_ignored)
        self._lost("ignored", ignored)
        self._lost("buffer_overflow", int(transaction.get("_dropped_spans") or 0))
        trace_context = (transaction.get("contexts") or {}).get("trace") or {}
        return PreparedSpans(items, Segment(trace_context.get("dynamic_sampling_context") or {}))

    def send(self, prepared: PreparedSpans) -> None:
        """Scope and user attributes, ``before_send_span``, then the batcher; called inside the trace's
        scopes."""
        if not prepared.items:
            return
        scope = merged_scope()
        before_send = _before_send_span(self._client.options)
        for item in prepared.items:
            apply_scope(scope, item)
            if before_send is not None:
                _run_before_send(before_send, item)
            item["_segment_span"] = prepared.segment
            self._batcher.add(item)

    def record_unsampled(self, trace: FinishedTrace) -> None:
        """An unsampled trace sends no span; each is counted as sentry-sdk counts its unsampled spans."""
        self._lost("sample_rate", len(trace.children) + 1)

    def _lost(self, reason: str, quantity: int) -> None:
        transport = self._client.transport
        if quantity > 0 and transport is not None:
            transport.record_lost_event(reason, data_category="span", quantity=quantity)

    def _request_facts(
        self, transaction: Mapping[str, Any], trace: FinishedTrace, options: ConvertOptions
    ) -> RequestFacts:
        """The request as events of this trace get it: from the ASGI scope with the middleware (as its
        event processor builds it), else the one conversion rebuilt from the server span's attributes."""
        asgi_scope = trace.asgi_scope
        if asgi_scope is not None:
            request = request_from_asgi(asgi_scope, options.collection)
            headers = asgi_headers(asgi_scope)
            server = asgi_scope.get("server")
            return RequestFacts(
                request=request,
                protocol=str(asgi_scope.get("type") or "http"),
                url_path=f"{asgi_scope.get('root_path', '')}{asgi_scope.get('path', '')}",
                with_url=self._with_url,
                is_localhost=is_localhost(
                    client_ip(asgi_scope, headers),
                    str(server[0]) if server and not headers.get("host") else None,
                    headers.get("host"),
                    headers.get("x-forwarded-host"),
                ),
            )
        attributes = trace.root.attributes or {}
        rebuilt = transaction.get("request")
        if not isinstance(rebuilt, Mapping):
            return RequestFacts()
        path, _query = semconv.path_and_query(attributes)
        host = semconv.host(attributes)
        return RequestFacts(
            request=rebuilt,
            protocol="websocket" if semconv.is_websocket(attributes) else "http",
            url_path=path,
            with_url=self._with_url,
            is_localhost=is_localhost(semconv.client_address(attributes), None, host, None),
        )


def _before_send_span(options: Mapping[str, Any]) -> Optional[Callable[..., Any]]:
    callback = options.get("before_send_span") or (options.get("_experiments") or {}).get("before_send_span")
    return callback if callable(callback) else None


def _run_before_send(callback: Callable[..., Any], item: dict[str, Any]) -> None:
    """sentry-sdk's rules: the callback sees the span's JSON; it may change the name and the attributes,
    nothing else; it cannot drop the span; if it raises, the span is sent as it was."""
    shown = {key: value for key, value in item.items()}
    shown["attributes"] = dict(item["attributes"])
    try:
        changed = callback(shown, {})
    except Exception:
        logger.debug("before_send_span raised; the span is sent unchanged", exc_info=True)
        return
    if not keep_allowed_changes(item, changed, _format_attribute):
        logger.debug(
            "before_send_span returned no span (spans cannot be dropped); the span is sent unchanged"
        )


_cached: list[tuple[Any, Optional[SpanStream]]] = []


def span_stream(client: Any) -> Optional[SpanStream]:
    """The client's span stream when it has ``trace_lifecycle="stream"`` and this sentry-sdk's span
    batching is what the bridge was verified against; ``None`` otherwise (transactions are sent). Checked
    once per client (the last one is remembered); a client that asked for streaming and cannot have it is
    told so then."""
    if _cached and _cached[0][0] is client:
        return _cached[0][1]
    stream: Optional[SpanStream] = None
    if streaming_requested(client.options):
        problem = streaming_unusable(client)
        if problem is None:
            stream = SpanStream(client, client.span_batcher)
        else:
            note_broken(SPAN_STREAMING, problem)
    _cached[:] = [(client, stream)]
    return stream
