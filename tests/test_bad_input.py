"""Odd requests and odd apps through the real middleware: the client and the server see exactly what
they would see without it, and whatever is sent to Sentry is Relay-valid."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any, Callable, Optional

import pytest
import sentry_sdk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from otel_bridge import SentrySpanProcessor
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid

Message = MutableMapping[str, Any]
App = Callable[..., Any]


def scope_with(headers: list[tuple[bytes, bytes]], **overrides: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    scope.update(overrides)
    for key in [key for key, value in scope.items() if value is _MISSING]:
        del scope[key]
    return scope


_MISSING = object()


async def run(
    app: App, scope: dict[str, Any], inbox: Optional[list[Message]] = None
) -> tuple[list[Message], Any]:
    pending = list(inbox or [{"type": "http.request", "body": b"", "more_body": False}])
    sent: list[Message] = []

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        await asyncio.sleep(0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    try:
        await app(scope, receive, send)
    except BaseException as exc:
        return sent, exc
    return sent, None


def compare(app: App, scope: dict[str, Any], provider: TracerProvider) -> tuple[list[Message], Any]:
    bare = asyncio.run(run(app, dict(scope)))
    wrapped = asyncio.run(run(SentryAsgiMiddleware(app, tracer_provider=provider), dict(scope)))
    assert wrapped[0] == bare[0], "the client sees the same messages"
    assert type(wrapped[1]) is type(bare[1]), "the server sees the same exception"
    assert str(wrapped[1]) == str(bare[1])
    return wrapped


async def ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def raising_before_start(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("before the response")


async def raising_after_start(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise RuntimeError("mid-stream")


async def raising_after_the_end(scope: Any, receive: Any, send: Any) -> None:
    await ok(scope, receive, send)
    raise RuntimeError("after the response")


async def cancelled(scope: Any, receive: Any, send: Any) -> None:
    raise asyncio.CancelledError()


async def keyboard_interrupt(scope: Any, receive: Any, send: Any) -> None:
    raise KeyboardInterrupt


async def silent(scope: Any, receive: Any, send: Any) -> None:
    await receive()


async def long_stream(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for index in range(500):
        await send({"type": "http.response.body", "body": b"x" * 100, "more_body": index < 499})


APPS = {
    "ok": ok,
    "raising_before_start": raising_before_start,
    "raising_after_start": raising_after_start,
    "raising_after_the_end": raising_after_the_end,
    "cancelled": cancelled,
    "keyboard_interrupt": keyboard_interrupt,
    "silent": silent,
    "long_stream": long_stream,
}


@pytest.mark.parametrize("name", sorted(APPS))
def test_odd_apps_behave_exactly_as_without_the_middleware(
    name: str, traced: tuple[TracerProvider, SentrySpanProcessor], receiver: EnvelopeReceiver
) -> None:
    provider, processor = traced
    compare(APPS[name], scope_with([(b"host", b"shop.test")]), provider)
    processor.force_flush(5000)
    sentry_sdk.flush(5)
    for event in receiver.events() + receiver.transactions():
        assert_relay_valid(event)
    reported = [event["exception"]["values"][-1]["type"] for event in receiver.events()]
    if name.startswith("raising"):
        assert reported == ["RuntimeError"]
    else:
        assert reported == [], "a cancelled request or an interrupt is not an error of the app"


@pytest.mark.parametrize(
    ("label", "headers", "overrides"),
    [
        ("huge header", [(b"x-big", b"v" * 200_000)], {}),
        ("many duplicates", [(b"x-dup", str(index).encode()) for index in range(2000)], {}),
        ("not utf-8", [(b"x-bin", b"\xff\xfe\x00\x81"), (b"\xc3\x28", b"\xa0\xa1")], {}),
        ("empty", [(b"", b"")], {}),
        ("no client, no server", [], {"client": _MISSING, "server": _MISSING}),
        ("client None", [], {"client": None, "server": None}),
        ("odd method", [], {"method": "BREW"}),
        ("no method", [], {"method": _MISSING}),
        ("query bytes", [], {"query_string": b"\xff=\xfe&password=x%ZZ"}),
        ("broken trace headers", [(b"traceparent", b"00-zz-11-01"), (b"sentry-trace", b"\xff" * 40)], {}),
    ],
)
def test_odd_requests_are_served_unchanged(
    label: str,
    headers: list[tuple[bytes, bytes]],
    overrides: dict[str, Any],
    traced: tuple[TracerProvider, SentrySpanProcessor],
    receiver: EnvelopeReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider, processor = traced
    with caplog.at_level(logging.WARNING, logger="otel_bridge"):
        compare(raising_before_start, scope_with(headers, **overrides), provider)
    processor.force_flush(5000)
    [error] = receiver.wait_for_events(1)
    assert_relay_valid(error)
    if label == "query bytes":
        # OpenTelemetry's ASGI middleware cannot decode a query string that is not UTF-8 and raises before
        # the app runs; the bridge serves such a request untraced and says so.
        assert "failed before the app ran" in caplog.text
        assert receiver.transactions() == []
    elif label in ("odd method", "no method"):
        # as sentry-sdk's middleware, transactions only for the methods of http_methods_to_capture
        processor.force_flush(5000)
        sentry_sdk.flush(5)
        assert receiver.transactions() == []
    else:
        for transaction in receiver.wait_for_transactions(1):
            assert_relay_valid(transaction)


header_names = st.binary(min_size=0, max_size=40)
header_values = st.binary(min_size=0, max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.lists(st.tuples(header_names, header_values), max_size=30), path=st.text(max_size=80))
def test_any_headers_and_path_leave_the_response_alone(
    headers: list[tuple[bytes, bytes]], path: str, traced: tuple[TracerProvider, SentrySpanProcessor]
) -> None:
    provider, _processor = traced
    sent, raised = compare(
        ok, scope_with(headers, path=path, raw_path=path.encode("utf-8", "replace")), provider
    )
    assert raised is None
    assert sent[0]["status"] == 200


def test_a_websocket_accepted_and_dropped(
    traced: tuple[TracerProvider, SentrySpanProcessor], receiver: EnvelopeReceiver
) -> None:
    provider, processor = traced

    async def accept_and_vanish(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    scope = scope_with([(b"host", b"shop.test")], type="websocket", scheme="ws", method=_MISSING, path="/ws")
    inbox: list[Message] = [{"type": "websocket.connect"}]
    bare = asyncio.run(run(accept_and_vanish, dict(scope), list(inbox)))
    wrapped = asyncio.run(
        run(SentryAsgiMiddleware(accept_and_vanish, tracer_provider=provider), dict(scope), inbox)
    )
    assert wrapped == bare
    processor.force_flush(5000)
    [transaction] = receiver.wait_for_transactions(1)
    assert_relay_valid(transaction)
    assert transaction["contexts"]["trace"]["op"] == "websocket.server"
