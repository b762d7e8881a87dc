"""What of a user's request is sent: sentry-sdk's ``data_collection`` where the user gave it, else the
bridge's ``send_default_pii`` rules (DESIGN §5). Pure: no I/O, no globals.

One ``Collection`` per client answers for request headers, the query string, the client's address
and span attributes, on the middleware path and on the exporter path alike. Whatever the rules, a value under
a name in the never-leak deny-list (sentry-sdk's ``EventScrubber`` list, ``Collection.denylist``) is filtered.

Inputs and outputs are plain: header names in any case with ``-`` or ``_``, the query string as it arrived
(still percent-encoded), span attributes as OTel holds them. ``None`` from a method means "send nothing".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from otel_bridge._convert.privacy import (
    CLIENT_ADDRESS_HEADERS,
    FILTERED,
    PERSONAL_ATTRIBUTES,
    QUERY_ATTRIBUTES,
    URL_ATTRIBUTES,
    is_denied,
    is_sensitive_header,
    scrub_query,
    scrub_url,
)

OFF = "off"
DENYLIST = "denylist"
ALLOWLIST = "allowlist"
_MODES = (OFF, DENYLIST, ALLOWLIST)

# Terms whose keys data collection filters in every mode, matched inside the key, case-insensitively: the list
# of Sentry's data collection spec (develop.sentry.dev/sdk/foundations/client/data-collection/). A test checks
# it against sentry-sdk's own where sentry-sdk has one.
SENSITIVE_TERMS = (
    "auth",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "key",
    "jwt",
    "bearer",
    "sso",
    "saml",
    "csrf",
    "xsrf",
    "credentials",
    "session",
    "sid",
    "identity",
)

# With ``user_info`` off, header names that name the client or its address, as sentry-sdk words the headers
# it holds back without ``send_default_pii`` (``Via``, ``X-Original-Client-Ip``, ``Remote-Addr``...).
_PERSONAL_HEADER_TERMS = ("forwarded", "-ip", "remote-", "via", "-user")

COOKIE_HEADERS = frozenset({"cookie", "set-cookie"})
USER_AGENT_ATTRIBUTES = frozenset({"user_agent.original", "http.user_agent"})
_HEADER_ATTRIBUTE_PREFIXES = ("http.request.header.", "http.response.header.")

_KEEP, _FILTER, _DROP = 0, 1, 2
_REMEMBERED_NAMES = 1024


@dataclass(frozen=True)
class KeyRule:
    """One ``{"mode": ..., "terms": [...]}`` of ``data_collection`` (headers, query parameters)."""

    mode: str = DENYLIST
    terms: tuple[str, ...] = ()

    def keeps(self, key: str) -> bool:
        """Whether the value under ``key`` may be sent; mode ``off`` is the caller's to handle."""
        lowered = key.lower()
        if any(term in lowered for term in SENSITIVE_TERMS):
            return False
        matched = any(term in lowered for term in self.terms)
        return matched if self.mode == ALLOWLIST else not matched


@dataclass(frozen=True)
class DataCollection:
    """What request and span data depend on in the user's ``data_collection``, as the client resolved it.

    Its ``cookies`` setting has nothing to act on here: the bridge sends no cookie values (``request.cookies``
    is never built; the ``Cookie`` and ``Set-Cookie`` headers are always ``[Filtered]``)."""

    user_info: bool = True
    headers: KeyRule = KeyRule()
    query: KeyRule = KeyRule()


def data_collection_from_options(options: Mapping[str, Any]) -> Optional[DataCollection]:
    """The ``data_collection`` the user gave, read from the client's resolved options; ``None`` when it was
    not given (the client marks it ``provided_by_user``) or sentry-sdk has no such option (2.57 has none;
    2.75 resolves it in ``Client._get_options``, checked on both)."""
    resolved = options.get("data_collection")
    if not isinstance(resolved, Mapping) or not resolved.get("provided_by_user"):
        return None
    headers = resolved.get("http_headers")
    return DataCollection(
        user_info=bool(resolved.get("user_info", True)),
        headers=_rule(headers.get("request") if isinstance(headers, Mapping) else None),
        query=_rule(resolved.get("url_query_params")),
    )


def _rule(value: Any) -> KeyRule:
    if not isinstance(value, Mapping):
        return KeyRule()
    mode = value.get("mode", DENYLIST)
    # sentry-sdk refuses other modes at init; should one get through anyway, nothing is collected.
    if mode not in _MODES:
        mode = OFF
    terms = tuple(str(term).lower() for term in value.get("terms") or () if term)
    return KeyRule(str(mode), terms)


@dataclass(frozen=True)
class Collection:
    """The rules for one client: ``data_collection`` when given (``send_default_pii`` is then ignored), else
    ``send_default_pii``. ``denylist`` is filtered in both cases."""

    send_default_pii: bool = False
    denylist: tuple[str, ...] = ()
    data_collection: Optional[DataCollection] = None
    _decisions: dict[str, int] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def user_info(self) -> bool:
        """Whether the client's address and the user's identity may be sent."""
        if self.data_collection is not None:
            return self.data_collection.user_info
        return self.send_default_pii

    # -- headers

    def header(self, name: str, value: Any) -> Any:
        """The value to send for a request (or response) header: ``value``, ``FILTERED``, or ``None`` when
        the header is not sent at all (``data_collection`` header mode ``off``)."""
        decision = self._decisions.get(name)
        if decision is None:
            decision = self._decide_header(name)
            if len(self._decisions) >= _REMEMBERED_NAMES:
                self._decisions.clear()
            self._decisions[name] = decision
        if decision == _KEEP:
            return value
        return FILTERED if decision == _FILTER else None

    def _decide_header(self, name: str) -> int:
        dashed = name.lower().replace("_", "-")
        if self.data_collection is None:
            sensitive = not self.send_default_pii and is_sensitive_header(dashed)
            return _FILTER if sensitive or is_denied(dashed, self.denylist) else _KEEP
        rule = self.data_collection.headers
        if rule.mode == OFF:
            return _DROP
        if dashed in COOKIE_HEADERS or is_denied(dashed, self.denylist):
            return _FILTER
        if not self.data_collection.user_info and (
            dashed in CLIENT_ADDRESS_HEADERS or any(term in dashed for term in _PERSONAL_HEADER_TERMS)
        ):
            return _FILTER
        return _KEEP if rule.keeps(dashed) else _FILTER

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Request headers as sent in ``request.headers``: filtered ones keep their name with ``FILTERED``."""
        sent: dict[str, str] = {}
        for name, value in headers.items():
            kept = self.header(name, value)
            if kept is not None:
                sent[name] = kept
        return sent

    # -- query string

    def query_string(self, raw: Optional[str]) -> Optional[str]:
        """``request.query_string`` (and ``url.query``) from the query as it arrived, percent-encoded;
        ``None`` when there is none to send.

        With ``data_collection``, written as sentry-sdk writes it: percent-decoded, parsed, filtered values
        replaced and re-encoded (``token=%5BFiltered%5D&theme=dark``). Without it, the bridge's form: decoded,
        deny-listed values replaced by ``[Filtered]``, the rest as it came."""
        if not raw:
            return None
        decoded = unquote(raw)
        if self.data_collection is None:
            return scrub_query(decoded, self.denylist) or None
        rule = self.data_collection.query
        if rule.mode == OFF:
            return None
        grouped: dict[str, Any] = {}
        for key, value in parse_qsl(decoded, keep_blank_values=True):
            grouped.setdefault(key, []).append(value)
        for key in grouped:
            if not rule.keeps(key) or is_denied(key, self.denylist):
                grouped[key] = FILTERED
        return urlencode(grouped, doseq=True) or None

    def url(self, url: str) -> str:
        """A URL or request target (``/path?query``) with its query filtered as ``query_string`` does it, user
        info dropped, and deny-listed parameters of a fragment filtered; without a query left, no ``?``."""
        if self.data_collection is None:
            return scrub_url(url, self.denylist)
        try:
            parts = urlsplit(url)
        except ValueError:
            return url.split("?", 1)[0].split("#", 1)[0]
        netloc = parts.netloc.rsplit("@", 1)[-1]
        query = self.query_string(parts.query) or ""
        fragment = scrub_query(parts.fragment, self.denylist)
        return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))

    # -- the client's address

    def client_address(self, address: Optional[str]) -> Optional[str]:
        """The client's address for ``request.env.REMOTE_ADDR``, or ``None`` when it stays home."""
        return address if address and self.user_info else None

    # -- span attributes

    def attributes(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of span attributes that is safe to send as span ``data`` (``contexts.trace.data`` and
        ``spans[].data``): tuples become lists; what may not be sent is left out or ``FILTERED``."""
        dc = self.data_collection
        user_info = self.user_info
        words = self.denylist
        safe: dict[str, Any] = {}
        for key, value in attributes.items():
            if key in PERSONAL_ATTRIBUTES and not user_info:
                continue
            if key.startswith(_HEADER_ATTRIBUTE_PREFIXES):
                value = self.header(key.rsplit(".", 1)[-1], value)
                if value is None:
                    continue
            elif is_denied(key, words):
                value = FILTERED
            elif dc is not None and key in USER_AGENT_ATTRIBUTES:
                value = self.header("user-agent", value)
                if value is None:
                    continue
            elif key in URL_ATTRIBUTES and isinstance(value, str):
                value = self.url(value)
            elif key in QUERY_ATTRIBUTES and isinstance(value, str):
                if dc is None:
                    value = scrub_query(value, words)
                else:
                    value = self.query_string(value)
                    if value is None:
                        continue
            safe[key] = list(value) if isinstance(value, tuple) else value
        return safe
