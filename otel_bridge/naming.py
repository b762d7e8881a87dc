"""Transaction names: the framework's route or endpoint when it routed the request, else the URL path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from sentry_sdk.utils import transaction_from_function

from otel_bridge import semconv
from otel_bridge.request_context import current_request

SOURCE_ROUTE = "route"
SOURCE_COMPONENT = "component"
SOURCE_URL = "url"
SOURCE_CUSTOM = "custom"


def route_template(asgi_scope: Mapping[str, Any]) -> Optional[str]:
    """The path template of the route the framework chose (Starlette/FastAPI set ``scope["route"]``)."""
    route = asgi_scope.get("route")
    if route is None:
        return None
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str) or not template:
        return None
    return f"{asgi_scope.get('root_path', '')}{template}"


def endpoint_name(asgi_scope: Mapping[str, Any]) -> Optional[str]:
    endpoint = asgi_scope.get("endpoint")
    if endpoint is None:
        return None
    return transaction_from_function(endpoint) or None


def name_from_asgi(asgi_scope: Mapping[str, Any], transaction_style: str) -> Optional[tuple[str, str]]:
    """``(name, source)`` when the framework told us how it routed the request, else ``None``."""
    if transaction_style == "endpoint":
        endpoint = endpoint_name(asgi_scope)
        if endpoint:
            return endpoint, SOURCE_COMPONENT
    template = route_template(asgi_scope)
    if template:
        return template, SOURCE_ROUTE
    return None


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
    """The route or endpoint name of the request in flight, once the framework has routed it."""
    request = current_request.get()
    if request is None:
        return None
    named = name_from_asgi(request.asgi_scope, request.transaction_style)
    return named[0] if named is not None else None
