"""What an envelope item says, as a few lines for a person reading a terminal. Pure functions, no I/O.

Used by ``otel-bridge receive`` and ``otel-bridge demo``. :class:`Style` chooses ANSI colour, and a
``stable`` rendering that leaves out what changes from run to run (durations, ids, releases, ports), so a
demo's output can be compared with the README's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional
from urllib.parse import urlsplit

SHOWN_SPANS = 30
SHOWN_FRAMES = 8
SHOWN_LOGS = 20
_SHOWN_VALUE = 120
# Contexts every event has, or that another line already shows.
_KNOWN_CONTEXTS = frozenset({"trace", "otel", "runtime", "response"})

_BOLD, _DIM, _RED, _GREEN, _YELLOW, _CYAN = "1", "2", "31", "32", "33", "36"

# Client-report reasons (sentry-sdk's and this bridge's), in words, with what usually causes them.
DISCARD_REASONS: dict[str, tuple[str, str]] = {
    "event_processor": (
        "an event processor dropped it",
        "usually sentry-sdk's dedupe, dropping a second report of an exception already sent",
    ),
    "before_send": ("before_send (or before_send_transaction, before_send_log) returned None", ""),
    "sample_rate": ("sampled out", "sample_rate, traces_sample_rate or traces_sampler"),
    "queue_overflow": ("the SDK's send queue was full", ""),
    "buffer_overflow": ("a buffer was full", "too many spans in one trace, or too many waiting to be sent"),
    "cache_overflow": ("the SDK's cache was full", ""),
    "ratelimit_backoff": ("held back: the server had asked the SDK to wait (rate limit)", ""),
    "network_error": ("it could not be sent (network error)", ""),
    "send_error": ("the server refused it", ""),
    "internal_sdk_error": ("an error inside the SDK or the bridge", ""),
    "insufficient_data": ("incomplete", "its trace never finished, e.g. the root span never ended"),
    "backpressure": ("dropped under backpressure (the SDK was overloaded)", ""),
    "ignored": ("ignored by configuration", "ignore_errors, ignore_spans, ..."),
}


@dataclass(frozen=True)
class Style:
    """``colour``: ANSI colours; ``stable``: leave out durations, ids, releases and URL hosts."""

    colour: bool = False
    stable: bool = False

    def paint(self, text: str, *codes: str) -> str:
        if not self.colour or not codes or not text:
            return text
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m"


PLAIN = Style()


def describe(item_type: str, payload: Mapping[str, Any], style: Style = PLAIN) -> str:
    """A few lines describing one envelope item whose payload is a JSON object."""
    if item_type == "transaction":
        return _describe_transaction(payload, style)
    if item_type == "event":
        return _describe_event(payload, style)
    if item_type == "client_report":
        return _describe_client_report(payload, style)
    if item_type == "session":
        return _describe_session(payload, style)
    if item_type == "sessions":
        return _describe_sessions(payload, style)
    if item_type == "span":
        return _describe_span_items(payload, style)
    if item_type == "log":
        return _describe_logs(payload, style)
    keys = ", ".join(sorted(str(key) for key in payload)[:8])
    return f"{style.paint(item_type, _BOLD)}: " + (f"{{{keys}}}" if keys else "(empty)")


def describe_bytes(item_type: str, headers: Mapping[str, Any], raw: bytes, style: Style = PLAIN) -> str:
    """One line for an item whose payload is not a JSON object (an attachment, a profile chunk...)."""
    name = headers.get("filename")
    named = f" {name}" if isinstance(name, str) else ""
    return f"{style.paint(item_type, _BOLD)}{named}: {len(raw)} bytes (not JSON)"


def _text(value: Any) -> str:
    return "?" if value is None or value == "" else str(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    return [entry for entry in value if isinstance(entry, Mapping)] if isinstance(value, list) else []


def _timestamp(value: Any) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _duration(start: Any, end: Any) -> str:
    began, ended = _timestamp(start), _timestamp(end)
    if began is None or ended is None:
        return "? ms"
    milliseconds = (ended - began) * 1000
    return f"{milliseconds / 1000:.2f} s" if milliseconds >= 10_000 else f"{milliseconds:.1f} ms"


def _compact(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= _SHOWN_VALUE else text[: _SHOWN_VALUE - 3] + "..."


def _pairs(values: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{key}={_compact(value)}" for key, value in sorted(values.items(), key=lambda kv: kv[0])
    )


def _path_only(url: str) -> str:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _request_line(event: Mapping[str, Any], style: Style) -> Optional[str]:
    request = _mapping(event.get("request"))
    data = _mapping(_mapping(_mapping(event.get("contexts")).get("trace")).get("data"))
    method = request.get("method") or data.get("http.request.method") or data.get("http.method")
    url = request.get("url") or data.get("url.full") or data.get("http.url")
    if not url:
        path = data.get("url.path") or data.get("http.target")
        url = path if isinstance(path, str) else None
    if not method and not url:
        return None
    query = request.get("query_string")
    if isinstance(url, str) and query and "?" not in url:
        url = f"{url}?{query}"
    if isinstance(url, str) and style.stable:
        url = _path_only(url)
    return f"{_text(method)} {_text(url)}"


def _response_status(event: Mapping[str, Any]) -> Optional[str]:
    contexts = _mapping(event.get("contexts"))
    code = _mapping(contexts.get("response")).get("status_code")
    if code is None:
        code = _mapping(event.get("tags")).get("http.status_code")
    if code is None:
        data = _mapping(_mapping(contexts.get("trace")).get("data"))
        code = data.get("http.response.status_code") or data.get("http.status_code")
    return None if code is None else str(code)


def _label(name: str, style: Style) -> str:
    return style.paint(name, _DIM)


def _context_lines(event: Mapping[str, Any], style: Style) -> list[str]:
    """Where it came from, and what the app attached: release, user, tags, contexts."""
    lines: list[str] = []
    contexts = _mapping(event.get("contexts"))
    service = _mapping(_mapping(contexts.get("otel")).get("resource")).get("service.name")
    origin = [
        f"{name} {value}"
        for name, value in (
            ("service", service),
            ("environment", event.get("environment")),
            ("release", None if style.stable else event.get("release")),
        )
        if value
    ]
    if origin:
        lines.append(f"  {_label('app', style)} " + " | ".join(origin))
    user = _mapping(event.get("user"))
    if user:
        lines.append(f"  {_label('user', style)} {_pairs(user)}")
    tags = {key: value for key, value in _mapping(event.get("tags")).items() if key != "http.status_code"}
    if tags:
        lines.append(f"  {_label('tags', style)} {_pairs(tags)}")
    custom = {key: value for key, value in contexts.items() if key not in _KNOWN_CONTEXTS}
    for name, value in sorted(custom.items()):
        lines.append(f"  {_label('context', style)} {name} {_compact(value)}")
    return lines


def _trace_line(event: Mapping[str, Any], style: Style) -> list[str]:
    trace = _mapping(_mapping(event.get("contexts")).get("trace"))
    if not trace:
        return [f"  {_label('trace', style)} (none: not linked to a trace)"]
    if style.stable:
        return []
    return [
        f"  {_label('trace', style)} {style.paint(_text(trace.get('trace_id')), _DIM)} "
        f"{_label('span', style)} {style.paint(_text(trace.get('span_id')), _DIM)}"
    ]


@dataclass(frozen=True)
class _Span:
    span_id: str
    parent_id: Optional[str]
    op: str
    description: str
    status: Optional[str]
    start: Any
    end: Any

    def line(self, style: Style) -> str:
        parts = [style.paint(self.op, _CYAN), self.description]
        if not style.stable:
            parts.append(style.paint(_duration(self.start, self.end), _DIM))
        if self.status and self.status not in ("ok", "unset"):
            parts.append(style.paint(f"[{self.status}]", _RED))
        return "  ".join(part for part in parts if part)


def _tree_lines(
    spans: Sequence[_Span], roots_of: Iterable[Optional[str]], style: Style, indent: int
) -> list[str]:
    """Spans as an indented tree under the given parent ids, oldest first, at most ``SHOWN_SPANS``."""
    children: dict[Optional[str], list[_Span]] = {}
    known = {span.span_id for span in spans}
    root_ids = set(roots_of)
    for span in spans:
        parent = span.parent_id if span.parent_id in known or span.parent_id in root_ids else None
        children.setdefault(parent, []).append(span)
    for siblings in children.values():
        siblings.sort(key=lambda span: (_timestamp(span.start) or 0.0, span.span_id))
    lines: list[str] = []
    shown: set[int] = set()

    def walk(parent: Optional[str], depth: int) -> None:
        for span in children.get(parent, []):
            if len(lines) >= SHOWN_SPANS or id(span) in shown:
                continue
            shown.add(id(span))
            lines.append(" " * (indent + 2 * depth) + span.line(style))
            walk(span.span_id, depth + 1)

    for root in [*sorted(root_id for root_id in root_ids if root_id), None]:
        walk(root, 0)
    if len(spans) > len(shown):
        lines.append(" " * indent + f"... and {len(spans) - len(shown)} more span(s)")
    return lines


def _describe_transaction(event: Mapping[str, Any], style: Style) -> str:
    trace = _mapping(_mapping(event.get("contexts")).get("trace"))
    status = _text(trace.get("status"))
    facts = [
        f"op {_text(trace.get('op'))}",
        f"status {style.paint(status, _GREEN if status == 'ok' else _RED)}",
    ]
    if not style.stable:
        facts.append(_duration(event.get("start_timestamp"), event.get("timestamp")))
    source = _mapping(event.get("transaction_info")).get("source")
    if source:
        facts.append(f"source {source}")
    lines = [
        f"{style.paint('transaction', _BOLD, _GREEN)} {style.paint(_text(event.get('transaction')), _BOLD)}",
        "  " + " | ".join(facts),
    ]
    request = _request_line(event, style)
    if request is not None:
        code = _response_status(event)
        answer = f" -> {code}" if code else " (the app sent no response)"
        lines.append(f"  {_label('request', style)} {request}{answer}")
    lines += _context_lines(event, style)
    lines += _trace_line(event, style)
    spans = [
        _Span(
            span_id=_text(span.get("span_id")),
            parent_id=span.get("parent_span_id") if isinstance(span.get("parent_span_id"), str) else None,
            op=_text(span.get("op")),
            description=str(span.get("description") or ""),
            status=span.get("status") if isinstance(span.get("status"), str) else None,
            start=span.get("start_timestamp"),
            end=span.get("timestamp"),
        )
        for span in _mappings(event.get("spans"))
    ]
    if spans:
        lines.append(f"  {_label('spans', style)} ({len(spans)}):")
        root = trace.get("span_id")
        lines += _tree_lines(spans, [root if isinstance(root, str) else None], style, indent=4)
    return "\n".join(lines)


def _in_app_frames(frames: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], str]:
    """The frames worth showing and what they are: the app's own when the SDK could tell."""
    marked = [frame for frame in frames if frame.get("in_app") is True]
    if marked:
        return marked, "in-app"
    unmarked = [frame for frame in frames if frame.get("in_app") is not False]
    if unmarked and len(unmarked) < len(frames):
        return unmarked, "in-app"
    return list(frames), "last"


def _frame_lines(frame: Mapping[str, Any], style: Style) -> list[str]:
    where = frame.get("filename") or frame.get("abs_path") or frame.get("module")
    lines = [
        f"    {style.paint(_text(where), _CYAN)}:{_text(frame.get('lineno'))} in "
        f"{style.paint(_text(frame.get('function')), _BOLD)}"
    ]
    context = frame.get("context_line")
    if isinstance(context, str) and context.strip():
        lines.append(f"        {context.strip()}")
    return lines


def _message_of(event: Mapping[str, Any]) -> Optional[str]:
    logentry = _mapping(event.get("logentry"))
    message = logentry.get("formatted") or logentry.get("message") or event.get("message")
    if isinstance(message, Mapping):
        message = message.get("formatted") or message.get("message")
    return None if message is None else str(message)


def _exception_title(value: Mapping[str, Any]) -> str:
    title = _text(value.get("type"))
    return f"{title}: {value['value']}" if value.get("value") else title


def _describe_event(event: Mapping[str, Any], style: Style) -> str:
    values = _mappings(_mapping(event.get("exception")).get("values"))
    level = _text(event.get("level"))
    lines: list[str] = []
    if values:
        main = values[-1]
        mechanism = _mapping(main.get("mechanism"))
        handled = mechanism.get("handled")
        state = "handled" if handled is True else "unhandled" if handled is False else "handled: unknown"
        kind = f", mechanism {mechanism['type']}" if mechanism.get("type") else ""
        lines.append(f"{style.paint('error', _BOLD, _RED)} {style.paint(_exception_title(main), _BOLD)}")
        lines.append(f"  {state}{kind} | level {level}")
        for earlier in reversed(values[:-1]):
            lines.append(f"  {_label('chained from', style)} {_exception_title(earlier)}")
        frames = _mappings(_mapping(main.get("stacktrace")).get("frames"))
        if frames:
            chosen, kind_of = _in_app_frames(frames)
            shown = chosen[-SHOWN_FRAMES:]
            counted = f"{len(shown)} of {len(frames)}" if kind_of == "last" else f"{len(shown)} in-app of "
            if kind_of != "last":
                counted += str(len(frames))
            lines.append(f"  {_label('frames', style)} ({counted}, oldest first):")
            for frame in shown:
                lines += _frame_lines(frame, style)
    else:
        colour = _RED if level in ("error", "fatal") else _YELLOW if level == "warning" else _BOLD
        lines.append(
            f"{style.paint('message', _BOLD, colour)} {style.paint(_text(_message_of(event)), _BOLD)}"
        )
        facts = [f"level {level}"]
        if event.get("logger"):
            facts.append(f"logger {event['logger']}")
        lines.append("  " + " | ".join(facts))
    if event.get("transaction"):
        lines.append(f"  {_label('transaction', style)} {event['transaction']}")
    request = _request_line(event, style)
    if request is not None:
        lines.append(f"  {_label('request', style)} {request}")
    lines += _context_lines(event, style)
    lines += _trace_line(event, style)
    return "\n".join(lines)


def _plural(quantity: Any, noun: str) -> str:
    noun = {"log_item": "log", "log_byte": "log byte"}.get(noun, noun)
    return f"{quantity} {noun}" if quantity == 1 else f"{quantity} {noun}s"


def _describe_client_report(report: Mapping[str, Any], style: Style) -> str:
    discarded = _mappings(report.get("discarded_events"))
    title = style.paint("client report", _BOLD, _YELLOW)
    if not discarded:
        return f"{title}: nothing discarded"
    lines = [
        f"{title}: the SDK discarded "
        + ", ".join(_plural(entry.get("quantity"), _text(entry.get("category"))) for entry in discarded)
    ]
    for entry in discarded:
        reason = _text(entry.get("reason"))
        explained, cause = DISCARD_REASONS.get(reason, ("a reason this receiver does not know", ""))
        what = _plural(entry.get("quantity"), _text(entry.get("category")))
        lines.append(f"  {what}: {style.paint(reason, _BOLD)} = {explained}")
        if cause:
            lines.append(f"    ({cause})")
    return "\n".join(lines)


def _app_attrs(attrs: Mapping[str, Any], style: Style) -> str:
    named = [
        f"{name} {attrs[name]}"
        for name in ("environment", "release")
        if attrs.get(name) and not (style.stable and name == "release")
    ]
    return f" ({', '.join(named)})" if named else ""


def _describe_session(session: Mapping[str, Any], style: Style) -> str:
    errors = session.get("errors", 0)
    return (
        f"{style.paint('session', _BOLD)} {_text(session.get('status'))}, {_plural(errors, 'error')}"
        + _app_attrs(_mapping(session.get("attrs")), style)
    )


def _describe_sessions(payload: Mapping[str, Any], style: Style) -> str:
    totals: dict[str, int] = {}
    for bucket in _mappings(payload.get("aggregates")):
        for outcome in ("exited", "errored", "abnormal", "crashed"):
            count = bucket.get(outcome)
            if isinstance(count, int) and count:
                totals[outcome] = totals.get(outcome, 0) + count
    counted = ", ".join(f"{count} {outcome}" for outcome, count in totals.items()) or "none"
    return f"{style.paint('sessions', _BOLD)} (one per request): {counted}" + _app_attrs(
        _mapping(payload.get("attrs")), style
    )


def _attribute(attributes: Mapping[str, Any], name: str) -> Any:
    value = attributes.get(name)
    return value.get("value") if isinstance(value, Mapping) else value


def _describe_span_items(payload: Mapping[str, Any], style: Style) -> str:
    items = _mappings(payload.get("items"))
    spans = [
        _Span(
            span_id=_text(span.get("span_id")),
            parent_id=span.get("parent_span_id") if isinstance(span.get("parent_span_id"), str) else None,
            op=_text(_attribute(_mapping(span.get("attributes")), "sentry.op")),
            description=str(span.get("name") or ""),
            status=span.get("status") if isinstance(span.get("status"), str) else None,
            start=span.get("start_timestamp"),
            end=span.get("end_timestamp"),
        )
        for span in items
    ]
    segments = {
        str(_attribute(_mapping(span.get("attributes")), "sentry.segment.name"))
        for span in items
        if _attribute(_mapping(span.get("attributes")), "sentry.segment.name")
    }
    title = f"{style.paint('spans', _BOLD, _GREEN)} (streamed, {len(spans)})"
    if segments:
        title += " of " + ", ".join(style.paint(name, _BOLD) for name in sorted(segments))
    lines = [title]
    roots = {span.parent_id for span in spans} - {span.span_id for span in spans}
    lines += _tree_lines(spans, roots, style, indent=2)
    return "\n".join(lines)


def _describe_logs(payload: Mapping[str, Any], style: Style) -> str:
    records = _mappings(payload.get("items"))
    lines = [f"{style.paint('logs', _BOLD)} ({len(records)})"]
    for record in records[:SHOWN_LOGS]:
        level = _text(record.get("level"))
        colour = _RED if level in ("error", "fatal") else _YELLOW if level in ("warn", "warning") else _DIM
        attributes = _mapping(record.get("attributes"))
        logger = _attribute(attributes, "logger.name")
        where = f"  ({logger})" if logger else ""
        lines.append(f"  {style.paint(f'{level:<5}', colour)} {_text(record.get('body'))}{where}")
    if len(records) > SHOWN_LOGS:
        lines.append(f"  ... and {len(records) - SHOWN_LOGS} more")
    return "\n".join(lines)


def duration_of(item_type: str, payload: Mapping[str, Any]) -> Optional[str]:
    """A transaction's duration, e.g. ``3.1 ms``; what a stable rendering leaves out."""
    if item_type != "transaction":
        return None
    return _duration(payload.get("start_timestamp"), payload.get("timestamp"))


def trace_id_of(payload: Mapping[str, Any]) -> Optional[str]:
    trace_id = _mapping(_mapping(payload.get("contexts")).get("trace")).get("trace_id")
    return trace_id if isinstance(trace_id, str) else None


def started_at(payload: Mapping[str, Any]) -> float:
    """When a transaction started, or an event happened; 0 when the payload does not say."""
    return _timestamp(payload.get("start_timestamp")) or _timestamp(payload.get("timestamp")) or 0.0
