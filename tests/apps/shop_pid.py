"""The shop under otel_bridge, telling which process served each request, plus requests that wait for
each other so that many are in flight in one process at the same time.

Every request gets the tag ``pid`` and an ``x-pid`` response header (also on 500s). ``/pid`` answers with
the process id. ``/together/checkout/{order}`` and ``/together/items/{item}`` set their own tag, user,
breadcrumb and a child span, then wait until ``?size=`` requests are inside a handler at once (or
``WAIT_SECONDS`` passed) before they fail or answer; the answer carries the most seen in flight at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, MutableMapping
from typing import Any, Callable, Optional

import sentry_sdk
from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.apps.shop import build_app, charge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WAIT_SECONDS = 30.0
tracer = trace.get_tracer("tests.apps.shop_pid")


class _Gathering:
    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.everyone: Optional[asyncio.Event] = None


_gathering = _Gathering()


async def _wait_for_the_others(size: int) -> int:
    """Wait until ``size`` requests are here at once; the most that were here at once."""
    if _gathering.everyone is None:
        _gathering.everyone = asyncio.Event()
    everyone = _gathering.everyone
    _gathering.in_flight += 1
    _gathering.peak = max(_gathering.peak, _gathering.in_flight)
    if _gathering.in_flight >= size:
        everyone.set()
    try:
        await asyncio.wait_for(everyone.wait(), WAIT_SECONDS)
    except TimeoutError:
        pass
    finally:
        _gathering.in_flight -= 1
    return _gathering.peak


def _enter(kind: str, key: str) -> None:
    sentry_sdk.set_tag(kind, key)
    sentry_sdk.set_user({"id": f"user-{key}", "username": f"shopper-{key}"})
    sentry_sdk.add_breadcrumb(category="shop", message=f"{kind} {key}")


async def together_checkout(request: Request) -> Response:
    order = request.path_params["order"]
    _enter("order", order)
    with tracer.start_as_current_span("wait for the others", attributes={"shop.order": order}):
        await _wait_for_the_others(int(request.query_params["size"]))
    charge(order)
    raise AssertionError("charge() always raises")


async def together_items(request: Request) -> Response:
    item = request.path_params["item"]
    _enter("item", item)
    with tracer.start_as_current_span("wait for the others", attributes={"shop.item": item}):
        peak = await _wait_for_the_others(int(request.query_params["size"]))
    return JSONResponse({"item": item, "peak": peak})


async def pid(request: Request) -> Response:
    return JSONResponse({"pid": os.getpid()})


shop = build_app()
shop.router.routes.extend(
    [
        Route("/pid", pid),
        Route("/together/checkout/{order}", together_checkout),
        Route("/together/items/{item}", together_items),
    ]
)


async def tag_with_pid(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        await shop(scope, receive, send)
        return
    process = str(os.getpid())
    sentry_sdk.set_tag("pid", process)

    async def send_with_pid(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"x-pid", process.encode())]
        await send(message)

    await shop(scope, receive, send_with_pid)


otel_bridge.init()
app = SentryAsgiMiddleware(tag_with_pid, transaction_style="url")
