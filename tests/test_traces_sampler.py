"""``traces_sampler`` (sentry-sdk's option) decides each request's transaction, and the decision follows the
trace: the transaction, its errors' envelope headers and what the request propagates to the next service."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from typing import Any, Callable
from urllib.parse import unquote

import httpx
import pytest
import sentry_sdk
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider

from otel_bridge import SentrySpanProcessor
from otel_bridge._drops import RateLimitedLogger
from otel_bridge._tracing import sampling
from otel_bridge.asgi import SentryAsgiMiddleware
from otel_bridge.propagation import default_propagator
from tests.conftest import StartTraced
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid

Start = Callable[..., tuple[TracerProvider, SentrySpanProcessor]]


@pytest.fixture
def bridge(start_traced: StartTraced) -> Iterator[Start]:
    """``start(**sentry_options)``: a client sending to ``receiver`` and a provider with the processor, the
    Sentry propagator global (as ``otel_bridge.init()`` makes it)."""
    textmap = propagate.get_global_textmap()
    propagate.set_global_textmap(default_propagator())
    sampling.sampler_decisions.clear()

    def start(**options: Any) -> tuple[TracerProvider, SentrySpanProcessor]:
        # not sentry-sdk's httpx integration: the test's own requests would carry its trace headers
        return start_traced(release="shop@1.0", auto_enabling_integrations=False, **options)

    yield start
    propagate.set_global_textmap(textmap)
    sampling.sampler_decisions.clear()


def shop(provider: TracerProvider, outgoing: list[dict[str, str]]) -> Any:
    """An ASGI app that does some traced work, calls on (recording the headers it would send) and fails
    at ``/fail``."""
    tracer = provider.get_tracer("shop")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with tracer.start_as_current_span("load cart"):
            headers: dict[str, str] = {}
            propagate.inject(headers)
            outgoing.append(headers)
        if scope["path"] == "/fail":
            raise RuntimeError("checkout failed")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return SentryAsgiMiddleware(app, tracer_provider=provider)


def get(app: Any, *paths: str, headers: dict[str, str] | None = None) -> list[int]:
    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            return [(await client.get(path, headers=headers)).status_code for path in paths]

    return asyncio.run(run())


def discarded(receiver: EnvelopeReceiver) -> list[dict[str, Any]]:
    return [entry for report in receiver.client_reports() for entry in report.get("discarded_events", [])]


def baggage_of(headers: dict[str, str]) -> dict[str, str]:
    entries = (member.split("=", 1) for member in headers["baggage"].split(","))
    return {key[len("sentry-") :]: unquote(value) for key, value in entries if key.startswith("sentry-")}


def test_a_sampler_returning_0_sends_no_transaction_but_every_error(
    bridge: Start, receiver: EnvelopeReceiver
) -> None:
    provider, _ = bridge(traces_sampler=lambda context: 0)
    outgoing: list[dict[str, str]] = []
    assert get(shop(provider, outgoing), "/cart", "/fail") == [200, 500]
    sentry_sdk.flush(timeout=5)
    [error] = receiver.wait_for_events(1)
    assert_relay_valid(error)
    assert error["exception"]["values"][-1]["value"] == "checkout failed"
    envelope = receiver.envelope_of(error["event_id"])
    assert envelope is not None
    assert envelope.headers["trace"]["sampled"] == "false"
    assert envelope.headers["trace"]["sample_rate"] == "0.0"
    assert receiver.transactions() == []
    for headers in outgoing:
        assert headers["sentry-trace"].endswith("-0")
        assert baggage_of(headers)["sampled"] == "false"
    sentry_sdk.get_client().close(timeout=2)
    assert {"reason": "sample_rate", "category": "transaction", "quantity": 2} in discarded(receiver)


def test_the_sampler_is_asked_once_per_request_with_sentry_sdks_sampling_context(
    bridge: Start, receiver: EnvelopeReceiver
) -> None:
    asked: list[dict[str, Any]] = []

    def sampler(context: dict[str, Any]) -> float:
        asked.append(context)
        return 1.0

    provider, _ = bridge(traces_sampler=sampler)
    assert get(shop(provider, []), "/items/42?color=red") == [200]
    sentry_sdk.flush(timeout=5)
    [transaction] = receiver.wait_for_transactions(1)
    assert_relay_valid(transaction)
    [context] = asked
    started = context["transaction_context"]
    assert (started["name"], started["source"], started["op"]) == ("/items/42", "url", "http.server")
    assert started["trace_id"] == transaction["contexts"]["trace"]["trace_id"]
    assert started["span_id"] == transaction["contexts"]["trace"]["span_id"]
    assert started["tags"] == {"asgi.type": "http"}
    assert context["parent_sampled"] is None
    assert context["asgi_scope"]["path"] == "/items/42"
    assert context["asgi_scope"]["query_string"] == b"color=red"
    assert len(transaction["spans"]) == 1


def test_the_rate_it_returns_decides_by_the_traces_sample_rand(
    bridge: Start, receiver: EnvelopeReceiver
) -> None:
    trace_ids: list[str] = []

    def sampler(context: dict[str, Any]) -> float:
        trace_ids.append(context["transaction_context"]["trace_id"])
        return 0.5

    provider, _ = bridge(traces_sampler=sampler)
    outgoing: list[dict[str, str]] = []
    get(shop(provider, outgoing), *["/cart"] * 40)
    sentry_sdk.flush(timeout=5)
    expected = {trace_id for trace_id in trace_ids if sampling.sample_rand_of(int(trace_id, 16)) < 0.5}
    assert 5 < len(expected) < 35
    sent = {transaction["contexts"]["trace"]["trace_id"] for transaction in receiver.transactions()}
    assert sent == expected
    for transaction in receiver.transactions():
        envelope = receiver.envelope_of(transaction["event_id"])
        assert envelope is not None
        assert envelope.headers["trace"]["sample_rate"] == "0.5"
        assert envelope.headers["trace"]["sampled"] == "true"
    for trace_id, headers in zip(trace_ids, outgoing, strict=False):
        dsc = baggage_of(headers)
        assert (dsc["sample_rate"], dsc["sampled"]) == ("0.5", "true" if trace_id in expected else "false")
        assert float(dsc["sample_rand"]) == sampling.sample_rand_of(int(trace_id, 16))


def test_it_overrides_a_sentry_callers_decision_and_is_told_it(
    bridge: Start, receiver: EnvelopeReceiver
) -> None:
    asked: list[Any] = []

    def sampler(context: dict[str, Any]) -> bool:
        asked.append(context["parent_sampled"])
        return context["asgi_scope"]["path"] != "/health"

    provider, _ = bridge(traces_sampler=sampler)
    app = shop(provider, [])
    caller = "771a43a4192642f0b136d5159a501700"
    sampled = {
        "sentry-trace": f"{caller}-b4b5b7a8b1a20f5a-1",
        "baggage": f"sentry-trace_id={caller},sentry-sampled=true,sentry-sample_rate=1.0",
    }
    deferred = {"sentry-trace": f"{caller}-b4b5b7a8b1a20f5a", "baggage": f"sentry-trace_id={caller}"}
    get(app, "/health", headers=sampled)
    get(app, "/cart", headers=deferred)
    sentry_sdk.flush(timeout=5)
    assert asked == [True, None]
    [transaction] = receiver.wait_for_transactions(1)
    assert transaction["transaction"] == "/cart"
    assert transaction["contexts"]["trace"]["trace_id"] == caller


@pytest.mark.parametrize("answer", ["yes", None, 1.5, float("nan")])
def test_an_answer_that_is_not_a_rate_samples_nothing(
    bridge: Start, receiver: EnvelopeReceiver, answer: Any
) -> None:
    provider, _ = bridge(traces_sampler=lambda context: answer)
    outgoing: list[dict[str, str]] = []
    assert get(shop(provider, outgoing), "/cart", "/fail") == [200, 500]
    sentry_sdk.flush(timeout=5)
    [error] = receiver.wait_for_events(1)
    envelope = receiver.envelope_of(error["event_id"])
    assert envelope is not None
    assert envelope.headers["trace"]["sampled"] == "false"
    assert "sample_rate" not in envelope.headers["trace"]
    assert receiver.transactions() == []
    assert outgoing[0]["sentry-trace"].endswith("-0")


def test_a_sampler_that_raises_breaks_no_request_and_the_rate_decides(
    bridge: Start,
    receiver: EnvelopeReceiver,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def sampler(context: dict[str, Any]) -> float:
        raise KeyError("no such tenant")

    monkeypatch.setattr(
        sampling, "_sampler_failed", RateLimitedLogger(logging.getLogger("otel_bridge"), interval=math.inf)
    )
    provider, _ = bridge(traces_sampler=sampler)
    with caplog.at_level(logging.WARNING, logger="otel_bridge"):
        assert get(shop(provider, []), "/cart", "/cart") == [200, 200]
    sentry_sdk.flush(timeout=5)
    assert len(receiver.wait_for_transactions(2)) == 2
    said = [record for record in caplog.records if "traces_sampler raised" in record.getMessage()]
    assert len(said) == 1
    assert receiver.events() == []


def test_without_a_sampler_nothing_is_remembered(bridge: Start, receiver: EnvelopeReceiver) -> None:
    provider, _ = bridge()
    get(shop(provider, []), "/cart")
    sentry_sdk.flush(timeout=5)
    assert len(receiver.wait_for_transactions(1)) == 1
    assert len(sampling.sampler_decisions) == 0


def test_the_decisions_kept_are_bounded() -> None:
    decisions = sampling._SamplerDecisions(size=3)
    for trace_id in range(1, 6):
        decisions.put(trace_id, sampling.Decision(False, 0.5, 0.0))
    assert len(decisions) == 3
    assert decisions.get(1) is None and decisions.get(2) is None
    assert decisions.get(5) == sampling.Decision(False, 0.5, 0.0)


def test_each_root_of_a_trace_keeps_its_own_answer(bridge: Start, receiver: EnvelopeReceiver) -> None:
    """Two requests of one caller's trace, answered differently: each transaction follows its own answer,
    also when the first is sent only after the second was decided."""
    answers = {"/warm-up": True, "/first": False, "/second": True}

    def busy_worker(event: dict[str, Any], hint: Any) -> dict[str, Any]:
        if event["transaction"] == "/warm-up":
            time.sleep(0.5)
        return event

    provider, _ = bridge(
        traces_sampler=lambda context: answers[context["transaction_context"]["name"]],
        before_send_transaction=busy_worker,
    )
    app = shop(provider, [])
    caller = "5b8efff798038103d269b633813fc60c"
    get(app, "/warm-up")
    headers = {"traceparent": f"00-{caller}-eee19b7ec3c1b174-01"}
    get(app, "/first", "/second", headers=headers)
    sentry_sdk.flush(timeout=5)
    names = sorted(transaction["transaction"] for transaction in receiver.transactions())
    assert names == ["/second", "/warm-up"]
    [second] = [t for t in receiver.transactions() if t["transaction"] == "/second"]
    assert second["contexts"]["trace"]["trace_id"] == caller


def test_a_root_outside_any_request_is_asked_about_by_its_span(
    bridge: Start, receiver: EnvelopeReceiver
) -> None:
    asked: list[dict[str, Any]] = []

    def sampler(context: dict[str, Any]) -> bool:
        asked.append(context)
        return context["transaction_context"]["name"] != "heartbeat"

    provider, _ = bridge(traces_sampler=sampler)
    tracer = provider.get_tracer("jobs")
    with tracer.start_as_current_span("nightly import", attributes={"rows": 3}):
        pass
    with tracer.start_as_current_span("heartbeat"):
        pass
    sentry_sdk.flush(timeout=5)
    [transaction] = receiver.wait_for_transactions(1)
    assert transaction["transaction"] == "nightly import"
    first = asked[0]
    assert "asgi_scope" not in first
    assert first["parent_sampled"] is None
    started = first["transaction_context"]
    assert (started["name"], started["op"], started["data"]) == ("nightly import", "default", {"rows": 3})
    assert len(asked) == 2
