"""The HTTP/1.1 answer parser and request writer of the envelope sender, without sockets."""

from __future__ import annotations

import ssl

import pytest

from otel_bridge.http1 import Endpoint, ExchangeFailed, parse_response, request_bytes


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
