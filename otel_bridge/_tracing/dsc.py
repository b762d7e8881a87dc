"""The dynamic sampling context (DSC): what Sentry decides a trace's dynamic sampling by, built in one place.

The DSC travels in the ``sentry-*`` members of outgoing ``baggage`` and in the ``trace`` header of every
envelope of the trace. Relay takes it as the trace's, so every use within a trace must show the same one.
The bridge therefore decides a trace's DSC before converting anything, the same way for every use:

1. a trace continued from a Sentry caller keeps the caller's DSC unchanged (``propagation`` reads it);
2. else the one this service started, frozen at its first use (an outgoing request, an error captured
   live) in ``sampling.frozen_contexts``;
3. else, for a transaction sent before any such use, a new one from the same :func:`build_dsc`.

Conversion (``_convert.events``) is handed the result; only a trace converted without one (tests, tools)
gets what :func:`build_dsc` makes of the conversion options alone.

Keys and precedence follow sentry-sdk's ``Baggage.populate_from_transaction``: ``trace_id``, ``sample_rand``,
``environment``, ``release``, ``public_key``, ``org_id`` (the ``org_id`` option over the DSN's, as
sentry-sdk's transport parses it), ``transaction`` unless its source is ``url`` (of low quality),
``sample_rate`` and ``sampled``. ``environment`` and ``release`` are the client's options first, as
sentry-sdk's client fills events with them; a client without them (one ``otel_bridge.init()`` did not make,
which would have taken them from the resource) gets the OTel resource's, as conversion fills the events, so
the DSC names the release of the events it travels with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import sentry_sdk
from opentelemetry import trace
from opentelemetry.trace import SpanContext, format_trace_id
from sentry_sdk.tracing import LOW_QUALITY_TRANSACTION_SOURCES
from sentry_sdk.utils import BadDsn, Dsn

from otel_bridge._tracing.sampling import Decision, decide, frozen_contexts

# Transaction sources whose names stay out of the DSC, sentry-sdk's own list (``url``): a raw URL path is a
# name per request, useless to sample by and possibly personal.
LOW_QUALITY_SOURCES = frozenset(str(source.value) for source in LOW_QUALITY_TRANSACTION_SOURCES)
ENVIRONMENT_ATTRIBUTES = ("deployment.environment.name", "deployment.environment")
RELEASE_ATTRIBUTES = ("service.version",)


@dataclass(frozen=True)
class Sender:
    """Who sends the trace, as its DSC names it."""

    public_key: Optional[str] = None
    org_id: Optional[str] = None
    environment: Optional[str] = None
    release: Optional[str] = None


def build_dsc(
    trace_id: int,
    sender: Sender,
    *,
    transaction: Optional[str] = None,
    source: Optional[str] = None,
    sample_rand: Optional[float] = None,
    sample_rate: Optional[float] = None,
    sampled: Optional[bool] = None,
) -> dict[str, str]:
    """The DSC a trace this service starts carries; the one builder of every DSC the bridge makes."""
    dsc = {"trace_id": format_trace_id(trace_id)}
    if sample_rand is not None:
        dsc["sample_rand"] = f"{sample_rand:.6f}"
    if sender.environment:
        dsc["environment"] = sender.environment
    if sender.release:
        dsc["release"] = sender.release
    if sender.public_key:
        dsc["public_key"] = sender.public_key
        if sender.org_id:
            dsc["org_id"] = sender.org_id
    if transaction and source not in LOW_QUALITY_SOURCES:
        dsc["transaction"] = transaction
    if sample_rate is not None:
        dsc["sample_rate"] = repr(sample_rate)
    if sampled is not None:
        dsc["sampled"] = "true" if sampled else "false"
    return dsc


def dsn_keys(client: Any) -> tuple[Optional[str], Optional[str]]:
    """``(public_key, org_id)`` of the client's DSN, the ``org_id`` option taking precedence.

    sentry-sdk's transport parses the DSN with the option; a transport that did not (a function given as
    ``transport``) leaves the client without ``parsed_dsn``, so the DSN is parsed here."""
    options: Mapping[str, Any] = getattr(client, "options", None) or {}
    option = options.get("org_id")
    org_id = str(option) if option is not None and option != "" else None
    parsed = getattr(client, "parsed_dsn", None)
    if parsed is None and options.get("dsn"):
        try:
            parsed = Dsn(options["dsn"], org_id)
        except (BadDsn, TypeError, ValueError):
            parsed = None
    if parsed is None:
        return None, None
    return parsed.public_key, org_id or parsed.org_id


def sender_of(client: Any, resource: Optional[Mapping[str, Any]] = None) -> Sender:
    """The client's DSN and options; ``environment`` and ``release`` the OTel ``resource``'s where the
    client has none."""
    options: Mapping[str, Any] = getattr(client, "options", None) or {}
    public_key, org_id = dsn_keys(client)
    return Sender(
        public_key=public_key,
        org_id=org_id,
        environment=_text(options.get("environment")) or _first(resource, ENVIRONMENT_ATTRIBUTES),
        release=_text(options.get("release")) or _first(resource, RELEASE_ATTRIBUTES),
    )


def adopted(trace_id: int, incoming: Optional[Mapping[str, str]]) -> Optional[dict[str, str]]:
    """The DSC a trace already has: the Sentry caller's, else the one frozen at its first use."""
    return dict(incoming) if incoming else frozen_contexts.get(trace_id)


def decided(
    client: Any,
    trace_id: int,
    existing: Optional[Mapping[str, str]],
    decision: Decision,
    *,
    transaction: Optional[str],
    source: Optional[str],
    resource: Optional[Mapping[str, Any]],
    trace_sampled: bool = True,
) -> dict[str, str]:
    """The DSC of a trace about to be converted: ``existing``, the one it already has (:func:`adopted`),
    else a new one for ``decision`` (not frozen: a later local root of the trace decides its own)."""
    if existing:
        return dict(existing)
    return build_dsc(
        trace_id,
        sender_of(client, resource),
        transaction=transaction,
        source=source,
        sample_rand=decision.sample_rand,
        sample_rate=decision.sample_rate,
        sampled=decision.sampled and trace_sampled,
    )


def started_dsc(
    span_context: SpanContext, transaction: Optional[str], resource: Optional[Mapping[str, Any]] = None
) -> dict[str, str]:
    """The DSC of a trace this service started, at a use during the trace (sent on, or put on an error
    event): made at the first use, named ``transaction`` if one is known by then (the app's own name, the
    route or the endpoint: never a URL), and frozen for every later use. Empty without an active client.

    ``resource``: the OTel resource of the span in hand; without it, the current span's when it belongs to
    the trace, else the global tracer provider's."""
    frozen = frozen_contexts.get(span_context.trace_id)
    if frozen is not None:
        return frozen
    client = sentry_sdk.get_client()
    if not client.is_active():
        return {}
    decision = decide(span_context.trace_id, None)
    options: Mapping[str, Any] = client.options or {}
    if resource is None and not (options.get("environment") and options.get("release")):
        resource = _resource_near(span_context.trace_id)
    dsc = build_dsc(
        span_context.trace_id,
        sender_of(client, resource),
        transaction=transaction,
        sample_rand=decision.sample_rand,
        sample_rate=decision.sample_rate,
        sampled=decision.sampled and span_context.trace_flags.sampled,
    )
    return frozen_contexts.freeze(span_context.trace_id, dsc)


def resource_of(holder: Any) -> Optional[Mapping[str, Any]]:
    """The attributes of the OTel resource of a span or tracer provider of the SDK (API objects have none)."""
    attributes = getattr(getattr(holder, "resource", None), "attributes", None)
    return attributes if isinstance(attributes, Mapping) else None


def _resource_near(trace_id: int) -> Optional[Mapping[str, Any]]:
    current = trace.get_current_span()
    if current.get_span_context().trace_id == trace_id:
        found = resource_of(current)
        if found is not None:
            return found
    return resource_of(trace.get_tracer_provider())


def _first(resource: Optional[Mapping[str, Any]], names: tuple[str, ...]) -> Optional[str]:
    if not resource:
        return None
    for name in names:
        value = resource.get(name)
        if value:
            return str(value)
    return None


def _text(value: Any) -> Optional[str]:
    return str(value) if value else None
