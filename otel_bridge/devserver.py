"""A loopback Sentry-compatible endpoint for people: it receives envelopes and shows what arrived.

Used by ``otel-bridge demo`` and ``otel-bridge receive``. Standard library only; ``br`` bodies are accepted
when the ``brotli`` package is importable. It is not a Sentry: it checks no key and keeps everything in
memory, so point only local, short-lived processes at it.
"""

from __future__ import annotations

import gzip
import importlib
import json
import re
import secrets
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Callable, Optional, cast

_PATH_RE = re.compile(r"^/api/(?P<project>[^/]+)/envelope/?$")
_MAX_BODY = 100 * 1024 * 1024
_SHOWN_SPANS = 5
_SHOWN_FRAMES = 3


class EnvelopeError(ValueError):
    """The body is not a Sentry envelope."""


@dataclass(frozen=True)
class ReceivedItem:
    """One envelope item as it arrived; ``payload`` is its JSON object, or ``None`` if it is not one."""

    type: str
    headers: Mapping[str, Any]
    payload: Optional[Mapping[str, Any]]
    raw: bytes
    envelope_headers: Mapping[str, Any]
    project: str
    received_at: float

    def describe(self) -> str:
        if self.payload is None:
            return f"{self.type}: {len(self.raw)} bytes (not JSON)"
        return describe(self.type, self.payload)


def _load_brotli() -> Optional[Callable[[bytes], bytes]]:
    try:
        module = importlib.import_module("brotli")
    except ImportError:
        return None
    return cast(Callable[[bytes], bytes], module.decompress)


_brotli_decompress = _load_brotli()


def supported_encodings() -> tuple[str, ...]:
    return ("identity", "gzip", "deflate", "br") if _brotli_decompress else ("identity", "gzip", "deflate")


def decode_body(body: bytes, content_encoding: str) -> bytes:
    """Undo ``Content-Encoding``; raises :class:`EnvelopeError` for an encoding we cannot read."""
    for encoding in reversed([part.strip().lower() for part in content_encoding.split(",") if part.strip()]):
        try:
            if encoding == "identity":
                continue
            if encoding in ("gzip", "x-gzip"):
                body = gzip.decompress(body)
            elif encoding == "deflate":
                try:
                    body = zlib.decompress(body)
                except zlib.error:
                    body = zlib.decompress(body, -zlib.MAX_WBITS)
            elif encoding == "br" and _brotli_decompress is not None:
                body = _brotli_decompress(body)
            else:
                raise EnvelopeError(
                    f"Content-Encoding {encoding!r} is not supported: accepted are "
                    f"{', '.join(supported_encodings())}"
                )
        except (OSError, EOFError, zlib.error) as exc:
            raise EnvelopeError(f"body is not valid {encoding}: {exc}") from None
    return body


def _json_line(data: bytes, offset: int, what: str) -> tuple[dict[str, Any], int]:
    end = data.find(b"\n", offset)
    line_end = len(data) if end == -1 else end
    try:
        value = json.loads(data[offset:line_end])
    except ValueError as exc:
        raise EnvelopeError(f"{what} at byte {offset} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise EnvelopeError(f"{what} at byte {offset} is not a JSON object")
    return value, line_end + 1


def parse_envelope(data: bytes) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]:
    """The envelope header and its items as ``(item header, payload bytes)``."""
    if not data.strip():
        raise EnvelopeError("empty body")
    header, offset = _json_line(data, 0, "envelope header")
    items: list[tuple[dict[str, Any], bytes]] = []
    while offset < len(data):
        if data[offset : offset + 1] == b"\n":
            offset += 1
            continue
        item_header, start = _json_line(data, offset, f"header of item {len(items)}")
        length = item_header.get("length")
        if length is None:
            newline = data.find(b"\n", start)
            end = len(data) if newline == -1 else newline
            next_offset = end + 1
        else:
            if not isinstance(length, int) or isinstance(length, bool) or length < 0:
                raise EnvelopeError(f"item {len(items)} has an invalid length {length!r}")
            end = start + length
            if end > len(data):
                raise EnvelopeError(f"item {len(items)} says length {length} but the body ends first")
            next_offset = end + 1 if data[end : end + 1] == b"\n" else end
        items.append((item_header, data[start:end]))
        offset = next_offset
    return header, items


def _json_object(payload: bytes) -> Optional[dict[str, Any]]:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        match = _PATH_RE.match(self.path.split("?", 1)[0])
        if match is None:
            self._answer(404, {"detail": "not found: this receiver accepts POST /api/<project>/envelope/"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self._answer(413, {"detail": "envelope too large"})
            return
        body = self.rfile.read(length)
        try:
            data = decode_body(body, self.headers.get("Content-Encoding", ""))
            header, items = parse_envelope(data)
        except EnvelopeError as exc:
            self._answer(400, {"detail": str(exc)})
            return
        received = self.server.owner._record(match.group("project"), header, items)
        self._answer(200, {})
        self.server.owner._announce(received)

    def do_GET(self) -> None:
        self._answer(404, {"detail": "this receiver accepts POST /api/<project>/envelope/"})

    def _answer(self, status: int, body: Mapping[str, Any]) -> None:
        encoded = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: DevServer


class DevServer:
    """``with DevServer() as server:`` listens on 127.0.0.1; ``server.dsn`` points an SDK at it.

    ``on_item`` is called from the server's request threads, once per item, in arrival order per envelope.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        project: str = "1",
        on_item: Optional[Callable[[ReceivedItem], None]] = None,
    ) -> None:
        self.project = project
        self.public_key = secrets.token_hex(16)
        self._on_item = on_item
        self._items: list[ReceivedItem] = []
        self._changed = threading.Condition()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.owner = self
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def dsn(self) -> str:
        return f"http://{self.public_key}@127.0.0.1:{self.port}/{self.project}"

    def start(self) -> DevServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="otel-bridge-devserver", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    @property
    def items(self) -> list[ReceivedItem]:
        with self._changed:
            return list(self._items)

    def items_of(self, item_type: str) -> list[ReceivedItem]:
        return [item for item in self.items if item.type == item_type]

    def wait_for(self, condition: Callable[[Sequence[ReceivedItem]], bool], timeout: float) -> bool:
        """Wait until ``condition(items so far)`` holds; ``False`` when ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self._items):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def _record(
        self, project: str, header: dict[str, Any], items: list[tuple[dict[str, Any], bytes]]
    ) -> list[ReceivedItem]:
        now = time.time()
        received = [
            ReceivedItem(
                type=str(item_header.get("type", "?")),
                headers=item_header,
                payload=_json_object(payload),
                raw=payload,
                envelope_headers=header,
                project=project,
                received_at=now,
            )
            for item_header, payload in items
        ]
        with self._changed:
            self._items.extend(received)
            self._changed.notify_all()
        return received

    def _announce(self, received: list[ReceivedItem]) -> None:
        if self._on_item is not None:
            for item in received:
                self._on_item(item)


def describe(item_type: str, payload: Mapping[str, Any]) -> str:
    """What an envelope item says, as a few lines for a person reading a terminal."""
    if item_type == "transaction":
        return _describe_transaction(payload)
    if item_type == "event":
        return _describe_event(payload)
    if item_type == "client_report":
        return _describe_client_report(payload)
    if item_type == "session":
        return _describe_session(payload)
    if item_type == "sessions":
        aggregates = payload.get("aggregates") or []
        return f"sessions: {len(aggregates)} aggregate bucket(s)"
    keys = ", ".join(sorted(str(key) for key in payload)[:8])
    return f"{item_type}: {{{keys}}}" if keys else f"{item_type}: (empty)"


def _text(value: Any) -> str:
    return "?" if value is None or value == "" else str(value)


def _timestamp(value: Any) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _duration_ms(item: Mapping[str, Any]) -> str:
    start, end = _timestamp(item.get("start_timestamp")), _timestamp(item.get("timestamp"))
    if start is None or end is None:
        return "? ms"
    return f"{(end - start) * 1000:.1f} ms"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _request_line(event: Mapping[str, Any]) -> Optional[str]:
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


def _describe_transaction(event: Mapping[str, Any]) -> str:
    trace = _mapping(_mapping(event.get("contexts")).get("trace"))
    source = _mapping(event.get("transaction_info")).get("source")
    lines = [
        f"transaction {_text(event.get('transaction'))}",
        f"  source {_text(source)} | op {_text(trace.get('op'))} | status {_text(trace.get('status'))} | "
        f"{_duration_ms(event)}",
    ]
    request = _request_line(event)
    if request is not None:
        status = _response_status(event)
        lines.append(f"  request {request}" + (f" -> {status}" if status else " (the app sent no response)"))
    lines.append(f"  trace {_text(trace.get('trace_id'))} span {_text(trace.get('span_id'))}")
    spans = [span for span in event.get("spans") or [] if isinstance(span, Mapping)]
    lines.append(f"  {len(spans)} child span(s)")
    for span in spans[:_SHOWN_SPANS]:
        lines.append(f"    {_text(span.get('op'))}  {_text(span.get('description'))}  {_duration_ms(span)}")
    if len(spans) > _SHOWN_SPANS:
        lines.append(f"    ... and {len(spans) - _SHOWN_SPANS} more")
    return "\n".join(lines)


def _frame_line(frame: Mapping[str, Any]) -> list[str]:
    where = frame.get("filename") or frame.get("abs_path") or frame.get("module")
    lines = [f"    {_text(where)}:{_text(frame.get('lineno'))} in {_text(frame.get('function'))}"]
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


def _describe_event(event: Mapping[str, Any]) -> str:
    values = [
        value for value in _mapping(event.get("exception")).get("values") or [] if isinstance(value, Mapping)
    ]
    lines: list[str] = []
    if values:
        main = values[-1]
        title = _text(main.get("type"))
        if main.get("value"):
            title += f": {main['value']}"
        mechanism = _mapping(main.get("mechanism"))
        handled = mechanism.get("handled")
        state = "handled" if handled is True else "unhandled" if handled is False else "handled: unknown"
        kind = f", mechanism {mechanism['type']}" if mechanism.get("type") else ""
        lines.append(f"error {title}")
        lines.append(f"  {state}{kind} | level {_text(event.get('level'))}")
        if len(values) > 1:
            lines.append(f"  chained after: {', '.join(_text(value.get('type')) for value in values[:-1])}")
        frames = [
            frame
            for frame in _mapping(main.get("stacktrace")).get("frames") or []
            if isinstance(frame, Mapping)
        ]
        if frames:
            lines.append(f"  last {min(len(frames), _SHOWN_FRAMES)} of {len(frames)} frame(s), oldest first:")
            for frame in frames[-_SHOWN_FRAMES:]:
                lines.extend(_frame_line(frame))
    else:
        lines.append(f"message {_text(_message_of(event))}")
        lines.append(f"  level {_text(event.get('level'))}")
    if event.get("transaction"):
        lines.append(f"  transaction {event['transaction']}")
    request = _request_line(event)
    if request is not None:
        lines.append(f"  request {request}")
    tags = _mapping(event.get("tags"))
    if tags:
        lines.append("  tags " + ", ".join(f"{key}={value}" for key, value in sorted(tags.items())))
    trace = _mapping(_mapping(event.get("contexts")).get("trace"))
    if trace:
        lines.append(f"  trace {_text(trace.get('trace_id'))} span {_text(trace.get('span_id'))}")
    else:
        lines.append("  trace (none: not linked to a trace)")
    return "\n".join(lines)


def _describe_client_report(report: Mapping[str, Any]) -> str:
    discarded = [entry for entry in report.get("discarded_events") or [] if isinstance(entry, Mapping)]
    if not discarded:
        return "client_report: nothing discarded"
    parts = [
        f"{_text(entry.get('quantity'))} {_text(entry.get('category'))} ({_text(entry.get('reason'))})"
        for entry in discarded
    ]
    return "client_report: discarded " + ", ".join(parts)


def _describe_session(session: Mapping[str, Any]) -> str:
    return (
        f"session: status {_text(session.get('status'))}, errors {_text(session.get('errors', 0))}, "
        f"release {_text(_mapping(session.get('attrs')).get('release'))}"
    )
