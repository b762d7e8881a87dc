"""What the middleware knows about the request in flight, for the span processor to pick up."""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Optional

from opentelemetry.trace import Span


@dataclass
class RequestContext:
    asgi_scope: MutableMapping[str, Any]
    transaction_style: str
    server_span: Optional[Span] = None


current_request: ContextVar[Optional[RequestContext]] = ContextVar("otel_bridge_request", default=None)
