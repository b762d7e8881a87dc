"""One HTTP/1.1 POST at a time over a kept-alive, non-blocking socket (plain or TLS).

A ``Connection`` is driven by whoever owns the selector: it says which readiness it waits for
(``wanted``), and ``progress()`` moves it on when the socket is ready, returning the ``Response`` once one
is complete. Nothing here blocks except name resolution when a connection is opened.
"""

from __future__ import annotations

import errno
import re
import selectors
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

SocketOption = tuple[int, int, Union[int, bytes]]

NODELAY: SocketOption = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def with_nodelay(options: Optional[Sequence[SocketOption]]) -> list[SocketOption]:
    """``options`` with TCP_NODELAY on, unless they set it themselves. Without it a POST written in more
    than one send (urllib3 writes headers and body apart) waits for the receiver's delayed ACK."""
    if options is None:
        return [NODELAY]
    if any(tuple(option[:2]) == NODELAY[:2] for option in options):
        return list(options)
    return [*options, NODELAY]


MAX_RESPONSE_BYTES = 1 << 20
_RECEIVE_SIZE = 65536
_HEADER_END = b"\r\n\r\n"
_CRLF = b"\r\n"
# A chunk's size line: hex digits, extensions (read past, as every client does), trailing blanks (h11 allows
# them: some servers write them).
_CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\r\n]*)?[ \t]*")
_DIGITS = re.compile(r"[0-9]+")


class ExchangeFailed(Exception):
    """The exchange did not end with a response. ``retryable``: it failed on a kept-alive connection before
    any byte of an answer arrived, as when the other side had closed it meanwhile."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class Headers(dict[str, str]):
    """Response headers by lower-cased name; ``get`` takes any case."""

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class Response:
    """What sentry-sdk's ``_handle_response`` reads of urllib3's response."""

    status: int
    headers: Headers
    data: bytes
    keep_alive: bool

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: Optional[ssl.SSLContext]
    socket_options: Sequence[SocketOption] = (NODELAY,)

    @property
    def host_header(self) -> str:
        default_port = 443 if self.tls is not None else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default_port else f"{host}:{self.port}"


def request_bytes(endpoint: Endpoint, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {endpoint.host_header}", "Accept-Encoding: identity"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_CONNECTING, _HANDSHAKE, _IDLE, _SENDING, _RECEIVING, _CLOSED = range(6)


class Connection:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.completed = 0
        self._outgoing = memoryview(b"")
        self._incoming = bytearray()
        family, kind, proto, _, address = socket.getaddrinfo(
            endpoint.host, endpoint.port, type=socket.SOCK_STREAM
        )[0]
        raw = socket.socket(family, kind, proto)
        try:
            raw.setblocking(False)
            for level, option, value in endpoint.socket_options:
                raw.setsockopt(level, option, value)
            code = raw.connect_ex(address)
        except OSError:
            raw.close()
            raise
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            raw.close()
            raise ExchangeFailed(f"connect: {errno.errorcode.get(code, code)}")
        self.sock: Union[socket.socket, ssl.SSLSocket] = raw
        self._state = _CONNECTING
        self._wanted = selectors.EVENT_WRITE

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def wanted(self) -> int:
        return self._wanted

    @property
    def idle(self) -> bool:
        return self._state == _IDLE

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    def start(self, request: bytes) -> None:
        """Take ``request`` to send; ``progress()`` sends it once the connection is ready. A kept-alive
        connection is ready at once."""
        self._outgoing = memoryview(request)
        self._incoming.clear()
        if self._state == _IDLE:
            self._state = _SENDING
            self._wanted = selectors.EVENT_WRITE

    def progress(self) -> Optional[Response]:
        try:
            return self._progress()
        except ExchangeFailed:
            self.close()
            raise
        except (OSError, ValueError) as error:
            retryable = self.completed > 0 and not self._incoming
            self.close()
            raise ExchangeFailed(f"{type(error).__name__}: {error}", retryable) from None

    def _progress(self) -> Optional[Response]:
        if self._state == _CONNECTING:
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise ExchangeFailed(f"connect: {errno.errorcode.get(code, code)}")
            if self.endpoint.tls is not None:
                self.sock = self.endpoint.tls.wrap_socket(
                    self.sock, server_hostname=self.endpoint.host, do_handshake_on_connect=False
                )
                self._state = _HANDSHAKE
            else:
                self._state = _SENDING
        if self._state == _HANDSHAKE:
            if not self._handshake():
                return None
            self._state = _SENDING
        if self._state == _SENDING:
            if self._send():
                # the answer cannot be there yet: the selector says when it is
                self._state = _RECEIVING
                self._wanted = selectors.EVENT_READ
            return None
        if self._state == _RECEIVING:
            return self._receive()
        if self._state == _IDLE:
            # an idle connection that turns readable was closed (or spoken to out of turn): drop it
            self.close()
        return None

    def _handshake(self) -> bool:
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._wanted = selectors.EVENT_READ
            return False
        except ssl.SSLWantWriteError:
            self._wanted = selectors.EVENT_WRITE
            return False
        return True

    def _send(self) -> bool:
        while self._outgoing:
            try:
                sent = self.sock.send(self._outgoing)
            except (BlockingIOError, ssl.SSLWantWriteError):
                self._wanted = selectors.EVENT_WRITE
                return False
            except ssl.SSLWantReadError:
                self._wanted = selectors.EVENT_READ
                return False
            self._outgoing = self._outgoing[sent:]
        return True

    def _receive(self) -> Optional[Response]:
        while True:
            try:
                chunk = self.sock.recv(_RECEIVE_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                return None
            except ssl.SSLWantWriteError:
                self._wanted = selectors.EVENT_WRITE
                return None
            if not chunk:
                if not self._incoming:
                    raise ExchangeFailed("connection closed before an answer", retryable=self.completed > 0)
                response = parse_response(self._incoming, at_eof=True)
                assert response is not None
                self.close()
                return response
            self._incoming += chunk
            if len(self._incoming) > MAX_RESPONSE_BYTES:
                raise ExchangeFailed(f"answer longer than {MAX_RESPONSE_BYTES} bytes")
            response = parse_response(self._incoming, at_eof=False)
            if response is not None:
                self.completed += 1
                if response.keep_alive:
                    self._state = _IDLE
                    self._wanted = selectors.EVENT_READ
                    self._incoming.clear()
                else:
                    self.close()
                return response

    def close(self) -> None:
        if self._state != _CLOSED:
            self._state = _CLOSED
            self.sock.close()


def parse_response(buffer: Union[bytes, bytearray], at_eof: bool) -> Optional[Response]:
    """The complete response in ``buffer``, or ``None`` while more is to come.

    Raises ``ExchangeFailed`` for what is not HTTP/1.x or cannot become complete. Interim (1xx) answers
    are skipped.
    """
    start = 0
    while True:
        end = buffer.find(_HEADER_END, start)
        if end < 0:
            if at_eof:
                raise ExchangeFailed("connection closed in the middle of an answer's headers")
            return None
        status, version, headers = _parse_head(bytes(buffer[start:end]))
        body_start = end + len(_HEADER_END)
        if 100 <= status < 200:
            start = body_start
            continue
        keep_alive = _keeps_alive(version, headers)
        if status in (204, 304):
            return Response(status, headers, b"", keep_alive)
        if "chunked" in (headers.get("transfer-encoding") or "").lower():
            body = _dechunk(buffer, body_start, at_eof)
            return None if body is None else Response(status, headers, body, keep_alive)
        length = headers.get("content-length")
        if length is not None:
            size = int(length)
            if len(buffer) - body_start < size:
                if at_eof:
                    raise ExchangeFailed("connection closed in the middle of an answer's body")
                return None
            return Response(status, headers, bytes(buffer[body_start : body_start + size]), keep_alive)
        if not at_eof:
            return None
        return Response(status, headers, bytes(buffer[body_start:]), False)


def _parse_head(head: bytes) -> tuple[int, str, Headers]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if (
        len(parts) < 2
        or not parts[0].startswith(b"HTTP/1.")
        or not (parts[1].isdigit() and len(parts[1]) == 3)
    ):
        raise ExchangeFailed(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            key = name.strip().decode("latin-1").lower()
            text = value.strip(b" \t").decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
    length = headers.get("content-length")
    if length is not None and not _DIGITS.fullmatch(length):
        raise ExchangeFailed(f"bad Content-Length: {length[:20]!r}")
    return int(parts[1]), parts[0].decode("latin-1"), headers


def _keeps_alive(version: str, headers: Headers) -> bool:
    tokens = {token.strip().lower() for token in (headers.get("connection") or "").split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def _dechunk(buffer: Union[bytes, bytearray], position: int, at_eof: bool) -> Optional[bytes]:
    """The body of a chunked answer, or ``None`` while more is to come. Each chunk's data must be followed by
    CRLF: skipping whatever two bytes follow (h11's leniency behind CVE-2025-43859) would let a body say
    where the next answer starts."""
    body = bytearray()
    while True:
        line_end = buffer.find(_CRLF, position)
        if line_end < 0:
            break
        size_line = bytes(buffer[position:line_end])
        match = _CHUNK_SIZE_LINE.fullmatch(size_line)
        if match is None:
            raise ExchangeFailed(f"bad chunk size line: {size_line[:20]!r}")
        size = int(match.group(1), 16)
        if size == 0:
            if buffer.find(_HEADER_END, line_end) < 0:
                break
            return bytes(body)
        data_start = line_end + len(_CRLF)
        data_end = data_start + size
        after = bytes(buffer[data_end : data_end + len(_CRLF)])
        if after != _CRLF[: len(after)]:
            raise ExchangeFailed(f"chunk data not followed by CRLF but by {after!r}")
        if len(after) < len(_CRLF):
            break
        body += buffer[data_start:data_end]
        position = data_end + len(_CRLF)
    if at_eof:
        raise ExchangeFailed("connection closed in the middle of a chunked answer")
    return None
