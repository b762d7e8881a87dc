"""A small Starlette app used under this bridge's middleware and under sentry-sdk's own, for comparison."""

from __future__ import annotations

import sentry_sdk
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

tracer = trace.get_tracer("tests.apps.shop")


class PaymentDeclined(Exception):
    pass


async def item_detail(request: Request) -> Response:
    item_id = request.path_params["item_id"]
    sentry_sdk.set_tag("item", item_id)
    with tracer.start_as_current_span("load item", attributes={"item.id": item_id}):
        price = int(item_id) * 10
    return JSONResponse({"item": item_id, "price": price})


def charge(order: str) -> None:
    raise PaymentDeclined(f"card declined for order {order}")


async def checkout(request: Request) -> Response:
    order = request.path_params["order"]
    sentry_sdk.set_tag("order", order)
    sentry_sdk.set_user({"id": f"user-{order}", "username": f"shopper-{order}"})
    charge(order)
    return PlainTextResponse("paid")


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    message = await websocket.receive_text()
    await websocket.send_text(f"echo: {message}")
    await websocket.close()


def build_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{item_id}", item_detail),
            Route("/checkout/{order}", checkout),
            Route("/healthz", health),
            WebSocketRoute("/ws", echo),
        ]
    )
