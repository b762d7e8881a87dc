"""A loopback Sentry-compatible endpoint for people: it receives envelopes and shows what arrived.

Used by ``otel-bridge demo`` and ``otel-bridge receive``; ``describe`` says what arrived in
words. Standard library only; ``br`` bodies are accepted when the ``brotli`` package is importable. It is not
a Sentry: it checks no key and keeps everything in memory, so point only local processes at it.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Callable, Optional, cast

from otel_bridge._dev.describe import PLAIN, Style, describe, describe_bytes, started_at, trace_id_of

__all__ = [
    "DevServer",
    "EnvelopeError",
    "ReceivedItem",
    "Style",
    "decode_body",
    "describe",
    "in_reading_order",
    "parse_envelope",
]

_PATH_RE = re.compile(r"^/api/(?P<project>[^/]+)/envelope/?$")
_MAX_BODY = 100 * 1024 * 1024


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

    def describe(self, style: Style = PLAIN) -> str:
        if self.payload is None:
            return describe_bytes(self.type, self.headers, self.raw, style)
        return describe(self.type, self.payload, style)


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
        public_key: Optional[str] = None,
        on_item: Optional[Callable[[ReceivedItem], None]] = None,
    ) -> None:
        self.project = project
        self.public_key = public_key or secrets.token_hex(16)
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


# After transactions and the events of their trace: the rest, in this order, then unknown types.
_LATER_TYPES = ("event", "span", "log", "session", "sessions", "client_report")


def in_reading_order(items: Sequence[ReceivedItem]) -> list[ReceivedItem]:
    """Transactions by start time, each followed by the events of its trace; then other events, streamed
    spans, logs, sessions, client reports and the rest, each in arrival order. What a person reads, the same
    whichever of a process's queues delivered first."""
    transactions = sorted(
        (item for item in items if item.type == "transaction" and item.payload is not None),
        key=lambda item: started_at(item.payload or {}),
    )
    events_by_trace: dict[str, list[ReceivedItem]] = {}
    for item in items:
        trace_id = trace_id_of(item.payload) if item.type == "event" and item.payload is not None else None
        if trace_id is not None:
            events_by_trace.setdefault(trace_id, []).append(item)
    ordered: list[ReceivedItem] = []
    for transaction in transactions:
        ordered.append(transaction)
        ordered += events_by_trace.pop(trace_id_of(transaction.payload or {}) or "", [])
    placed = {id(item) for item in ordered}
    rest = [item for item in items if id(item) not in placed]
    rank = {item_type: position for position, item_type in enumerate(_LATER_TYPES)}
    return ordered + sorted(rest, key=lambda item: rank.get(item.type, len(rank)))
