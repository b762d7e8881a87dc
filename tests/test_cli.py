"""``otel-bridge`` as a person runs it (subprocesses), and ``describe()`` / the receiver on their own."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest

from otel_bridge._dev.cli import main
from otel_bridge._dev.receiver import DevServer, describe

KEY = "feedfacefeedfacefeedfacefeedface"
SECRET = "s3cr3tv4lu3"
DSN = f"https://{KEY}:{SECRET}@o77.ingest.example.com/9876"


def _clean_env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SENTRY_"))}
    env.update(overrides)
    return env


def _cli(*args: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_bridge._dev.cli", *args],
        env=_clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _demo_items(out: str) -> str:
    """The demo's items section: what the README shows, the same on every run."""
    start = out.index("The receiver got ")
    return out[start : out.index("Durations (they change from run to run):")]


def run_demo(cwd: Path, *args: str) -> str:
    """``otel-bridge demo`` with ``args`` in a fresh interpreter; what it printed (it must succeed)."""
    result = subprocess.run(
        [sys.executable, "-m", "otel_bridge._dev.cli", "demo", *args],
        env=_clean_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_demo_shows_the_transactions_and_the_error_event(tmp_path: Path) -> None:
    def run() -> str:
        return run_demo(tmp_path)

    out = run()
    assert "\x1b[" not in out
    assert "GET /divide?user=demo    -> 500" in out
    items = _demo_items(out)
    blocks = items.split("\n\n")
    titles = [block.strip().splitlines()[0] for block in blocks[1:] if block.strip().startswith("[")]
    assert titles == [
        "[1] transaction /",
        "[2] transaction /",
        "[3] transaction /divide",
        "[4] error ZeroDivisionError: division by zero",
        "[5] sessions (one per request): 2 exited, 1 crashed (environment production)",
    ]
    error = next(block for block in blocks if "[4] error" in block).splitlines()
    assert error[2:9] == [
        "    frames (3 in-app of 8, oldest first):",
        "      seed_app.py:43 in __call__",
        "          body = build_body(self.scope)",
        "      seed_app.py:24 in build_body",
        '          return f"each item costs {share_per_item(100, 0)}".encode()',
        "      seed_app.py:19 in share_per_item",
        "          return total / items",
    ]
    # uvicorn's log line of the exception the middleware reported is not made an event, so none is dropped
    assert "client report" not in items and "discarded" not in items
    assert " ms" not in items and "127.0.0.1" not in items, "nothing that changes between runs"
    assert re.search(r"^  \[3\] transaction /divide  \d+\.\d ms$", out, re.M)
    assert _demo_items(run()) == items


def test_doctor_prints_host_and_project_but_never_the_key() -> None:
    result = _cli("doctor", env=_clean_env(SENTRY_DSN=DSN, OTEL_SERVICE_NAME="shop"))
    assert result.returncode == 0, result.stderr
    assert "https://o77.ingest.example.com" in result.stdout
    assert "9876" in result.stdout
    assert "shop (OTEL_SERVICE_NAME)" in result.stdout
    assert "parentbased_always_on (default)" in result.stdout
    assert "tracecontext, baggage (default)" in result.stdout
    assert "send_default_pii:" in result.stdout
    for secret in (KEY, SECRET):
        assert secret not in result.stdout + result.stderr


def test_doctor_names_the_bad_variable_and_the_accepted_values() -> None:
    result = _cli("doctor", env=_clean_env(SENTRY_DSN=DSN, OTEL_TRACES_SAMPLER="bogus"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: OTEL_TRACES_SAMPLER='bogus' is not valid")
    assert "parentbased_traceidratio" in result.stderr
    assert KEY not in result.stdout + result.stderr


def test_doctor_without_dsn_says_so() -> None:
    result = _cli("doctor")
    assert result.returncode == 1
    assert "no Sentry DSN" in result.stderr


def test_doctor_sends_a_test_event_to_the_local_receiver() -> None:
    with DevServer() as receiver:
        result = _cli("doctor", "--send-test-event", env=_clean_env(SENTRY_DSN=receiver.dsn))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "accepted" in result.stdout
        assert receiver.public_key not in result.stdout + result.stderr
        messages = [item.payload for item in receiver.items_of("event") if item.payload]
    assert [message.get("message") for message in messages] == ["otel-bridge doctor test event"]


def test_doctor_reports_a_test_event_that_could_not_be_sent() -> None:
    with DevServer() as receiver:
        dsn = receiver.dsn
    result = _cli("doctor", "--send-test-event", env=_clean_env(SENTRY_DSN=dsn))
    assert result.returncode == 1
    assert "test event:" in result.stdout
    assert "not sent" in result.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_receive_prints_items_until_interrupted() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_bridge._dev.cli", "receive"],
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        dsn = ""
        deadline = time.monotonic() + 15
        while not dsn and time.monotonic() < deadline:
            line = process.stdout.readline()
            if "SENTRY_DSN=" in line:
                dsn = line.split("SENTRY_DSN=", 1)[1].strip()
        assert dsn.startswith("http://") and "@127.0.0.1:" in dsn
        port = dsn.rsplit(":", 1)[1].split("/", 1)[0]
        envelope = _envelope({"type": "event"}, {"message": "hello receiver", "level": "warning"})
        response = httpx.post(f"http://127.0.0.1:{port}/api/1/envelope/", content=envelope)
        assert response.status_code == 200
        seen = ""
        while "hello receiver" not in seen and time.monotonic() < deadline:
            seen += process.stdout.readline()
        assert "message hello receiver" in seen
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "receive", "doctor"):
        assert f"    {command} " in out


def _envelope(item_header: dict[str, Any], payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    lines = [{"event_id": "0" * 32}, dict(item_header, length=len(body))]
    return b"\n".join([*(json.dumps(line).encode() for line in lines), body]) + b"\n"


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate"])
def test_receiver_accepts_compressed_envelopes(encoding: str) -> None:
    payload = {"type": "transaction", "transaction": "/x", "spans": []}
    body = _envelope({"type": "transaction"}, payload)
    encoded = {"identity": body, "gzip": gzip.compress(body), "deflate": zlib.compress(body)}[encoding]
    arrived: list[str] = []
    with DevServer(on_item=lambda item: arrived.append(item.type)) as receiver:
        response = httpx.post(
            f"http://127.0.0.1:{receiver.port}/api/1/envelope/",
            content=encoded,
            headers={"Content-Encoding": encoding},
        )
        items = receiver.items
    assert response.status_code == 200
    assert response.json() == {}
    assert [item.payload for item in items] == [payload]
    assert arrived == ["transaction"]


def test_receiver_reads_items_with_and_without_length() -> None:
    first = {"message": "line\nbreak inside a string is escaped anyway"}
    body = _envelope({"type": "event"}, first) + json.dumps({"type": "client_report"}).encode() + b"\n{}\n"
    with DevServer() as receiver:
        response = httpx.post(f"http://127.0.0.1:{receiver.port}/api/7/envelope/", content=body)
        items = receiver.items
    assert response.status_code == 200
    assert [(item.type, item.project) for item in items] == [("event", "7"), ("client_report", "7")]
    assert items[0].payload == first


def test_receiver_rejects_what_is_not_an_envelope() -> None:
    with DevServer() as receiver:
        base = f"http://127.0.0.1:{receiver.port}"
        assert httpx.post(f"{base}/api/1/envelope/", content=b"not json\n").status_code == 400
        assert httpx.post(f"{base}/api/1/store/", content=b"{}\n").status_code == 404
        assert receiver.items == []
        assert receiver.dsn == f"http://{receiver.public_key}@127.0.0.1:{receiver.port}/1"


def test_describe_transaction() -> None:
    spans = [
        {"op": "db", "description": f"SELECT {n}", "start_timestamp": 10.0, "timestamp": 10.002}
        for n in range(7)
    ]
    text = describe(
        "transaction",
        {
            "transaction": "/items/{item_id}",
            "transaction_info": {"source": "route"},
            "start_timestamp": "2024-05-01T10:00:00.000000Z",
            "timestamp": "2024-05-01T10:00:00.125000Z",
            "contexts": {
                "trace": {"trace_id": "a" * 32, "span_id": "b" * 16, "op": "http.server", "status": "ok"},
                "response": {"status_code": 200},
            },
            "request": {"method": "GET", "url": "http://shop/items/3", "query_string": "q=1"},
            "spans": spans,
        },
    )
    lines = text.splitlines()
    assert lines[:3] == [
        "transaction /items/{item_id}",
        "  op http.server | status ok | 125.0 ms | source route",
        "  request GET http://shop/items/3?q=1 -> 200",
    ]
    assert f"  trace {'a' * 32} span {'b' * 16}" in lines
    assert lines[lines.index("  spans (7):") + 1 :] == [f"    db  SELECT {n}  2.0 ms" for n in range(7)]


def test_describe_transaction_from_span_data_only() -> None:
    text = describe(
        "transaction",
        {
            "transaction": "GET /health",
            "start_timestamp": 1.0,
            "timestamp": 1.5,
            "contexts": {
                "trace": {
                    "trace_id": "c" * 32,
                    "op": "http.server",
                    "status": "internal_error",
                    "data": {"http.request.method": "GET", "url.path": "/health"},
                }
            },
        },
    )
    assert "500.0 ms" in text
    assert "request GET /health (the app sent no response)" in text
    assert "spans" not in text


def _frame(n: int) -> dict[str, Any]:
    return {
        "filename": f"app/f{n}.py",
        "lineno": n,
        "function": f"func{n}",
        "context_line": f"    line {n}  ",
    }


def test_describe_error_event() -> None:
    text = describe(
        "event",
        {
            "level": "error",
            "exception": {
                "values": [
                    {"type": "KeyError", "value": "'x'", "stacktrace": {"frames": [_frame(1)]}},
                    {
                        "type": "ValueError",
                        "value": "bad input",
                        "mechanism": {"type": "asgi", "handled": False},
                        "stacktrace": {
                            "frames": [dict(_frame(n), in_app=n not in (1, 4)) for n in range(1, 6)]
                        },
                    },
                ]
            },
            "transaction": "/items/{item_id}",
            "request": {"method": "POST", "url": "http://shop/items/3"},
            "tags": {"tenant": "acme", "http.status_code": "500"},
            "contexts": {"trace": {"trace_id": "d" * 32, "span_id": "e" * 16}},
        },
    )
    lines = text.splitlines()
    assert lines[0] == "error ValueError: bad input"
    assert "unhandled, mechanism asgi" in text
    assert "  chained from KeyError: 'x'" in lines
    assert "  frames (3 in-app of 5, oldest first):" in lines
    frame_lines = [line.strip() for line in lines if ".py:" in line]
    assert frame_lines == ["app/f2.py:2 in func2", "app/f3.py:3 in func3", "app/f5.py:5 in func5"]
    assert lines[lines.index("    app/f5.py:5 in func5") + 1] == "        line 5"
    assert "  transaction /items/{item_id}" in lines
    assert "  request POST http://shop/items/3" in lines
    assert "  tags tenant=acme" in lines
    assert f"  trace {'d' * 32} span {'e' * 16}" in lines


def test_describe_handled_error_and_message() -> None:
    handled = describe(
        "event", {"exception": {"values": [{"type": "OSError", "mechanism": {"type": "x", "handled": True}}]}}
    )
    assert handled.splitlines()[0] == "error OSError"
    assert "handled, mechanism x" in handled
    message = describe("event", {"logentry": {"message": "disk %s full", "formatted": "disk A full"}})
    assert message.splitlines()[0] == "message disk A full"
    assert "not linked to a trace" in message


def test_describe_other_items() -> None:
    report = describe(
        "client_report",
        {"discarded_events": [{"reason": "queue_overflow", "category": "transaction", "quantity": 3}]},
    )
    assert report.splitlines() == [
        "client report: the SDK discarded 3 transactions",
        "  3 transactions: queue_overflow = the SDK's send queue was full",
    ]
    session = describe("session", {"status": "exited", "errors": 0, "attrs": {"release": "1.0"}})
    assert session == "session exited, 0 errors (release 1.0)"
    assert describe("statsd", {"a": 1}) == "statsd: {a}"
    sessions = describe(
        "sessions",
        {"aggregates": [{"exited": 2, "crashed": 1}, {"exited": 1}], "attrs": {"environment": "e"}},
    )
    assert sessions == "sessions (one per request): 3 exited, 1 crashed (environment e)"
