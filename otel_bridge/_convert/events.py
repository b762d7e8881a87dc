"""Finished OTel spans to Sentry events; tested directly.

A function of the trace and the options: no network, no clock, no sentry-sdk client, and the trace's dynamic
sampling context comes decided (``_tracing.dsc``). What it takes from the process: the source files of
frames, for context lines (``read_lines``), and ``sys.path`` and ``__main__``, to name frames' modules as
sentry-sdk does (``frames``); and it keeps caches of answers that depend on nothing else (``privacy``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Optional

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id

from otel_bridge._collect.reported import UNREPORTED, RecordedMatcher
from otel_bridge._convert import semconv
from otel_bridge._convert.collection import Collection, DataCollection
from otel_bridge._convert.frames import parse_exception
from otel_bridge._convert.naming import Route, name_from_asgi, name_from_span
from otel_bridge._convert.privacy import scrub_url
from otel_bridge._convert.request_interface import request_from_attributes
from otel_bridge._tracing.dsc import Sender, build_dsc

_FRAME_LINE = re.compile(r'^\s*File "([^"\n]+)", line (\d+)', re.MULTILINE)
ORIGIN = "auto.otel"
# BaseExceptions that end a request without being a bug: a client that went away, a shutdown.
NOT_ERRORS = frozenset(
    {
        "asyncio.exceptions.CancelledError",
        "concurrent.futures._base.CancelledError",
        "KeyboardInterrupt",
        "SystemExit",
        "GeneratorExit",
    }
)
MECHANISM = "otel"

_HTTP_STATUS = {
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "already_exists",
    413: "failed_precondition",
    429: "resource_exhausted",
    501: "unimplemented",
    503: "unavailable",
    504: "deadline_exceeded",
}

_GRPC_STATUS = (
    "ok",
    "cancelled",
    "unknown_error",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal_error",
    "unavailable",
    "data_loss",
    "unauthenticated",
)


@dataclass(frozen=True)
class ConvertOptions:
    """What conversion needs from the client's configuration; ``None`` lets the resource decide.

    ``send_default_pii``: whether the user's identity and address may be sent (``data_collection``'s
    ``user_info`` when that option was given); ``data_collection``: the user's option, ``None`` if not
    given."""

    send_default_pii: bool = False
    denylist: tuple[str, ...] = ()
    data_collection: Optional[DataCollection] = None
    environment: Optional[str] = None
    release: Optional[str] = None
    server_name: Optional[str] = None
    public_key: Optional[str] = None
    in_app_include: tuple[str, ...] = ()
    in_app_exclude: tuple[str, ...] = ()
    project_root: Optional[str] = None
    include_source_context: bool = True
    org_id: Optional[str] = None

    @cached_property
    def collection(self) -> Collection:
        """The rules for what of a request is sent (see ``collection``)."""
        return Collection(self.send_default_pii, self.denylist, self.data_collection)


@dataclass
class FinishedTrace:
    """A local root with the spans that ended under it, and what the request told us while it ran."""

    root: ReadableSpan
    children: Sequence[ReadableSpan] = ()
    asgi_scope: Optional[Mapping[str, Any]] = None
    transaction_style: Optional[str] = None
    route: Optional[Route] = None
    dropped_spans: int = 0
    incoming_dsc: Optional[dict[str, str]] = None
    custom_name: Optional[tuple[str, str]] = None
    dsc: Optional[dict[str, str]] = None
    """The trace's dynamic sampling context, decided before conversion (``_tracing.dsc.decided``)."""


def http_status_to_sentry(code: int) -> str:
    if code < 400:
        return "ok"
    if code in _HTTP_STATUS:
        return _HTTP_STATUS[code]
    if code < 500:
        return "invalid_argument"
    return "internal_error"


def span_status(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    failed = span.status.status_code is StatusCode.ERROR
    code = semconv.status_code(attributes)
    if code is not None:
        status = http_status_to_sentry(code)
        if status == "ok" and failed and _has_exception_event(span):
            return "internal_error"
        return status
    grpc_code = attributes.get("rpc.grpc.status_code")
    if isinstance(grpc_code, int) and 0 <= grpc_code < len(_GRPC_STATUS):
        return _GRPC_STATUS[grpc_code]
    return "internal_error" if failed else "ok"


def _has_exception_event(span: ReadableSpan) -> bool:
    return any(event.name == "exception" for event in span.events or ())


def span_op(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    explicit = attributes.get("sentry.op")
    if isinstance(explicit, str) and explicit:
        return explicit
    if semconv.is_websocket(attributes):
        return "websocket.server"
    if semconv.is_http(attributes):
        if span.kind is SpanKind.SERVER:
            return "http.server"
        if span.kind is SpanKind.CLIENT:
            return "http.client"
        return "http"
    if semconv.db_system(attributes):
        return "db"
    if attributes.get("rpc.service"):
        return "rpc"
    if attributes.get("messaging.system"):
        return "message"
    trigger = attributes.get("faas.trigger")
    if isinstance(trigger, str) and trigger:
        return trigger
    return "default"


def span_description(span: ReadableSpan, denylist: Iterable[str]) -> str:
    attributes = span.attributes or {}
    if semconv.is_http(attributes) and span.kind is SpanKind.CLIENT:
        method = (semconv.method(attributes) or "GET").upper()
        url = semconv.full_url(attributes)
        if url:
            return f"{method} {scrub_url(url, denylist).split('?', 1)[0]}"
    statement = semconv.db_statement(attributes)
    if statement:
        return statement
    return span.name


def _seconds(nanoseconds: Optional[int]) -> float:
    return (nanoseconds or 0) / 1e9


def _ids(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    if context is None:
        return format_trace_id(0), format_span_id(0)
    return format_trace_id(context.trace_id), format_span_id(context.span_id)


def _span_json(span: ReadableSpan, options: ConvertOptions) -> dict[str, Any]:
    trace_id, span_id = _ids(span)
    data = options.collection.attributes(span.attributes or {})
    item: dict[str, Any] = {
        "trace_id": trace_id,
        "span_id": span_id,
        "op": span_op(span),
        "description": span_description(span, options.denylist),
        "status": span_status(span),
        "start_timestamp": _seconds(span.start_time),
        "timestamp": _seconds(span.end_time or span.start_time),
        "origin": ORIGIN,
    }
    if span.parent is not None:
        item["parent_span_id"] = format_span_id(span.parent.span_id)
    if data:
        item["data"] = data
    return item


def transaction_name(trace: FinishedTrace) -> tuple[str, str]:
    """A name the app set on its scope, else the framework's route or endpoint, else from the span."""
    if trace.custom_name is not None:
        return trace.custom_name
    style = trace.transaction_style or "endpoint"
    if trace.asgi_scope is not None:
        from_framework = name_from_asgi(trace.asgi_scope, style, trace.route)
        if from_framework is not None:
            return from_framework
    return name_from_span(trace.root.name, trace.root.attributes or {})


def _resource_value(resource: Mapping[str, Any], *names: str) -> Optional[str]:
    for name in names:
        value = resource.get(name)
        if value:
            return str(value)
    return None


def dynamic_sampling_context(
    trace: FinishedTrace, facts: _TraceFacts, options: ConvertOptions
) -> dict[str, str]:
    """The DSC decided before conversion (a copy, which the trace's events share). A trace converted without
    one (tests, tools) gets the caller's, else what ``_tracing.dsc.build_dsc`` makes of the options alone,
    with no sampling decision."""
    decided = trace.dsc if trace.dsc is not None else trace.incoming_dsc
    if decided:
        return dict(decided)
    context = trace.root.get_span_context()
    common = facts.common
    sender = Sender(options.public_key, options.org_id, common.get("environment"), common.get("release"))
    trace_id = context.trace_id if context is not None else 0
    return build_dsc(trace_id, sender, transaction=facts.name, source=facts.source)


@dataclass(frozen=True)
class _TraceFacts:
    """What every event of one trace shares: its name, where it ran, and the request it served."""

    name: str
    source: str
    common: dict[str, Any]
    resource: dict[str, Any]

    def event_base(self) -> dict[str, Any]:
        base: dict[str, Any] = {"platform": "python", "transaction": self.name}
        base["transaction_info"] = {"source": self.source}
        base.update(self.common)
        return base


def _trace_facts(trace: FinishedTrace, options: ConvertOptions) -> _TraceFacts:
    root = trace.root
    name, source = transaction_name(trace)
    resource = dict(root.resource.attributes) if root.resource is not None else {}
    common: dict[str, Any] = {}
    for key, value in (
        ("environment", options.environment or _resource_value(resource, *_ENVIRONMENT_ATTRIBUTES)),
        ("release", options.release or _resource_value(resource, "service.version")),
        ("server_name", options.server_name or _resource_value(resource, "host.name")),
    ):
        if value:
            common[key] = value
    if trace.asgi_scope is None and root.kind is SpanKind.SERVER:
        request = request_from_attributes(root.attributes or {}, options.collection)
        if request:
            common["request"] = request
    return _TraceFacts(name, source, common, resource)


_ENVIRONMENT_ATTRIBUTES = ("deployment.environment.name", "deployment.environment")


def to_transaction(trace: FinishedTrace, options: ConvertOptions) -> dict[str, Any]:
    """One Sentry transaction event: the local root as the transaction, the other spans in ``spans``."""
    facts = _trace_facts(trace, options)
    return _transaction(trace, options, facts, dynamic_sampling_context(trace, facts, options))


def to_events(
    trace: FinishedTrace,
    options: ConvertOptions,
    matcher: RecordedMatcher = UNREPORTED,
    *,
    with_transaction: bool = True,
    read_lines: Optional[Callable[[str], Optional[list[str]]]] = None,
) -> list[dict[str, Any]]:
    """The trace's transaction (unless ``with_transaction`` is false), then its error events (see
    ``to_error_events``), all from one set of per-trace facts."""
    kept = _unreported_exceptions(trace, matcher)
    if not with_transaction and not kept:
        return []
    facts = _trace_facts(trace, options)
    dsc = dynamic_sampling_context(trace, facts, options)
    events = [_transaction(trace, options, facts, dsc)] if with_transaction else []
    root_id = _span_id(trace.root)
    events.extend(_error_event(recorded, facts, root_id, options, dsc, read_lines) for recorded in kept)
    return events


def _transaction(
    trace: FinishedTrace, options: ConvertOptions, facts: _TraceFacts, dsc: dict[str, str]
) -> dict[str, Any]:
    root = trace.root
    root_json = _span_json(root, options)
    trace_context: dict[str, Any] = {
        "trace_id": root_json["trace_id"],
        "span_id": root_json["span_id"],
        "op": root_json["op"],
        "status": root_json["status"],
        "origin": ORIGIN,
        "type": "trace",
        "dynamic_sampling_context": dsc,
    }
    if "parent_span_id" in root_json:
        trace_context["parent_span_id"] = root_json["parent_span_id"]
    if "data" in root_json:
        trace_context["data"] = root_json["data"]

    contexts: dict[str, Any] = {"trace": trace_context}
    if facts.resource:
        contexts["otel"] = {"resource": {key: _json_value(value) for key, value in facts.resource.items()}}

    event = facts.event_base()
    event.update(
        {
            "type": "transaction",
            "start_timestamp": root_json["start_timestamp"],
            "timestamp": root_json["timestamp"],
            "contexts": contexts,
            "spans": [_span_json(child, options) for child in trace.children],
        }
    )
    code = semconv.status_code(root.attributes or {})
    if code is not None:
        contexts["response"] = {"status_code": code}
        event["tags"] = {"http.status_code": str(code)}
    if trace.dropped_spans:
        # sentry-sdk's client pops it and records the spans as lost (see ``_compat.sentry_event``)
        event["_dropped_spans"] = trace.dropped_spans
    return event


@dataclass
class _Recorded:
    """One ``exception`` span event, and the outermost span the same exception was recorded on."""

    span: ReadableSpan
    attributes: Mapping[str, Any]
    timestamp: int
    key: tuple[str, str]
    outermost: Optional[ReadableSpan] = None
    event: Optional[Event] = None

    def raise_site(self) -> Optional[tuple[str, int]]:
        """File and line of the last frame in the recorded traceback text: where it was raised."""
        text = str(self.attributes.get("exception.stacktrace") or "")
        matches = _FRAME_LINE.findall(text[-100_000:])
        if not matches:
            return None
        filename, line = matches[-1]
        return filename, int(line)


def _recorded_exceptions(spans: Iterable[ReadableSpan]) -> list[_Recorded]:
    found = []
    for span in spans:
        for span_event in span.events or ():
            if span_event.name != "exception":
                continue
            attributes = span_event.attributes or {}
            key = (
                str(attributes.get("exception.type") or ""),
                str(attributes.get("exception.message") or ""),
            )
            found.append(_Recorded(span, attributes, span_event.timestamp or 0, key, event=span_event))
    found.sort(key=lambda recorded: recorded.timestamp)
    return found


def _span_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    return context.span_id if context is not None else 0


def _is_same_or_inside(inner: ReadableSpan, outer: ReadableSpan, parents: Mapping[int, int]) -> bool:
    current: Optional[int] = _span_id(inner)
    target = _span_id(outer)
    for _ in range(len(parents) + 1):
        if current is None:
            return False
        if current == target:
            return True
        current = parents.get(current)
    return False


def _escaped(recorded: _Recorded) -> bool:
    """The exception left the span: ``exception.escaped``; or OTel's context managers set the span's
    status to ``"Type: message"`` as it passed through (they record ``escaped=False`` even then); or it is
    a failed server span that answered 5xx or nothing (frameworks overwrite that status description)."""
    if str(recorded.attributes.get("exception.escaped", "")).lower() == "true":
        return True
    span = recorded.outermost or recorded.span
    status = span.status
    if status.status_code is not StatusCode.ERROR:
        return False
    if span.kind is SpanKind.SERVER:
        code = semconv.status_code(span.attributes or {})
        if code is None or code >= 500:
            return True
    if not status.description:
        return False
    short_type = recorded.key[0].rsplit(".", 1)[-1]
    return status.description == f"{short_type}: {recorded.key[1]}"


def to_error_events(
    trace: FinishedTrace,
    options: ConvertOptions,
    matcher: RecordedMatcher = UNREPORTED,
    read_lines: Optional[Callable[[str], Optional[list[str]]]] = None,
) -> list[dict[str, Any]]:
    """One error event per exception recorded on the trace's spans, at the innermost span it was recorded on.

    The same exception recorded again by enclosing spans as it propagates is the same event; ``matcher``
    (``otel_bridge._collect.reported``) tells which span events record the same exception, and which
    exceptions already reached Sentry with their live object, which are skipped.
    """
    return to_events(trace, options, matcher, with_transaction=False, read_lines=read_lines)


def _unreported_exceptions(trace: FinishedTrace, matcher: RecordedMatcher) -> list[_Recorded]:
    spans = [trace.root, *trace.children]
    parents = {_span_id(span): span.parent.span_id for span in spans if span.parent is not None}
    kept: list[_Recorded] = []
    for recorded in _recorded_exceptions(spans):
        if recorded.key[0] in NOT_ERRORS:
            continue
        if matcher.reported(recorded):
            continue
        for earlier in kept:
            if matcher.same(earlier, recorded) and _is_same_or_inside(earlier.span, recorded.span, parents):
                earlier.outermost = recorded.span
                break
        else:
            kept.append(recorded)
    return kept


def _error_event(
    recorded: _Recorded,
    facts: _TraceFacts,
    root_id: int,
    options: ConvertOptions,
    dsc: dict[str, str],
    read_lines: Optional[Callable[[str], Optional[list[str]]]],
) -> dict[str, Any]:
    attributes = recorded.attributes
    values = parse_exception(
        _text(attributes.get("exception.type")),
        _text(attributes.get("exception.message")),
        _text(attributes.get("exception.stacktrace")),
        read_lines=read_lines,
        in_app_include=options.in_app_include,
        in_app_exclude=options.in_app_exclude,
        project_root=options.project_root,
        source_context=options.include_source_context,
    )
    outermost = recorded.outermost or recorded.span
    crashed = _escaped(recorded) and _span_id(outermost) == root_id
    if values:
        values[-1].setdefault("mechanism", {}).update(type=MECHANISM, handled=not crashed)
    span = recorded.span
    trace_id, span_id = _ids(span)
    trace_context: dict[str, Any] = {"trace_id": trace_id, "span_id": span_id, "op": span_op(span)}
    trace_context["dynamic_sampling_context"] = dsc
    if span.parent is not None:
        trace_context["parent_span_id"] = format_span_id(span.parent.span_id)
    event = facts.event_base()
    event.update(
        {
            "level": "error",
            "timestamp": _seconds(recorded.timestamp),
            "exception": {"values": values},
            "contexts": {"trace": trace_context},
        }
    )
    return event


def _text(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
