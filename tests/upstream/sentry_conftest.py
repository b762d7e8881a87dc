"""conftest.py for sentry-python's ``tests/integrations/asgi/test_asgi.py``, run against otel_bridge.

Copied as ``conftest.py`` next to the extracted file by ``tests/test_upstream_suites.py``; written for this
project (sentry-python's own conftest is not used). It gives the fixtures that file uses:

- ``sentry_init(**options)`` is ``otel_bridge.init(dsn=<loopback receiver>, **options)``; the bridge, its
  tracer provider and the sentry-sdk client are undone after each test.
- ``capture_events()``, ``capture_envelopes()`` and ``capture_items(*types)`` list what the transport was
  handed from that call on, as it reached a real loopback endpoint (``tests/receiver.py``), each envelope
  parsed back with ``sentry_sdk.envelope.Envelope.deserialize``. The bridge turns spans into transactions on
  a worker thread: reading a list first waits until it has handed every finished trace to sentry-sdk's
  client, then for delivery; it does not flush the client (sessions, span batches).
- ``DictionaryContaining(d)`` equals any dict holding ``d``'s items.

An upstream test that cannot pass because of a documented difference is in ``DEVIATIONS``, marked
``xfail(strict=True)``: should it pass one day, the run fails until the entry goes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pytest

REPO = os.environ["OTEL_BRIDGE_REPO"]
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import sentry_sdk  # noqa: E402
from sentry_sdk.envelope import Envelope  # noqa: E402

import otel_bridge  # noqa: E402
from otel_bridge import _setup as bootstrap  # noqa: E402
from tests.receiver import EnvelopeReceiver  # noqa: E402
from tests.relay import relay_normalize  # noqa: E402
from tests.upstream.bridge_state import bridge_off, bridge_on  # noqa: E402

pytest_plugins = ["tests.upstream.outcomes"]

# Where the bridge deliberately differs from sentry-sdk (the README's "Differences"), one sentence each.
DIFFERENCES = {
    "denylisted-query": "Deny-listed query parameters (token, session, ...) are filtered even with "
    "send_default_pii=True; sentry-sdk without data_collection sends the query string as it came.",
    "filtered-headers": "Without send_default_pii, headers carrying the client's address, such as "
    "remote-addr, are filtered; sentry-sdk filters only X-Forwarded-For and X-Real-Ip.",
    "no-traces-sample-rate": "Transactions are sent without traces_sample_rate: the OpenTelemetry sampler "
    "decides which traces are recorded.",
    "string-route": "A route that is a plain string in the ASGI scope is not a route template: the "
    "transaction is named by the URL path, not 'generic ASGI request'.",
    "empty-query-string": "Request data has no query_string key when the query string is empty; sentry-sdk "
    "sends it as null.",
    "flush-at-shutdown": "At the ASGI lifespan shutdown the middleware sends what is queued for Sentry, "
    "session aggregates included, because servers such as uvicorn end the process right after it.",
    "sentry-span-api": "sentry-sdk's own span API (sentry_sdk.traces.start_span, @sentry_sdk.trace) creates "
    "no span under the bridge: spans come from OpenTelemetry.",
}

# Upstream test id (as pytest names it in that file) -> key of DIFFERENCES. Checked against sentry-sdk 2.75.0.
DEVIATIONS: dict[str, str] = {
    # [span_streaming-should_send_pii]: remote-addr without send_default_pii, as a span attribute and in
    # the transaction's request data
    "test_capture_transaction[True-False]": "filtered-headers",
    "test_capture_transaction[False-False]": "filtered-headers",
    "test_has_trace_if_performance_disabled": "no-traces-sample-rate",
    "test_trace_from_headers_if_performance_disabled": "no-traces-sample-rate",
    "test_transaction_style[True-/message-url-generic ASGI request-route]": "string-route",
    "test_transaction_style[False-/message-url-generic ASGI request-route]": "string-route",
    "test_get_request_data_query_string_data_collection[send_default_pii_true]": "denylisted-query",
    "test_get_request_data_query_string_data_collection[send_default_pii_false]": "denylisted-query",
    "test_get_request_data_query_string_data_collection[defaults]": "denylisted-query",
    "test_get_request_attributes_query_data_collection[send_default_pii_true]": "denylisted-query",
    "test_get_request_data_query_string_empty_legacy_is_none": "empty-query-string",
    # reads the envelopes right after the test client's lifespan shutdown, expecting the transaction only
    "test_transaction_name[False-/message/123456-endpoint-/message/123456-url]": "flush-at-shutdown",
    "test_transaction_name[False-/message/123456-url-/message/123456-url]": "flush-at-shutdown",
    # the app's child span comes from sentry_sdk.traces.start_span: only the server span arrives
    "test_user_ip_address_on_all_spans[legacy_pii_true]": "sentry-span-api",
    "test_user_ip_address_on_all_spans[legacy_pii_false]": "sentry-span-api",
    "test_user_ip_address_on_all_spans[dc_default_user_info]": "sentry-span-api",
    "test_user_ip_address_on_all_spans[dc_user_info_true]": "sentry-span-api",
    "test_user_ip_address_on_all_spans[dc_user_info_false]": "sentry-span-api",
    "test_user_ip_address_on_all_spans[dc_wins_over_pii]": "sentry-span-api",
    "test_is_localhost_attribute[127.0.0.1-server0-example.com-True]": "sentry-span-api",
    "test_is_localhost_attribute[::1-server1-example.com-True]": "sentry-span-api",
    "test_is_localhost_attribute[203.0.113.50-server2-localhost:8000-True]": "sentry-span-api",
    "test_is_localhost_attribute[203.0.113.50-server3-example.com-False]": "sentry-span-api",
    "test_is_localhost_attribute[203.0.113.50-server4-None-True]": "sentry-span-api",
    "test_is_localhost_attribute[203.0.113.50-server5-example.com-False]": "sentry-span-api",
    "test_user_agent_original_attribute": "sentry-span-api",
}

SETTLE_TIMEOUT_SECONDS = 10.0
BATCH_QUIET_SECONDS = 0.02
SPAN_LIKE_ITEMS = ("span", "log", "trace_metric")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        key = DEVIATIONS.get(item.name)
        if key is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"{key}: {DIFFERENCES[key]}"))
    names = {item.name for item in items}
    stale = sorted(set(DEVIATIONS) - names)
    if stale and not (config.option.keyword or config.option.markexpr):
        raise pytest.UsageError(f"DEVIATIONS names tests this file does not have: {stale}")


class HarnessError(AssertionError):
    """Delivery itself went wrong (nothing to do with the upstream test's assertions)."""


def _bridge_handed_over() -> None:
    """Every trace finished so far converted and handed to sentry-sdk's client, as sentry-sdk's own
    middleware hands its transaction over when the request ends. The client itself is not flushed: session
    aggregates and span batches go when sentry-sdk would send them (the tests call sentry_sdk.flush())."""
    processor = bootstrap.active_processor()
    if processor is None:
        return
    drain = getattr(processor, "drain", None)
    if drain is not None:
        drain(SETTLE_TIMEOUT_SECONDS)
    else:
        otel_bridge.flush(SETTLE_TIMEOUT_SECONDS)


class Delivery:
    """The envelopes the client's transport was handed in one test, and what reached the receiver."""

    def __init__(self, receiver: EnvelopeReceiver) -> None:
        self.receiver = receiver
        self._lock = threading.RLock()
        self._handed: list[Optional[str]] = []

    def watch(self, client: Any) -> None:
        transport = client.transport
        deliver = transport.capture_envelope

        def handed(envelope: Envelope) -> None:
            # noted and queued in one step: the request's thread and the bridge's hand envelopes over at once
            with self._lock:
                self._handed.append(envelope.headers.get("event_id"))
                deliver(envelope)

        # The transport sends its own client reports through this method too.
        transport.capture_envelope = handed

    @property
    def handed(self) -> int:
        with self._lock:
            return len(self._handed)

    def received(self) -> list[Envelope]:
        """Every envelope handed over so far, as the receiver got it, once the bridge's work is done."""
        _bridge_handed_over()
        if getattr(sentry_sdk.get_client(), "span_batcher", None) is not None:
            # sentry-sdk's span batcher also sends from its own thread when a segment ends, a little after
            # (sentry-python's conftest makes sentry_sdk.flush() wait for that thread): wait until it is quiet
            while True:
                before = self.handed
                time.sleep(BATCH_QUIET_SECONDS)
                _bridge_handed_over()
                if self.handed == before:
                    break
        with self._lock:
            handed = list(self._handed)
        arrived = self.receiver.wait_for(
            lambda r: sum(1 for q in r.requests if q.envelope is not None) >= len(handed),
            timeout=SETTLE_TIMEOUT_SECONDS,
        )
        requests = [q for q in self.receiver.requests if q.envelope is not None]
        if not arrived or len(requests) != len(handed):
            raise HarnessError(
                f"{len(handed)} envelope(s) handed to the transport, {len(requests)} received:\n"
                + self.receiver.summary()
            )
        envelopes = [_with_json(Envelope.deserialize(q.raw_body)) for q in requests]
        for number, (envelope, event_id) in enumerate(zip(envelopes, handed, strict=False)):
            if envelope.headers.get("event_id") != event_id:
                raise HarnessError(
                    f"envelope #{number} arrived out of order: handed {handed}, received "
                    f"{[e.headers.get('event_id') for e in envelopes]}\n{self.receiver.summary()}"
                )
        return envelopes


def _with_json(envelope: Envelope) -> Envelope:
    """``Envelope.deserialize`` parses the payloads of events and transactions only; the tests read the
    others' (sessions, spans) as ``payload.json`` too, as envelopes built in memory carry it."""
    for item in envelope.items:
        if item.payload.json is None:
            with contextlib.suppress(ValueError):
                item.payload.json = json.loads(item.payload.get_bytes())
    return envelope


class Captured(Sequence[Any]):
    """A list that is read afresh, after the bridge's work is done, each time it is looked at."""

    def __init__(self, read: Callable[[], list[Any]]) -> None:
        self._read = read

    def __len__(self) -> int:
        return len(self._read())

    def __getitem__(self, index: Any) -> Any:
        return self._read()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._read())

    def __eq__(self, other: object) -> bool:
        return self._read() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._read())


@dataclass
class CapturedItem:
    type: Optional[str]
    payload: Any


def _unwrapped(item: Any) -> list[CapturedItem]:
    """An item as the tests read it: one per span (log, metric) of a batch, its attributes as plain
    values; any other item with its JSON payload."""
    if item.type not in SPAN_LIKE_ITEMS:
        return [CapturedItem(item.type, item.payload.json)]
    unwrapped = []
    for entry in item.payload.json["items"]:
        flat = {key: value for key, value in entry.items() if key != "attributes"}
        flat["attributes"] = {key: value["value"] for key, value in entry.get("attributes", {}).items()}
        unwrapped.append(CapturedItem(item.type, flat))
    return unwrapped


_relay_rejections: list[str] = []
_items_seen: dict[str, int] = {}
_receiver_errors: list[str] = []


def _relay_check(test_id: str, envelopes: list[Envelope]) -> None:
    """Every event and transaction the bridge sent passes Relay's normalizer (reported in the summary)."""
    for envelope in envelopes:
        for item in envelope.items:
            _items_seen[item.type or "?"] = _items_seen.get(item.type or "?", 0) + 1
            if item.type in ("event", "transaction"):
                try:
                    relay_normalize(item.payload.json)
                except Exception as exc:
                    _relay_rejections.append(f"{test_id}: {item.type} {exc}")


@pytest.fixture
def _delivery() -> Iterator[Delivery]:
    with EnvelopeReceiver() as receiver:
        yield Delivery(receiver)


@pytest.fixture
def sentry_init(_delivery: Delivery, request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    started = False

    def init(**options: Any) -> None:
        nonlocal started
        bridge_on(_delivery.receiver.dsn, **options)
        started = True
        _delivery.watch(sentry_sdk.get_client())

    yield init
    if started:
        try:
            envelopes = _delivery.received()
        except HarnessError:
            envelopes = []
        _relay_check(request.node.name, envelopes)
        _receiver_errors.extend(_delivery.receiver.server_errors)
    bridge_off()


@pytest.fixture
def capture_envelopes(_delivery: Delivery) -> Callable[[], Captured]:
    def capture() -> Captured:
        start = _delivery.handed
        return Captured(lambda: _delivery.received()[start:])

    return capture


@pytest.fixture
def capture_events(_delivery: Delivery) -> Callable[[], Captured]:
    def capture() -> Captured:
        start = _delivery.handed
        return Captured(
            lambda: [
                item.payload.json
                for envelope in _delivery.received()[start:]
                for item in envelope.items
                if item.type in ("event", "transaction")
            ]
        )

    return capture


@pytest.fixture
def capture_items(_delivery: Delivery) -> Callable[..., Captured]:
    def capture(*types: str) -> Captured:
        start = _delivery.handed
        return Captured(
            lambda: [
                unwrapped
                for envelope in _delivery.received()[start:]
                for item in envelope.items
                if not types or item.type in types
                for unwrapped in _unwrapped(item)
            ]
        )

    return capture


class _DictionaryContaining:
    def __init__(self, expected: dict[str, Any]) -> None:
        self.expected = expected

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, dict):
            return False
        return all(key in other and other[key] == value for key, value in self.expected.items())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DictionaryContaining({self.expected!r})"


@pytest.fixture(name="DictionaryContaining")
def dictionary_containing() -> type[_DictionaryContaining]:
    return _DictionaryContaining


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.upstream import outcomes  # imported as a plugin first, so that pytest can rewrite it

    outcomes.extra.update(
        items=_items_seen, relay_rejections=_relay_rejections, receiver_errors=_receiver_errors
    )
