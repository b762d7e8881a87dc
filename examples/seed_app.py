"""The seed's example: a plain ASGI 2 (double-callable) app, traced by OpenTelemetry and reported to Sentry.

Run it with ``SENTRY_DSN=... uvicorn seed_app:app`` from this folder, or let ``make demo`` run it against an
embedded loopback receiver. ``GET /`` answers; ``GET /divide`` raises ``ZeroDivisionError`` while the body
is built, which becomes one Sentry error event and one ``internal_error`` transaction.
"""

from __future__ import annotations

from typing import Any, Callable

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware

otel_bridge.init()


def share_per_item(total: int, items: int) -> float:
    return total / items


def build_body(scope: dict[str, Any]) -> bytes:
    if scope["path"] == "/divide":
        return f"each item costs {share_per_item(100, 0)}".encode()
    return b"hello from the seed example\n"


class SeedApp:
    """ASGI 2: ``SeedApp(scope)`` returns the coroutine-callable ``instance(receive, send)``."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope

    async def __call__(self, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if self.scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = build_body(self.scope)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


app = SentryAsgiMiddleware(SeedApp)
