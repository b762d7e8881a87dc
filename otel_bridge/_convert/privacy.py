"""Keep secrets and personal data out of what is sent: pure functions over attributes, headers and queries.

sentry-sdk's ``EventScrubber`` matches whole keys of ``request``, ``extra``, ``user``, breadcrumbs, frames and
``spans[].data``. OTel attribute names carry the sensitive word inside a dotted name
(``http.request.header.authorization``) and URLs carry secrets in their query strings, so those are
scrubbed here with the scrubber's own deny-list before the event reaches the client. Which request data and
span data are collected at all (``send_default_pii``, ``data_collection``) is for ``collection.Collection``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Optional
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from otel_bridge._convert.in_app import InApp, is_plumbing

FILTERED = "[Filtered]"

CREDENTIAL_HEADERS = frozenset(
    {
        "cookie",
        "set-cookie",
        "authorization",
        "proxy-authorization",
        "x-api-key",
    }
)

# Every header in which a proxy, load balancer or CDN passes on the address of the client.
CLIENT_ADDRESS_HEADERS = frozenset(
    {
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
        "true-client-ip",
        "cf-connecting-ip",
        "x-client-ip",
        "fastly-client-ip",
        "x-cluster-client-ip",
    }
)

# Sent only with ``send_default_pii=True``.
SENSITIVE_HEADERS = CREDENTIAL_HEADERS | CLIENT_ADDRESS_HEADERS

PERSONAL_ATTRIBUTES = frozenset(
    {
        "client.address",
        "client.port",
        "http.client_ip",
        "net.peer.ip",
        "net.sock.peer.addr",
        "network.peer.address",
        "enduser.id",
        "enduser.role",
        "enduser.scope",
        "user.id",
        "user.name",
        "user.full_name",
        "user.email",
        "user.hash",
    }
)

URL_ATTRIBUTES = frozenset({"http.url", "url.full", "http.target"})
QUERY_ATTRIBUTES = frozenset({"url.query", "http.query"})


def _normalized(name: str) -> str:
    return name.lower().replace("-", "_")


def is_denied(name: str, denylist: Iterable[str]) -> bool:
    """Denied when the last dotted part contains a deny-listed word (``x_api_key``, ``user_password``)."""
    words = denylist if isinstance(denylist, tuple) else tuple(denylist)
    answers = _answers_for(words)
    answer = answers.get(name)
    if answer is None:
        last = _normalized(name.rsplit(".", 1)[-1])
        answer = any(word in last for word in words)
        if len(answers) >= _REMEMBERED_NAMES:
            answers.clear()
        answers[name] = answer
    return answer


# The same few attribute, header and parameter names come back on every request: each is checked against
# the deny-list once, not at every span of every request.
_REMEMBERED_NAMES = 4096
_remembered: list[tuple[tuple[str, ...], dict[str, bool]]] = []


def _answers_for(words: tuple[str, ...]) -> dict[str, bool]:
    for known, answers in _remembered:
        if known is words:
            return answers
    for known, answers in _remembered:
        if known == words:
            return answers
    answers = {}
    _remembered[:] = [(words, answers), *_remembered[:3]]
    return answers


def is_sensitive_header(name: str) -> bool:
    return name.lower().replace("_", "-") in SENSITIVE_HEADERS


def scrub_query(query: str, denylist: Iterable[str]) -> str:
    """Replace the values of deny-listed parameters; keep everything else byte for byte."""
    words = tuple(denylist)
    if not query or not words:
        return query
    parts = []
    changed = False
    for pair in query.split("&"):
        key, sep, _value = pair.partition("=")
        decoded_key = parse_qsl(key + "=x", keep_blank_values=True)
        plain_key = decoded_key[0][0] if decoded_key else key
        if sep and is_denied(plain_key, words):
            parts.append(f"{key}={FILTERED}")
            changed = True
        else:
            parts.append(pair)
    return "&".join(parts) if changed else query


def scrub_url(url: str, denylist: Iterable[str]) -> str:
    """Drop user info and scrub the query of an absolute URL or of a path with a query, and the fragment
    where it is written like one (``#access_token=...``, as OAuth's implicit grant answers)."""
    words = tuple(denylist)
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    netloc = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
    query = scrub_query(parts.query, words)
    fragment = scrub_query(parts.fragment, words)
    if netloc == parts.netloc and query == parts.query and fragment == parts.fragment:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


# A run of characters that may be a URL or a request target inside free text (a log line): it ends at
# whitespace and at the quotes and brackets that usually surround a URL.
_TEXT_TOKEN = re.compile(r"""[^\s"'<>`]+""")


def scrub_urls_in_text(text: str, denylist: Iterable[str]) -> str:
    """``scrub_url`` applied to every URL or ``/path?query`` in ``text``, the rest left as it is: HTTP
    clients and servers log the URLs they request and serve (``HTTP Request: GET https://...?api_key=...``)."""
    if "?" not in text and "#" not in text and "://" not in text:
        return text
    words = tuple(denylist)

    def scrub_token(match: re.Match[str]) -> str:
        token = match.group(0)
        if "?" in token or "#" in token or "://" in token:
            return scrub_url(token, words)
        return token

    return _TEXT_TOKEN.sub(scrub_token, text)


_BREADCRUMB_URLS = URL_ATTRIBUTES | {"url"}
_BREADCRUMB_QUERIES = QUERY_ATTRIBUTES | {"http.query"}
_BREADCRUMB_FRAGMENTS = frozenset({"http.fragment", "url.fragment"})


# Servers' access logs (INFO, so sentry-sdk's logging integration keeps them as breadcrumbs) start each line
# with the client's address: "127.0.0.1:48194 - "GET /items/3 HTTP/1.1" 200".
ACCESS_LOG_CATEGORIES = frozenset(
    {"uvicorn.access", "hypercorn.access", "granian.access", "gunicorn.access", "sanic.access"}
)
_LEADING_ADDRESS = re.compile(r"^(?=\S*[.:])\[?[0-9A-Fa-f.:]+\]?(?::\d+)?(?=\s|$)")


def scrub_breadcrumbs(event: dict[str, Any], denylist: Iterable[str], send_default_pii: bool = False) -> None:
    """The URLs, queries and fragments that sentry-sdk's HTTP client integrations (httpx, ``http.client``,
    aiohttp...) record in breadcrumbs, and URLs in breadcrumb messages, scrubbed like the request's own;
    without ``send_default_pii``, the client's address that servers' access-log lines start with."""
    crumbs = event.get("breadcrumbs")
    if isinstance(crumbs, dict):
        crumbs = crumbs.get("values")
    if not isinstance(crumbs, list) or not crumbs:
        return
    words = tuple(denylist)
    for crumb in crumbs:
        if not isinstance(crumb, dict):
            continue
        message = crumb.get("message")
        if isinstance(message, str):
            if not send_default_pii and crumb.get("category") in ACCESS_LOG_CATEGORIES:
                message = _LEADING_ADDRESS.sub(FILTERED, message)
            crumb["message"] = scrub_urls_in_text(message, words)
        data = crumb.get("data")
        if not isinstance(data, dict):
            continue
        for key, value in data.items():
            if not isinstance(value, str) or not value:
                continue
            if key in _BREADCRUMB_URLS:
                data[key] = scrub_url(value, words)
            elif key in _BREADCRUMB_QUERIES or key in _BREADCRUMB_FRAGMENTS:
                data[key] = scrub_query(value, words)


PERSONAL_USER_FIELDS = ("id", "username", "email", "ip_address", "name")


def filter_user(event: dict[str, Any]) -> None:
    """Without ``send_default_pii`` the user's identifying fields stay home (the keys say they existed)."""
    user = event.get("user")
    if not isinstance(user, dict):
        return
    for key in PERSONAL_USER_FIELDS:
        if key in user:
            user[key] = FILTERED


def _header_name(serialized: Any) -> str:
    text = str(serialized)
    if text[:2] in ("b'", 'b"') and text[-1:] in ("'", '"'):
        text = text[2:-1]
    return text


def _scrub_value(value: Any, send_default_pii: bool, words: tuple[str, ...], depth: int) -> Any:
    if depth > 8:
        return value
    if isinstance(value, dict):
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            if is_denied(str(key), words) or (
                not send_default_pii and (key == "client" or is_sensitive_header(_header_name(key)))
            ):
                cleaned[key] = FILTERED
            elif key == "headers" and isinstance(item, list):
                cleaned[key] = [_scrub_header_pair(pair, send_default_pii, words) for pair in item]
            elif key == "query_string" and isinstance(item, str):
                cleaned[key] = _scrub_serialized_query(item, words)
            else:
                cleaned[key] = _scrub_value(item, send_default_pii, words, depth + 1)
        return cleaned
    if isinstance(value, list):
        return [_scrub_value(item, send_default_pii, words, depth + 1) for item in value]
    if isinstance(value, str):
        return scrub_urls_in_text(value, words)
    return value


def _scrub_serialized_query(serialized: str, words: tuple[str, ...]) -> str:
    """An ASGI scope's ``query_string`` as sentry-sdk serializes a local variable (``"b'token=...'"``)."""
    start = 2 if serialized[:2] in ("b'", 'b"') else 1 if serialized[:1] in ("'", '"') else 0
    end = len(serialized) - 1 if start and serialized[-1:] in ("'", '"') else len(serialized)
    return f"{serialized[:start]}{scrub_query(serialized[start:end], words)}{serialized[end:]}"


def _scrub_header_pair(pair: Any, send_default_pii: bool, words: tuple[str, ...]) -> Any:
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        return pair
    name = _header_name(pair[0])
    if (not send_default_pii and is_sensitive_header(name)) or is_denied(name, words):
        return [pair[0], FILTERED]
    return list(pair)


def clean_frames(
    event: dict[str, Any], *, send_default_pii: bool, denylist: Iterable[str], in_app: Optional[InApp] = None
) -> None:
    """Frames of plumbing (ASGI servers, middlewares, this bridge) keep no local variables: they hold the
    raw request headers in ``scope``. In the other frames, deny-listed keys, sensitive headers, (without PII)
    the client address, and deny-listed parameters of a scope's query string and of URLs are filtered.

    ``in_app`` (the client's rule, see ``in_app``) marks every frame as frames parsed from exception text
    are marked; without it only plumbing frames are marked (not the app's), the rest left to sentry-sdk's
    client."""
    words = tuple(denylist)
    rule = in_app if in_app is not None else _PLUMBING_ONLY
    for exception in (event.get("exception") or {}).get("values") or ():
        for frame in (exception.get("stacktrace") or {}).get("frames") or ():
            module = frame.get("module")
            plumbing = is_plumbing(module if isinstance(module, str) else None)
            if plumbing:
                frame.pop("vars", None)
            elif frame.get("vars") is not None:
                frame["vars"] = _scrub_value(frame["vars"], send_default_pii, words, 0)
            if in_app is not None or plumbing:
                rule.mark((frame,))


# without the client's rule: no include list, so every plumbing frame is marked not in-app
_PLUMBING_ONLY = InApp()
