"""sentry-sdk's client: its module-level serializer, its ``_prepare_event``, its ``flush``/``close`` and its
``instrumenter`` option, which the bridge replaces, wraps or sets where sentry-sdk offers no hook."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from typing import Any

import sentry_sdk
import sentry_sdk.client
import sentry_sdk.serializer

from otel_bridge._compat import reach

CLIENT_SERIALIZER = "client serializer"
CLIENT_PREPARE_EVENT = "client _prepare_event"
CLIENT_FLUSH = "client flush and close"
CLIENT_INSTRUMENTER = "client instrumenter option"

client_class: Any = getattr(sentry_sdk.client, "_Client", None)


def _parameters(function: Any) -> list[str]:
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return []


def _probe_event() -> dict[str, Any]:
    """An event with what the fast serializer copies without sentry-sdk's walk: nested containers, a
    databag wider than sentry-sdk keeps, a datetime, a string at the length limit, a tuple, floats."""
    return {
        "type": "transaction",
        "transaction": "GET /probe/{id}",
        "timestamp": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "extra": {"argv": [str(n) for n in range(25)], "deep": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}},
        "breadcrumbs": {"values": [{"message": "m", "data": {"n": 1.5, "t": (1, 2)}}]},
        "spans": [{"description": "d" * 2000, "data": {"flag": True, "none": None}}],
        "contexts": {"trace": {"trace_id": "0" * 32, "span_id": "0" * 16}},
    }


@reach(
    CLIENT_SERIALIZER,
    target="sentry_sdk.client.serialize (the name Client._prepare_event calls), replaced process-wide",
    verified="sentry-sdk 2.57, 2.75",
    fallback="events are serialized by sentry-sdk's own serializer",
)
def _serializer_replaceable() -> bool:
    from otel_bridge._deliver.serializer import fast_serialize

    current = getattr(sentry_sdk.client, "serialize", None)
    if current not in (sentry_sdk.serializer.serialize, fast_serialize):
        return False
    for max_value_length in (None, 100_000):
        expected = sentry_sdk.serializer.serialize(_probe_event(), max_value_length=max_value_length)
        if fast_serialize(_probe_event(), max_value_length=max_value_length) != expected:
            return False
    return True


@reach(
    CLIENT_PREPARE_EVENT,
    target="sentry_sdk.client._Client._prepare_event(self, event, hint, scope), wrapped on the class",
    verified="sentry-sdk 2.57, 2.75",
    fallback="events are not trimmed to Sentry's size limit; one larger than 1 MiB is refused by Sentry",
)
def _prepare_event_wrappable() -> bool:
    prepare = getattr(client_class, "_prepare_event", None)
    return callable(prepare) and _parameters(prepare) == ["self", "event", "hint", "scope"]


@reach(
    CLIENT_FLUSH,
    target="flush/close(timeout=None, callback=None) of a _Client instance, replaced on the instance",
    verified="sentry-sdk 2.57, 2.75",
    fallback="sentry_sdk.flush() does not wait for the bridge's queues; call otel_bridge.flush()",
)
def _flush_wrappable() -> bool:
    if not all(
        _parameters(getattr(client_class, method, None)) == ["self", "timeout", "callback"]
        for method in ("flush", "close")
    ):
        return False
    probe = client_class.__new__(client_class)
    probe.flush = probe.close = lambda timeout=None, callback=None: None
    return "flush" in vars(probe) and "close" in vars(probe)


@reach(
    CLIENT_INSTRUMENTER,
    target='options["instrumenter"] = "otel" on an adopted client: sentry-sdk starts no spans of its own',
    verified="sentry-sdk 2.57, 2.75",
    fallback="an adopted client keeps its instrumenter; its own integrations' spans may duplicate OTel's",
)
def _instrumenter_settable() -> bool:
    from sentry_sdk.consts import DEFAULT_OPTIONS
    from sentry_sdk.tracing import NoOpSpan

    # an uninitialised client: nothing read from the environment, no transport, no integrations
    probe = client_class.__new__(client_class)
    probe.options = dict(DEFAULT_OPTIONS, instrumenter="otel")
    with sentry_sdk.isolation_scope(), sentry_sdk.new_scope() as scope:
        scope.set_client(probe)
        return isinstance(scope.start_transaction(name="otel_bridge.probe"), NoOpSpan)
