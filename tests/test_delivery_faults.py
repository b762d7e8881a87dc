"""Nothing lost silently: the background threads survive anything, ``flush`` tells the truth, every loss is
counted and summarised in the log, the queue is bounded in bytes, and a 429 nobody can read still backs
off. Against the real loopback endpoint, through real sentry-sdk clients."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import sentry_sdk
from opentelemetry.sdk.trace import TracerProvider

import otel_bridge
from otel_bridge import _setup as bootstrap
from otel_bridge._collect import processor as processor_module
from otel_bridge._deliver.http1 import Connection
from otel_bridge._drops import lost
from otel_bridge.transport import ConcurrentHttpTransport
from tests.receiver import EnvelopeReceiver
from tests.servers import run_app
from tests.test_transport import (
    accepted_discards,
    client_for,
    request_count,
    sender_of,
    transaction,
    transport_of,
)

pytestmark = pytest.mark.timeout(60)


def test_a_dsn_host_that_cannot_be_encoded_is_counted_and_the_sender_goes_on() -> None:
    label = "a" * 64  # longer than DNS allows: getaddrinfo raises UnicodeError, not OSError
    client = sentry_sdk.Client(
        dsn=f"http://0123456789abcdef0123456789abcdef@{label}.invalid/1", transport=ConcurrentHttpTransport
    )
    try:
        with sentry_sdk.new_scope() as scope:
            scope.set_client(client)
            for number in range(3):
                sentry_sdk.capture_message(f"nowhere {number}")
            started = time.monotonic()
            client.flush(timeout=5)
            assert time.monotonic() - started < 2, "the loss is known at once, flush does not wait it out"
            assert transport_of(client)._discarded_events[("error", "network_error")] == 3
            assert sender_of(client).is_alive
    finally:
        client.close(timeout=1)


def test_an_unexpected_error_in_the_http_code_costs_one_envelope_and_the_sender_goes_on(
    receiver: EnvelopeReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_progress = Connection.progress
    failures = {"left": 1}

    def progress_with_a_bug(self: Connection) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("a bug in the HTTP code")
        return real_progress(self)

    monkeypatch.setattr(Connection, "progress", progress_with_a_bug)
    with client_for(receiver) as client:
        sentry_sdk.capture_message("hit by the bug")
        client.flush(timeout=5)
        for number in range(5):
            sentry_sdk.capture_message(f"after {number}")
        client.flush(timeout=5)
        assert sender_of(client).is_alive
    messages = [event["message"] for event in receiver.events()]
    assert sorted(message for message in messages if message.startswith("after")) == [
        f"after {n}" for n in range(5)
    ]


class _Crash(BaseException):
    """Not an ``Exception``: it ends the thread, as a crash would."""


def test_a_dead_sender_thread_is_started_again_by_the_next_envelope(
    receiver: EnvelopeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashes: list[type[BaseException]] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashes.append(args.exc_type))
    with client_for(receiver) as client:
        sentry_sdk.capture_message("first")
        client.flush(timeout=5)
        sender = sender_of(client)
        [thread] = sender.threads

        def crash() -> None:
            raise _Crash

        assert sender.submit(crash)
        thread.join(timeout=5)
        assert not sender.is_alive
        assert crashes == [_Crash]
        sentry_sdk.capture_message("second")
        client.flush(timeout=5)
        assert sender.is_alive
    assert [event["message"] for event in receiver.events()] == ["first", "second"]


@pytest.fixture
def bridge(receiver: EnvelopeReceiver) -> Any:
    """``otel_bridge.init()`` against the receiver, with its own provider; undone afterwards."""
    provider = TracerProvider()
    processor = otel_bridge.SentrySpanProcessor()
    provider.add_span_processor(processor)
    sentry_sdk.init(dsn=receiver.dsn, transport=ConcurrentHttpTransport, instrumenter="otel")
    previous = bootstrap._processor
    bootstrap._processor = processor
    try:
        yield provider
    finally:
        bootstrap._processor = previous
        provider.shutdown()


def test_flush_says_false_when_time_ran_out_and_true_when_all_went_out(
    receiver: EnvelopeReceiver, bridge: TracerProvider
) -> None:
    receiver.respond_with(delay=3.0)
    tracer = bridge.get_tracer("test")
    for number in range(5):
        with tracer.start_as_current_span(f"job {number}"):
            pass
    started = time.monotonic()
    assert otel_bridge.flush(1) is False
    assert time.monotonic() - started < 2
    receiver.respond_with()
    assert otel_bridge.flush(10) is True
    assert len(receiver.transactions()) == 5


def test_a_conversion_bug_is_counted_per_trace_and_logged_once(
    receiver: EnvelopeReceiver,
    bridge: TracerProvider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError("a bug in the conversion")

    monkeypatch.setattr(processor_module, "send_trace", broken)
    tracer = bridge.get_tracer("test")
    with caplog.at_level(logging.WARNING, logger="otel_bridge"):
        for number in range(50):
            with tracer.start_as_current_span(f"job {number}"):
                pass
        otel_bridge.flush(5)
    conversion_lines = [r for r in caplog.records if "could not turn a trace" in r.getMessage()]
    assert len(conversion_lines) == 1
    sentry_sdk.get_client().flush(timeout=5)
    reports = accepted_discards(receiver)
    assert reports[("internal_sdk_error", "transaction")] == 50


def test_queue_overflow_is_summarised_in_one_log_line(
    receiver: EnvelopeReceiver, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.respond_with(delay=3.0)
    # earlier tests in this process may have logged a summary this minute
    monkeypatch.setattr(lost, "_last_report", None)
    with (
        caplog.at_level(logging.WARNING, logger="otel_bridge"),
        client_for(
            receiver, transport=ConcurrentHttpTransport.with_max_connections(1), transport_queue_size=5
        ) as client,
    ):
        for number in range(50):
            sentry_sdk.capture_event(transaction(f"request {number}"))
        receiver.respond_with()
        client.flush(timeout=10)
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("otel_bridge dropped")]
    assert len(summaries) == 1, summaries
    assert "(queue_overflow)" in summaries[0]


def test_the_queue_is_bounded_in_bytes(receiver: EnvelopeReceiver) -> None:
    bound = 200_000
    receiver.respond_with(delay=3.0)
    transport = ConcurrentHttpTransport.with_max_queue_bytes(bound)
    with client_for(receiver, transport=transport) as client:
        for number in range(40):
            sentry_sdk.capture_message(f"{number} " + "x" * 50_000)
        sender = sender_of(client)
        assert sender.queued_bytes <= bound
        overflow = transport_of(client)._discarded_events[("error", "queue_overflow")]
        assert overflow >= 40 - bound // 50_000, overflow
        receiver.respond_with()
        client.flush(timeout=15)
        assert sender.queued_bytes == 0
    assert len(receiver.events()) == 40 - overflow


def test_a_429_whose_limits_cannot_be_read_backs_off_and_counts(receiver: EnvelopeReceiver) -> None:
    receiver.respond_with(429, {"X-Sentry-Rate-Limits": "garbage, more garbage"})
    with client_for(receiver) as client:
        sentry_sdk.capture_message("limited")
        client.flush(timeout=5)
        for number in range(20):
            sentry_sdk.capture_message(f"during the back-off {number}")
        client.flush(timeout=5)
        posts = request_count(receiver)
        receiver.respond_with()
        # the reports wait for the back-off too; read them from the transport
        discarded = dict(transport_of(client)._discarded_events)
    assert posts == 1, "nothing else was sent during the back-off"
    assert discarded == {("error", "ratelimit_backoff"): 21}


def test_what_could_not_be_sent_at_shutdown_is_said(receiver: EnvelopeReceiver) -> None:
    receiver.respond_with(delay=10.0)
    with run_app("tests.apps.shop_bridge:app", env={"SENTRY_DSN": receiver.dsn}) as server:
        import httpx

        with httpx.Client(base_url=server.url) as client:
            for number in range(40):
                assert client.get(f"/items/{number}").status_code == 200
        server.stop(timeout=15)
        output = server.output()
    assert "could not send" in output and "envelope(s) to Sentry before shutting down" in output, output
