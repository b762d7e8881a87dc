"""The bridge in real server processes: gunicorn's pre-forked workers, SIGTERM during traffic, and a
thousand requests in flight in one process at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from tests.receiver import EnvelopeReceiver, _Handler
from tests.relay import assert_relay_valid
from tests.servers import REPO_ROOT, RunningServer, child_environment, free_port, run_app

APP = "tests.apps.shop_pid:app"
UVICORN_EXIT_CODES = (0, -signal.SIGTERM)


@pytest.fixture
def prompt_receiver(receiver: EnvelopeReceiver, monkeypatch: pytest.MonkeyPatch) -> EnvelopeReceiver:
    """The receiver without its ~40 ms stall per answer.

    ``tests/receiver.py`` writes status line + headers and the body in two unbuffered writes on a socket
    with Nagle's algorithm on: the body waits for the client's delayed ACK, which caps the receiver at
    about 25 envelopes a second. Real Sentry answers promptly; the stall would dwarf any shutdown bound.
    """
    monkeypatch.setattr(_Handler, "disable_nagle_algorithm", True)
    return receiver


@contextlib.contextmanager
def run_gunicorn(target: str, env: dict[str, str], workers: int) -> Iterator[RunningServer]:
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", target, "-k", "uvicorn_worker.UvicornWorker", "--preload"]
    command += ["-w", str(workers), "-b", f"127.0.0.1:{port}", "--log-level", "warning"]
    with tempfile.NamedTemporaryFile(prefix="otel_bridge_gunicorn_", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        process = subprocess.Popen(
            command,
            cwd=str(REPO_ROOT),
            env=child_environment(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningServer(process, port, log_path)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, f"gunicorn exited with {process.returncode}:\n{server.output()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.url}/pid", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"gunicorn did not answer within 20 s:\n{server.output()}"
            time.sleep(0.1)
        yield server
    finally:
        server._close()


def _poll(done: Callable[[], bool], timeout: float) -> None:
    """Wait for ``done()``, checking a few times a second.

    Not ``EnvelopeReceiver.wait_for``: it re-evaluates on every envelope, deep-copying all of them while
    holding the lock the receiving threads need, which is quadratic and stalls delivery at a thousand.
    """
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.2)


def _path(event: dict[str, Any]) -> str:
    return httpx.URL(event["request"]["url"]).path


def _order_in_message(error: dict[str, Any]) -> str:
    [exception] = error["exception"]["values"]
    assert exception["type"] == "PaymentDeclined"
    return str(exception["value"]).removeprefix("card declined for order ")


def test_gunicorn_preloaded_workers_each_deliver_their_own_events(receiver: EnvelopeReceiver) -> None:
    count = 40
    served_by: dict[str, str] = {}
    with run_gunicorn(APP, {"SENTRY_DSN": receiver.dsn}, workers=2) as server:
        receiver.wait_for_transactions(1)
        receiver.clear()
        for index in range(count):
            path = f"/checkout/{index}" if index % 2 else f"/items/{index}"
            response = httpx.get(f"{server.url}{path}")
            assert response.status_code == (500 if index % 2 else 200)
            served_by[path] = response.headers["x-pid"]
        workers = set(served_by.values())
        assert len(workers) == 2, f"one worker served all {count} requests: {Counter(served_by.values())}"
        assert str(server.process.pid) not in workers
        transactions = receiver.wait_for_transactions(count, timeout=20)
        errors = receiver.wait_for_events(count // 2, timeout=20)

    assert Counter(_path(transaction) for transaction in transactions) == Counter(served_by.keys())
    for transaction in transactions:
        assert transaction["tags"]["pid"] == served_by[_path(transaction)]
    assert Counter(_path(error) for error in errors) == Counter(p for p in served_by if "checkout" in p)
    for error in errors:
        assert error["tags"]["pid"] == served_by[_path(error)]
        assert error["tags"]["order"] == _order_in_message(error)
    assert {event["tags"]["pid"] for event in transactions} == workers
    assert {event["tags"]["pid"] for event in errors} == workers
    for worker in workers:
        assert_relay_valid(next(t for t in transactions if t["tags"]["pid"] == worker))
        assert_relay_valid(next(e for e in errors if e["tags"]["pid"] == worker))


async def _burst(base_url: str, paths: list[str], connections: int) -> list[httpx.Response]:
    # Each request on a fresh connection: uvicorn closes a connection whose request raised, and a pooled
    # client could pick that connection for the next request before it notices.
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, timeout=90, limits=limits) as client:
        return await asyncio.gather(*(client.get(path) for path in paths))


def _paths_for_sigterm(count: int) -> list[str]:
    return [f"/checkout/{index}" if index % 3 == 0 else f"/items/{index}" for index in range(count)]


def _burst_then_sigterm(
    server: RunningServer, receiver: EnvelopeReceiver, paths: list[str]
) -> tuple[int, float, int]:
    """Exit code, seconds from SIGTERM to exit, and events received before SIGTERM."""
    responses = asyncio.run(_burst(server.url, paths, connections=100))
    sent_before = len(receiver.transactions()) + len(receiver.events())
    stopping = time.monotonic()
    code = server.stop(timeout=30)
    shutdown_seconds = time.monotonic() - stopping
    assert [response.status_code for response in responses] == [
        500 if "checkout" in path else 200 for path in paths
    ]
    assert not server.killed and shutdown_seconds < 10, server.output()[-3000:]
    return code, shutdown_seconds, sent_before


def _assert_nothing_lost(
    receiver: EnvelopeReceiver, paths: list[str], shutdown_seconds: float, sent_before: int
) -> None:
    failing = [path for path in paths if "checkout" in path]
    _poll(lambda: len(receiver.transactions()) >= len(paths) and len(receiver.events()) >= len(failing), 2)
    delivered = Counter(_path(transaction) for transaction in receiver.transactions())
    lost = [path for path in paths if not delivered[path]]
    assert not lost, (
        f"{len(lost)} of {len(paths)} finished requests have no transaction after SIGTERM (exited after "
        f"{shutdown_seconds:.2f} s, {sent_before} events sent before it)"
    )
    assert delivered == Counter(paths)
    assert Counter(_path(error) for error in receiver.events()) == Counter(failing)


def test_sigterm_right_after_a_burst_loses_no_finished_request(prompt_receiver: EnvelopeReceiver) -> None:
    receiver = prompt_receiver
    paths = _paths_for_sigterm(300)
    with run_app(APP, env={"SENTRY_DSN": receiver.dsn}) as server:
        code, shutdown_seconds, sent_before = _burst_then_sigterm(server, receiver, paths)
    assert code in UVICORN_EXIT_CODES
    _assert_nothing_lost(receiver, paths, shutdown_seconds, sent_before)


def test_sigterm_with_a_slow_sentry_loses_no_finished_request(prompt_receiver: EnvelopeReceiver) -> None:
    receiver = prompt_receiver
    receiver.respond_with(200, delay=0.5)
    paths = _paths_for_sigterm(60)
    with run_app(APP, env={"SENTRY_DSN": receiver.dsn}) as server:
        code, shutdown_seconds, sent_before = _burst_then_sigterm(server, receiver, paths)
    assert code in UVICORN_EXIT_CODES
    expected = len(paths) + sum("checkout" in path for path in paths)
    assert sent_before < expected, "the slow endpoint should leave events queued at SIGTERM"
    _assert_nothing_lost(receiver, paths, shutdown_seconds, sent_before)


def test_sigterm_to_gunicorn_with_a_slow_sentry_loses_no_finished_request(
    prompt_receiver: EnvelopeReceiver,
) -> None:
    receiver = prompt_receiver
    paths = _paths_for_sigterm(60)
    with run_gunicorn(APP, {"SENTRY_DSN": receiver.dsn}, workers=2) as server:
        receiver.wait_for_transactions(1)
        receiver.clear()
        receiver.respond_with(200, delay=0.5)
        code, shutdown_seconds, sent_before = _burst_then_sigterm(server, receiver, paths)
    assert code == 0
    expected = len(paths) + sum("checkout" in path for path in paths)
    assert sent_before < expected, "the slow endpoint should leave events queued at SIGTERM"
    _assert_nothing_lost(receiver, paths, shutdown_seconds, sent_before)


def test_a_thousand_requests_at_once_keep_their_own_tags_users_and_spans(
    prompt_receiver: EnvelopeReceiver,
) -> None:
    receiver = prompt_receiver
    count = 1000
    paths = [
        f"/together/checkout/o{index}" if index % 2 else f"/together/items/i{index}" for index in range(count)
    ]
    failing = {path for path in paths if "checkout" in path}
    env = {"SENTRY_DSN": receiver.dsn, "SENTRY_SEND_DEFAULT_PII": "true"}
    with run_app(APP, env=env) as server:
        responses = asyncio.run(_burst(server.url, [f"{path}?size={count}" for path in paths], count))
        assert [response.status_code for response in responses] == [
            500 if path in failing else 200 for path in paths
        ]
        peak = max(response.json()["peak"] for response in responses if response.status_code == 200)
        assert peak == count, "all requests should have been in flight in the server at once"
        _poll(lambda: len(receiver.transactions()) >= count and len(receiver.events()) >= len(failing), 30)
        time.sleep(0.5)
    transactions, errors = receiver.transactions(), receiver.events()

    assert Counter(_path(transaction) for transaction in transactions) == Counter(paths)
    assert Counter(_path(error) for error in errors) == Counter(failing)
    trace_of: dict[str, str] = {}
    for transaction in transactions:
        path = _path(transaction)
        kind, key = ("order", path.rsplit("/", 1)[1]) if path in failing else ("item", path.rsplit("/", 1)[1])
        other = "item" if kind == "order" else "order"
        assert transaction["tags"][kind] == key and other not in transaction["tags"], transaction["tags"]
        assert transaction["user"] == {"id": f"user-{key}", "username": f"shopper-{key}"}
        [child] = transaction["spans"]
        assert child["data"][f"shop.{kind}"] == key
        assert child["trace_id"] == transaction["contexts"]["trace"]["trace_id"]
        trace_of[path] = transaction["contexts"]["trace"]["trace_id"]
    assert len(set(trace_of.values())) == count

    for error in errors:
        path = _path(error)
        order = _order_in_message(error)
        assert path == f"/together/checkout/{order}"
        assert error["tags"]["order"] == order and "item" not in error["tags"], error["tags"]
        assert error["user"] == {"id": f"user-{order}", "username": f"shopper-{order}"}
        assert [crumb["message"] for crumb in error["breadcrumbs"]["values"]] == [f"order {order}"]
        assert error["contexts"]["trace"]["trace_id"] == trace_of[path]
    assert_relay_valid(transactions[0])
    assert_relay_valid(errors[0])


def test_every_replacement_of_a_killed_gunicorn_worker_delivers(prompt_receiver: EnvelopeReceiver) -> None:
    """gunicorn forks a replacement whenever a worker dies; a fork taken while a background thread of the
    master held a lock (an import, a queue) must not leave the child's sender dead."""
    rounds = 6
    replacements: set[str] = set()
    served: Counter[str] = Counter()
    with run_gunicorn(APP, {"SENTRY_DSN": prompt_receiver.dsn}, workers=2) as server:
        known: set[str] = set()
        # a new connection per request: a kept-alive one may lead to the worker just killed
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=server.url, timeout=5, limits=limits) as client:
            for round_number in range(rounds):
                victim = str(client.get("/pid").json()["pid"])
                known.add(victim)
                os.kill(int(victim), signal.SIGKILL)
                deadline = time.monotonic() + 20
                replacement = None
                number = 0
                while replacement is None:
                    assert time.monotonic() < deadline, f"no replacement in round {round_number}"
                    with contextlib.suppress(httpx.TransportError):
                        response = client.get(f"/items/{round_number * 1000 + number}")
                        pid = response.headers["x-pid"]
                        served[pid] += 1
                        if pid not in known:
                            replacement = pid
                    number += 1
                known.add(replacement)
                replacements.add(replacement)
                # before the next round may kill it: the replacement's transactions arrive
                _poll(lambda pid=replacement: pid in _pids(prompt_receiver), timeout=10)
                assert replacement in _pids(prompt_receiver), (
                    f"round {round_number}: replacement {replacement} delivered nothing\n{server.output()}"
                )
    assert len(replacements) == rounds


def _pids(receiver: EnvelopeReceiver) -> set[str]:
    return {transaction["tags"]["pid"] for transaction in receiver.transactions()}
