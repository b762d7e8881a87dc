"""A raw ASGI 3 app (``async def app(scope, receive, send)``), no framework, under the bridge.

Run it: ``otel-bridge demo --example asgi3`` (events shown in the terminal, no Sentry account needed),
or ``SENTRY_DSN=... uvicorn asgi3_app:app --app-dir examples``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Awaitable, Callable, MutableMapping

import sentry_sdk

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

otel_bridge.init()

ITEM_PATH = re.compile(r"/items/(?P<item_id>[0-9]+)")


def compute_total(total: float, count: int) -> float:
    return total / count


async def respond(send: Send, status: int, body: bytes, content_type: bytes = b"text/plain") -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def get_item(send: Send, item_id: int) -> None:
    sentry_sdk.set_tag("item", str(item_id))
    sentry_sdk.set_user({"id": f"user-{item_id}"})
    await respond(send, 200, json.dumps({"item_id": item_id}).encode(), b"application/json")


async def boom(send: Send) -> None:
    await respond(send, 200, f"total: {compute_total(100, 0)}".encode())


async def echo(receive: Receive, send: Send) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    message = await receive()
    await send({"type": "websocket.send", "text": f"echo: {message.get('text')}"})
    await send({"type": "websocket.close", "code": 1000})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def shop(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "websocket" and scope["path"] == "/ws":
        await echo(receive, send)
    elif scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1000})
    elif match := ITEM_PATH.fullmatch(scope["path"]):
        await get_item(send, int(match["item_id"]))
    elif scope["path"] == "/boom":
        await boom(send)
    else:
        await respond(send, 404, b"Not Found")


app = SentryAsgiMiddleware(shop)
