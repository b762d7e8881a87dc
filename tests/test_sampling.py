"""The Sentry-only sample rate: deterministic per trace, agreeing with sentry-sdk, never thinning errors."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import pytest
import sentry_sdk
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import format_trace_id
from sentry_sdk.tracing_utils import _generate_sample_rand

from otel_bridge import SentrySpanProcessor
from otel_bridge._tracing import sampling
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid

_ids = random.Random(20261124)
TRACE_IDS = [_ids.getrandbits(128) | 1 for _ in range(10_000)]


@pytest.fixture(autouse=True)
def _restore_rate() -> Iterator[None]:
    yield
    sampling.configure(1.0)


def test_sample_rand_is_the_one_sentry_sdk_derives_from_the_trace_id() -> None:
    for trace_id in TRACE_IDS[:200]:
        assert sampling.sample_rand_of(trace_id) == _generate_sample_rand(format_trace_id(trace_id))


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.25, 0.5, 0.9, 1.0])
def test_the_kept_share_matches_the_rate_over_10000_traces(rate: float) -> None:
    kept = sum(sampling.decide(trace_id, None, rate).sampled for trace_id in TRACE_IDS)
    share = kept / len(TRACE_IDS)
    # Five standard deviations of a binomial share: a correct sampler fails this about once in 3.5 million
    # runs; the ids are fixed, so the outcome is the same on every run.
    tolerance = 5 * math.sqrt(rate * (1 - rate) / len(TRACE_IDS))
    assert abs(share - rate) <= tolerance
    if rate in (0.0, 1.0):
        assert share == rate


def test_the_decision_is_deterministic_and_nested_by_rate() -> None:
    for trace_id in TRACE_IDS[:500]:
        first = sampling.decide(trace_id, None, 0.3)
        assert first == sampling.decide(trace_id, None, 0.3)
        if first.sampled:
            assert sampling.decide(trace_id, None, 0.6).sampled


def test_a_sentry_callers_decision_and_sample_rand_are_honoured() -> None:
    trace_id = TRACE_IDS[0]
    assert sampling.decide(trace_id, {"sampled": "true", "sample_rand": "0.99"}, 0.0).sampled
    assert not sampling.decide(trace_id, {"sampled": "false"}, 1.0).sampled
    kept = sampling.decide(trace_id, {"sample_rand": "0.10"}, 0.2)
    assert (kept.sampled, kept.sample_rand) == (True, 0.10)
    assert not sampling.decide(trace_id, {"sample_rand": "0.30"}, 0.2).sampled
    assert sampling.decide(
        trace_id, {"sample_rand": "not a number"}, 1.0
    ).sample_rand == sampling.sample_rand_of(trace_id)


def test_thinned_traces_send_no_transaction_but_still_their_errors(receiver: EnvelopeReceiver) -> None:
    sentry_sdk.init(dsn=receiver.dsn, instrumenter="otel")
    sampling.configure(0.0)
    provider = TracerProvider()
    processor = SentrySpanProcessor()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    with pytest.raises(ValueError), tracer.start_as_current_span("job"):
        raise ValueError("still reported")
    processor.force_flush(5000)
    [error] = receiver.wait_for_events(1)
    assert_relay_valid(error)
    assert receiver.transactions() == []
    envelope = receiver.envelope_of(error["event_id"])
    assert envelope is not None
    assert envelope.headers["trace"]["sampled"] == "false"
    assert envelope.headers["trace"]["sample_rate"] == "0.0"
    sentry_sdk.get_client().close(timeout=2)
    discarded = [
        entry for report in receiver.client_reports() for entry in report.get("discarded_events", [])
    ]
    assert {"reason": "sample_rate", "category": "transaction", "quantity": 1} in discarded
