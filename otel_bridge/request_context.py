"""What the middleware knows about the request in flight, for the span processor to pick up."""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from opentelemetry.trace import Span

ExceptionKey = tuple[str, str]


def exception_key(exc: BaseException) -> ExceptionKey:
    """``(exception.type, exception.message)`` exactly as OTel's ``record_exception`` writes them."""
    module = type(exc).__module__
    qualname = type(exc).__qualname__
    type_name = f"{module}.{qualname}" if module and module != "builtins" else qualname
    return type_name, str(exc)


@dataclass
class RequestContext:
    """One request: its ASGI scope, the exceptions already reported live, and traces waiting for its end.

    A trace whose root ends while the request is still running is handed off only when the request is
    over, so that the exceptions its spans recorded can be checked against the ones reported live.
    """

    asgi_scope: MutableMapping[str, Any]
    transaction_style: str
    server_span: Optional[Span] = None
    reported: set[ExceptionKey] = field(default_factory=set)
    _waiting: list[Callable[[], Any]] = field(default_factory=list)
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hand_off_when_done(self, hand_off: Callable[[], Any]) -> None:
        with self._lock:
            if not self._closed:
                self._waiting.append(hand_off)
                return
        hand_off()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, []
        for hand_off in waiting:
            hand_off()


current_request: ContextVar[Optional[RequestContext]] = ContextVar("otel_bridge_request", default=None)
