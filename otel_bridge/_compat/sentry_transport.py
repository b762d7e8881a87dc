"""sentry-sdk's HTTP transport, whose private methods ``ConcurrentHttpTransport`` overrides and calls, whose
private state it reads and writes, and whose hooks ``SocketSender`` drives for each envelope.

When any of these checks fails, ``ConcurrentHttpTransport(options)`` builds sentry-sdk's own
``HttpTransport`` instead, and ``otel_bridge.transport.default_transport_class()`` names it: envelopes go
out one at a time, as sentry-sdk sends them, and nothing of ours runs on a transport it no longer fits.
"""

from __future__ import annotations

import inspect
import io
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Callable, Optional

import sentry_sdk.consts
import sentry_sdk.transport
import sentry_sdk.worker
from sentry_sdk.envelope import Envelope, Item, PayloadRef
from sentry_sdk.transport import HttpTransport

from otel_bridge._compat import holds, reach
from otel_bridge._deliver.http1 import Headers, Response

TRANSPORT_METHODS = "transport private methods"
TRANSPORT_STATE = "transport private state"
RATE_LIMIT_PARSER = "transport rate-limit parser"

_VERIFIED = "sentry-sdk 2.57, 2.75"
_FALLBACK = (
    "envelopes go out through sentry-sdk's own HttpTransport, one at a time from one thread (also when "
    "transport=ConcurrentHttpTransport is passed)"
)

# Each private method of HttpTransport we override or call, with the parameters we pass by name or
# override with (``self`` first).
METHOD_PARAMETERS: dict[str, list[str]] = {
    "_create_worker": ["self", "options"],
    "_get_pool_options": ["self"],
    "_make_pool": ["self"],
    "_request": ["self", "method", "endpoint_type", "body", "headers"],
    "_serialize_envelope": ["self", "envelope"],
    "_prepare_envelope": ["self", "envelope"],
    "_update_headers": ["self", "headers"],
    "_handle_response": ["self", "response", "envelope"],
    "_handle_request_error": ["self", "envelope", "loss_reason", "record_reason"],
    "_update_rate_limits": ["self", "response"],
    "_check_disabled": ["self", "category"],
    "_is_rate_limited": ["self"],
    "_get_header_value": ["self", "response", "header"],
    "_fetch_pending_client_report": ["self", "force", "interval"],
    "_flush_client_reports": ["self", "force"],
}
# What ``CountedWork`` implements of sentry-sdk's ``Worker``.
WORKER_METHODS = frozenset({"is_alive", "kill", "flush", "full", "submit"})

_PROBE_DSN = "http://0123456789abcdef0123456789abcdef@127.0.0.1:9/1"


def _parameters(function: Any) -> Optional[list[str]]:
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None


@reach(
    TRANSPORT_METHODS,
    target="HttpTransport methods overridden or called, with these parameters: "
    + ", ".join(f"{name}({', '.join(p[1:])})" for name, p in METHOD_PARAMETERS.items())
    + "; the abstract methods of sentry_sdk.worker.Worker",
    verified=_VERIFIED,
    fallback=_FALLBACK,
)
def _methods_hold() -> bool:
    for name, expected in METHOD_PARAMETERS.items():
        if _parameters(getattr(HttpTransport, name, None)) != expected:
            return False
    worker = getattr(sentry_sdk.worker, "Worker", None)
    abstract = getattr(worker, "__abstractmethods__", None)
    return isinstance(worker, type) and abstract is not None and set(abstract) <= WORKER_METHODS


class _InertWorker(sentry_sdk.worker.Worker):
    """What the probe transport queues into: nothing, on no thread."""

    @property
    def is_alive(self) -> bool:
        return False

    def kill(self) -> None:
        return None

    def full(self) -> bool:
        return False

    def submit(self, callback: Callable[[], Any]) -> bool:
        return False


class _OtherThreadsOnly(logging.Filter):
    """Keeps sentry-sdk's log lines about the probe's made-up answers out of the app's log."""

    def __init__(self) -> None:
        super().__init__()
        self._thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self._thread


def _probe_options() -> dict[str, Any]:
    options = dict(sentry_sdk.consts.DEFAULT_OPTIONS)
    options.update(dsn=_PROBE_DSN, transport_queue_size=10, http_proxy="", https_proxy="")
    return options


@reach(
    TRANSPORT_STATE,
    target="HttpTransport: __init__ stores _create_worker(options) as _worker; _pool, _auth.get_api_url(), "
    "parsed_dsn, TIMEOUT, _compression_algo/_level, _discarded_events[(category, reason)], "
    "_disabled_until[category or None], _retry.parse_retry_after; _prepare_envelope returns "
    "(envelope, BytesIO, headers) and _handle_response reads status, headers and data",
    verified=_VERIFIED,
    fallback=_FALLBACK,
)
def _state_holds() -> bool:
    created: list[Any] = []

    class Probe(HttpTransport):
        def _create_worker(self, options: dict[str, Any]) -> sentry_sdk.worker.Worker:
            created.append(options)
            return _InertWorker()

    sdk_logger = logging.getLogger("sentry_sdk.errors")
    quiet = _OtherThreadsOnly()
    sdk_logger.addFilter(quiet)
    probe: Optional[Probe] = None
    try:
        options = _probe_options()
        probe = Probe(options)
        return _probe_state(probe, created, options) and _probe_behaviour(probe)
    finally:
        sdk_logger.removeFilter(quiet)
        if probe is not None:
            pool = getattr(probe, "_pool", None)
            if pool is not None:
                pool.clear()


def _probe_state(probe: Any, created: list[Any], options: dict[str, Any]) -> bool:
    dsn = probe.parsed_dsn
    url = probe._auth.get_api_url()
    return (
        created == [options]
        and isinstance(probe._worker, _InertWorker)
        and hasattr(probe._pool, "request")
        and (dsn.scheme, dsn.host, str(dsn.port)) == ("http", "127.0.0.1", "9")
        and isinstance(url, str)
        and url.startswith("http://127.0.0.1:9/")
        and isinstance(probe.TIMEOUT, (int, float))
        and probe._compression_algo in (None, "gzip", "br")
        and isinstance(probe._compression_level, int)
        and isinstance(probe._disabled_until, dict)
        and probe._retry.parse_retry_after("7") == 7
        and type(probe._make_pool()) is type(probe._pool)
        and isinstance(probe._get_pool_options(), dict)
    )


def _probe_behaviour(probe: Any) -> bool:
    # lost events are counted by (category, reason) in _discarded_events, and fetched as a client report
    probe.record_lost_event("queue_overflow", data_category="error", quantity=2)
    if probe._discarded_events.get(("error", "queue_overflow")) != 2:
        return False
    report = probe._fetch_pending_client_report(force=True, interval=60)
    if not isinstance(report, Item) or report.type != "client_report" or probe._discarded_events:
        return False
    # a report that could not be sent is counted again by adding to it
    if not (
        isinstance(probe._discarded_events, defaultdict) and probe._discarded_events.default_factory is int
    ):
        return False

    # an envelope is prepared into (envelope, body, headers) that the sender writes out itself
    envelope = Envelope(items=[Item(PayloadRef(json={"message": "probe"}), type="event")])
    prepared = probe._prepare_envelope(envelope)
    if not (isinstance(prepared, tuple) and len(prepared) == 3):
        return False
    sent, body, headers = prepared
    if not (isinstance(sent, Envelope) and isinstance(body, io.BytesIO) and isinstance(headers, dict)):
        return False
    probe._update_headers(headers)
    _, serialized = probe._serialize_envelope(envelope)
    if "X-Sentry-Auth" not in headers or not isinstance(serialized, io.BytesIO):
        return False

    # an answer of the sender's own kind: rate limits by category land in _disabled_until
    limited = Response(200, Headers({"x-sentry-rate-limits": "60:transaction:organization"}), b"", True)
    probe._handle_response(response=limited, envelope=None)
    until = probe._disabled_until.get("transaction")
    if not (isinstance(until, datetime) and until > datetime.now(UTC)):
        return False
    if probe._get_header_value(limited, "X-Sentry-Rate-Limits") != "60:transaction:organization":
        return False
    if not (probe._check_disabled("transaction") and not probe._check_disabled("error")):
        return False
    if not probe._is_rate_limited():
        return False

    # a lost envelope is counted per item
    probe._handle_request_error(envelope=envelope, loss_reason="network", record_reason="network_error")
    return dict(probe._discarded_events) == {("error", "network_error"): 1}


@reach(
    RATE_LIMIT_PARSER,
    target="sentry_sdk.transport._parse_rate_limits(header) -> (category, datetime) pairs",
    verified=_VERIFIED,
    fallback=_FALLBACK,
)
def _parser_holds() -> bool:
    parse = getattr(sentry_sdk.transport, "_parse_rate_limits", None)
    if not callable(parse):
        return False
    pairs = list(parse("60:transaction;error:organization, garbage"))
    return [category for category, _ in pairs] == ["transaction", "error"] and all(
        isinstance(until, datetime) for _, until in pairs
    )


def parse_rate_limits(header: str) -> Iterable[tuple[Optional[str], datetime]]:
    """sentry-sdk's reading of an ``X-Sentry-Rate-Limits`` header (used only while the reaches hold)."""
    parse = sentry_sdk.transport._parse_rate_limits
    return parse(header)


def transport_reaches_hold() -> bool:
    """Whether ``ConcurrentHttpTransport`` may run on the installed sentry-sdk."""
    return holds(TRANSPORT_METHODS) and holds(TRANSPORT_STATE) and holds(RATE_LIMIT_PARSER)
