"""Transaction names: the framework's route or endpoint when it routed the request, else the URL path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import sentry_sdk
from sentry_sdk.utils import transaction_from_function

from otel_bridge._collect.request_state import current_request
from otel_bridge._compat.sentry_scope import custom_name_of
from otel_bridge._convert import semconv

SOURCE_ROUTE = "route"
SOURCE_COMPONENT = "component"
SOURCE_URL = "url"
SOURCE_CUSTOM = "custom"


@dataclass(frozen=True)
class Route:
    """How the framework routed a request: the view's qualified name and the path template."""

    endpoint: Optional[str] = None
    template: Optional[str] = None


def route_from_scope(asgi_scope: Mapping[str, Any]) -> Optional[Route]:
    """The route a framework wrote into the ASGI scope: Starlette/FastAPI ``route`` and ``endpoint``,
    Litestar ``route_handler`` and ``path_template``."""
    route = asgi_scope.get("route")
    endpoint = asgi_scope.get("endpoint")
    if route is not None or endpoint is not None:
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        return Route(
            endpoint=(transaction_from_function(endpoint) or None) if endpoint is not None else None,
            template=f"{asgi_scope.get('root_path', '')}{template}" if isinstance(template, str) else None,
        )
    handler = asgi_scope.get("route_handler")
    if handler is not None:
        return Route(endpoint=_litestar_handler_name(handler), template=asgi_scope.get("path_template"))
    return None


def _litestar_handler_name(handler: Any) -> Optional[str]:
    name = getattr(handler, "name", None)
    if isinstance(name, str) and name:
        return name
    function = getattr(handler, "fn", None)
    function = getattr(function, "value", function)
    return (transaction_from_function(function) or None) if function is not None else None


def name_of_route(route: Optional[Route], transaction_style: str) -> Optional[tuple[str, str]]:
    """``(name, source)`` for ``transaction_style`` (``endpoint`` falls back on the template)."""
    if route is None:
        return None
    if transaction_style == "endpoint" and route.endpoint:
        return route.endpoint, SOURCE_COMPONENT
    if route.template:
        return route.template, SOURCE_ROUTE
    return None


def name_from_asgi(
    asgi_scope: Mapping[str, Any], transaction_style: str, route: Optional[Route] = None
) -> Optional[tuple[str, str]]:
    """``(name, source)`` when the framework told us how it routed the request, else ``None``."""
    return name_of_route(route or route_from_scope(asgi_scope), transaction_style)


def name_from_span(span_name: str, attributes: Mapping[str, Any]) -> tuple[str, str]:
    """``(name, source)`` from the span alone: ``sentry.name``, then ``http.route``, then the URL path."""
    custom = attributes.get("sentry.name")
    if isinstance(custom, str) and custom:
        return custom, SOURCE_CUSTOM
    route = semconv.route(attributes)
    if route:
        return route, SOURCE_ROUTE
    if semconv.is_http(attributes) or semconv.is_websocket(attributes):
        path, _query = semconv.path_and_query(attributes)
        if path:
            return path, SOURCE_URL
    return span_name, SOURCE_CUSTOM


def current_route_name() -> Optional[str]:
    """The name the app set on its scope, else the route or endpoint name of the request in flight once
    the framework has routed it: what a dynamic sampling context made now carries."""
    custom = custom_name_of(sentry_sdk.get_current_scope(), sentry_sdk.get_isolation_scope())
    if custom is not None:
        return custom[0]
    request = current_request.get()
    if request is None:
        return None
    named = name_from_asgi(request.asgi_scope, request.transaction_style, request.current_route())
    return named[0] if named is not None else None
