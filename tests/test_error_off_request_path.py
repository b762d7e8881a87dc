"""The event of an exception escaping the app is built off the request path: the failing request is
answered first, and the event, built later on the bridge's worker, is the one it would have been."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any, Callable

import httpx
import pytest
import sentry_sdk
import sentry_sdk.sessions
from opentelemetry.sdk.trace import TracerProvider

import otel_bridge._collect.live_errors as live_errors
from otel_bridge import _compat
from otel_bridge._collect.processor import SentrySpanProcessor
from otel_bridge._compat.sentry_sessions import SESSION_TRACKING_DECISION
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.conftest import StartTraced
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid


class OrderFailed(RuntimeError):
    pass


def shop(provider: TracerProvider) -> Any:
    """``/fail`` tags the request, names its user and raises; anything else answers 200."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/fail":
            sentry_sdk.set_tag("checkout", "express")
            sentry_sdk.set_user({"id": "42"})
            order_id = 4217
            raise OrderFailed(f"order {order_id} failed")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return SentryAsgiMiddleware(app, tracer_provider=provider)


async def rethrowing_server_frame(app: Any, scope: Any, receive: Any, send: Any) -> None:
    """Where a server's own frame would be: the exception travels on through it after the middleware."""
    await app(scope, receive, send)


def get(app: Any, *paths: str) -> list[int]:
    async def served(scope: Any, receive: Any, send: Any) -> None:
        await rethrowing_server_frame(app, scope, receive, send)

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=served, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            return [(await client.get(path)).status_code for path in paths]

    return asyncio.run(run())


@pytest.fixture
def builders(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The name of the thread each error event of the middleware was built on."""
    threads: list[str] = []
    original = live_errors.event_from_exception

    def noted(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(live_errors, "event_from_exception", noted)
    yield threads


Started = Callable[..., tuple[TracerProvider, SentrySpanProcessor]]


@pytest.fixture
def bridge(start_traced: StartTraced) -> Started:
    def start(**options: Any) -> tuple[TracerProvider, SentrySpanProcessor]:
        options.setdefault("release", "shop@1.0")
        return start_traced(auto_enabling_integrations=False, **options)

    return start


def session_counts(receiver: EnvelopeReceiver) -> dict[str, int]:
    [aggregate] = [item.json() for item in receiver.items("sessions")]
    [bucket] = aggregate["aggregates"]
    return {key: value for key, value in bucket.items() if key != "started"}


def frame_functions(event: dict[str, Any]) -> list[str]:
    [exception] = event["exception"]["values"]
    return [frame["function"] for frame in exception["stacktrace"]["frames"]]


def test_the_failing_request_is_answered_before_its_event_is_built(
    bridge: Started, receiver: EnvelopeReceiver, builders: list[str]
) -> None:
    provider, processor = bridge()
    release = threading.Event()
    # the worker busy with something else: the request must not wait for it
    processor._worker.submit(lambda: release.wait(10))
    assert get(shop(provider), "/fail") == [500]
    assert builders == []
    release.set()
    sentry_sdk.flush(timeout=5)
    assert builders == ["otel_bridge.worker"]
    [error] = receiver.events()
    assert_relay_valid(error)
    assert error["exception"]["values"][0]["type"] == "OrderFailed"


def test_the_event_built_later_is_the_request_s_and_comes_before_its_transaction(
    bridge: Started, receiver: EnvelopeReceiver, builders: list[str]
) -> None:
    provider, _ = bridge(send_default_pii=True)
    assert get(shop(provider), "/fail") == [500]
    sentry_sdk.flush(timeout=5)
    assert [envelope.items[0].type for envelope in receiver.envelopes][:2] == ["event", "transaction"]
    [error] = receiver.events()
    [transaction] = receiver.transactions()
    assert_relay_valid(error)
    assert error["tags"]["checkout"] == "express"
    assert error["user"]["id"] == "42"
    assert error["request"]["url"] == "http://shop.test/fail"
    assert error["exception"]["values"][0]["mechanism"]["handled"] is False
    assert error["contexts"]["trace"]["trace_id"] == transaction["contexts"]["trace"]["trace_id"]
    assert error["contexts"]["trace"]["span_id"] == transaction["contexts"]["trace"]["span_id"]
    # the traceback as it was when the middleware saw it, not as it grew on its way up afterwards
    functions = frame_functions(error)
    assert functions[-1] == "app"
    assert "rethrowing_server_frame" not in functions
    [app_frame] = [
        f for f in error["exception"]["values"][0]["stacktrace"]["frames"] if f["function"] == "app"
    ]
    assert app_frame["vars"]["order_id"] == "4217"
    assert session_counts(receiver) == {"crashed": 1}


def test_an_error_before_send_drops_leaves_the_session_exited_as_sentry_sdk_does(
    bridge: Started, receiver: EnvelopeReceiver
) -> None:
    def drop_errors(event: Any, hint: Any) -> Any:
        return None

    provider, _ = bridge(before_send=drop_errors)
    assert get(shop(provider), "/fail", "/cart") == [500, 200]
    sentry_sdk.flush(timeout=5)
    assert receiver.events() == []
    assert session_counts(receiver) == {"exited": 2}


@contextlib.contextmanager
def busy_worker(receiver: EnvelopeReceiver, max_queued: int) -> Iterator[tuple[TracerProvider, Any]]:
    """A processor of at most ``max_queued`` traces (and as many errands) whose worker is busy until the
    block ends: what the requests queue meanwhile waits."""
    sentry_sdk.init(
        dsn=receiver.dsn, instrumenter="otel", release="shop@1.0", auto_enabling_integrations=False
    )
    provider = TracerProvider()
    processor = SentrySpanProcessor(max_queued_traces=max_queued)
    provider.add_span_processor(processor)
    release, busy = threading.Event(), threading.Event()
    try:
        processor._worker.submit(lambda: (busy.set(), release.wait(10)))
        assert busy.wait(5)
        yield provider, processor
    finally:
        release.set()
        sentry_sdk.flush(timeout=5)
        provider.shutdown()


def test_an_error_is_built_on_the_request_path_when_the_worker_queue_is_full(
    start_traced: StartTraced, receiver: EnvelopeReceiver, builders: list[str]
) -> None:
    with busy_worker(receiver, max_queued=1) as (provider, processor):
        # the queue is now full: its trace and its errand
        assert processor._worker.submit(lambda: None)
        processor._worker.run_soon(lambda: None)
        assert get(shop(provider), "/fail") == [500]
        assert builders == [threading.current_thread().name]
    [error] = receiver.events()
    assert_relay_valid(error)
    assert session_counts(receiver) == {"crashed": 1}


def test_without_sentry_sdk_s_session_decision_the_event_is_built_on_the_request_path(
    bridge: Started,
    receiver: EnvelopeReceiver,
    builders: list[str],
    fresh_reaches: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    decision = sentry_sdk.sessions._is_auto_session_tracking_enabled

    def changed_in_a_release(scope: Any, mode: Any = None) -> Any:
        return decision(scope)

    monkeypatch.setattr(sentry_sdk.sessions, "_is_auto_session_tracking_enabled", changed_in_a_release)
    provider, _ = bridge()
    with caplog.at_level(logging.WARNING, logger="otel_bridge"):
        assert get(shop(provider), "/fail") == [500]
    assert not _compat.holds(SESSION_TRACKING_DECISION)
    assert sum(SESSION_TRACKING_DECISION in record.getMessage() for record in caplog.records) == 1
    assert builders == [threading.current_thread().name]
    sentry_sdk.flush(timeout=5)
    [error] = receiver.events()
    assert_relay_valid(error)
    assert session_counts(receiver) == {"crashed": 1}


def test_queued_error_events_leave_the_traces_their_room(
    start_traced: StartTraced, receiver: EnvelopeReceiver
) -> None:
    with busy_worker(receiver, max_queued=3) as (provider, processor):
        # each failing request queues its error event besides its trace
        assert get(shop(provider), "/fail", "/fail", "/fail") == [500, 500, 500]
    assert processor.drops.totals() == {}
    assert len(receiver.transactions()) == 3
    assert len(receiver.events()) == 3
    assert session_counts(receiver) == {"crashed": 3}
