"""Read semantic-convention attributes whichever generation (old, stable, or both) wrote them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

Attributes = Mapping[str, Any]

HEADER_PREFIX = "http.request.header."


def first(attributes: Attributes, *names: str) -> Any:
    for name in names:
        value = attributes.get(name)
        if value is not None and value != "":
            return value
    return None


def method(attributes: Attributes) -> Optional[str]:
    value = first(attributes, "http.request.method", "http.method")
    return str(value) if value is not None else None


def status_code(attributes: Attributes) -> Optional[int]:
    value = first(attributes, "http.response.status_code", "http.status_code")
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def scheme(attributes: Attributes) -> Optional[str]:
    value = first(attributes, "url.scheme", "http.scheme")
    return str(value) if value is not None else None


def route(attributes: Attributes) -> Optional[str]:
    value = attributes.get("http.route")
    return str(value) if value else None


def path_and_query(attributes: Attributes) -> tuple[Optional[str], Optional[str]]:
    """The request path and query string, from ``url.path``/``url.query`` or the old ``http.target``."""
    path = attributes.get("url.path")
    query = attributes.get("url.query")
    if path is None:
        target = attributes.get("http.target")
        if target is not None:
            path, _, query_part = str(target).partition("?")
            query = query_part or None
    return (str(path) if path is not None else None), (str(query) if query else None)


def host(attributes: Attributes) -> Optional[str]:
    value = first(attributes, "http.host", "server.address", "net.host.name", "http.server_name")
    if value is None:
        return None
    port = first(attributes, "server.port", "net.host.port")
    text = str(value)
    if port is not None and ":" not in text and str(port) not in ("80", "443"):
        return f"{text}:{port}"
    return text


def full_url(attributes: Attributes) -> Optional[str]:
    value = first(attributes, "url.full", "http.url")
    return str(value) if value is not None else None


def client_address(attributes: Attributes) -> Optional[str]:
    value = first(attributes, "client.address", "http.client_ip", "net.peer.ip", "network.peer.address")
    return str(value) if value is not None else None


def user_agent(attributes: Attributes) -> Optional[str]:
    value = first(attributes, "user_agent.original", "http.user_agent")
    return str(value) if value is not None else None


def db_system(attributes: Attributes) -> Optional[str]:
    value = first(attributes, "db.system.name", "db.system")
    return str(value) if value is not None else None


def db_statement(attributes: Attributes) -> Optional[str]:
    value = first(attributes, "db.query.text", "db.statement")
    return str(value) if value is not None else None


def is_http(attributes: Attributes) -> bool:
    return method(attributes) is not None


def is_websocket(attributes: Attributes) -> bool:
    return scheme(attributes) in ("ws", "wss")


def captured_request_headers(attributes: Attributes) -> dict[str, str]:
    """``http.request.header.x_foo = ("a", "b")`` becomes ``{"X-Foo": "a, b"}``."""
    headers: dict[str, str] = {}
    for key, value in attributes.items():
        if not key.startswith(HEADER_PREFIX):
            continue
        name = "-".join(part.capitalize() for part in key[len(HEADER_PREFIX) :].replace("_", "-").split("-"))
        if isinstance(value, (list, tuple)):
            headers[name] = ", ".join(str(item) for item in value)
        else:
            headers[name] = str(value)
    return headers
