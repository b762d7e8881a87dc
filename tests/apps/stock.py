"""A Starlette app that also calls a downstream service (``DOWNSTREAM_URL``) with httpx, instrumented by
``opentelemetry-instrumentation-httpx``. No tracing setup of its own: see ``shop_otlp`` and
``shop_otlp_plain``."""

from __future__ import annotations

import os

import httpx
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.apps.shop import checkout, item_detail


async def stock(request: Request) -> Response:
    item_id = request.path_params["item_id"]
    async with httpx.AsyncClient(base_url=os.environ["DOWNSTREAM_URL"]) as client:
        answer = await client.get(f"/warehouse/{item_id}", params={"shelf": "north"})
    return JSONResponse({"item": item_id, "downstream": answer.json()})


def build_app() -> Starlette:
    HTTPXClientInstrumentor().instrument()
    return Starlette(
        routes=[
            Route("/items/{item_id}", item_detail),
            Route("/checkout/{order}", checkout),
            Route("/stock/{item_id}", stock),
        ]
    )
