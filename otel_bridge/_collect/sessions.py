"""Release-health sessions in request mode, tracked as sentry-sdk's ASGI middleware tracks them.

One session per request on the request's isolation scope: an error captured while it runs marks it
errored, an unhandled one (``mechanism.handled`` false) crashed. sentry-sdk aggregates the ended sessions
and its session flusher sends them (every 60 s, and on flush or close).

The event of an exception escaping the app is built off the request path, on the bridge's worker
(``live_errors``); the session of that request then ends there too, right after the event was captured,
so that it is marked crashed exactly when sentry-sdk would have marked it (not when ``before_send`` or
``sample_rate`` drop the event). Errors the bridge reports later from span events find the session ended.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Optional

import sentry_sdk
from sentry_sdk.scope import Scope
from sentry_sdk.sessions import track_session

from otel_bridge._collect.request_state import RequestContext
from otel_bridge._compat.sentry_sessions import tracks_sessions


class _RequestSession:
    def __init__(self, isolation: Scope, request: RequestContext) -> None:
        self._isolation = isolation
        self._request = request

    def __enter__(self) -> None:
        self._isolation.start_session(session_mode="request")

    def __exit__(
        self,
        kind: Optional[type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        errands = self._request.errands
        if errands is None:
            self._isolation.end_session()
        else:
            # once the request's error events were captured (each may mark it crashed)
            errands.then(self._isolation.end_session)


def track_request_session(isolation: Scope, request: RequestContext) -> AbstractContextManager[None]:
    """A request-mode session on ``isolation``, when sentry-sdk would track one (``auto_session_tracking``).

    Without a ``release`` sentry-sdk discards every session; none is tracked then, which saves the request
    the cost of one. When sentry-sdk's decision cannot be asked, its own ``track_session`` does the work
    (and errors are then built on the request path: ``request.keep_errors_inline``).
    """
    if not sentry_sdk.get_client().options.get("release"):
        return nullcontext()
    tracked = tracks_sessions(isolation)
    if tracked is None:
        request.keep_errors_inline = True
        return track_session(isolation, session_mode="request")
    return _RequestSession(isolation, request) if tracked else nullcontext()
