"""A Litestar app under the bridge.

Run it: ``otel-bridge demo --example litestar`` (events shown in the terminal, no Sentry account
needed), or ``SENTRY_DSN=... uvicorn litestar_app:app --app-dir examples``.
"""

from __future__ import annotations

import sentry_sdk
from litestar import Litestar, WebSocket, get, websocket
from litestar.background_tasks import BackgroundTask

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware

otel_bridge.init()


def compute_total(total: float, count: int) -> float:
    return total / count


async def send_receipt() -> None:
    raise RuntimeError("receipt printer on fire")


@get("/items/{item_id:int}")
async def get_item(item_id: int) -> dict[str, int]:
    sentry_sdk.set_tag("item", str(item_id))
    sentry_sdk.set_user({"id": f"user-{item_id}"})
    return {"item_id": item_id}


@get("/boom")
async def boom() -> str:
    return f"total: {compute_total(100, 0)}"


@get("/background", background=BackgroundTask(send_receipt))
async def background() -> str:
    return "receipt on its way"


@websocket("/ws")
async def echo(socket: WebSocket) -> None:
    await socket.accept()
    message = await socket.receive_text()
    await socket.send_text(f"echo: {message}")
    await socket.close()


shop = Litestar(route_handlers=[get_item, boom, background, echo])

app = SentryAsgiMiddleware(shop)
