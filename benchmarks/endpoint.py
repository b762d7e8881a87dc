"""A loopback Sentry ingestion endpoint for benchmarks: it answers, counts and forgets.

``POST /api/<project>/envelope/`` answers 200 ``{}`` and counts the envelope's items by type (and, from
``client_report`` items, what the SDK says it discarded), per project id. It is an OTLP/HTTP trace
receiver too (protobuf, as ``opentelemetry-exporter-otlp-proto-http`` sends):
``POST /otlp/<project>/v1/traces`` (another OTel backend, a collector) and
``POST /api/<project>/integration/otlp/v1/traces/`` (Sentry's OTLP ingestion, where sentry-sdk's
``OTLPIntegration`` sends) answer 200 with an empty
``ExportTraceServiceResponse`` and count, per project, the spans (item ``otlp_span``) and those without a
parent (``otlp_root_span``: one per request, what a transaction is to Sentry). ``GET /counts`` returns every
project's counts as JSON (``GET /counts?project=<id>`` one project's); ``POST /reset`` (or
``GET /reset``) sets everything back to zero (``?project=<id>``: one project).

Run it in its own process so that its CPU does not count against what is measured::

    python benchmarks/endpoint.py --port 0   # prints "READY <port>" once it listens
    python benchmarks/endpoint.py --port 0 --delay-ms 20   # answers envelopes after 20 ms, as a far ingest

An envelope is counted when it arrives; the answer follows after ``--delay-ms``. Every connection has its
own thread, so concurrent senders each wait the delay once, not one after another.

It only ever listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import re
import socket
import sys
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
_ENVELOPE_PATH = re.compile(r"^/api/(?P<project>[^/]+)/envelope/?$")
_OTLP_PATH = re.compile(
    r"^(?:/otlp/(?P<project>[^/]+)/v1/traces|/api/(?P<sentry>[^/]+)/integration/otlp/v1/traces)/?$"
)
OTLP_SPAN, OTLP_ROOT_SPAN = "otlp_span", "otlp_root_span"
_TCP_QUICKACK: Optional[int] = getattr(socket, "TCP_QUICKACK", None)


def _brotli_decompress() -> Optional[Callable[[bytes], bytes]]:
    try:
        import brotli  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    decompress: Callable[[bytes], bytes] = brotli.decompress
    return decompress


_BROTLI = _brotli_decompress()


def decode_body(body: bytes, encoding: str) -> bytes:
    """The envelope bytes under a ``Content-Encoding`` sentry-sdk may use (gzip, deflate, br, none)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br" and _BROTLI is not None:
        return _BROTLI(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def envelope_items(data: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """``(item headers, payload)`` of every item: a header line, then per item a header line and a payload
    of ``length`` bytes (or up to the next newline when the header has no ``length``)."""
    end = data.find(b"\n")
    if end < 0:
        json.loads(data)  # an envelope of headers only
        return []
    json.loads(data[:end])
    position = end + 1
    items: list[tuple[dict[str, Any], bytes]] = []
    while position < len(data):
        end = data.find(b"\n", position)
        if end < 0:
            end = len(data)
        header_line = data[position:end].strip()
        position = end + 1
        if not header_line:
            continue
        headers = json.loads(header_line)
        if not isinstance(headers, dict):
            raise ValueError("an item header is not a JSON object")
        length = headers.get("length")
        if isinstance(length, int):
            payload = data[position : position + length]
            if len(payload) != length:
                raise ValueError("an item is shorter than its length")
            position += length
            if data[position : position + 1] == b"\n":
                position += 1
        else:
            end = data.find(b"\n", position)
            if end < 0:
                end = len(data)
            payload = data[position:end]
            position = end + 1
        items.append((headers, payload))
    return items


def otlp_spans(data: bytes) -> tuple[int, int]:
    """``(spans, spans without a parent)`` of a protobuf ``ExportTraceServiceRequest``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except Exception as error:  # protobuf's DecodeError (protobuf ships no type hints to name it)
        raise ValueError(str(error)) from error
    spans = roots = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans += 1
                roots += not span.parent_span_id
    return spans, roots


class Counts:
    """Per project: envelopes, items by type, bytes, parse errors and client-reported discards."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._projects: dict[str, dict[str, Counter[str]]] = {}

    def _project(self, project: str) -> dict[str, Counter[str]]:
        found = self._projects.get(project)
        if found is None:
            found = {"totals": Counter(), "items": Counter(), "discarded": Counter()}
            self._projects[project] = found
        return found

    def record(self, project: str, body: bytes, encoding: str) -> None:
        try:
            items = envelope_items(decode_body(body, encoding))
        except (ValueError, OSError, EOFError, zlib.error):
            with self._lock:
                self._project(project)["totals"]["parse_errors"] += 1
            return
        discarded: Counter[str] = Counter()
        for headers, payload in items:
            if headers.get("type") == "client_report":
                try:
                    report = json.loads(payload)
                except ValueError:
                    continue
                for entry in report.get("discarded_events") or ():
                    key = f"{entry.get('reason')}:{entry.get('category')}"
                    discarded[key] += int(entry.get("quantity") or 0)
        with self._lock:
            counts = self._project(project)
            counts["totals"]["envelopes"] += 1
            counts["totals"]["bytes"] += len(body)
            for headers, _payload in items:
                counts["items"][str(headers.get("type"))] += 1
            counts["discarded"].update(discarded)

    def record_otlp(self, project: str, body: bytes, encoding: str) -> bool:
        """Count an OTLP/HTTP trace export; False when it could not be parsed."""
        try:
            spans, roots = otlp_spans(decode_body(body, encoding))
        except (ValueError, OSError, EOFError, zlib.error):
            with self._lock:
                self._project(project)["totals"]["parse_errors"] += 1
            return False
        with self._lock:
            counts = self._project(project)
            counts["totals"]["otlp_exports"] += 1
            counts["totals"]["bytes"] += len(body)
            counts["items"][OTLP_SPAN] += spans
            counts["items"][OTLP_ROOT_SPAN] += roots
        return True

    def snapshot(self, project: Optional[str] = None) -> dict[str, Any]:
        with self._lock:
            chosen = [project] if project is not None else sorted(self._projects)
            return {name: self._view(self._projects.get(name)) for name in chosen}

    @staticmethod
    def _view(counts: Optional[dict[str, Counter[str]]]) -> dict[str, Any]:
        if counts is None:
            counts = {"totals": Counter(), "items": Counter(), "discarded": Counter()}
        totals = counts["totals"]
        return {
            "envelopes": totals["envelopes"],
            "otlp_exports": totals["otlp_exports"],
            "bytes": totals["bytes"],
            "parse_errors": totals["parse_errors"],
            "items": dict(counts["items"]),
            "discarded": dict(counts["discarded"]),
        }

    def reset(self, project: Optional[str] = None) -> None:
        with self._lock:
            if project is None:
                self._projects.clear()
            else:
                self._projects.pop(project, None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real Sentry does
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle_one_request(self) -> None:
        # sentry-sdk's transport replaces urllib3's socket options (TCP_NODELAY among them) with keep-alive
        # options only, and urllib3 writes the headers and the body of a POST separately: with Nagle on
        # the client and a delayed ACK here, every envelope would wait ~40 ms for our ACK. Acknowledge at
        # once instead (Linux resets TCP_QUICKACK, so it is set again before every request), so that the
        # SDK's own CPU, not this stall, decides how fast it drains its queue.
        if self.server.quickack and _TCP_QUICKACK is not None:
            with contextlib.suppress(OSError):
                self.connection.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        super().handle_one_request()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, document: Any) -> None:
        payload = json.dumps(document, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _answer_otlp(self, status: int) -> None:
        # an empty ExportTraceServiceResponse: zero bytes of protobuf
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _project_query(self) -> Optional[str]:
        values = parse_qs(urlsplit(self.path).query).get("project")
        return values[0] if values else None

    def do_POST(self) -> None:
        body = self._read_body()
        path = urlsplit(self.path).path
        matched = _ENVELOPE_PATH.match(path)
        if matched is not None:
            self.server.counts.record(
                matched.group("project"), body, self.headers.get("Content-Encoding", "")
            )
            if self.server.delay > 0:
                time.sleep(self.server.delay)
            self._answer(200, {})
        elif (otlp := _OTLP_PATH.match(path)) is not None:
            project = otlp.group("project") or otlp.group("sentry")
            parsed = self.server.counts.record_otlp(project, body, self.headers.get("Content-Encoding", ""))
            if self.server.delay > 0:
                time.sleep(self.server.delay)
            self._answer_otlp(200 if parsed else 400)
        elif path == "/reset":
            self.server.counts.reset(self._project_query())
            self._answer(200, {"reset": True})
        else:
            self._answer(404, {"detail": "not found"})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/counts":
            self._answer(200, self.server.counts.snapshot(self._project_query()))
        elif path == "/reset":
            self.server.counts.reset(self._project_query())
            self._answer(200, {"reset": True})
        else:
            self._answer(404, {"detail": "not found"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, port: int, quickack: bool = True, delay: float = 0.0) -> None:
        super().__init__((HOST, port), _Handler)
        self.counts = Counts()
        self.quickack = quickack
        self.delay = delay


def serve(
    port: int = 0,
    ready: Callable[[int], None] = lambda port: None,
    quickack: bool = True,
    delay: float = 0.0,
) -> None:
    with _Server(port, quickack, delay) as server:
        ready(server.server_address[1])
        server.serve_forever(poll_interval=0.2)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument(
        "--no-quickack",
        action="store_true",
        help="ACK as the kernel likes (delayed): shows the ~40 ms per envelope a client with Nagle on pays",
    )
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="answer every envelope this many milliseconds after it arrived (default 0)",
    )
    args = parser.parse_args(argv)
    if args.delay_ms < 0:
        parser.error("--delay-ms must not be negative")

    def announce(port: int) -> None:
        print(f"READY {port}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        serve(args.port, announce, quickack=not args.no_quickack, delay=args.delay_ms / 1000)
    sys.exit(0)


if __name__ == "__main__":
    main()
