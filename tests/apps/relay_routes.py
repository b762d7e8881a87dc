"""The Starlette routes every relay service shares; each ``relay_*`` module wraps them in its own tracing.

``/call?next=<url>`` calls ``next`` with httpx and answers what it sent and got; ``baggage=key=value`` puts
a W3C baggage entry on the OTel context around the call. ``/leaf`` answers 200, ``/fail`` raises.
"""

from __future__ import annotations

from contextvars import Token
from typing import Any, Optional

import httpx
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


class LeafFailure(Exception):
    pass


async def call(request: Request) -> Response:
    target = request.query_params.get("next")
    if not target:
        return JSONResponse({"status": None})
    token: Optional[Token[Context]] = None
    entry = request.query_params.get("baggage")
    if entry:
        key, _, value = entry.partition("=")
        token = otel_context.attach(baggage.set_baggage(key, value))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(target)
    finally:
        if token is not None:
            otel_context.detach(token)
    body: Any = answer.json() if answer.headers.get("content-type") == "application/json" else answer.text
    return JSONResponse({"status": answer.status_code, "sent": dict(answer.request.headers), "answer": body})


async def leaf(request: Request) -> Response:
    return PlainTextResponse("leaf")


async def fail(request: Request) -> Response:
    raise LeafFailure("the leaf broke")


def build_app() -> Starlette:
    return Starlette(routes=[Route("/call", call), Route("/leaf", leaf), Route("/fail", fail)])
