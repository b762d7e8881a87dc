"""An unmodified FastAPI app: no otel_bridge, only sentry-sdk's own API in one view. Run under
``opentelemetry-instrument``."""

from __future__ import annotations

import sentry_sdk
from fastapi import FastAPI
from opentelemetry import trace

tracer = trace.get_tracer("tests.apps.fastapi_plain")

app = FastAPI()


class InventoryError(Exception):
    pass


def reserve_stock(item_id: int) -> None:
    raise InventoryError(f"no stock left for item {item_id}")


def parse_quantity(raw: str) -> int:
    return int(raw)


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}


@app.get("/notify/{name}")
async def notify(name: str) -> dict[str, str]:
    sentry_sdk.capture_message(f"notified {name}")
    return {"notified": name}


@app.get("/reserve/{item_id}")
async def reserve(item_id: int) -> dict[str, str]:
    reserve_stock(item_id)
    return {"reserved": str(item_id)}


@app.get("/quantity/{raw}")
async def quantity(raw: str) -> dict[str, int]:
    try:
        return {"quantity": parse_quantity(raw)}
    except ValueError as exc:
        trace.get_current_span().record_exception(exc)
        return {"quantity": 0}


@app.get("/report/{name}")
async def report(name: str) -> dict[str, str]:
    with tracer.start_as_current_span("render report", attributes={"report.name": name}):
        body = name.upper()
    return {"report": body}
