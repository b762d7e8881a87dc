"""A Starlette app under the bridge.

Run it: ``otel-bridge demo --example starlette`` (events shown in the terminal, no Sentry account
needed), or ``SENTRY_DSN=... uvicorn starlette_app:app --app-dir examples``.
"""

from __future__ import annotations

import sentry_sdk
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware

otel_bridge.init()


def compute_total(total: float, count: int) -> float:
    return total / count


async def send_receipt() -> None:
    raise RuntimeError("receipt printer on fire")


async def get_item(request: Request) -> Response:
    item_id: int = request.path_params["item_id"]
    sentry_sdk.set_tag("item", str(item_id))
    sentry_sdk.set_user({"id": f"user-{item_id}"})
    return JSONResponse({"item_id": item_id})


async def boom(request: Request) -> Response:
    return PlainTextResponse(f"total: {compute_total(100, 0)}")


async def background(request: Request) -> Response:
    return PlainTextResponse("receipt on its way", background=BackgroundTask(send_receipt))


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    message = await websocket.receive_text()
    await websocket.send_text(f"echo: {message}")
    await websocket.close()


shop = Starlette(
    routes=[
        Route("/items/{item_id:int}", get_item),
        Route("/boom", boom),
        Route("/background", background),
        WebSocketRoute("/ws", echo),
    ]
)

app = SentryAsgiMiddleware(shop)
