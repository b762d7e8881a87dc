"""A FastAPI app under the bridge; the tag and user are set in a (sync) dependency.

Run it: ``otel-bridge demo --example fastapi`` (events shown in the terminal, no Sentry account
needed), or ``SENTRY_DSN=... uvicorn fastapi_app:app --app-dir examples``.
"""

from __future__ import annotations

import sentry_sdk
from fastapi import BackgroundTasks, Depends, FastAPI, WebSocket

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware

otel_bridge.init()

shop = FastAPI()


def compute_total(total: float, count: int) -> float:
    return total / count


async def send_receipt() -> None:
    raise RuntimeError("receipt printer on fire")


def current_item(item_id: int) -> int:
    sentry_sdk.set_tag("item", str(item_id))
    sentry_sdk.set_user({"id": f"user-{item_id}"})
    return item_id


@shop.get("/items/{item_id}")
async def get_item(item_id: int = Depends(current_item)) -> dict[str, int]:
    return {"item_id": item_id}


@shop.get("/boom")
async def boom() -> dict[str, float]:
    return {"total": compute_total(100, 0)}


@shop.get("/background")
async def background(tasks: BackgroundTasks) -> dict[str, str]:
    tasks.add_task(send_receipt)
    return {"receipt": "on its way"}


@shop.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    message = await websocket.receive_text()
    await websocket.send_text(f"echo: {message}")
    await websocket.close()


app = SentryAsgiMiddleware(shop)
