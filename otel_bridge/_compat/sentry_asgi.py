"""sentry-sdk's ASGI middleware, told that a request is already inside a Sentry middleware (ours).

sentry-sdk's own ``SentryAsgiMiddleware`` can sit inside the bridge's: sentry-sdk's Starlette, FastAPI and
other framework integrations add it on a client the bridge adopted. It passes a request straight through to
the app when its module's ``_asgi_middleware_applied`` context variable says a Sentry middleware outside
already handles the request, which is what the bridge's middleware sets for the duration of each request.
"""

from __future__ import annotations

import contextvars
from contextvars import ContextVar, Token
from typing import Any, Optional

from sentry_sdk.integrations import asgi as sentry_asgi

from otel_bridge._compat import holds, reach

SENTRY_ASGI_APPLIED = "sentry asgi middleware applied"


def _flag() -> Any:
    return getattr(sentry_asgi, "_asgi_middleware_applied", None)


@reach(
    SENTRY_ASGI_APPLIED,
    target=(
        "sentry_sdk.integrations.asgi._asgi_middleware_applied, the ContextVar its SentryAsgiMiddleware."
        "_run_app reads (.get(False)) to pass a request straight through, set to True per request"
    ),
    verified="sentry-sdk 2.57, 2.75",
    fallback=(
        "a sentry-sdk SentryAsgiMiddleware inside the bridge's (added by sentry-sdk's framework integrations "
        "on an adopted client) handles each request a second time, in an isolation scope of its own: tags, "
        "user and breadcrumbs set in views may miss the bridge's transaction"
    ),
)
def _applied_flag_settable() -> bool:
    flag = _flag()
    if not isinstance(flag, ContextVar):
        return False
    middleware = getattr(sentry_asgi, "SentryAsgiMiddleware", None)
    run_app = getattr(getattr(middleware, "_run_app", None), "__code__", None)
    if run_app is None or not {"_asgi_middleware_applied", "get"} <= set(run_app.co_names):
        return False

    def set_and_read() -> bool:
        before = flag.get(False)
        token = flag.set(True)
        seen = flag.get(False)
        flag.reset(token)
        return seen is True and flag.get(False) is before

    # in a copy of the context, so that the probe cannot leave the flag set for the caller
    return contextvars.copy_context().run(set_and_read)


def mark_sentry_asgi_applied() -> Optional[Token[Any]]:
    """Tell sentry-sdk's ASGI middleware that this request is already handled; hand the token to
    :func:`unmark_sentry_asgi_applied` when the request is over. ``None`` when the reach does not hold."""
    if not holds(SENTRY_ASGI_APPLIED):
        return None
    flag: ContextVar[Any] = _flag()
    return flag.set(True)


def unmark_sentry_asgi_applied(token: Optional[Token[Any]]) -> None:
    if token is not None:
        token.var.reset(token)
