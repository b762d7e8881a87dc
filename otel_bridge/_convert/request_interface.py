"""Sentry's ``request`` interface from an ASGI scope or from span attributes. Pure: no I/O, no globals.

Both return a plain dict, every value already filtered by the ``Collection`` given::

    {"method": "GET", "url": "http://host/path", "headers": {"Host": "host", ...},
     "query_string": "a=1",              # absent: no query, or none to send
     "env": {"REMOTE_ADDR": "1.2.3.4"}}  # absent unless the client's address may be sent

``url`` never carries the query string; ``headers`` is always present from an ASGI scope (empty with header
collection off) and present from attributes only when they captured headers or a user agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from otel_bridge._convert import semconv
from otel_bridge._convert.collection import Collection
from otel_bridge._convert.privacy import scrub_url

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def asgi_headers(asgi_scope: Mapping[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in asgi_scope.get("headers") or ():
        try:
            name = bytes(raw_name).decode("latin-1").lower()
            value = bytes(raw_value).decode("latin-1")
        except (TypeError, ValueError):
            continue
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def asgi_url(asgi_scope: Mapping[str, Any], host_header: Optional[str]) -> str:
    """Scheme, host and path, without the query string (the way sentry-sdk's ASGI middleware builds it). The
    host comes from the ``Host`` header even when that header itself is filtered, as in sentry-sdk."""
    default_scheme = "ws" if asgi_scope.get("type") == "websocket" else "http"
    scheme = asgi_scope.get("scheme") or default_scheme
    path = f"{asgi_scope.get('root_path', '')}{asgi_scope.get('path', '')}"
    if host_header:
        return f"{scheme}://{host_header}{path}"
    server = asgi_scope.get("server")
    if server and len(server) == 2:
        host, port = server
        if port is None or port == _DEFAULT_PORTS.get(scheme):
            return f"{scheme}://{host}{path}"
        return f"{scheme}://{host}:{port}{path}"
    return path


def client_ip(asgi_scope: Mapping[str, Any], headers: Mapping[str, str]) -> Optional[str]:
    """The address sentry-sdk's ASGI middleware reports (``_get_ip``): the first of ``X-Forwarded-For``,
    else ``X-Real-Ip``, else the peer. Sent only where ``Collection.user_info`` allows; otherwise these and
    the other headers carrying the client's address (``privacy.CLIENT_ADDRESS_HEADERS``) are filtered."""
    forwarded = headers.get("x-forwarded-for")
    if forwarded:
        return forwarded.split(",")[0].strip()
    real_ip = headers.get("x-real-ip")
    if real_ip:
        return real_ip
    client = asgi_scope.get("client")
    if client:
        return str(client[0])
    return None


def request_from_asgi(asgi_scope: Mapping[str, Any], collection: Collection) -> dict[str, Any]:
    """The request of an ASGI ``http`` or ``websocket`` scope (see the module's docstring for the shape)."""
    headers = asgi_headers(asgi_scope)
    request: dict[str, Any] = {
        "url": asgi_url(asgi_scope, headers.get("host")),
        "headers": collection.headers(headers),
    }
    if asgi_scope.get("method"):
        request["method"] = str(asgi_scope["method"]).upper()
    raw_query = asgi_scope.get("query_string")
    if raw_query:
        query = collection.query_string(bytes(raw_query).decode("latin-1"))
        if query:
            request["query_string"] = query
    ip = collection.client_address(client_ip(asgi_scope, headers) if collection.user_info else None)
    if ip:
        request["env"] = {"REMOTE_ADDR": ip}
    return request


def request_from_attributes(
    attributes: Mapping[str, Any], collection: Collection
) -> Optional[dict[str, Any]]:
    """The same interface rebuilt from a SERVER span's attributes (the exporter path has nothing else);
    ``None`` for a span that is not an HTTP request."""
    method = semconv.method(attributes)
    if method is None:
        return None
    path, query = semconv.path_and_query(attributes)
    url = semconv.full_url(attributes)
    if query is None and url is not None and "?" in url:
        query = url.split("?", 1)[1].split("#", 1)[0] or None
    if url is None:
        host = semconv.host(attributes)
        scheme = semconv.scheme(attributes) or "http"
        url = f"{scheme}://{host}{path or ''}" if host else path or ""
    url = scrub_url(url, collection.denylist).split("?", 1)[0].split("#", 1)[0]
    request: dict[str, Any] = {"method": method.upper(), "url": url}
    headers = semconv.captured_request_headers(attributes)
    user_agent = semconv.user_agent(attributes)
    if user_agent and "User-Agent" not in headers:
        headers["User-Agent"] = user_agent
    sent_headers = collection.headers(headers)
    if sent_headers:
        request["headers"] = sent_headers
    query_string = collection.query_string(query)
    if query_string:
        request["query_string"] = query_string
    ip = collection.client_address(semconv.client_address(attributes))
    if ip:
        request["env"] = {"REMOTE_ADDR": ip}
    return request
