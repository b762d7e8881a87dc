"""What the middleware knows about the request in flight, for the span processor to pick up."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Collection, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from opentelemetry.context import Context
from opentelemetry.trace import Span

if TYPE_CHECKING:
    from otel_bridge._convert.naming import Route

ExceptionKey = tuple[str, str]
RaiseSite = tuple[str, int]


def exception_key(exc: BaseException) -> ExceptionKey:
    """``(exception.type, exception.message)`` exactly as OTel's ``record_exception`` writes them."""
    module = type(exc).__module__
    qualname = type(exc).__qualname__
    type_name = f"{module}.{qualname}" if module and module != "builtins" else qualname
    return type_name, str(exc)


def raise_site(exc: BaseException) -> Optional[RaiseSite]:
    """File and line where ``exc`` was raised: the last entry of its traceback."""
    tb = exc.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename, tb.tb_lineno


class RecentReports:
    """Exceptions reported live lately, by type, message and raise site (bounded, thread-safe).

    Outside a request (an exception logged by the server after the app raised it, reported by
    sentry-sdk's logging integration) this is how the same exception, recorded on a span and exported
    later, is recognised and not sent a second time.
    """

    def __init__(self, size: int = 1024, seconds: float = 300.0) -> None:
        self._size = size
        self._seconds = seconds
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[str, str, RaiseSite], float] = OrderedDict()

    def add(self, exc: BaseException) -> None:
        site = raise_site(exc)
        if site is None:
            return
        key = (*exception_key(exc), site)
        with self._lock:
            self._seen[key] = time.monotonic()
            self._seen.move_to_end(key)
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            seen = self._seen.get(key)  # type: ignore[call-overload]
        return seen is not None and time.monotonic() - seen < self._seconds


recent_reports = RecentReports()


class Reported:
    """What ``to_error_events`` must skip: this request's live reports, and recent ones anywhere."""

    def __init__(self, request_keys: Collection[ExceptionKey] = (), recent: Optional[RecentReports] = None):
        self._request_keys = request_keys
        self._recent = recent

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple):
            return False
        if key[:2] in self._request_keys:
            return True
        return self._recent is not None and len(key) == 3 and key in self._recent


@dataclass
class RequestContext:
    """One request: its ASGI scope, the exceptions already reported live, and traces waiting for its end.

    A trace whose root ends while the request is still running is handed off only when the request is
    over, so that the exceptions its spans recorded can be checked against the ones reported live.
    """

    asgi_scope: MutableMapping[str, Any]
    transaction_style: str
    route: Optional[Route] = None
    resolve_route: Optional[Callable[[MutableMapping[str, Any]], Optional[Route]]] = None
    server_span: Optional[Span] = None
    server_context: Optional[Context] = None
    app_called: bool = False
    reported: set[ExceptionKey] = field(default_factory=set)
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
