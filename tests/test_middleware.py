"""``SentryAsgiMiddleware`` called directly: what the app, the server and the client see must not change."""

from __future__ import annotations

import asyncio
import re
from collections.abc import MutableMapping
from typing import Any

import pytest
import sentry_sdk
from opentelemetry.sdk.trace import TracerProvider

from otel_bridge import SentrySpanProcessor
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid

Message = MutableMapping[str, Any]


def http_scope(path: str = "/", query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"shop.test"), (b"user-agent", b"tests")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


async def call(app: Any, scope: dict[str, Any], incoming: list[Message] | None = None) -> list[Message]:
    inbox = list(incoming or [{"type": "http.request", "body": b"", "more_body": False}])
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": b"part one ", "more_body": True})
    await send({"type": "http.response.body", "body": b"part two"})


class Asgi2Hello:
    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        await hello(self.scope, receive, send)


@pytest.mark.parametrize("app", [hello, Asgi2Hello], ids=["asgi3", "asgi2"])
def test_the_response_is_exactly_the_apps(
    traced: tuple[TracerProvider, SentrySpanProcessor], receiver: EnvelopeReceiver, app: Any
) -> None:
    provider, processor = traced
    bare = asyncio.run(call(hello, http_scope()))
    wrapped = asyncio.run(call(SentryAsgiMiddleware(app, tracer_provider=provider), http_scope("/", b"a=1")))
    assert wrapped == bare
    processor.force_flush(5000)
    [transaction] = receiver.wait_for_transactions(1)
    assert_relay_valid(transaction)
    assert transaction["transaction"] == "/"
    assert transaction["request"]["query_string"] == "a=1"
    assert transaction["contexts"]["response"]["status_code"] == 201


def test_lifespan_passes_straight_through(traced: tuple[TracerProvider, SentrySpanProcessor]) -> None:
    provider, _ = traced
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, sentry_sdk.get_isolation_scope()))
        message = await receive()
        await send({"type": "lifespan.startup.complete", "got": message["type"]})

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    outer_isolation = sentry_sdk.get_isolation_scope()
    sent = asyncio.run(
        call(SentryAsgiMiddleware(app, tracer_provider=provider), scope, [{"type": "lifespan.startup"}])
    )
    assert sent == [{"type": "lifespan.startup.complete", "got": "lifespan.startup"}]
    assert seen[0][0] is scope
    assert seen[0][1] is outer_isolation


def test_the_server_sees_the_same_exception_object(
    traced: tuple[TracerProvider, SentrySpanProcessor], receiver: EnvelopeReceiver
) -> None:
    provider, processor = traced
    raised = KeyError("missing")

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise raised

    with pytest.raises(KeyError) as caught:
        asyncio.run(call(SentryAsgiMiddleware(broken, tracer_provider=provider), http_scope("/boom")))
    assert caught.value is raised
    processor.force_flush(5000)
    [error] = receiver.wait_for_events(1)
    [transaction] = receiver.wait_for_transactions(1)
    assert error["exception"]["values"][-1]["type"] == "KeyError"
    assert error["contexts"]["trace"]["span_id"] == transaction["contexts"]["trace"]["span_id"]
    assert transaction["contexts"]["trace"]["status"] == "internal_error"


def test_internal_receive_and_send_spans_can_be_turned_on(
    traced: tuple[TracerProvider, SentrySpanProcessor], receiver: EnvelopeReceiver
) -> None:
    provider, processor = traced
    asyncio.run(
        call(SentryAsgiMiddleware(hello, tracer_provider=provider, internal_spans=True), http_scope())
    )
    asyncio.run(call(SentryAsgiMiddleware(hello, tracer_provider=provider), http_scope()))
    processor.force_flush(5000)
    with_spans, without = receiver.wait_for_transactions(2)
    assert len(with_spans["spans"]) == 3
    assert all("send" in span["description"] for span in with_spans["spans"])
    assert without["spans"] == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"transaction_style": "path"},
            "Invalid value for transaction_style: path (must be in ('endpoint', 'url'))",
        ),
        ({"internal_spans": ["recv"]}, "internal_spans=['recv'] is not valid"),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SentryAsgiMiddleware(hello, **options)
