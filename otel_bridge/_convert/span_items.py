"""A converted transaction to Sentry span items (span streaming). Pure: no I/O, no clock, no globals.

With ``trace_lifecycle="stream"`` sentry-sdk sends every span as an item of its own instead of one
transaction per local root. The attribute names are the ones sentry-sdk's ASGI middleware writes on its
segment span (``sentry.op``, ``sentry.segment.name.source``, ``http.request.method``,
``http.request.header.<name>``, ``url.full``...); the ids, timestamps, names, statuses and the scrubbed
OTel attributes come from the transaction ``events.to_events`` built, so naming, privacy and the dynamic
sampling context are the ones the transaction would have had.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from otel_bridge._convert.privacy import FILTERED

LIFECYCLE = "stream"
PLATFORM = "python"
HEADER_PREFIX = "http.request.header."

# The segment's own OTel attributes that the request's attributes replace: URLs and queries (sent only as
# sentry-sdk sends them, after data collection filtering), the client's address (only when allowed) and the
# captured headers (OTel spells them with underscores, sentry-sdk as sent).
_URL_ATTRIBUTES = frozenset(
    {"http.url", "url.full", "http.target", "url.path", "url.query", "http.query", "url.fragment"}
)
_CLIENT_ATTRIBUTES = frozenset(
    {
        "client.address",
        "client.port",
        "http.client_ip",
        "net.peer.ip",
        "net.peer.port",
        "net.sock.peer.addr",
        "net.sock.peer.port",
        "network.peer.address",
        "network.peer.port",
        "user.ip_address",
    }
)
_LOCAL_ADDRESSES = frozenset({"127.0.0.1", "::1"})
_LOCAL_NAMES = _LOCAL_ADDRESSES | {"localhost"}


@dataclass(frozen=True)
class RequestFacts:
    """What the request adds to the segment beyond its transaction.

    ``request`` is Sentry's request interface as events get it (already filtered for privacy and data
    collection). ``with_url``: URL, path and query are sent (sentry-sdk: ``send_default_pii`` or
    ``data_collection``). ``is_localhost`` is judged from the raw request, which is not sent.
    """

    request: Optional[Mapping[str, Any]] = None
    protocol: Optional[str] = None
    url_path: Optional[str] = None
    with_url: bool = False
    is_localhost: Optional[bool] = None


@dataclass(frozen=True)
class ClientFacts:
    """What sentry-sdk writes on every segment from its client (``StreamedSpan._set_segment_attributes``)."""

    integrations: Sequence[str] = ()
    dist: Optional[str] = None
    command_args: Sequence[str] = field(default_factory=tuple)


def attribute_value(value: Any) -> Any:
    """A value Sentry's attributes can hold: bool, int, float, str, or a list of one of those types;
    anything else as its text. Non-finite floats become text, as sentry-sdk writes them."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        if not value:
            return []
        kind = type(value[0])
        if kind in (bool, int, float, str) and all(type(item) is kind for item in value):
            return list(value)
    return repr(value)


def is_localhost(
    client_ip: Optional[str],
    url_host: Optional[str],
    host_header: Optional[str],
    forwarded_host: Optional[str],
) -> bool:
    """Relay's localhost rule, as sentry-sdk applies it: a loopback client, or a ``localhost`` host."""
    if client_ip is not None and client_ip.strip("[]") in _LOCAL_ADDRESSES:
        return True
    if url_host is not None and _is_local_name(url_host):
        return True
    for header in (host_header, forwarded_host):
        if header is None:
            continue
        name = header[1:].split("]", 1)[0] if header.startswith("[") else header.split(":", 1)[0]
        if _is_local_name(name):
            return True
    return False


def _is_local_name(host: str) -> bool:
    return host in _LOCAL_NAMES or any(host.endswith(f".{name}") for name in _LOCAL_NAMES)


def request_attributes(facts: RequestFacts) -> dict[str, Any]:
    """The request as attributes of the segment (sentry-sdk's ``_get_request_attributes``)."""
    request = facts.request or {}
    attributes: dict[str, Any] = {}
    method = request.get("method")
    if method:
        attributes["http.request.method"] = str(method).upper()
    headers = request.get("headers")
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            attributes[f"{HEADER_PREFIX}{str(name).lower()}"] = attribute_value(value)
    url = request.get("url")
    if facts.with_url and isinstance(url, str) and url:
        query = request.get("query_string")
        if isinstance(query, str) and query:
            attributes["http.query"] = query
            attributes["url.full"] = f"{url}?{query}"
        else:
            attributes["url.full"] = url
        attributes["url.path"] = facts.url_path if facts.url_path is not None else _path_of(url)
    address = client_address(request)
    if address:
        attributes["client.address"] = address
    return attributes


def client_address(request: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The client's address, present in the request interface only where sending it is allowed."""
    env = (request or {}).get("env")
    address = env.get("REMOTE_ADDR") if isinstance(env, Mapping) else None
    return str(address) if address else None


def _path_of(url: str) -> str:
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return url


def request_scope_attributes(facts: RequestFacts) -> dict[str, Any]:
    """What sentry-sdk's ASGI middleware puts on the request's isolation scope, so on every span of it.
    The user agent comes from the headers as collected: a filtered one is not sent."""
    attributes: dict[str, Any] = {}
    if facts.is_localhost is not None:
        attributes["sentry.is_localhost"] = facts.is_localhost
    headers = (facts.request or {}).get("headers")
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            if str(name).lower() == "user-agent" and value and value != FILTERED:
                attributes["user_agent.original"] = str(value)
    address = client_address(facts.request)
    if address:
        attributes["user.ip_address"] = address
    return attributes


def _status(sentry_status: Any) -> str:
    return "ok" if sentry_status in (None, "ok") else "error"


def _base_attributes(data: Any, resource: Mapping[str, Any]) -> dict[str, Any]:
    attributes = {key: attribute_value(value) for key, value in resource.items()}
    if isinstance(data, Mapping):
        attributes.update((key, attribute_value(value)) for key, value in data.items())
    return attributes


def _span_item(
    *,
    trace_id: str,
    span_id: str,
    parent_span_id: Optional[str],
    name: str,
    status: str,
    is_segment: bool,
    start: Any,
    end: Any,
    attributes: dict[str, Any],
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "trace_id": trace_id,
        "span_id": span_id,
        "name": name or "<unlabeled span>",
        "status": status,
        "is_segment": is_segment,
        "start_timestamp": float(start),
        "end_timestamp": float(end if end is not None else start),
    }
    if parent_span_id:
        item["parent_span_id"] = parent_span_id
    item["attributes"] = attributes
    return item


def span_items(
    transaction: Mapping[str, Any],
    request: RequestFacts,
    client: ClientFacts = ClientFacts(),
) -> list[dict[str, Any]]:
    """The transaction's spans as span items, children first and the segment (its local root) last.

    Each is the JSON sentry-sdk's ``StreamedSpan`` gives ``before_send_span`` and its batcher: ids,
    ``name``, ``status`` (``ok``/``error``), ``is_segment``, timestamps in seconds and plain attribute
    values (the batcher types them on the wire). Scope attributes are not applied here.
    """
    contexts = transaction.get("contexts") or {}
    trace = contexts.get("trace") or {}
    resource = (contexts.get("otel") or {}).get("resource") or {}
    segment_id = str(trace.get("span_id") or "")
    segment_name = str(transaction.get("transaction") or "")
    shared = {
        "sentry.segment.id": segment_id,
        "sentry.segment.name": segment_name,
        "sentry.trace_lifecycle": LIFECYCLE,
        **request_scope_attributes(request),
    }

    items: list[dict[str, Any]] = []
    for child in transaction.get("spans") or ():
        attributes = _base_attributes(child.get("data"), resource)
        attributes["sentry.op"] = child.get("op") or "default"
        attributes["sentry.origin"] = child.get("origin") or "manual"
        for key, value in shared.items():
            attributes.setdefault(key, value)
        items.append(
            _span_item(
                trace_id=str(child.get("trace_id") or trace.get("trace_id")),
                span_id=str(child.get("span_id")),
                parent_span_id=child.get("parent_span_id"),
                name=str(child.get("description") or child.get("op") or ""),
                status=_status(child.get("status")),
                is_segment=False,
                start=child.get("start_timestamp"),
                end=child.get("timestamp"),
                attributes=attributes,
            )
        )
    items.append(
        _span_item(
            trace_id=str(trace.get("trace_id")),
            span_id=segment_id,
            parent_span_id=trace.get("parent_span_id"),
            name=segment_name,
            status=_status(trace.get("status")),
            is_segment=True,
            start=transaction.get("start_timestamp"),
            end=transaction.get("timestamp"),
            attributes=_segment_attributes(transaction, request, client, resource, shared),
        )
    )
    return items


def _segment_attributes(
    transaction: Mapping[str, Any],
    request: RequestFacts,
    client: ClientFacts,
    resource: Mapping[str, Any],
    shared: Mapping[str, Any],
) -> dict[str, Any]:
    contexts = transaction.get("contexts") or {}
    trace = contexts.get("trace") or {}
    given = trace.get("data")
    data: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    if request.request:
        data = {
            key: value
            for key, value in data.items()
            if key not in _URL_ATTRIBUTES and not key.startswith(HEADER_PREFIX)
        }
    if request.request and not client_address(request.request):
        data = {key: value for key, value in data.items() if key not in _CLIENT_ATTRIBUTES}
    attributes = _base_attributes(data, resource)
    attributes.update(request_attributes(request))
    attributes["sentry.op"] = trace.get("op") or "default"
    attributes["sentry.origin"] = trace.get("origin") or "manual"
    source = (transaction.get("transaction_info") or {}).get("source")
    attributes["sentry.segment.name.source"] = source or "custom"
    if request.protocol:
        attributes["network.protocol.name"] = request.protocol
    status_code = (contexts.get("response") or {}).get("status_code")
    if isinstance(status_code, int):
        attributes["http.response.status_code"] = status_code
    attributes["sentry.platform"] = PLATFORM
    if client.command_args:
        attributes["process.command_args"] = [str(arg) for arg in client.command_args]
    attributes["sentry.sdk.integrations"] = sorted(client.integrations)
    if client.dist:
        attributes["sentry.dist"] = client.dist.strip()
    for key, option in (("sentry.environment", "environment"), ("sentry.release", "release")):
        value = transaction.get(option)
        if isinstance(value, str) and value:
            attributes[key] = value
    for key, value in shared.items():
        attributes.setdefault(key, value)
    return attributes


def without_ignored(
    items: Sequence[dict[str, Any]], is_ignored: Callable[[str, Mapping[str, Any]], bool]
) -> tuple[list[dict[str, Any]], int]:
    """The items ``ignore_spans`` keeps, and how many it drops.

    As in sentry-sdk: an ignored segment takes its whole trace with it; an ignored child is dropped alone,
    and its children are re-parented to its nearest kept ancestor (sentry-sdk never makes an ignored span
    the active one, so what starts under it starts under that ancestor).
    """
    segment = next((item for item in items if item["is_segment"]), None)
    if segment is not None and is_ignored(segment["name"], segment["attributes"]):
        return [], len(items)
    ignored = {
        item["span_id"]: item.get("parent_span_id")
        for item in items
        if not item["is_segment"] and is_ignored(item["name"], item["attributes"])
    }
    if not ignored:
        return list(items), 0
    kept = []
    for item in items:
        if item["span_id"] in ignored:
            continue
        parent = item.get("parent_span_id")
        if parent in ignored:
            item = {**item, "parent_span_id": _kept_ancestor(parent, ignored)}
        kept.append(item)
    return kept, len(ignored)


def _kept_ancestor(span_id: Optional[str], ignored: Mapping[str, Optional[str]]) -> Optional[str]:
    seen: set[str] = set()
    while span_id is not None and span_id in ignored and span_id not in seen:
        seen.add(span_id)
        span_id = ignored[span_id]
    return span_id


def keep_allowed_changes(original: dict[str, Any], changed: Any, format_value: Callable[[Any], Any]) -> bool:
    """What ``before_send_span`` may change, applied to ``original``: its name and attributes only (the
    attributes it returns replace the old ones). A span cannot be dropped: anything but a mapping with a
    ``name`` leaves the span as it was; ``False`` says so."""
    if not isinstance(changed, Mapping) or "name" not in changed:
        return False
    original["name"] = changed["name"]
    attributes = changed.get("attributes") or {}
    original["attributes"] = {str(key): format_value(value) for key, value in attributes.items()}
    return True
