"""A loopback Sentry ingestion endpoint that records and parses what SDKs send.

The envelope parser follows Relay's own rules (relay-server ``Envelope::parse_bytes``) and is written
independently of sentry-sdk so that it can judge what sentry-sdk, or code built on it, puts on the wire.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import importlib
import json
import re
import socket
import ssl
import struct
import threading
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, Optional, cast
from urllib.parse import parse_qsl, urlsplit

from tests.loopback import LoopbackServer


def _load_brotli_decompress() -> Optional[Callable[[bytes], bytes]]:
    try:
        module = importlib.import_module("brotli")
    except ImportError:
        return None
    return cast(Callable[[bytes], bytes], module.decompress)


_brotli_decompress = _load_brotli_decompress()

DEFAULT_KEY = "0123456789abcdef0123456789abcdef"
PROJECT_ID = "1"

_PATH_RE = re.compile(r"^/api/(?P<project_id>[^/]+)/(?P<endpoint>envelope|store)/?$")
_JSON_WHITESPACE = b" \t\r\n"
_DECODER = json.JSONDecoder()


class EnvelopeParseError(ValueError):
    pass


@dataclass(frozen=True)
class Item:
    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> Optional[str]:
        value = self.headers.get("type")
        return value if isinstance(value, str) else None

    def json(self) -> Any:
        """The payload parsed as JSON, or ``None`` if it is not valid JSON."""
        try:
            return json.loads(self.payload)
        except ValueError:
            return None


@dataclass(frozen=True)
class Envelope:
    headers: dict[str, Any]
    items: list[Item]

    def items_of(self, type: Optional[str] = None) -> list[Item]:
        return [item for item in self.items if type is None or item.type == type]


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_body: bytes
    envelope: Optional[Envelope]
    auth: dict[str, str]
    authorized: bool
    status: int
    error: Optional[str] = None
    project_id: Optional[str] = None
    received_at: float = field(default_factory=time.time)

    def describe(self) -> str:
        kinds = [item.type or "?" for item in self.envelope.items] if self.envelope else []
        text = f"{self.method} {self.path} -> {self.status} items={kinds}"
        if self.error:
            text += f" error={self.error!r}"
        return text


@dataclass(frozen=True)
class _Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Optional[bytes] = None
    delay: float = 0.0
    raw: Optional[bytes] = None


def _skip_whitespace(data: bytes, offset: int) -> int:
    while offset < len(data) and data[offset] in _JSON_WHITESPACE:
        offset += 1
    return offset


def _parse_header_line(data: bytes, offset: int, what: str) -> tuple[dict[str, Any], int]:
    """Parse one JSON object at ``offset``; return it and the offset just past its terminating newline."""
    start = _skip_whitespace(data, offset)
    if start >= len(data):
        raise EnvelopeParseError(f"unexpected end of envelope where the {what} should start (byte {offset})")
    end = data.find(b"\n", start)
    line_end = len(data) if end == -1 else end
    try:
        text = data[start:line_end].decode("utf-8")
        value, consumed = _DECODER.raw_decode(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise EnvelopeParseError(f"invalid {what} at byte {start}: {exc}") from exc
    if len(text[consumed:]) != 0:
        raise EnvelopeParseError(
            f"missing newline after {what} at byte {start}: trailing {text[consumed:]!r}"
        )
    if not isinstance(value, dict):
        raise EnvelopeParseError(f"{what} at byte {start} is not a JSON object: {value!r}")
    return value, line_end + 1


def parse_envelope(data: bytes) -> Envelope:
    """Parse a Sentry envelope, raising :class:`EnvelopeParseError` where Relay would reject it."""
    headers, offset = _parse_header_line(data, 0, "envelope header")
    items: list[Item] = []
    while offset < len(data):
        item_headers, payload_start = _parse_header_line(data, offset, f"header of item {len(items)}")
        item_type = item_headers.get("type")
        if not isinstance(item_type, str):
            raise EnvelopeParseError(f"item {len(items)} header has no string 'type': {item_headers!r}")
        payload_start = min(payload_start, len(data))
        length = item_headers.get("length")
        if length is None:
            newline = data.find(b"\n", payload_start)
            payload_end = len(data) if newline == -1 else newline
        else:
            if isinstance(length, bool) or not isinstance(length, int) or length < 0:
                raise EnvelopeParseError(f"item {len(items)} has an invalid length {length!r}")
            payload_end = payload_start + length
            if payload_end > len(data):
                raise EnvelopeParseError(
                    f"item {len(items)} ({item_type}) declares length {length} but only "
                    f"{len(data) - payload_start} bytes follow"
                )
            if payload_end < len(data) and data[payload_end : payload_end + 1] != b"\n":
                raise EnvelopeParseError(
                    f"missing newline after payload of item {len(items)} ({item_type}) at byte {payload_end}"
                )
        items.append(Item(headers=item_headers, payload=data[payload_start:payload_end]))
        offset = payload_end + 1
    return Envelope(headers=headers, items=items)


def parse_auth(header: Optional[str], query: Mapping[str, str]) -> dict[str, str]:
    """Parse ``X-Sentry-Auth: Sentry sentry_key=..., sentry_version=7`` and ``?sentry_key=`` parameters."""
    auth: dict[str, str] = {}
    if header:
        text = header.strip()
        if text[:7].lower() == "sentry ":
            text = text[7:]
        for part in text.split(","):
            key, sep, value = part.strip().partition("=")
            if sep and key.strip():
                auth[key.strip()] = value.strip()
    for key, value in query.items():
        if key.startswith("sentry_"):
            auth.setdefault(key, value)
    return auth


def decode_body(body: bytes, content_encoding: Optional[str]) -> bytes:
    if not content_encoding:
        return body
    for encoding in reversed([e.strip().lower() for e in content_encoding.split(",") if e.strip()]):
        if encoding in ("gzip", "x-gzip"):
            body = gzip.decompress(body)
        elif encoding == "deflate":
            try:
                body = zlib.decompress(body)
            except zlib.error:
                body = zlib.decompress(body, -zlib.MAX_WBITS)
        elif encoding == "br":
            if _brotli_decompress is None:
                raise ValueError("Content-Encoding br but the brotli module is not installed")
            body = _brotli_decompress(body)
        elif encoding != "identity":
            raise ValueError(f"unsupported Content-Encoding {encoding!r}")
    return body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, receiver: EnvelopeReceiver, port: int = 0, tls: Optional[ssl.SSLContext] = None
    ) -> None:
        self.receiver = receiver
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.accepted = 0
        super().__init__(("127.0.0.1", port), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
            self.accepted += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.receiver._record_server_error(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30
    # Headers and body go out in two writes; with Nagle on, each answer waits for the client's delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        status, headers, answer_body, delay = self.server.receiver._process(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        if delay > 0:
            time.sleep(delay)
        raw = self.server.receiver._raw_answer()
        if raw is not None:
            self.wfile.write(raw)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.send_response(status)
        lowered = {k.lower() for k in headers}
        for name, value in headers.items():
            self.send_header(name, value)
        if "content-type" not in lowered:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer_body)))
        self.end_headers()
        self.wfile.write(answer_body)


class EnvelopeReceiver(LoopbackServer):
    """A Sentry-compatible ingestion endpoint on 127.0.0.1 that records every request in order."""

    def __init__(
        self,
        key: str = DEFAULT_KEY,
        project_id: str = PROJECT_ID,
        port: int = 0,
        tls: Optional[ssl.SSLContext] = None,
    ) -> None:
        super().__init__()
        self.tls = tls
        self.key = key
        self.project_id = project_id
        self._requested_port = port
        self._cond = threading.Condition(threading.RLock())
        self._requests: list[ReceivedRequest] = []
        self._counts: Counter[str] = Counter()
        self._server_errors: list[str] = []
        self._answer = _Answer()
        self._raw_left: Optional[int] = None

    def _make_server(self) -> _Server:
        return _Server(self, self._requested_port, self.tls)

    def _before_close(self, server: ThreadingHTTPServer) -> None:
        if isinstance(server, _Server):
            server.close_connections()

    @property
    def dsn(self) -> str:
        if self.tls is not None:
            return f"https://{self.key}@localhost:{self.port}/{self.project_id}"
        return f"http://{self.key}@127.0.0.1:{self.port}/{self.project_id}"

    @property
    def connections_accepted(self) -> int:
        server = self._server
        return server.accepted if isinstance(server, _Server) else 0

    def respond_with(
        self,
        status: int = 200,
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[bytes] = None,
        delay: float = 0.0,
        raw: Optional[bytes] = None,
        raw_times: Optional[int] = None,
    ) -> None:
        """Set the answer for following valid requests; ``body=None`` answers like Sentry does.

        ``raw`` replaces the whole HTTP answer with those bytes, then the connection is reset: ``b""``
        resets it without a word, anything else is a garbage answer; with ``raw_times`` only that many
        answers are raw, the later ones normal. With no arguments this restores the default: 200 and
        ``{"id": "<event id>"}``.
        """
        with self._cond:
            self._answer = _Answer(
                status=status, headers=dict(headers or {}), body=body, delay=delay, raw=raw
            )
            self._raw_left = raw_times

    def _raw_answer(self) -> Optional[bytes]:
        with self._cond:
            if self._answer.raw is None or self._raw_left == 0:
                return None
            if self._raw_left is not None:
                self._raw_left -= 1
            return self._answer.raw

    def _record_server_error(self, text: str) -> None:
        with self._cond:
            self._server_errors.append(text)

    def _process(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes, float]:
        split = urlsplit(target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        auth = parse_auth(headers.get("x-sentry-auth"), query)
        with self._cond:
            answer = self._answer
        match = _PATH_RE.match(split.path)
        project_id = match.group("project_id") if match else None
        envelope: Optional[Envelope] = None
        error: Optional[str] = None
        status = answer.status
        authorized = bool(auth.get("sentry_key"))
        raw_body = body
        if match is None:
            status, error = 404, f"unknown path {split.path!r}"
        elif method != "POST":
            status, error = 405, f"method {method} not allowed"
        elif not authorized:
            status, error = 401, "missing X-Sentry-Auth header or sentry_key query parameter"
        elif auth["sentry_key"] != self.key:
            authorized = False
            status, error = 401, f"sentry_key {auth['sentry_key']!r} is not this receiver's key {self.key!r}"
        elif project_id != self.project_id:
            status, error = 403, f"project {project_id!r} is not this receiver's project {self.project_id!r}"
        else:
            try:
                raw_body = decode_body(body, headers.get("content-encoding"))
            except (OSError, EOFError, ValueError, zlib.error) as exc:
                status, error = 400, f"cannot decode body ({headers.get('content-encoding')}): {exc}"
            else:
                try:
                    if match.group("endpoint") == "envelope":
                        envelope = parse_envelope(raw_body)
                    else:
                        envelope = _store_envelope(raw_body)
                except EnvelopeParseError as exc:
                    status, error = 400, str(exc)
        event_id = envelope.headers.get("event_id") if envelope is not None else None
        request = ReceivedRequest(
            method=method,
            path=split.path,
            query=query,
            headers=headers,
            raw_body=raw_body,
            envelope=envelope,
            auth=auth,
            authorized=authorized,
            status=status,
            error=error,
            project_id=project_id,
        )
        with self._cond:
            self._requests.append(request)
            if envelope is not None:
                self._counts.update(item.type for item in envelope.items)
            self._cond.notify_all()
        if error is not None:
            return status, {}, json.dumps({"detail": error}).encode(), 0.0
        if answer.body is not None:
            answer_body = answer.body
        elif 200 <= status < 300:
            answer_body = json.dumps({"id": event_id}).encode()
        else:
            answer_body = json.dumps({"detail": HTTPStatus(status).phrase}).encode()
        return status, dict(answer.headers), answer_body, answer.delay

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._cond:
            return copy.deepcopy(self._requests)

    @property
    def envelopes(self) -> list[Envelope]:
        with self._cond:
            return [copy.deepcopy(r.envelope) for r in self._requests if r.envelope is not None]

    @property
    def server_errors(self) -> list[str]:
        with self._cond:
            return list(self._server_errors)

    def items(self, type: Optional[str] = None) -> list[Item]:
        return [item for envelope in self.envelopes for item in envelope.items_of(type)]

    def _payloads(self, type: str) -> list[dict[str, Any]]:
        payloads = [item.json() for item in self.items(type)]
        return [p for p in payloads if isinstance(p, dict)]

    def events(self) -> list[dict[str, Any]]:
        return self._payloads("event")

    def transactions(self) -> list[dict[str, Any]]:
        return self._payloads("transaction")

    def client_reports(self) -> list[dict[str, Any]]:
        return self._payloads("client_report")

    def envelope_of(self, event_id: str) -> Optional[Envelope]:
        """The envelope that carried the item whose payload has this ``event_id``."""
        wanted = event_id.replace("-", "").lower()
        for envelope in self.envelopes:
            for item in envelope.items:
                payload = item.json()
                if (
                    isinstance(payload, dict)
                    and str(payload.get("event_id", "")).replace("-", "").lower() == wanted
                ):
                    return envelope
        return None

    def clear(self) -> None:
        with self._cond:
            self._requests.clear()
            self._counts.clear()
            self._server_errors.clear()

    def wait_for(self, predicate: Callable[[EnvelopeReceiver], bool], timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout=timeout)

    def wait_for_transactions(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return self._wait_for_payloads("transaction", n, timeout)

    def wait_for_events(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return self._wait_for_payloads("event", n, timeout)

    def _wait_for_payloads(self, type: str, n: int, timeout: float) -> list[dict[str, Any]]:
        if not self.wait_for(lambda r: r._counts[type] >= n, timeout):
            raise AssertionError(
                f"expected at least {n} {type} item(s) within {timeout}s, got {len(self._payloads(type))}\n"
                + self.summary()
            )
        return self._payloads(type)

    def summary(self) -> str:
        """A human-readable account of everything received, for assertion messages."""
        with self._cond:
            requests = list(self._requests)
            server_errors = list(self._server_errors)
            answer = self._answer
        counts = Counter(
            item.type or "?" for r in requests if r.envelope is not None for item in r.envelope.items
        )
        invalid = sum(
            1
            for r in requests
            if r.envelope is not None
            for item in r.envelope.items
            if item.type in ("event", "transaction", "client_report") and not isinstance(item.json(), dict)
        )
        lines = [
            f"receiver {self.dsn if self._server else '(stopped)'} answers {answer.status}",
            f"{len(requests)} request(s); items by type: {dict(counts) or 'none'}",
        ]
        if invalid:
            lines.append(
                f"{invalid} event/transaction/client_report item(s) whose payload is not a JSON object"
            )
        lines.extend(f"  #{i} {r.describe()}" for i, r in enumerate(requests, 1))
        lines.extend(f"server error: {text}" for text in server_errors)
        return "\n".join(lines)


def _normalize_id(value: str) -> str:
    return value.replace("-", "").lower()


def _store_envelope(body: bytes) -> Envelope:
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise EnvelopeParseError(f"store body is not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise EnvelopeParseError("store body is not a JSON object")
    item_type = "transaction" if event.get("type") == "transaction" else "event"
    item = Item(headers={"type": item_type, "length": len(body)}, payload=body)
    return Envelope(headers={"event_id": event.get("event_id")}, items=[item])
