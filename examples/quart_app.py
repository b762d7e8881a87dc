"""A Quart app under the bridge.

Run it: ``otel-bridge demo --example quart`` (events shown in the terminal, no Sentry account needed),
or ``SENTRY_DSN=... uvicorn quart_app:app --app-dir examples``.
"""

from __future__ import annotations

import sentry_sdk
from quart import Quart, websocket

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware

otel_bridge.init()

shop = Quart(__name__)


def compute_total(total: float, count: int) -> float:
    return total / count


async def send_receipt() -> None:
    raise RuntimeError("receipt printer on fire")


@shop.get("/items/<int:item_id>")
async def get_item(item_id: int) -> dict[str, int]:
    sentry_sdk.set_tag("item", str(item_id))
    sentry_sdk.set_user({"id": f"user-{item_id}"})
    return {"item_id": item_id}


@shop.get("/boom")
async def boom() -> str:
    return f"total: {compute_total(100, 0)}"


@shop.get("/background")
async def background() -> str:
    shop.add_background_task(send_receipt)
    return "receipt on its way"


@shop.websocket("/ws")
async def echo() -> None:
    message = await websocket.receive()
    await websocket.send(f"echo: {message}")
    await websocket.close(1000)


app = SentryAsgiMiddleware(shop)
