"""What each ASGI framework tells the bridge about the request it routed, through its public hooks.

``SentryAsgiMiddleware(app)`` calls ``adapt(app)`` once. For the frameworks sentry-sdk has an integration for,
the adapter connects to the framework's own public extension points (signals, exception hooks, the ASGI
scope) to learn the route of each request and the exceptions the framework turns into error responses
(those never reach an ASGI middleware). Starlette and FastAPI need no adapter: they write
``scope["route"]``/``scope["endpoint"]`` into the request's scope, which ``naming`` reads.

* Quart: the route from the ``request_started``/``websocket_started`` signals (``url_rule``); exceptions
  from ``got_request_exception``, ``got_websocket_exception`` and ``got_background_exception``.
* Litestar: the route from ``scope["route_handler"]``/``scope["path_template"]`` (read by ``naming``);
  exceptions from an ``app.after_exception`` hook.
* Django: the route from ``django.urls.resolve`` of the request path; exceptions from the
  ``got_request_exception`` signal. Django does not speak the lifespan protocol: the middleware answers it.
* Sanic (ASGI mode): the route from the ``http.routing.after`` signal; exceptions from
  ``http.lifecycle.exception``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

from sentry_sdk.utils import transaction_from_function

from otel_bridge._collect.request_state import current_request
from otel_bridge._convert.naming import Route

logger = logging.getLogger("otel_bridge")

ReportException = Callable[[BaseException, str], None]
RouteResolver = Callable[[Mapping[str, Any]], Optional[Route]]


@dataclass(frozen=True)
class Adapter:
    """What the middleware needs to know of the framework it wraps."""

    name: str
    resolve_route: Optional[RouteResolver] = None
    speaks_lifespan: bool = True


def _module_loaded(name: str) -> Any:
    return sys.modules.get(name)


def _note_route(route: Route) -> None:
    request = current_request.get()
    if request is not None:
        request.route = route


def _adapt_quart(app: Any, report: ReportException) -> Optional[Adapter]:
    quart = _module_loaded("quart")
    if quart is None or not isinstance(app, quart.Quart):
        return None
    from quart import signals

    def routed(sender: Any, **_: Any) -> None:
        connection = quart.request if quart.has_request_context() else None
        if connection is None and quart.has_websocket_context():
            connection = quart.websocket
        rule = getattr(connection, "url_rule", None)
        if rule is not None:
            _note_route(Route(endpoint=rule.endpoint, template=rule.rule))

    def failed(sender: Any, exception: BaseException, **_: Any) -> None:
        report(exception, "quart")

    for signal in (signals.request_started, signals.websocket_started):
        signal.connect(routed, sender=app, weak=False)
    for signal in (
        signals.got_request_exception,
        signals.got_websocket_exception,
        signals.got_background_exception,
    ):
        signal.connect(failed, sender=app, weak=False)
    return Adapter("quart")


def _adapt_litestar(app: Any, report: ReportException) -> Optional[Adapter]:
    litestar = _module_loaded("litestar")
    if litestar is None or not isinstance(app, litestar.Litestar):
        return None
    from litestar.exceptions import HTTPException

    async def failed(exception: BaseException, scope: Any) -> None:
        if isinstance(exception, HTTPException) and exception.status_code < 500:
            return
        report(exception, "litestar")

    app.after_exception.append(failed)
    return Adapter("litestar")


_DJANGO_CONVERTER = re.compile(r"<(?:[^>:]+:)?([^>]+)>")
_REGEX_GROUP = re.compile(r"\(\?P<([^>]+)>[^)]*\)")


def django_template(route: str) -> str:
    """``items/<int:item_id>`` (or ``^items/(?P<item_id>\\d+)/$``) as sentry-sdk names it:
    ``/items/{item_id}``."""
    template = _REGEX_GROUP.sub(r"{\1}", _DJANGO_CONVERTER.sub(r"{\1}", route))
    template = template.replace("^", "").replace("$", "").replace("\\", "")
    return template if template.startswith("/") else f"/{template}"


def _resolve_django_route(scope: Mapping[str, Any]) -> Optional[Route]:
    from django.urls import Resolver404, resolve

    path = str(scope.get("path") or "/")
    root_path = str(scope.get("root_path") or "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :] or "/"
    try:
        match = resolve(path)
    except Resolver404:
        return None
    view = getattr(match.func, "view_class", match.func)
    return Route(endpoint=transaction_from_function(view) or None, template=django_template(match.route))


def _adapt_django(app: Any, report: ReportException) -> Optional[Adapter]:
    handlers = _module_loaded("django.core.handlers.asgi")
    if handlers is None or not isinstance(app, handlers.ASGIHandler):
        return None
    from django.core.signals import got_request_exception

    def failed(sender: Any, request: Any = None, **_: Any) -> None:
        exception = sys.exc_info()[1]
        if exception is not None:
            report(exception, "django")

    got_request_exception.connect(failed, weak=False, dispatch_uid="otel_bridge")
    return Adapter("django", resolve_route=_resolve_django_route, speaks_lifespan=False)


def _adapt_sanic(app: Any, report: ReportException) -> Optional[Adapter]:
    sanic = _module_loaded("sanic")
    if sanic is None or not isinstance(app, sanic.Sanic):
        return None
    from sanic.exceptions import SanicException

    app_name = app.name

    async def routed(request: Any, route: Any, **_: Any) -> None:
        name = str(route.name or "")
        if name.startswith(f"{app_name}."):
            name = name[len(app_name) + 1 :]
        _note_route(Route(endpoint=name or None, template=f"/{route.path}"))

    async def failed(request: Any, exception: BaseException) -> None:
        if isinstance(exception, SanicException) and exception.status_code < 500:
            return
        report(exception, "sanic")

    app.signal("http.routing.after")(routed)
    app.signal("http.lifecycle.exception")(failed)
    return Adapter("sanic")


_ADAPTERS = (_adapt_quart, _adapt_litestar, _adapt_django, _adapt_sanic)


def adapt(app: Any, report: ReportException) -> Optional[Adapter]:
    """Connect to ``app``'s framework, if it is one that needs it; ``None`` for any other ASGI app."""
    for candidate in _ADAPTERS:
        try:
            adapter = candidate(app, report)
        except Exception:
            logger.warning(
                "otel_bridge could not connect to %s's hooks; its routes and handled errors are not reported",
                type(app).__name__,
                exc_info=True,
            )
            return None
        if adapter is not None:
            return adapter
    return None
