"""What the middleware knows about the request in flight, for the span processor to pick up."""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from opentelemetry.context import Context
from opentelemetry.trace import Span

if TYPE_CHECKING:
    from otel_bridge._convert.naming import Route


class Errands:
    """Work a request queued to run after it (its error events), and what must wait for all of it (the
    request's session ends only once its errors were captured)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0
        self._then: list[Callable[[], Any]] = []

    def wrap(self, job: Callable[[], Any]) -> Callable[[], Any]:
        """``job``, counted as pending until it ran (wherever it runs)."""
        with self._lock:
            self._pending += 1

        def run() -> None:
            try:
                job()
            finally:
                self._finished()

        return run

    def _finished(self) -> None:
        with self._lock:
            self._pending -= 1
            ready, self._then = (self._then, []) if self._pending == 0 else ([], self._then)
        for follow in ready:
            follow()

    def then(self, follow: Callable[[], Any]) -> None:
        """Run ``follow`` once every errand ran: now, if none is pending."""
        with self._lock:
            if self._pending:
                self._then.append(follow)
                return
        follow()


@dataclass
class RequestContext:
    """One request: its ASGI scope, its route, and traces waiting for its end.

    A trace whose root ends while the request is still running is handed off only when the request is
    over: the exception that escaped the app is reported live after the server span ended, and its span
    events must be known as reported before they are converted (see ``reported``).
    """

    asgi_scope: MutableMapping[str, Any]
    transaction_style: str
    route: Optional[Route] = None
    resolve_route: Optional[Callable[[MutableMapping[str, Any]], Optional[Route]]] = None
    server_span: Optional[Span] = None
    server_context: Optional[Context] = None
    app_called: bool = False
    errands: Optional[Errands] = None
    """Error events of this request queued to be built off the request path, once there is one."""
    keep_errors_inline: bool = False
    """Error events of this request are built on the request path (sentry-sdk's own session tracking
    ends its session with the request)."""
    _waiting: list[Callable[[], Any]] = field(default_factory=list)
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current_route(self) -> Optional[Route]:
        """The route a framework hook noted, or the one its resolver finds (asked once)."""
        if self.route is None and self.resolve_route is not None:
            resolve, self.resolve_route = self.resolve_route, None
            self.route = resolve(self.asgi_scope)
        return self.route

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
