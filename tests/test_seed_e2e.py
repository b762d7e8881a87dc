"""The seed's ASGI 2 example under real uvicorn, reporting to a real loopback endpoint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.servers import run_app

EXAMPLES = str(Path(__file__).resolve().parent.parent / "examples")


def _last_frame(event: dict[str, Any]) -> dict[str, Any]:
    frames: list[dict[str, Any]] = event["exception"]["values"][-1]["stacktrace"]["frames"]
    return frames[-1]


def test_seed_error_is_one_event_with_frames_linked_to_an_internal_error_transaction(
    receiver: EnvelopeReceiver,
) -> None:
    with run_app("seed_app:app", env={"SENTRY_DSN": receiver.dsn}, app_dir=EXAMPLES) as server:
        ok = httpx.get(f"{server.url}/")
        failed = httpx.get(f"{server.url}/divide")
        assert ok.status_code == 200
        assert failed.status_code == 500
        [error] = receiver.wait_for_events(1)
        transactions = receiver.wait_for_transactions(2)
        time.sleep(0.5)

    assert len(receiver.events()) == 1, "the ZeroDivisionError must be reported exactly once"
    assert len(receiver.transactions()) == 2
    assert_relay_valid(error)
    exception = error["exception"]["values"][-1]
    assert exception["type"] == "ZeroDivisionError"
    assert exception["mechanism"] == {"type": "asgi", "handled": False}
    frame = _last_frame(error)
    assert frame["function"] == "share_per_item"
    assert "total / items" in frame["context_line"]
    assert frame["in_app"] is True
    assert frame["pre_context"], "source lines around the failing line are sent"

    by_name = {transaction["transaction"]: transaction for transaction in transactions}
    for transaction in transactions:
        assert_relay_valid(transaction)
    failed_transaction = by_name["/divide"]
    assert failed_transaction["contexts"]["trace"]["op"] == "http.server"
    assert failed_transaction["contexts"]["trace"]["status"] == "internal_error"
    assert by_name["/"]["contexts"]["trace"]["status"] == "ok"
    assert error["contexts"]["trace"]["trace_id"] == failed_transaction["contexts"]["trace"]["trace_id"]
    assert error["contexts"]["trace"]["span_id"] == failed_transaction["contexts"]["trace"]["span_id"]
    assert error["request"]["method"] == "GET"
    assert error["request"]["url"].endswith("/divide")
    assert error["transaction"] == "/divide"


def test_errors_are_reported_when_the_trace_is_not_sampled(receiver: EnvelopeReceiver) -> None:
    env = {"SENTRY_DSN": receiver.dsn, "OTEL_TRACES_SAMPLER": "always_off"}
    with run_app("seed_app:app", env=env, app_dir=EXAMPLES) as server:
        assert httpx.get(f"{server.url}/divide").status_code == 500
        assert httpx.get(f"{server.url}/").status_code == 200
        [error] = receiver.wait_for_events(1)
        time.sleep(0.5)
    assert receiver.transactions() == []
    assert_relay_valid(error)
    assert _last_frame(error)["function"] == "share_per_item"
    assert len(error["contexts"]["trace"]["trace_id"]) == 32


def test_fields_a_sentry_user_looks_at_agree_with_sentry_sdks_own_middleware() -> None:
    results = {}
    for variant, target in (("bridge", "seed_app:app"), ("sentry", "tests.apps.seed_sentry:app")):
        with EnvelopeReceiver() as receiver:
            env = {"SENTRY_DSN": receiver.dsn}
            if variant == "sentry":
                env["OTEL_SDK_DISABLED"] = "true"
            with run_app(target, env=env, app_dir=EXAMPLES) as server:
                assert httpx.get(f"{server.url}/divide").status_code == 500
                [error] = receiver.wait_for_events(1)
                [transaction] = receiver.wait_for_transactions(1)
            results[variant] = (error, transaction)

    (ours_error, ours_tx), (their_error, their_tx) = results["bridge"], results["sentry"]
    for field in ("type", "value", "mechanism"):
        assert ours_error["exception"]["values"][-1][field] == their_error["exception"]["values"][-1][field]
    for field in ("function", "lineno", "context_line", "in_app"):
        assert _last_frame(ours_error)[field] == _last_frame(their_error)[field]
    assert ours_error["request"]["method"] == their_error["request"]["method"]
    ours_url, their_url = urlsplit(ours_error["request"]["url"]), urlsplit(their_error["request"]["url"])
    assert (ours_url.scheme, ours_url.hostname, ours_url.path) == (
        their_url.scheme,
        their_url.hostname,
        their_url.path,
    )
    for field in ("op", "status"):
        assert ours_tx["contexts"]["trace"][field] == their_tx["contexts"]["trace"][field]
    # Deliberate difference: with no route, sentry-sdk names the transaction by the full URL including the
    # server's host and port; we use the path, which is what the URL source means and keeps names stable
    # across hosts.
    assert their_tx["transaction"].endswith("/divide")
    assert ours_tx["transaction"] == "/divide"
    assert ours_tx["transaction_info"]["source"] == their_tx["transaction_info"]["source"] == "url"
