"""Whether sentry-sdk tracks a session for a scope, which it decides in a private function."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

import sentry_sdk.sessions
from sentry_sdk.scope import Scope

from otel_bridge._compat import holds, reach

SESSION_TRACKING_DECISION = "session tracking decision"


def _decision() -> Optional[Callable[[Any], Any]]:
    found = getattr(sentry_sdk.sessions, "_is_auto_session_tracking_enabled", None)
    return found if callable(found) else None


@reach(
    SESSION_TRACKING_DECISION,
    target="sentry_sdk.sessions._is_auto_session_tracking_enabled(scope), as track_session asks it",
    verified="sentry-sdk 2.57, 2.75",
    fallback="an unhandled error's event is built on the request path (the request's session is ended "
    "by sentry-sdk's track_session when the request ends)",
)
def _decision_callable() -> bool:
    decision = _decision()
    if decision is None or list(inspect.signature(decision).parameters) != ["scope"]:
        return False
    return isinstance(decision(Scope()), (bool, type(None)))


def tracks_sessions(scope: Scope) -> Optional[bool]:
    """Whether sentry-sdk's ``track_session`` would track a session on ``scope``; ``None`` when that cannot
    be known."""
    decision = _decision()
    if decision is None or not holds(SESSION_TRACKING_DECISION):
        return None
    return bool(decision(scope))
