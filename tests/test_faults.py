"""Sentry down, slow, failing or rate-limiting: the app's responses and latency do not change, nothing
reaches the server log but one warning at most, and what was dropped is reported once Sentry is back."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.servers import RunningServer, free_port, run_app

FAULTS: dict[str, dict[str, Any]] = {
    "slow (5 s answers)": {"status": 200, "delay": 5.0},
    "server error 500": {"status": 500},
    "payload too large 413": {"status": 413},
    "rate limited 429 with Retry-After": {"status": 429, "headers": {"Retry-After": "60"}},
    "reset mid-response": {"raw": b"HTTP/1.1 200 OK\r\nContent-Le"},
    "garbage answer": {"raw": b"\x00\xff not http at all \r\n\r\n"},
}


def drive(base_url: str, rounds: int) -> list[float]:
    """``rounds`` pairs of a good and a failing request; returns each request's latency in seconds."""
    latencies = []
    # uvicorn closes the connection of a request whose app raised: no keep-alive.
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=base_url, timeout=10, limits=limits) as client:
        for index in range(rounds):
            for path, expected in ((f"/items/{index}", 200), (f"/checkout/{index}", 500)):
                started = time.perf_counter()
                response = client.get(path)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == expected
    return latencies


def discarded(receiver: EnvelopeReceiver) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = {}
    for report in receiver.client_reports():
        for entry in report.get("discarded_events", []):
            key = (entry["reason"], entry["category"])
            totals[key] = totals.get(key, 0) + entry["quantity"]
    return totals


def bridge_log_lines(server: RunningServer) -> list[str]:
    """Log lines about Sentry; the tracebacks uvicorn logs for the app's own exceptions are not ours."""
    return [
        line
        for line in server.output().splitlines()
        if not line[:1].isspace() and ("sentry" in line.lower() or "otel_bridge" in line)
    ]


@pytest.fixture(scope="module")
def baseline() -> Iterator[float]:
    with (
        EnvelopeReceiver() as receiver,
        run_app("tests.apps.shop_bridge:app", env={"SENTRY_DSN": receiver.dsn}) as server,
    ):
        drive(server.url, 5)
        yield statistics.median(drive(server.url, 20))


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_failing_sentry_changes_nothing_for_the_app(
    fault: str, baseline: float, receiver: EnvelopeReceiver
) -> None:
    receiver.respond_with(**FAULTS[fault])
    with run_app("tests.apps.shop_bridge:app", env={"SENTRY_DSN": receiver.dsn}) as server:
        latencies = drive(server.url, 20)
        # The app answers in about a millisecond; a Sentry endpoint that takes 5 s must not show up here.
        assert statistics.median(latencies) < baseline + 0.05
        assert max(latencies) < 1.0
        receiver.respond_with()
        time.sleep(0.2)
        drive(server.url, 1)
        server.stop()
        log = bridge_log_lines(server)
    assert len(log) <= 1, "at most one warning about Sentry in the server's log:\n" + "\n".join(log)
    for event in receiver.events() + receiver.transactions():
        assert_relay_valid(event)


def test_a_category_rate_limit_stops_that_category_only(receiver: EnvelopeReceiver) -> None:
    receiver.respond_with(200, {"X-Sentry-Rate-Limits": "60:transaction:organization"})
    with run_app("tests.apps.shop_bridge:app", env={"SENTRY_DSN": receiver.dsn}) as server:
        drive(server.url, 1)
        receiver.wait_for_transactions(1)
        receiver.wait_for_events(1)
        receiver.respond_with()
        drive(server.url, 10)
        receiver.wait_for_events(11)
        time.sleep(0.5)
        assert len(receiver.transactions()) == 1, "no transaction is sent while transactions are limited"
        server.stop()
    assert discarded(receiver).get(("ratelimit_backoff", "transaction"), 0) >= 10


def _paced(base_url: str, per_second: int, seconds: float) -> int:
    """GET /items/N at ``per_second`` for ``seconds``; returns how many requests were answered 200."""
    answered = 0
    interval = 1.0 / per_second
    started = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for number in range(int(per_second * seconds)):
            time.sleep(max(0.0, started + number * interval - time.monotonic()))
            if client.get(f"/items/{number}").status_code == 200:
                answered += 1
    return answered


def test_a_three_second_outage_at_100_requests_a_second_loses_nothing() -> None:
    """Envelopes that failed while Sentry was unreachable wait and are sent again once it is back."""
    port = free_port()
    dsn = f"http://0123456789abcdef0123456789abcdef@127.0.0.1:{port}/1"
    accepted: dict[str, dict[str, Any]] = {}

    def keep(receiver: EnvelopeReceiver) -> None:
        for transaction in receiver.transactions():
            accepted[transaction["event_id"]] = transaction

    with run_app("tests.apps.shop_bridge:app", env={"SENTRY_DSN": dsn}) as server:
        with EnvelopeReceiver(port=port) as before:
            answered = _paced(server.url, 100, 1.5)
            before.wait_for_transactions(answered)
            keep(before)
        # Sentry is away for 3 s: connections are refused
        answered += _paced(server.url, 100, 3.0)
        with EnvelopeReceiver(port=port) as after:
            answered += _paced(server.url, 100, 1.5)
            after.wait_for(lambda r: len(accepted) + len(r.transactions()) >= answered, timeout=20)
            keep(after)
            server.stop()
            keep(after)
            reports = discarded(after)
    assert answered == 600
    assert len(accepted) == answered, f"{answered - len(accepted)} transactions lost; reports: {reports}"
    assert not any(reason == "network_error" for reason, _ in reports), reports
