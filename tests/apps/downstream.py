"""A tiny plain ASGI app that answers every GET with what it was asked: path, query and trace headers."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, MutableMapping

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    headers = {
        bytes(name).decode("latin-1"): bytes(value).decode("latin-1") for name, value in scope["headers"]
    }
    body = json.dumps(
        {
            "path": scope["path"],
            "query": bytes(scope["query_string"]).decode("latin-1"),
            "traceparent": headers.get("traceparent"),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
