"""The HTTP/1.1 answer parser and request writer of the envelope sender, without sockets."""

from __future__ import annotations

import ssl
from typing import Any, Optional

import h11
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from otel_bridge._deliver.http1 import Endpoint, ExchangeFailed, parse_response, request_bytes


def test_a_content_length_answer_is_complete_only_with_its_whole_body() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Sentry-Rate-Limits: 60:transaction\r\n\r\n{}"
    for cut in range(len(answer)):
        assert parse_response(answer[:cut], at_eof=False) is None
    response = parse_response(answer, at_eof=False)
    assert response is not None
    assert (response.status, response.data, response.keep_alive) == (200, b"{}", True)
    assert response.headers.get("x-sentry-rate-limits") == "60:transaction"
    assert response.headers.get("X-Sentry-Rate-Limits") == "60:transaction"
    assert response.headers.get("Retry-After") is None


def test_a_chunked_answer_is_put_together() -> None:
    head = b"HTTP/1.1 413 Too Large\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = head + b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"
    for cut in range(len(answer)):
        assert parse_response(answer[:cut], at_eof=False) is None
    response = parse_response(answer, at_eof=False)
    assert response is not None
    assert (response.status, response.data) == (413, b"hello world")


def test_interim_answers_are_skipped() -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n"
    )
    response = parse_response(answer, at_eof=False)
    assert response is not None
    assert (response.status, response.headers.get("retry-after")) == (429, "7")


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close", False),
        (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close", False),
        (b"HTTP/1.0 200 OK", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive", True),
        (b"HTTP/1.1 204 No Content", True),
    ],
)
def test_whether_the_connection_can_be_used_again(head: bytes, keep_alive: bool) -> None:
    response = parse_response(head + b"\r\nContent-Length: 0\r\n\r\n", at_eof=False)
    assert response is not None
    assert response.keep_alive is keep_alive


def test_an_answer_without_length_ends_with_the_connection() -> None:
    answer = b"HTTP/1.1 200 OK\r\n\r\nsome body"
    assert parse_response(answer, at_eof=False) is None
    response = parse_response(answer, at_eof=True)
    assert response is not None
    assert (response.data, response.keep_alive) == (b"some body", False)


def test_repeated_headers_are_joined() -> None:
    response = parse_response(b"HTTP/1.1 200 OK\r\nA: 1\r\na: 2\r\nContent-Length: 0\r\n\r\n", at_eof=False)
    assert response is not None
    assert response.headers.get("A") == "1, 2"


@pytest.mark.parametrize(
    ("answer", "at_eof"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", False),
        (b"HTTP/1.1 OK 200\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Le", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", True),
    ],
)
def test_what_is_not_a_complete_answer_fails_clearly(answer: bytes, at_eof: bool) -> None:
    with pytest.raises(ExchangeFailed):
        parse_response(answer, at_eof=at_eof)


@pytest.mark.parametrize(
    ("host", "port", "tls", "expected"),
    [
        ("o1.ingest.sentry.io", 443, True, "o1.ingest.sentry.io"),
        ("127.0.0.1", 8080, False, "127.0.0.1:8080"),
        ("::1", 80, False, "[::1]"),
        ("::1", 9000, False, "[::1]:9000"),
    ],
)
def test_the_request_names_the_host_and_its_length(host: str, port: int, tls: bool, expected: str) -> None:
    endpoint = Endpoint(host, port, ssl.create_default_context() if tls else None)
    request = request_bytes(endpoint, "/api/1/envelope/", {"Content-Encoding": "gzip"}, b"abc")
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /api/1/envelope/ HTTP/1.1"
    assert f"Host: {expected}" in lines
    assert "Content-Length: 3" in lines
    assert "Content-Encoding: gzip" in lines
    assert body == b"abc"


@pytest.mark.parametrize(
    "terminator",
    [b"XX", b"\n5\r\n", b"\r\r\n", b" \r\n", b"", b"\n\r\n"],
    ids=["garbage", "bare-lf", "cr-cr-lf", "space", "missing", "lf-crlf"],
)
def test_a_chunk_not_followed_by_crlf_is_refused(terminator: bytes) -> None:
    """The leniency of h11 before 0.16 (CVE-2025-43859): the two bytes after a chunk's data were skipped
    unread, so that what a proxy took for one answer could be read here as another."""
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello" + terminator + b"0\r\n\r\n"
    with pytest.raises(ExchangeFailed) as refused:
        parse_response(answer, at_eof=False)
    assert refused.value.retryable is False


# --- h11 as the oracle: whatever HTTP/1.1 answer arrives, cut wherever, this parser and h11 agree ---

_TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})
_VCHAR = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))


def _field_values() -> st.SearchStrategy[bytes]:
    word = st.binary(min_size=1, max_size=6).map(lambda raw: bytes(_VCHAR[b % len(_VCHAR)] for b in raw))
    return st.lists(word, max_size=3).map(b" ".join)


_OWS = st.sampled_from([b"", b" ", b"\t", b"  "])
_NAME = st.text(alphabet=_TOKEN, min_size=1, max_size=10).filter(lambda name: name.lower() not in _FRAMING)
_FIELD_LINE = st.builds(
    lambda name, before, value, after: name.encode() + b":" + before + value + after,
    _NAME,
    _OWS,
    _field_values(),
    _OWS,
)


@st.composite
def _chunk_size(draw: st.DrawFn, size: int) -> bytes:
    digits = f"{size:x}"
    digits = "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in digits)
    extension = draw(st.sampled_from([b"", b";a", b";name=value", b';q="x y"', b";a=1;b", b"; v=2"]))
    return b"0" * draw(st.integers(0, 2)) + digits.encode() + extension + draw(_OWS) + b"\r\n"


# What may follow a chunk's data: mostly the CRLF it must be, sometimes what it must not be.
_CHUNK_END = st.one_of(
    st.just(b"\r\n"),
    st.sampled_from([b"", b"\n", b"\r", b"XX", b"\r\r\n", b" \r\n", b"\n\r", b"\rX", b"\r\n\r\n"]),
)


@st.composite
def _chunked_body(draw: st.DrawFn) -> bytes:
    body = draw(st.binary(max_size=40))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=False) if b > a]
    well_formed = draw(st.booleans())
    out = b""
    for piece in pieces:
        out += draw(_chunk_size(len(piece))) + piece + (b"\r\n" if well_formed else draw(_CHUNK_END))
    out += draw(_chunk_size(0))
    out += b"".join(line + b"\r\n" for line in draw(st.lists(_FIELD_LINE, max_size=2)))
    return out + b"\r\n"


@st.composite
def _content_length(draw: st.DrawFn, size: int) -> bytes:
    good = str(size).encode()
    return draw(
        st.one_of(
            st.just(good),
            st.just(b"0" + good),
            st.sampled_from([b"+" + good, good + b"_0", b"0x" + good, b"-" + good, b"", good + b"a"]),
        )
    )


@st.composite
def http_answers(draw: st.DrawFn) -> bytes:
    """An HTTP/1.x answer to a POST: interim answers, a status line, headers, and a body framed by
    Content-Length, by chunks (with extensions, trailers and some malformed chunk ends) or by the end of
    the connection."""
    out = b""
    for _ in range(draw(st.integers(0, 2))):
        status = draw(st.sampled_from([100, 102, 103]))
        lines = draw(st.lists(_FIELD_LINE, max_size=1))
        out += (
            f"HTTP/1.1 {status} Interim\r\n".encode() + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
        )
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    status = draw(st.one_of(st.sampled_from([200, 204, 304, 413, 429]), st.integers(200, 599)))
    reason = draw(st.one_of(st.just(None), _field_values()))
    out += version + b" " + str(status).encode() + (b"" if reason is None else b" " + reason) + b"\r\n"
    lines = draw(st.lists(_FIELD_LINE, max_size=4))
    if draw(st.booleans()):
        lines.append(b"Connection: " + draw(st.sampled_from([b"close", b"keep-alive", b"Keep-Alive, Close"])))
    framing = draw(st.sampled_from(["length", "chunked", "chunked and length", "none"]))
    body = draw(st.binary(max_size=40))
    if framing == "chunked" or framing == "chunked and length":
        lines.append(b"Transfer-Encoding: " + draw(st.sampled_from([b"chunked", b"Chunked"])))
        payload = draw(_chunked_body())
    else:
        payload = body
    if framing == "length" or framing == "chunked and length":
        size = len(payload) + draw(st.sampled_from([0, 0, 0, -1, 1]))
        lines.append(b"Content-Length: " + draw(_content_length(max(size, 0))))
    lines = draw(st.permutations(lines))
    out += b"".join(line + b"\r\n" for line in lines) + b"\r\n" + payload
    return out


Outcome = tuple[Any, ...]
INCOMPLETE: Outcome = ("incomplete",)
REFUSED: Outcome = ("refused",)


def _joined(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    joined: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name == "transfer-encoding":
            value = value.lower()
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


def ours(data: bytes, at_eof: bool) -> Outcome:
    try:
        response = parse_response(data, at_eof=at_eof)
    except ExchangeFailed as failed:
        assert failed.retryable is False
        return REFUSED
    if response is None:
        return INCOMPLETE
    headers = {
        name: value.lower() if name == "transfer-encoding" else value
        for name, value in response.headers.items()
    }
    return ("answer", response.status, headers, response.data, response.keep_alive)


def h11s(data: bytes, at_eof: bool) -> Outcome:
    connection = h11.Connection(our_role=h11.CLIENT)
    request = h11.Request(
        method="POST", target="/api/1/envelope/", headers=[("Host", "x"), ("Content-Length", "0")]
    )
    connection.send(request)
    connection.send(h11.EndOfMessage())
    if data:  # (h11 takes empty data for the end of the connection)
        connection.receive_data(data)
    if at_eof:
        connection.receive_data(b"")
    response: Optional[h11.Response] = None
    body = b""
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                return INCOMPLETE
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                # No opinion after the end of the connection, nor on HTTP/1.0: h11 never keeps one alive,
                # where RFC 9112 (appendix C.2.2) lets an answer saying "Connection: keep-alive" be
                keep_alive = (
                    connection.their_state is h11.DONE
                    if response.http_version == b"1.1" and not at_eof
                    else None
                )
                headers = _joined(list(response.headers.raw_items()))
                return ("answer", response.status_code, headers, body, keep_alive)
            elif isinstance(event, h11.ConnectionClosed):
                return REFUSED
    except h11.RemoteProtocolError:
        return REFUSED


@settings(max_examples=600, deadline=None)
@given(answer=http_answers(), cut=st.one_of(st.none(), st.integers(min_value=0)), at_eof=st.booleans())
def test_the_parser_agrees_with_h11(answer: bytes, cut: Optional[int], at_eof: bool) -> None:
    """Answers of every shape, cut anywhere, with the connection still open or closed: the same status,
    headers, body and reuse of the connection as h11 reads, or a refusal where h11 refuses (h11 0.16 and
    later refuse a chunk not followed by CRLF)."""
    data = answer if cut is None else answer[: cut % (len(answer) + 1)]
    expected, got = h11s(data, at_eof), ours(data, at_eof)
    event(expected[0])
    if expected[0] == "answer" and got[0] == "answer" and expected[-1] is None:
        expected, got = expected[:-1], got[:-1]
    assert got == expected
