"""Release-health sessions in request mode, tracked as sentry-sdk's ASGI middleware tracks them.

One session per request on the request's isolation scope, ended with the request: an error captured
while it runs marks it errored, an unhandled one (``mechanism.handled`` false) crashed. sentry-sdk
aggregates the ended sessions and its session flusher sends them (every 60 s, and on flush or close).
Errors the bridge reports later from span events, on its worker thread, find the session already ended.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import sentry_sdk
from sentry_sdk.scope import Scope
from sentry_sdk.sessions import track_session


def track_request_session(isolation: Scope) -> AbstractContextManager[None]:
    """``sentry_sdk.sessions.track_session`` in request mode (it honours ``auto_session_tracking``).

    Without a ``release`` sentry-sdk discards every session; none is tracked then, which saves the request
    the cost of one.
    """
    if not sentry_sdk.get_client().options.get("release"):
        return nullcontext()
    return track_session(isolation, session_mode="request")
