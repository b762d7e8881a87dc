"""A Sanic app, served in ASGI mode, under the bridge.

Run it: ``otel-bridge demo --example sanic`` (events shown in the terminal, no Sentry account needed),
or ``SENTRY_DSN=... uvicorn sanic_app:app --app-dir examples``.
"""

from __future__ import annotations

import sentry_sdk
from sanic import Request, Sanic, Websocket
from sanic.response import HTTPResponse, json, text

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware

otel_bridge.init()

shop = Sanic("shop")
shop.config.ACCESS_LOG = False  # no per-request log lines
shop.config.MOTD = False  # no banner at startup


def compute_total(total: float, count: int) -> float:
    return total / count


async def send_receipt() -> None:
    raise RuntimeError("receipt printer on fire")


@shop.get("/items/<item_id:int>")
async def get_item(request: Request, item_id: int) -> HTTPResponse:
    sentry_sdk.set_tag("item", str(item_id))
    sentry_sdk.set_user({"id": f"user-{item_id}"})
    return json({"item_id": item_id})


@shop.get("/boom")
async def boom(request: Request) -> HTTPResponse:
    return text(f"total: {compute_total(100, 0)}")


@shop.get("/background")
async def background(request: Request) -> HTTPResponse:
    request.app.add_task(send_receipt())
    return text("receipt on its way")


@shop.websocket("/ws")
async def echo(request: Request, ws: Websocket) -> None:
    message = await ws.recv()
    await ws.send(f"echo: {message}")
    await ws.close()


app = SentryAsgiMiddleware(shop)
