"""Distributed traces across real services on loopback: sentry-sdk, otel_bridge and W3C-only OTel callers.

Every service is the same Starlette app (``tests/apps/relay_routes.py``) under uvicorn, traced by
sentry-sdk's own middleware, by otel_bridge, or by OpenTelemetry alone; one calls the next with httpx.
Each Sentry-reporting flavour sends to its own receiver with its own key, so ``public_key`` in a dynamic
sampling context (DSC) names the service that started it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Optional
from urllib.parse import unquote

import httpx
import pytest
from sentry_sdk.tracing_utils import _generate_sample_rand

from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.servers import RunningServer, run_app

SENTRY_KEY = "5e177e5e177e5e177e5e177e5e177e51"
BRIDGE_KEY = "b71d6eb71d6eb71d6eb71d6eb71d6eb7"
SENTRY_ENV = {"SENTRY_ENVIRONMENT": "caller-env", "SENTRY_RELEASE": "caller@1.0", "OTEL_SDK_DISABLED": "true"}
BRIDGE_ENV = {"SENTRY_ENVIRONMENT": "bridge-env", "SENTRY_RELEASE": "bridge@2.0"}
# Long enough for a transaction that was going to be sent after its trace's error event to arrive.
ABSENCE_WAIT = 1.0

# What a DSC this service started must say identically in its envelopes and in what it propagates.
STARTED_DSC_KEYS = (
    "trace_id",
    "public_key",
    "sample_rate",
    "sample_rand",
    "sampled",
    "environment",
    "release",
)

TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"
TRACE_C = "7d3c5f0a1e2b4c6d8e9f0a1b2c3d4e5f"


@pytest.fixture(scope="module")
def sentry_receiver() -> Iterator[EnvelopeReceiver]:
    with EnvelopeReceiver(key=SENTRY_KEY) as started:
        yield started


@pytest.fixture(scope="module")
def bridge_receiver() -> Iterator[EnvelopeReceiver]:
    with EnvelopeReceiver(key=BRIDGE_KEY) as started:
        yield started


@pytest.fixture(scope="module")
def sentry_service(sentry_receiver: EnvelopeReceiver) -> Iterator[RunningServer]:
    env = {**SENTRY_ENV, "SENTRY_DSN": sentry_receiver.dsn}
    with run_app("tests.apps.relay_sentry:app", env=env) as server:
        yield server


@pytest.fixture(scope="module")
def unsampled_sentry_service(sentry_receiver: EnvelopeReceiver) -> Iterator[RunningServer]:
    env = {**SENTRY_ENV, "SENTRY_DSN": sentry_receiver.dsn, "RELAY_TRACES_SAMPLE_RATE": "0"}
    with run_app("tests.apps.relay_sentry:app", env=env) as server:
        yield server


@pytest.fixture(scope="module")
def bridge(bridge_receiver: EnvelopeReceiver) -> Iterator[RunningServer]:
    env = {**BRIDGE_ENV, "SENTRY_DSN": bridge_receiver.dsn}
    with run_app("tests.apps.relay_bridge:app", env=env) as server:
        yield server


@pytest.fixture(scope="module")
def plain_otel() -> Iterator[RunningServer]:
    with run_app("tests.apps.relay_plain_otel:app") as server:
        yield server


@pytest.fixture(scope="module")
def echo() -> Iterator[RunningServer]:
    with run_app("tests.apps.relay_echo:app") as server:
        yield server


def _call(caller: RunningServer, target: str, **params: str) -> dict[str, Any]:
    """Ask ``caller`` to call ``target``; what it sent and what it got back."""
    response = httpx.get(f"{caller.url}/call", params={"next": target, **params}, timeout=15)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _relay_url(via: RunningServer, to: RunningServer) -> str:
    """``via``'s ``/call`` that calls ``to``'s echo root."""
    return str(httpx.URL(f"{via.url}/call", params={"next": f"{to.url}/"}))


def _trace_id_of(event: dict[str, Any]) -> Optional[str]:
    trace_id = event.get("contexts", {}).get("trace", {}).get("trace_id")
    return trace_id if isinstance(trace_id, str) else None


def _of_trace(payloads: list[dict[str, Any]], trace_id: str) -> list[dict[str, Any]]:
    return [payload for payload in payloads if _trace_id_of(payload) == trace_id]


def _wait_for_transaction(receiver: EnvelopeReceiver, trace_id: str) -> dict[str, Any]:
    arrived = receiver.wait_for(lambda r: bool(_of_trace(r.transactions(), trace_id)), timeout=10)
    assert arrived, f"no transaction of trace {trace_id}\n{receiver.summary()}"
    [transaction] = _of_trace(receiver.transactions(), trace_id)
    assert_relay_valid(transaction)
    return transaction


def _wait_for_error(receiver: EnvelopeReceiver, trace_id: str) -> dict[str, Any]:
    arrived = receiver.wait_for(lambda r: bool(_of_trace(r.events(), trace_id)), timeout=10)
    assert arrived, f"no error event of trace {trace_id}\n{receiver.summary()}"
    [error] = _of_trace(receiver.events(), trace_id)
    assert_relay_valid(error)
    return error


def _envelope_dsc(receiver: EnvelopeReceiver, event: dict[str, Any]) -> dict[str, Any]:
    envelope = receiver.envelope_of(event["event_id"])
    assert envelope is not None
    dsc: dict[str, Any] = envelope.headers["trace"]
    return dsc


def _header(headers: dict[str, str], name: str) -> str:
    value = headers.get(name)
    assert value is not None, f"no {name} header in {headers}"
    return value


def _sentry_trace(headers: dict[str, str]) -> tuple[str, str, str]:
    trace_id, span_id, sampled = _header(headers, "sentry-trace").split("-")
    return trace_id, span_id, sampled


def _traceparent(headers: dict[str, str]) -> tuple[str, str, bool]:
    """Trace id, parent id and the sampled bit (the SDK also sets Trace Context 2's random bit)."""
    _version, trace_id, span_id, flags = _header(headers, "traceparent").split("-")
    return trace_id, span_id, bool(int(flags, 16) & 0x01)


def _baggage_members(headers: dict[str, str]) -> list[tuple[str, str]]:
    members = []
    for member in _header(headers, "baggage").split(","):
        key, _, value = member.strip().partition("=")
        members.append((unquote(key.strip()), unquote(value.split(";", 1)[0].strip())))
    return members


def _sentry_baggage(headers: dict[str, str]) -> dict[str, str]:
    return {
        key.removeprefix("sentry-"): value
        for key, value in _baggage_members(headers)
        if key.startswith("sentry-")
    }


def _client_span(transaction: dict[str, Any]) -> dict[str, Any]:
    spans: list[dict[str, Any]] = transaction["spans"]
    [span] = [span for span in spans if span.get("op") == "http.client"]
    return span


def _subset(dsc: dict[str, Any]) -> dict[str, Any]:
    return {key: dsc.get(key) for key in STARTED_DSC_KEYS}


def _sample_rand(trace_id: str) -> str:
    """sentry-sdk's own derivation, the one every service of a trace must agree on."""
    return f"{_generate_sample_rand(trace_id):.6f}"


def test_sentry_sdk_caller_continues_in_the_bridge(
    sentry_service: RunningServer,
    bridge: RunningServer,
    sentry_receiver: EnvelopeReceiver,
    bridge_receiver: EnvelopeReceiver,
) -> None:
    answer = _call(sentry_service, f"{bridge.url}/leaf")
    assert answer["status"] == 200
    trace_id, client_span_id, sampled = _sentry_trace(answer["sent"])
    assert sampled == "1"

    caller = _wait_for_transaction(sentry_receiver, trace_id)
    callee = _wait_for_transaction(bridge_receiver, trace_id)
    assert _client_span(caller)["span_id"] == client_span_id
    assert callee["contexts"]["trace"]["parent_span_id"] == client_span_id
    assert callee["contexts"]["trace"]["op"] == "http.server"

    caller_dsc = _envelope_dsc(sentry_receiver, caller)
    assert caller_dsc["trace_id"] == trace_id
    assert caller_dsc["public_key"] == SENTRY_KEY
    assert caller_dsc["sampled"] == "true"
    assert caller_dsc["sample_rate"] == "1.0"
    assert caller_dsc["environment"] == "caller-env"
    assert caller_dsc["release"] == "caller@1.0"
    assert "sample_rand" in caller_dsc
    assert _sentry_baggage(answer["sent"]) == caller_dsc
    assert _envelope_dsc(bridge_receiver, callee) == caller_dsc, "the head's DSC is frozen for the trace"
    assert callee["environment"] == "bridge-env", "the DSC is the caller's; the event stays the callee's"


def test_sentry_sdk_callers_trace_and_dsc_reach_the_bridges_errors_and_calls(
    sentry_service: RunningServer,
    bridge: RunningServer,
    echo: RunningServer,
    sentry_receiver: EnvelopeReceiver,
    bridge_receiver: EnvelopeReceiver,
) -> None:
    failed = _call(sentry_service, f"{bridge.url}/fail")
    assert failed["status"] == 500
    trace_id, _span, _sampled = _sentry_trace(failed["sent"])
    error = _wait_for_error(bridge_receiver, trace_id)
    callee = _wait_for_transaction(bridge_receiver, trace_id)
    assert error["contexts"]["trace"]["span_id"] == callee["contexts"]["trace"]["span_id"]
    assert _envelope_dsc(bridge_receiver, error) == _sentry_baggage(failed["sent"])

    relayed = _call(sentry_service, _relay_url(bridge, echo))
    trace_id, _span, _sampled = _sentry_trace(relayed["sent"])
    forwarded = dict(relayed["answer"]["answer"]["headers"])
    callee = _wait_for_transaction(bridge_receiver, trace_id)
    bridge_client_span = _client_span(callee)["span_id"]
    assert _sentry_trace(forwarded) == (trace_id, bridge_client_span, "1")
    assert _traceparent(forwarded) == (trace_id, bridge_client_span, True)
    assert _sentry_baggage(forwarded) == _sentry_baggage(relayed["sent"]), "forwarded unchanged"


def test_unsampled_sentry_sdk_caller_sends_no_transaction_but_errors_arrive_linked(
    unsampled_sentry_service: RunningServer,
    bridge: RunningServer,
    echo: RunningServer,
    sentry_receiver: EnvelopeReceiver,
    bridge_receiver: EnvelopeReceiver,
) -> None:
    relayed = _call(unsampled_sentry_service, _relay_url(bridge, echo))
    failed = _call(unsampled_sentry_service, f"{bridge.url}/fail")
    assert (relayed["status"], failed["status"]) == (200, 500)
    relayed_trace, _span, relayed_sampled = _sentry_trace(relayed["sent"])
    trace_id, _span, sampled = _sentry_trace(failed["sent"])
    assert (relayed_sampled, sampled) == ("0", "0")
    forwarded = dict(relayed["answer"]["answer"]["headers"])
    assert _sentry_trace(forwarded)[::2] == (relayed_trace, "0")
    assert _traceparent(forwarded)[::2] == (relayed_trace, False)
    assert _sentry_baggage(forwarded) == _sentry_baggage(relayed["sent"])

    error = _wait_for_error(bridge_receiver, trace_id)
    assert error["exception"]["values"][-1]["type"] == "LeafFailure"
    caller_dsc = _sentry_baggage(failed["sent"])
    assert caller_dsc["sampled"] == "false"
    assert caller_dsc["public_key"] == SENTRY_KEY
    assert _envelope_dsc(bridge_receiver, error) == caller_dsc

    time.sleep(ABSENCE_WAIT)
    for trace in (relayed_trace, trace_id):
        assert not _of_trace(bridge_receiver.transactions(), trace)
        assert not _of_trace(sentry_receiver.transactions(), trace)


def test_bridge_caller_continues_in_sentry_sdk(
    sentry_service: RunningServer,
    bridge: RunningServer,
    sentry_receiver: EnvelopeReceiver,
    bridge_receiver: EnvelopeReceiver,
) -> None:
    answer = _call(bridge, f"{sentry_service.url}/leaf")
    assert answer["status"] == 200
    trace_id, client_span_id, sampled = _sentry_trace(answer["sent"])
    assert sampled == "1"
    assert _traceparent(answer["sent"]) == (trace_id, client_span_id, True)

    ours = _wait_for_transaction(bridge_receiver, trace_id)
    theirs = _wait_for_transaction(sentry_receiver, trace_id)
    assert _client_span(ours)["span_id"] == client_span_id
    assert _client_span(ours)["parent_span_id"] == ours["contexts"]["trace"]["span_id"]
    assert theirs["contexts"]["trace"]["parent_span_id"] == client_span_id

    sent_dsc = _sentry_baggage(answer["sent"])
    assert sent_dsc["trace_id"] == trace_id
    assert sent_dsc["public_key"] == BRIDGE_KEY
    assert sent_dsc["sampled"] == "true"
    assert sent_dsc["sample_rand"] == _sample_rand(trace_id)
    assert sent_dsc["sample_rate"] == "1.0"
    assert sent_dsc["environment"] == "bridge-env"
    assert sent_dsc["release"] == "bridge@2.0"
    assert _envelope_dsc(sentry_receiver, theirs) == sent_dsc, "sentry-sdk freezes the DSC it was sent"


def test_bridge_head_sends_the_dsc_it_propagated(
    sentry_service: RunningServer, bridge: RunningServer, bridge_receiver: EnvelopeReceiver
) -> None:
    answer = _call(bridge, f"{sentry_service.url}/leaf")
    trace_id, _span, _sampled = _sentry_trace(answer["sent"])
    ours = _wait_for_transaction(bridge_receiver, trace_id)
    headers = {"traceparent": f"00-{TRACE_C}-00f067aa0ba902b7-01"}
    assert httpx.get(f"{bridge.url}/fail", headers=headers).status_code == 500
    error = _wait_for_error(bridge_receiver, TRACE_C)
    errors_transaction = _wait_for_transaction(bridge_receiver, TRACE_C)

    assert _envelope_dsc(bridge_receiver, error) == _envelope_dsc(bridge_receiver, errors_transaction)
    assert _envelope_dsc(bridge_receiver, ours) == _sentry_baggage(answer["sent"])


def test_bridge_outgoing_headers_keep_the_users_baggage(bridge: RunningServer, echo: RunningServer) -> None:
    answer = _call(bridge, f"{echo.url}/", baggage="userid=42")
    received = answer["answer"]["headers"]
    names = [name for name, _value in received]
    for name in ("traceparent", "sentry-trace", "baggage"):
        assert names.count(name) == 1, f"{name} in {received}"
    headers = dict(received)
    trace_id, span_id, sampled = _traceparent(headers)
    assert sampled
    assert _sentry_trace(headers) == (trace_id, span_id, "1")
    members = _baggage_members(headers)
    assert ("userid", "42") in members
    dsc = _sentry_baggage(headers)
    assert dsc["trace_id"] == trace_id
    assert dsc["public_key"] == BRIDGE_KEY
    assert dsc["sampled"] == "true"
    assert dsc["sample_rand"] == _sample_rand(trace_id)


def test_w3c_only_caller_continues_in_the_bridge(
    plain_otel: RunningServer, bridge: RunningServer, echo: RunningServer, bridge_receiver: EnvelopeReceiver
) -> None:
    answer = _call(plain_otel, _relay_url(bridge, echo), baggage="userid=42")
    assert answer["status"] == 200
    assert "sentry-trace" not in answer["sent"]
    assert _baggage_members(answer["sent"]) == [("userid", "42")]
    trace_id, client_span_id, sampled = _traceparent(answer["sent"])
    assert sampled

    callee = _wait_for_transaction(bridge_receiver, trace_id)
    assert callee["contexts"]["trace"]["parent_span_id"] == client_span_id
    dsc = _envelope_dsc(bridge_receiver, callee)
    assert dsc["trace_id"] == trace_id
    assert dsc["public_key"] == BRIDGE_KEY
    assert dsc["sampled"] == "true"
    assert dsc["sample_rate"] == "1.0"
    assert dsc["sample_rand"] == _sample_rand(trace_id)
    assert dsc["environment"] == "bridge-env"

    forwarded = dict(answer["answer"]["answer"]["headers"])
    bridge_client_span = _client_span(callee)["span_id"]
    assert _traceparent(forwarded) == (trace_id, bridge_client_span, True)
    assert _sentry_trace(forwarded) == (trace_id, bridge_client_span, "1")
    assert ("userid", "42") in _baggage_members(forwarded), "the W3C caller's baggage travels on"
    assert _subset(_sentry_baggage(forwarded)) == _subset(dsc)


def test_unsampled_w3c_caller_sends_no_transaction_but_errors_arrive(
    bridge: RunningServer, bridge_receiver: EnvelopeReceiver
) -> None:
    parent = "00f067aa0ba902b7"
    response = httpx.get(f"{bridge.url}/fail", headers={"traceparent": f"00-{TRACE_B}-{parent}-00"})
    assert response.status_code == 500

    error = _wait_for_error(bridge_receiver, TRACE_B)
    assert error["contexts"]["trace"]["trace_id"] == TRACE_B
    dsc = _envelope_dsc(bridge_receiver, error)
    assert dsc["trace_id"] == TRACE_B
    assert dsc["public_key"] == BRIDGE_KEY
    assert dsc["sampled"] == "false"
    assert dsc["sample_rand"] == _sample_rand(TRACE_B)
    time.sleep(ABSENCE_WAIT)
    assert not _of_trace(bridge_receiver.transactions(), TRACE_B)


def test_traceparent_wins_over_a_sentry_trace_of_another_trace(
    bridge: RunningServer, echo: RunningServer, bridge_receiver: EnvelopeReceiver
) -> None:
    w3c_parent, sentry_parent = "b7ad6b7169203331", "1111111111111111"
    headers = {
        "traceparent": f"00-{TRACE_A}-{w3c_parent}-01",
        "sentry-trace": f"{TRACE_B}-{sentry_parent}-0",
        "baggage": f"sentry-trace_id={TRACE_B},sentry-public_key={SENTRY_KEY},sentry-sample_rate=0.0,"
        "sentry-sample_rand=0.123456,sentry-sampled=false,sentry-environment=elsewhere",
    }
    response = httpx.get(f"{bridge.url}/call", params={"next": f"{echo.url}/"}, headers=headers, timeout=15)
    assert response.status_code == 200
    forwarded = dict(response.json()["answer"]["headers"])

    transaction = _wait_for_transaction(bridge_receiver, TRACE_A)
    assert transaction["contexts"]["trace"]["parent_span_id"] == w3c_parent
    assert not _of_trace(bridge_receiver.transactions(), TRACE_B)
    dsc = _envelope_dsc(bridge_receiver, transaction)
    assert dsc["trace_id"] == TRACE_A
    assert dsc["public_key"] == BRIDGE_KEY
    assert dsc["sampled"] == "true", "the other trace's sampling decision does not apply"
    assert dsc["sample_rand"] == _sample_rand(TRACE_A)
    assert dsc["environment"] == "bridge-env"

    assert _sentry_trace(forwarded)[::2] == (TRACE_A, "1")
    assert _traceparent(forwarded)[::2] == (TRACE_A, True)
    assert _subset(_sentry_baggage(forwarded)) == _subset(dsc)
    assert TRACE_B not in json.dumps(response.json()["answer"])
    assert "elsewhere" not in json.dumps(response.json()["answer"])


def test_same_trace_in_both_headers_parents_on_traceparent_and_keeps_the_sentry_dsc(
    bridge: RunningServer, bridge_receiver: EnvelopeReceiver
) -> None:
    trace_id = "5c1b0c2a9e8d4f7a8b6c5d4e3f2a1b0c"
    w3c_parent, sentry_parent = "2222222222222222", "3333333333333333"
    caller_dsc = {
        "trace_id": trace_id,
        "public_key": SENTRY_KEY,
        "sample_rate": "0.5",
        "sample_rand": "0.250000",
        "sampled": "true",
        "environment": "caller-env",
        "release": "caller@1.0",
    }
    headers = {
        "traceparent": f"00-{trace_id}-{w3c_parent}-01",
        "sentry-trace": f"{trace_id}-{sentry_parent}-1",
        "baggage": ",".join(f"sentry-{key}={value}" for key, value in caller_dsc.items()),
    }
    assert httpx.get(f"{bridge.url}/leaf", headers=headers).status_code == 200

    transaction = _wait_for_transaction(bridge_receiver, trace_id)
    assert transaction["contexts"]["trace"]["parent_span_id"] == w3c_parent
    assert _envelope_dsc(bridge_receiver, transaction) == caller_dsc


def test_sentry_only_rate_zero_thins_sentry_but_not_otel_and_keeps_errors() -> None:
    with EnvelopeReceiver(key=BRIDGE_KEY) as receiver:
        env = {
            **BRIDGE_ENV,
            "SENTRY_DSN": receiver.dsn,
            "OTEL_BRIDGE_TRACES_SAMPLE_RATE": "0",
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        with run_app("tests.apps.relay_bridge:app", env=env) as server:
            assert httpx.get(f"{server.url}/leaf").status_code == 200
            assert httpx.get(f"{server.url}/fail").status_code == 500
            [error] = receiver.wait_for_events(1)
            assert_relay_valid(error)
            trace_id = _trace_id_of(error)
            assert trace_id is not None
            assert error["exception"]["values"][-1]["type"] == "LeafFailure"
            dsc = _envelope_dsc(receiver, error)
            assert dsc["trace_id"] == trace_id
            assert dsc["public_key"] == BRIDGE_KEY
            assert dsc["sampled"] == "false"
            assert dsc["sample_rate"] == "0.0"
            assert dsc["sample_rand"] == _sample_rand(trace_id)

            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and f"0x{trace_id}" not in server.output():
                time.sleep(0.05)
            output = server.output()
            time.sleep(ABSENCE_WAIT)
        assert f'"trace_id": "0x{trace_id}"' in output, "the OTel side still samples the failed request"
        assert '"name": "GET /leaf"' in output, output
        assert receiver.transactions() == []
