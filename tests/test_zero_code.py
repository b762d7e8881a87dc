"""Zero-code: ``OTEL_TRACES_EXPORTER=otlp,sentry opentelemetry-instrument uvicorn app:app`` on an unmodified
FastAPI app. Transactions and error events must reach Sentry from span data alone, and the same traces must
reach the team's OTLP backend."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.otlp_receiver import OtlpReceiver, SpanDict
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.servers import HOST, REPO_ROOT, RunningServer, child_environment, free_port, server_command

APP = "tests.apps.fastapi_plain:app"
SECRET = "zero-code-secret-4721"
REQUEST_ID = "req-zero-code"
# Request path -> expected status code. The first one calls sentry_sdk.capture_message: the exporter has
# started sentry-sdk's client before any batch was exported, so the message arrives.
REQUESTS = {
    "/notify/first": 200,
    "/items/1": 200,
    "/items/7?color=red": 200,
    "/items/not-a-number": 422,
    "/reserve/3": 500,
    "/quantity/abc": 200,
    "/report/q": 200,
}
UNHANDLED_MESSAGE = "no stock left for item 3"
HANDLED_MESSAGE = "invalid literal for int() with base 10: 'abc'"
FIRST_REQUEST_MESSAGE = "notified first"


def instrument_command(target: str, port: int) -> list[str]:
    """``opentelemetry-instrument python -m uvicorn target ...``, as a user types it."""
    return [str(Path(sys.executable).parent / "opentelemetry-instrument"), *server_command(target, port)]


@contextlib.contextmanager
def run_instrumented(target: str, env: dict[str, str], timeout: float = 20.0) -> Iterator[RunningServer]:
    port = free_port()
    with tempfile.NamedTemporaryFile(prefix="otel_bridge_zero_code_", suffix=".log", delete=False) as log:
        process = subprocess.Popen(
            instrument_command(target, port),
            cwd=str(REPO_ROOT),
            env=child_environment(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningServer(process, port, Path(log.name))
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}:\n{server.output()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"server not listening after {timeout}s:\n{server.output()}")
            time.sleep(0.05)
        yield server
    finally:
        server._close()


@dataclass
class ZeroCodeRun:
    transactions: list[dict[str, Any]]
    events: list[dict[str, Any]]
    spans: list[SpanDict]
    raw_sentry_bytes: bytes
    server_output: str
    port: int

    def transaction_for(self, path: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}{path.split('?', 1)[0]}"
        [found] = [t for t in self.transactions if t.get("request", {}).get("url") == url]
        return found

    @property
    def exception_events(self) -> list[dict[str, Any]]:
        return [e for e in self.events if "exception" in e]

    def events_with_message(self, message: str) -> list[dict[str, Any]]:
        return [e for e in self.exception_events if e["exception"]["values"][-1]["value"] == message]

    def event_in_trace(self, trace_id: str) -> dict[str, Any]:
        found = [e for e in self.exception_events if e["contexts"]["trace"]["trace_id"] == trace_id]
        assert len(found) == 1, f"one event in trace {trace_id}, got: {self.describe_events()}"
        return found[0]

    def describe_events(self) -> list[tuple[Any, ...]]:
        return [
            (
                event["exception"]["values"][-1]["value"],
                event["exception"]["values"][-1].get("mechanism"),
                event.get("logger"),
                event["contexts"]["trace"].get("trace_id"),
            )
            for event in self.exception_events
        ]

    def server_span(self, trace_id: str) -> SpanDict:
        [found] = [s for s in self.spans if s["trace_id"] == trace_id and s["kind"] == "SERVER"]
        return found


@pytest.fixture(scope="module")
def run() -> Iterator[ZeroCodeRun]:
    with EnvelopeReceiver() as sentry, OtlpReceiver() as otlp:
        env = {
            "OTEL_TRACES_EXPORTER": "otlp,sentry",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp.traces_endpoint,
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_SERVICE_NAME": "zero-code",
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-request-id,authorization",
            "SENTRY_DSN": sentry.dsn,
        }
        headers = {"X-Request-Id": REQUEST_ID, "Authorization": f"Bearer {SECRET}"}
        with run_instrumented(APP, env) as server:
            statuses: dict[str, int] = {}
            for path in REQUESTS:
                # A new connection each: uvicorn closes the connection of a request whose app raised.
                statuses[path] = httpx.get(f"{server.url}{path}", headers=headers).status_code
            assert statuses == REQUESTS, server.output()
            sentry.wait_for_transactions(len(REQUESTS))
            sentry.wait_for_events(3)
            otlp.wait_for_spans(lambda spans: sum(s["kind"] == "SERVER" for s in spans) >= len(REQUESTS))
            server.stop()
            assert not server.killed, server.output()
        assert otlp.errors == []
        assert sentry.server_errors == []
        yield ZeroCodeRun(
            transactions=sentry.transactions(),
            events=sentry.events(),
            spans=otlp.spans,
            raw_sentry_bytes=b"".join(request.raw_body for request in sentry.requests),
            server_output=server.output(),
            port=server.port,
        )


def test_everything_sent_is_relay_valid(run: ZeroCodeRun) -> None:
    assert len(run.transactions) == len(REQUESTS), run.server_output
    for item in [*run.transactions, *run.events]:
        assert_relay_valid(item)


def test_transactions_are_named_by_route_with_status_from_the_response(run: ZeroCodeRun) -> None:
    item = run.transaction_for("/items/7?color=red")
    assert item["transaction"] == "/items/{item_id}"
    assert item["transaction_info"] == {"source": "route"}
    assert item["contexts"]["trace"]["op"] == "http.server"
    assert item["contexts"]["trace"]["status"] == "ok"
    assert item["contexts"]["response"] == {"status_code": 200}
    assert item["request"]["method"] == "GET"
    assert item["request"]["url"] == f"http://127.0.0.1:{run.port}/items/7"
    assert item["contexts"]["otel"]["resource"]["service.name"] == "zero-code"

    invalid = run.transaction_for("/items/not-a-number")
    assert invalid["transaction"] == "/items/{item_id}"
    assert invalid["contexts"]["trace"]["status"] == "invalid_argument"

    failed = run.transaction_for("/reserve/3")
    assert failed["transaction"] == "/reserve/{item_id}"
    assert failed["contexts"]["trace"]["status"] == "internal_error"


def test_manual_child_span_is_in_the_transaction(run: ZeroCodeRun) -> None:
    report = run.transaction_for("/report/q")
    assert report["transaction"] == "/report/{name}"
    root_id = report["contexts"]["trace"]["span_id"]
    [child] = [span for span in report["spans"] if span["description"] == "render report"]
    assert child["parent_span_id"] == root_id
    assert child["trace_id"] == report["contexts"]["trace"]["trace_id"]
    assert child["data"]["report.name"] == "q"


def test_unhandled_exception_becomes_an_error_event_in_the_requests_trace(run: ZeroCodeRun) -> None:
    transaction = run.transaction_for("/reserve/3")
    error = run.event_in_trace(transaction["contexts"]["trace"]["trace_id"])
    assert error["contexts"]["trace"]["span_id"] == transaction["contexts"]["trace"]["span_id"]
    assert error["level"] == "error"
    assert error["transaction"] == "/reserve/{item_id}"
    assert error["request"]["url"] == f"http://127.0.0.1:{run.port}/reserve/3"
    exception = error["exception"]["values"][-1]
    assert exception["type"] == "InventoryError"
    assert exception["value"] == UNHANDLED_MESSAGE
    frames = exception["stacktrace"]["frames"]
    assert [frame["function"] for frame in frames[-2:]] == ["reserve", "reserve_stock"]
    for frame in frames[-2:]:
        assert frame["module"] == "tests.apps.fastapi_plain"
        assert frame["in_app"] is True
        assert frame["context_line"].strip()
    assert frames[-1]["context_line"].strip() == 'raise InventoryError(f"no stock left for item {item_id}")'


def test_unhandled_exception_is_marked_unhandled(run: ZeroCodeRun) -> None:
    mechanisms = [
        event["exception"]["values"][-1]["mechanism"] for event in run.events_with_message(UNHANDLED_MESSAGE)
    ]
    assert mechanisms, run.describe_events()
    assert all(mechanism["handled"] is False for mechanism in mechanisms), mechanisms


def test_unhandled_exception_is_one_event(run: ZeroCodeRun) -> None:
    assert len(run.events_with_message(UNHANDLED_MESSAGE)) == 1, run.describe_events()


def test_recorded_exception_becomes_one_handled_event(run: ZeroCodeRun) -> None:
    transaction = run.transaction_for("/quantity/abc")
    assert transaction["contexts"]["trace"]["status"] == "ok"
    [error] = run.events_with_message(HANDLED_MESSAGE)
    assert error["contexts"]["trace"]["trace_id"] == transaction["contexts"]["trace"]["trace_id"]
    exception = error["exception"]["values"][-1]
    assert exception["type"] == "ValueError"
    assert exception["mechanism"]["handled"] is True
    assert [frame["function"] for frame in exception["stacktrace"]["frames"]] == [
        "quantity",
        "parse_quantity",
    ]


def test_capture_message_in_the_first_request_arrives_in_its_trace(run: ZeroCodeRun) -> None:
    [message] = [e for e in run.events if "exception" not in e]
    assert (message.get("logentry") or {}).get("message", message.get("message")) == FIRST_REQUEST_MESSAGE
    transaction = run.transaction_for("/notify/first")
    assert message["contexts"]["trace"]["trace_id"] == transaction["contexts"]["trace"]["trace_id"]


def test_the_otlp_backend_gets_the_same_traces(run: ZeroCodeRun) -> None:
    sentry_traces = {t["contexts"]["trace"]["trace_id"]: t for t in run.transactions}
    otlp_servers = {s["trace_id"]: s for s in run.spans if s["kind"] == "SERVER"}
    assert set(sentry_traces) == set(otlp_servers)
    for trace_id, transaction in sentry_traces.items():
        server = otlp_servers[trace_id]
        assert transaction["contexts"]["trace"]["span_id"] == server["span_id"]
        assert server["resource"]["service.name"] == "zero-code"
        assert server["attributes"]["http.request.header.x_request_id"] == (REQUEST_ID,)
    report = run.transaction_for("/report/q")
    [child] = [s for s in run.spans if s["name"] == "render report"]
    assert child["trace_id"] == report["contexts"]["trace"]["trace_id"]
    assert child["span_id"] in {span["span_id"] for span in report["spans"]}
    failed = run.server_span(run.transaction_for("/reserve/3")["contexts"]["trace"]["trace_id"])
    assert [event["attributes"]["exception.message"] for event in failed["events"]] == [UNHANDLED_MESSAGE]


def test_captured_headers_reach_sentry_with_credentials_filtered(run: ZeroCodeRun) -> None:
    for item in [*run.transactions, *run.events_with_message(HANDLED_MESSAGE)]:
        headers = item["request"]["headers"]
        assert headers["X-Request-Id"] == REQUEST_ID
        assert headers["Authorization"] == "[Filtered]"
    assert SECRET.encode() not in run.raw_sentry_bytes
    assert REQUEST_ID.encode() in run.raw_sentry_bytes


def test_query_string_is_rebuilt_from_the_span(run: ZeroCodeRun) -> None:
    assert run.transaction_for("/items/7?color=red")["request"].get("query_string") == "color=red"
