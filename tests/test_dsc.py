"""One dynamic sampling context per trace: what the service propagates, what its transactions and error events
carry, all from ``_tracing.dsc``, with sentry-sdk's keys and precedence."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional
from urllib.parse import unquote

import pytest
import sentry_sdk
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from sentry_sdk.tracing import Transaction

from otel_bridge import SentrySpanProcessor
from otel_bridge._convert.events import ConvertOptions, FinishedTrace, to_events
from otel_bridge._setup import install_event_processor
from otel_bridge._tracing.dsc import Sender, build_dsc, started_dsc
from otel_bridge._tracing.sampling import frozen_contexts, sample_rand_of
from otel_bridge.propagation import SentryPropagator
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid

RESOURCE = {"service.name": "shop", "service.version": "1.2.3", "deployment.environment.name": "staging"}
ROUTE = {"http.request.method": "GET", "http.route": "/items/{id}", "url.path": "/items/7"}
# what a DSC this service started says the same way in every trace of it
SAME_IN_EVERY_TRACE = ("public_key", "org_id", "environment", "release", "sample_rate", "sampled")
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def baggage_dsc(headers: dict[str, str]) -> dict[str, str]:
    members = [member.strip() for member in headers.get("baggage", "").split(",")]
    return {
        unquote(key[len("sentry-") :]): unquote(value)
        for key, _, value in (member.partition("=") for member in members)
        if key.startswith("sentry-")
    }


def envelope_dsc(receiver: EnvelopeReceiver, event: dict[str, Any]) -> dict[str, Any]:
    """The DSC an event was sent with (sentry-sdk moves it from the trace context to the envelope)."""
    envelope = receiver.envelope_of(event["event_id"])
    assert envelope is not None
    header: dict[str, Any] = envelope.headers["trace"]
    return header


@pytest.fixture
def shop(receiver: EnvelopeReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[TracerProvider]:
    """A client without a release (no ``SENTRY_RELEASE``, no git revision: sentry-sdk guesses none) and with
    the ``org_id`` option, which ``otel_bridge.init()`` did not make (it would have taken the release from
    the resource); a provider whose resource names the service's version."""
    monkeypatch.delenv("SENTRY_RELEASE", raising=False)
    monkeypatch.setattr(sentry_sdk.client, "get_default_release", lambda: None)
    sentry_sdk.init(dsn=receiver.dsn, instrumenter="otel", org_id="17", traces_sample_rate=1.0)
    install_event_processor()  # errors captured live join the OTel trace, as after otel_bridge.init()
    assert sentry_sdk.get_client().options["release"] is None
    provider = TracerProvider(resource=Resource.create(RESOURCE))
    provider.add_span_processor(SentrySpanProcessor())
    yield provider
    provider.shutdown()


def request(provider: TracerProvider, *, calls_on: bool = False, fails: bool = False) -> dict[str, str]:
    """One server request; the headers it sends on when ``calls_on``; a live error when ``fails``."""
    tracer = provider.get_tracer("shop")
    headers: dict[str, str] = {}
    with tracer.start_as_current_span("GET /items/{id}", kind=SpanKind.SERVER, attributes=ROUTE):
        load_item(tracer, headers, calls_on=calls_on, fails=fails)
    return headers


def load_item(tracer: trace.Tracer, headers: dict[str, str], *, calls_on: bool, fails: bool) -> None:
    with tracer.start_as_current_span("load item"):
        if fails:
            try:
                raise LookupError("no item 7")
            except LookupError as error:
                sentry_sdk.capture_exception(error)
        if calls_on:
            with tracer.start_as_current_span("GET /stock", kind=SpanKind.CLIENT):
                SentryPropagator().inject(headers)


def test_what_is_propagated_is_what_the_transactions_carry(
    shop: TracerProvider, receiver: EnvelopeReceiver
) -> None:
    """Before the one builder, the baggage took environment and release from the client alone (here: no
    release) while a transaction took them from the resource too: the traces of one service disagreed on
    their release, depending on whether they called on before their transaction was sent."""
    sent = baggage_dsc(request(shop, calls_on=True))
    request(shop)
    sentry_sdk.flush(timeout=5)
    transactions = receiver.wait_for_transactions(2)
    [called_on] = [t for t in transactions if t["contexts"]["trace"]["trace_id"] == sent["trace_id"]]
    [quiet] = [t for t in transactions if t is not called_on]

    # the trace that called on: its transaction carries exactly what it propagated (frozen at that call)
    assert envelope_dsc(receiver, called_on) == sent
    # every trace of the service says the same about it, and the same as its events
    quiet_dsc = envelope_dsc(receiver, quiet)
    assert {key: sent.get(key) for key in SAME_IN_EVERY_TRACE} == {
        key: quiet_dsc.get(key) for key in SAME_IN_EVERY_TRACE
    }
    assert (sent["release"], sent["environment"], sent["org_id"]) == ("1.2.3", "production", "17")
    assert sent["release"] == called_on["release"] == quiet["release"]
    assert sent["environment"] == called_on["environment"]
    assert sent["public_key"] == receiver.key
    # named when the name is known: at sending, the route; at the call (no framework told it), none
    assert quiet_dsc["transaction"] == "/items/{id}"
    assert "transaction" not in sent
    for transaction in (called_on, quiet):
        assert_relay_valid(transaction)


def test_a_live_error_and_its_transaction_carry_one_dsc(
    shop: TracerProvider, receiver: EnvelopeReceiver
) -> None:
    request(shop, fails=True)
    sentry_sdk.flush(timeout=5)
    [error] = receiver.wait_for_events(1)
    [transaction] = receiver.wait_for_transactions(1)
    dsc = envelope_dsc(receiver, transaction)
    assert envelope_dsc(receiver, error) == dsc
    assert (dsc["release"], dsc["org_id"]) == ("1.2.3", "17")


@pytest.mark.parametrize("source", ["route", "custom", "component", "url"])
def test_keys_and_values_are_sentry_sdks(source: str) -> None:
    """``build_dsc`` and sentry-sdk's ``Baggage.populate_from_transaction`` for the same trace and client."""
    client = sentry_sdk.Client(
        dsn="http://key@o42.ingest.example/1",
        environment="prod",
        release="r1",
        org_id="99",
        traces_sample_rate=0.75,
    )
    try:
        with sentry_sdk.isolation_scope() as scope:
            scope.set_client(client)
            with sentry_sdk.start_transaction(
                name="/items/{id}", source=source, trace_id=f"{TRACE_ID:032x}"
            ) as transaction:
                assert isinstance(transaction, Transaction)
                theirs = transaction.get_baggage().dynamic_sampling_context()
                sampled = transaction.sampled
    finally:
        client.close(timeout=0)
    ours = build_dsc(
        TRACE_ID,
        Sender(public_key="key", org_id="99", environment="prod", release="r1"),
        transaction="/items/{id}",
        source=source,
        sample_rand=sample_rand_of(TRACE_ID),
        sample_rate=0.75,
        sampled=sampled,
    )
    assert ours == theirs
    assert list(ours) == list(theirs)


def test_the_org_id_option_wins_over_the_dsns() -> None:
    client = sentry_sdk.Client(dsn="http://key@o42.ingest.example/1", org_id="7", release="r1")
    span_context = SpanContext(TRACE_ID, 0xABC, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    try:
        with sentry_sdk.isolation_scope() as scope:
            scope.set_client(client)
            dsc = started_dsc(span_context, None)
    finally:
        client.close(timeout=0)
    assert (dsc["org_id"], dsc["public_key"]) == ("7", "key")


def test_options_come_before_the_resource() -> None:
    client = sentry_sdk.Client(dsn="http://key@127.0.0.1:9/1", environment="prod", release="r1")
    span_context = SpanContext(TRACE_ID, 0xABC, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    try:
        with sentry_sdk.isolation_scope() as scope:
            scope.set_client(client)
            dsc = started_dsc(span_context, "/items/{id}", RESOURCE)
    finally:
        client.close(timeout=0)
    assert (dsc["environment"], dsc["release"], dsc["transaction"]) == ("prod", "r1", "/items/{id}")
    assert frozen_contexts.get(TRACE_ID) == dsc


def test_the_resource_of_the_span_in_hand_fills_what_the_client_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sentry_sdk.client, "get_default_release", lambda: None)
    client = sentry_sdk.Client(dsn="http://key@127.0.0.1:9/1")
    provider = TracerProvider(resource=Resource.create(RESOURCE))
    carrier: dict[str, str] = {}
    try:
        with sentry_sdk.isolation_scope() as scope:
            scope.set_client(client)
            with provider.get_tracer("t").start_as_current_span("call"):
                SentryPropagator().inject(carrier)
    finally:
        client.close(timeout=0)
        provider.shutdown()
    sent = baggage_dsc(carrier)
    assert sent["release"] == "1.2.3"
    # sentry-sdk's client always has an environment ("production" by default), which comes first
    assert sent["environment"] == "production"


def test_conversion_takes_the_dsc_it_is_given() -> None:
    provider = TracerProvider(resource=Resource.create(RESOURCE))
    tracer = provider.get_tracer("t")
    remote = SpanContext(TRACE_ID, 0xB7AD6B7169203331, is_remote=True, trace_flags=TraceFlags(1))
    with tracer.start_as_current_span(
        "GET /items/{id}",
        context=trace.set_span_in_context(NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
        attributes=ROUTE,
    ) as root:
        root.record_exception(ValueError("bad item"), attributes={"exception.escaped": "true"})
    provider.shutdown()
    decided = {"trace_id": f"{TRACE_ID:032x}", "public_key": "upstream", "sampled": "true"}
    finished = FinishedTrace(root=root, dsc=decided)  # type: ignore[arg-type]
    events = to_events(finished, ConvertOptions(public_key="ours", release="9.9"))
    assert [event.get("type", "error") for event in events] == ["transaction", "error"]
    for event in events:
        assert event["contexts"]["trace"]["dynamic_sampling_context"] == decided
        assert event["contexts"]["trace"]["dynamic_sampling_context"] is not decided


def test_without_a_decided_dsc_conversion_builds_one_from_its_options() -> None:
    provider = TracerProvider(resource=Resource.create(RESOURCE))
    with provider.get_tracer("t").start_as_current_span(
        "GET", kind=SpanKind.SERVER, attributes=ROUTE
    ) as root:
        pass
    provider.shutdown()
    [event] = to_events(FinishedTrace(root=root), ConvertOptions(public_key="k", org_id="5"))  # type: ignore[arg-type]
    context: Optional[SpanContext] = root.get_span_context()
    assert context is not None
    assert event["contexts"]["trace"]["dynamic_sampling_context"] == {
        "trace_id": f"{context.trace_id:032x}",
        "environment": "staging",
        "release": "1.2.3",
        "public_key": "k",
        "org_id": "5",
        "transaction": "/items/{id}",
    }
