"""``otel-bridge receive`` as a developer runs it: the real CLI in a subprocess, real apps sending to it.

The apps are small scripts using ``otel_bridge.init()`` (or plain sentry-sdk) pointed at the DSN the receiver
prints; the tests read what a person would see on the terminal, or what a script reads from ``--json`` and
``--save``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Optional

import pytest

from otel_bridge._dev.describe import Style, describe
from otel_bridge._dev.receiver import DevServer, ReceivedItem, in_reading_order

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="signals and ptys are POSIX")

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SENTRY_"))}
    env.pop("NO_COLOR", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(overrides)
    return env


class Receiver:
    """``otel-bridge receive`` running; ``lines`` collects what it printed, on both streams."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self.stdout = ""
        self.stderr = ""
        for stream, sink in ((process.stdout, self.out), (process.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()
        self.dsn = self._wait_for_dsn()

    @staticmethod
    def _pump(stream: Optional[IO[str]], sink: queue.Queue[str]) -> None:
        assert stream is not None
        for line in stream:
            sink.put(line)

    def _drain(self) -> None:
        while not self.out.empty():
            self.stdout += self.out.get()
        while not self.err.empty():
            self.stderr += self.err.get()

    def _wait_for_dsn(self) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self._drain()
            found = re.search(r"SENTRY_DSN=(\S+)", self.stdout + self.stderr)
            if found:
                return found.group(1)
            time.sleep(0.05)
        raise AssertionError(f"no DSN printed: {self.stdout!r} {self.stderr!r}")

    def wait_for(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._drain()
            if text in self.stdout:
                return self.stdout
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never printed; stdout so far:\n{self.stdout}\nstderr:\n{self.stderr}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=15)
        time.sleep(0.1)
        self._drain()
        return code


@contextmanager
def running_receiver(*args: str, env: Optional[dict[str, str]] = None) -> Iterator[Receiver]:
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_bridge._dev.cli", "receive", *args],
        env=_env() if env is None else env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield Receiver(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


SHOP = """
import asyncio, logging, sys
import otel_bridge, sentry_sdk
from opentelemetry import trace

options = dict(dsn=sys.argv[1], release="shop@1.2", environment="dev", send_default_pii=True)
if len(sys.argv) > 2 and sys.argv[2] == "stream":
    options.update(trace_lifecycle="stream", enable_logs=True)
otel_bridge.init(**options)

from otel_bridge.asgi import SentryAsgiMiddleware
import httpx

tracer = trace.get_tracer("shop")


def charge(order):
    raise ValueError(f"card declined for order {order}")


async def app(scope, receive, send):
    if scope["path"] == "/checkout":
        sentry_sdk.set_tag("order", "7")
        sentry_sdk.set_user({"id": "u-7", "email": "ann@example.com"})
        sentry_sdk.set_context("cart", {"items": 3, "total": 9.5})
        charge("7")
    with tracer.start_as_current_span("load item", attributes={"sentry.op": "db.query"}):
        with tracer.start_as_current_span("SELECT price FROM items"):
            await asyncio.sleep(0.001)
    sentry_sdk.logger.warning("stock low for {item}", item="42")
    sentry_sdk.capture_message("price shown", level="info")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def main():
    transport = httpx.ASGITransport(app=SentryAsgiMiddleware(app), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        await client.get("/items/42")
        await client.get("/checkout")

asyncio.run(main())
sentry_sdk.get_client().close(timeout=5)
"""


def _run_shop(tmp_path: Path, dsn: str, *args: str) -> None:
    script = tmp_path / "shop.py"
    script.write_text(textwrap.dedent(SHOP))
    result = subprocess.run(
        [sys.executable, str(script), dsn, *args],
        env=_env(OTEL_SERVICE_NAME="shop"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _item_blocks(stdout: str) -> list[str]:
    """The receiver's printed items, each from its ``[HH:MM:SS]`` line to the blank line after it."""
    return [block for block in stdout.split("\n\n") if re.match(r"\[\d\d:\d\d:\d\d", block.strip())]


def test_receive_shows_what_an_app_sends_readably(tmp_path: Path) -> None:
    with running_receiver() as receiver:
        assert receiver.dsn.startswith("http://local@127.0.0.1:") and receiver.dsn.endswith("/1")
        _run_shop(tmp_path, receiver.dsn)
        for title in (
            "transaction /items/42",
            "transaction /checkout",
            "error ValueError",
            "message",
            "sessions",
        ):
            receiver.wait_for(f"] {title}")
        assert receiver.stop() == 0
    out = receiver.stdout
    assert "\x1b[" not in out, "no colour when stdout is not a terminal"
    blocks = _item_blocks(out)
    transaction = next(block for block in blocks if "] transaction /items/42" in block)
    lines = transaction.splitlines()
    assert re.fullmatch(r"  op http.server \| status ok \| \d+\.\d ms \| source url", lines[1])
    assert "  request GET http://shop.test/items/42 -> 200" in lines
    assert "  app service shop | environment dev | release shop@1.2" in lines
    assert re.search(r"^  trace [0-9a-f]{32} span [0-9a-f]{16}$", transaction, re.M)
    spans = lines[lines.index("  spans (2):") + 1 :]
    assert re.fullmatch(r"    db\.query  load item  \d+\.\d ms", spans[0])
    assert re.fullmatch(r"      default  SELECT price FROM items  \d+\.\d ms", spans[1])

    error = next(block for block in blocks if "] error ValueError" in block)
    lines = error.splitlines()
    assert lines[0].endswith("] error ValueError: card declined for order 7")
    assert lines[1] == "  unhandled, mechanism asgi | level error"
    frames = lines[lines.index(next(line for line in lines if line.startswith("  frames (2 in-app of"))) :]
    assert frames[1:5] == [
        "    shop.py:26 in app",
        '        charge("7")',
        "    shop.py:18 in charge",
        '        raise ValueError(f"card declined for order {order}")',
    ]
    assert "  request GET http://shop.test/checkout" in lines
    assert "  user email=ann@example.com, id=u-7" in lines
    assert "  tags order=7" in lines
    assert '  context cart {"items": 3, "total": 9.5}' in lines

    message = next(block for block in blocks if "] message price shown" in block)
    assert "  level info" in message.splitlines()
    assert "(one per request): 1 exited, 1 crashed (environment dev, release shop@1.2)" in out
    assert "Stopped: " in out


def test_receive_summarises_streamed_spans_and_logs(tmp_path: Path) -> None:
    import sentry_sdk.consts

    if "trace_lifecycle" not in sentry_sdk.consts.DEFAULT_OPTIONS:
        pytest.skip("span streaming needs sentry-sdk 2.66+")
    with running_receiver() as receiver:
        _run_shop(tmp_path, receiver.dsn, "stream")
        out = receiver.wait_for("logs (")
        receiver.wait_for("spans (streamed, 3) of /items/42")
        assert receiver.stop() == 0
    out = receiver.stdout
    block = next(block for block in _item_blocks(out) if "spans (streamed, 3)" in block)
    lines = block.splitlines()
    assert re.fullmatch(r"  http\.server  /items/42  \d+\.\d ms", lines[1])
    assert re.fullmatch(r"    db\.query  load item  \d+\.\d ms", lines[2])
    assert re.fullmatch(r"      default  SELECT price FROM items  \d+\.\d ms", lines[3])
    assert re.search(r"http\.server  /checkout  \d+\.\d ms  \[error\]", out)
    assert "  warn  stock low for 42" in out


def test_receive_json_and_save(tmp_path: Path) -> None:
    saved = tmp_path / "events.jsonl"
    saved.write_text('{"kept": "what was there before"}\n')
    with running_receiver("--json", "--save", str(saved)) as receiver:
        assert receiver.stdout == "", "with --json, stdout carries only JSON"
        assert f"Appending every item to {saved}" in receiver.stderr
        _run_shop(tmp_path, receiver.dsn)
        receiver.wait_for('"aggregates"')
        assert receiver.stop() == 0
    payloads = [json.loads(line) for line in receiver.stdout.splitlines()]
    errors = [p for p in payloads if p.get("exception")]
    assert errors[0]["exception"]["values"][-1]["value"] == "card declined for order 7"
    assert errors[0]["tags"] == {"order": "7"}
    assert any(p.get("type") == "transaction" and p["transaction"] == "/items/42" for p in payloads)

    lines = saved.read_text().splitlines()
    assert json.loads(lines[0]) == {"kept": "what was there before"}
    records = [json.loads(line) for line in lines[1:]]
    assert [record["payload"] for record in records] == payloads
    assert {record["type"] for record in records} >= {"transaction", "event", "sessions"}
    for record in records:
        assert record["project"] == "1"
        assert record["headers"]["type"] == record["type"]
        assert isinstance(record["envelope"], dict)
        if record["type"] in ("event", "transaction"):
            assert record["envelope"]["event_id"] == record["payload"]["event_id"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", record["received_at"])
    assert "Stopped: " in receiver.stderr and f"appended to {saved}" in receiver.stderr


PLAIN_SDK = """
import sys, sentry_sdk
sentry_sdk.init(dsn=sys.argv[1], release=sys.argv[2], default_integrations=False)
sentry_sdk.capture_message(f"hello from {sys.argv[2]}")
sentry_sdk.flush(5)
"""


def test_receive_serves_several_apps(tmp_path: Path) -> None:
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent(PLAIN_SDK))
    with running_receiver() as receiver:
        other_project = receiver.dsn.rsplit("/", 1)[0] + "/2"
        apps = [
            subprocess.Popen([sys.executable, str(script), dsn, name], env=_env())
            for dsn, name in ((receiver.dsn, "billing"), (other_project, "search"), (receiver.dsn, "mail"))
        ]
        assert [app.wait(timeout=60) for app in apps] == [0, 0, 0]
        for name in ("billing", "search", "mail"):
            receiver.wait_for(f"message hello from {name}")
        assert receiver.stop(signal.SIGINT) == 0
    search = next(block for block in _item_blocks(receiver.stdout) if "hello from search" in block)
    assert re.match(r"\[\d\d:\d\d:\d\d project 2\] message hello from search", search)
    billing = next(block for block in _item_blocks(receiver.stdout) if "hello from billing" in block)
    assert "project" not in billing.splitlines()[0]


def _one_line_error(*args: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "otel_bridge._dev.cli", "receive", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return result.returncode, result.stderr.strip()


@pytest.mark.parametrize("port", ["99999", "-1", "eighty"])
def test_receive_bad_port_is_one_line_and_exit_2(port: str) -> None:
    code, message = _one_line_error("--port", port)
    assert code == 2
    assert message == f"error: --port must be a number from 0 to 65535 (0 picks a free port), not {port!r}"


def test_receive_unwritable_save_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, message = _one_line_error("--save", str(tmp_path))
    assert code == 2
    assert message.startswith(f"error: cannot write to --save {tmp_path}: ")
    code, message = _one_line_error("--save", str(tmp_path / "missing" / "events.jsonl"))
    assert (code, message) == (
        2,
        f"error: cannot write to --save {tmp_path}/missing/events.jsonl: No such file or directory",
    )


def test_receive_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, message = _one_line_error("--port", str(port))
    assert code == 1
    assert message == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; pick another --port, or leave it "
        "out for a free one"
    )


def test_receive_help_documents_exit_codes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "otel_bridge._dev.cli", "receive", "--help"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    for line in ("0  stopped with Ctrl-C or SIGTERM", "1  cannot listen on the port", "2  bad arguments"):
        assert line in result.stdout
    for option in ("--port N", "--json", "--save FILE"):
        assert option in result.stdout


def _read_pty(fd: int, until: str, timeout: float = 20) -> str:
    import select

    seen = b""
    deadline = time.monotonic() + timeout
    while until.encode() not in ANSI.sub("", seen.decode("utf-8", "replace")).encode():
        if time.monotonic() > deadline:
            raise AssertionError(f"{until!r} never printed: {seen!r}")
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen.decode("utf-8", "replace")


@pytest.mark.parametrize("no_color", [False, True])
def test_receive_colours_only_a_terminal(no_color: bool) -> None:
    import pty

    leader, follower = pty.openpty()
    env = _env(NO_COLOR="1") if no_color else _env()
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_bridge._dev.cli", "receive"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    try:
        banner = _read_pty(leader, "Ctrl-C to stop")
        dsn = re.search(r"SENTRY_DSN=(\S+)", ANSI.sub("", banner))
        assert dsn is not None
        sender = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(PLAIN_SDK), dsn.group(1), "tty"],
            env=_env(),
            timeout=60,
        )
        assert sender.returncode == 0
        shown = _read_pty(leader, "message hello from tty")
        assert ("\x1b[" in shown) is not no_color
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)


def test_receive_stops_quietly_when_stdout_closes(tmp_path: Path) -> None:
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent(PLAIN_SDK))
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_bridge._dev.cli", "receive", "--json"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None and process.stdout is not None
        line = ""
        while "SENTRY_DSN=" not in line:
            line = process.stderr.readline()
        dsn = line.split("SENTRY_DSN=", 1)[1].strip()
        process.stdout.close()
        subprocess.run([sys.executable, str(script), dsn, "gone"], env=_env(), timeout=60, check=True)
        assert process.wait(timeout=15) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# describe() on its own, for what a real app is slow or awkward to produce.


def test_client_reports_are_explained_in_words() -> None:
    text = describe(
        "client_report",
        {
            "discarded_events": [
                {"reason": "event_processor", "category": "error", "quantity": 1},
                {"reason": "sample_rate", "category": "transaction", "quantity": 3},
                {"reason": "mystery", "category": "span", "quantity": 2},
            ]
        },
    )
    assert text.splitlines() == [
        "client report: the SDK discarded 1 error, 3 transactions, 2 spans",
        "  1 error: event_processor = an event processor dropped it",
        "    (usually sentry-sdk's dedupe, dropping a second report of an exception already sent)",
        "  3 transactions: sample_rate = sampled out",
        "    (sample_rate, traces_sample_rate or traces_sampler)",
        "  2 spans: mystery = a reason this receiver does not know",
    ]


def test_span_tree_is_indented_capped_and_keeps_orphans() -> None:
    root = "r" * 16
    spans: list[dict[str, Any]] = [
        {
            "span_id": "a",
            "parent_span_id": root,
            "op": "db",
            "description": "A",
            "start_timestamp": 2.0,
            "timestamp": 2.5,
            "status": "ok",
        },
        {
            "span_id": "b",
            "parent_span_id": "a",
            "op": "http.client",
            "description": "B",
            "start_timestamp": 2.1,
            "timestamp": 2.2,
            "status": "internal_error",
        },
        {
            "span_id": "c",
            "parent_span_id": "gone",
            "op": "cache",
            "description": "C",
            "start_timestamp": 1.0,
            "timestamp": 1.001,
        },
    ]
    payload = {
        "transaction": "/t",
        "contexts": {"trace": {"trace_id": "t" * 32, "span_id": root, "op": "http.server", "status": "ok"}},
        "spans": spans,
    }
    lines = describe("transaction", payload).splitlines()
    assert lines[lines.index("  spans (3):") + 1 :] == [
        "    db  A  500.0 ms",
        "      http.client  B  100.0 ms  [internal_error]",
        "    cache  C  1.0 ms",
    ]
    many = dict(payload, spans=[dict(spans[0], span_id=str(n)) for n in range(40)])
    tail = describe("transaction", many).splitlines()
    assert tail[-1] == "    ... and 10 more span(s)"


def test_stable_style_leaves_out_what_changes_between_runs() -> None:
    payload = {
        "transaction": "/divide",
        "start_timestamp": 1.0,
        "timestamp": 1.25,
        "release": "abc123",
        "environment": "production",
        "contexts": {
            "trace": {"trace_id": "a" * 32, "span_id": "b" * 16, "op": "http.server", "status": "ok"}
        },
        "request": {"method": "GET", "url": "http://127.0.0.1:41234/divide", "query_string": "user=demo"},
    }
    stable = describe("transaction", payload, Style(stable=True))
    assert stable.splitlines() == [
        "transaction /divide",
        "  op http.server | status ok",
        "  request GET /divide?user=demo (the app sent no response)",
        "  app environment production",
    ]
    full = describe("transaction", payload, Style(colour=True))
    plain = ANSI.sub("", full)
    assert "250.0 ms" in plain and "abc123" in plain and "41234" in plain and "a" * 32 in plain
    assert "\x1b[" in full


def _item(item_type: str, payload: dict[str, Any], arrived: int) -> ReceivedItem:
    return ReceivedItem(item_type, {"type": item_type}, payload, b"", {}, "1", float(arrived))


def test_reading_order_puts_each_error_after_its_transaction() -> None:
    def trace(trace_id: str) -> dict[str, Any]:
        return {"trace": {"trace_id": trace_id}}

    items = [
        _item("client_report", {}, 0),
        _item("event", {"contexts": trace("t2"), "message": "second's error"}, 1),
        _item("sessions", {}, 2),
        _item("transaction", {"start_timestamp": 2.0, "contexts": trace("t2")}, 3),
        _item("event", {"message": "no trace"}, 4),
        _item("transaction", {"start_timestamp": 1.0, "contexts": trace("t1")}, 5),
    ]
    ordered = in_reading_order(items)
    assert [items.index(item) for item in ordered] == [5, 3, 1, 4, 2, 0]


def test_receiver_keeps_its_given_key() -> None:
    with DevServer(public_key="local") as receiver:
        assert receiver.dsn == f"http://local@127.0.0.1:{receiver.port}/1"
