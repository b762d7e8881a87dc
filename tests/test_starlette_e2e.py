"""A Starlette app under real uvicorn (and hypercorn) with the bridge, reporting to a loopback endpoint."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.servers import RunningServer, run_app

SECRETS = ("cookie-secret-4711", "bearer-secret-4712", "proxy-secret-4713", "apikey-secret-4714")


@pytest.fixture
def shop(receiver: EnvelopeReceiver) -> Iterator[RunningServer]:
    env = {"SENTRY_DSN": receiver.dsn, "OTEL_PYTHON_ASGI_EXCLUDED_URLS": "healthz"}
    with run_app("tests.apps.shop_bridge:app", env=env) as server:
        yield server


def _by_name(transactions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {transaction["transaction"]: transaction for transaction in transactions}


def test_transactions_are_named_by_route_and_carry_their_own_tags(
    shop: RunningServer, receiver: EnvelopeReceiver
) -> None:
    assert httpx.get(f"{shop.url}/items/7?color=red").status_code == 200
    assert httpx.get(f"{shop.url}/nowhere").status_code == 404
    transactions = receiver.wait_for_transactions(2)
    for transaction in transactions:
        assert_relay_valid(transaction)
    by_name = _by_name(transactions)

    item = by_name["tests.apps.shop.item_detail"]
    assert item["transaction_info"]["source"] == "component"
    assert item["contexts"]["trace"]["op"] == "http.server"
    assert item["contexts"]["trace"]["status"] == "ok"
    assert item["tags"]["item"] == "7"
    assert item["request"]["method"] == "GET"
    assert item["request"]["query_string"] == "color=red"
    assert item["request"]["url"].endswith("/items/7")
    [child] = item["spans"]
    assert child["description"] == "load item"
    assert child["parent_span_id"] == item["contexts"]["trace"]["span_id"]

    missing = by_name["/nowhere"]
    assert missing["contexts"]["trace"]["status"] == "not_found"
    assert missing["transaction_info"]["source"] == "url"
    assert "item" not in missing.get("tags", {})


def test_url_style_names_by_route_template(receiver: EnvelopeReceiver) -> None:
    env = {"SENTRY_DSN": receiver.dsn, "TEST_TRANSACTION_STYLE": "url"}
    with run_app("tests.apps.shop_bridge:app", env=env) as server:
        assert httpx.get(f"{server.url}/items/12").status_code == 200
        [transaction] = receiver.wait_for_transactions(1)
    assert transaction["transaction"] == "/items/{item_id}"
    assert transaction["transaction_info"]["source"] == "route"
    envelope = receiver.envelope_of(transaction["event_id"])
    assert envelope is not None
    assert envelope.headers["trace"]["transaction"] == "/items/{item_id}"


async def _fail_concurrently(base_url: str, count: int) -> list[int]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        responses = await asyncio.gather(*(client.get(f"/checkout/{index}") for index in range(count)))
    return [response.status_code for response in responses]


def test_concurrent_failures_each_report_their_own_tag_and_user(
    shop: RunningServer, receiver: EnvelopeReceiver
) -> None:
    count = 40
    statuses = asyncio.run(_fail_concurrently(shop.url, count))
    assert statuses == [500] * count
    errors = receiver.wait_for_events(count, timeout=20)
    transactions = receiver.wait_for_transactions(count, timeout=20)
    time.sleep(0.5)
    assert len(receiver.events()) == count, (
        "one event per exception, also with sentry-sdk's Starlette integration"
    )

    for error in errors:
        assert_relay_valid(error)
        order = error["exception"]["values"][-1]["value"].rsplit(" ", 1)[-1]
        assert error["tags"]["order"] == order
        assert error["exception"]["values"][-1]["type"] == "PaymentDeclined"
        assert error["exception"]["values"][-1]["stacktrace"]["frames"][-1]["function"] == "charge"
        assert error["request"]["url"].endswith(f"/checkout/{order}")
        assert error["user"] == {"id": "[Filtered]", "username": "[Filtered]"}, (
            "user ids are PII, off by default"
        )
    trace_ids = {error["contexts"]["trace"]["trace_id"] for error in errors}
    assert len(trace_ids) == count
    for transaction in transactions:
        assert_relay_valid(transaction)
        assert transaction["contexts"]["trace"]["status"] == "internal_error"
        assert transaction["request"]["url"].endswith(f"/checkout/{transaction['tags']['order']}")
    assert {transaction["contexts"]["trace"]["trace_id"] for transaction in transactions} == trace_ids


def test_websocket_transaction(shop: RunningServer, receiver: EnvelopeReceiver) -> None:
    with connect(f"ws://127.0.0.1:{shop.port}/ws") as websocket:
        websocket.send("hi")
        assert websocket.recv() == "echo: hi"
    [transaction] = receiver.wait_for_transactions(1)
    assert_relay_valid(transaction)
    assert transaction["contexts"]["trace"]["op"] == "websocket.server"
    assert transaction["transaction"] == "tests.apps.shop.echo"


def test_excluded_urls_make_no_transaction(shop: RunningServer, receiver: EnvelopeReceiver) -> None:
    assert httpx.get(f"{shop.url}/healthz").status_code == 200
    assert httpx.get(f"{shop.url}/items/1").status_code == 200
    transactions = receiver.wait_for_transactions(1)
    time.sleep(0.5)
    assert [transaction["transaction"] for transaction in receiver.transactions()] == [
        transaction["transaction"] for transaction in transactions
    ]
    assert "/healthz" not in {transaction["transaction"] for transaction in receiver.transactions()}


def test_cookies_and_credentials_never_leave_by_default(
    shop: RunningServer, receiver: EnvelopeReceiver
) -> None:
    headers = {
        "Cookie": f"session={SECRETS[0]}",
        "Authorization": f"Bearer {SECRETS[1]}",
        "Proxy-Authorization": f"Basic {SECRETS[2]}",
        "X-Api-Key": SECRETS[3],
    }
    assert httpx.get(f"{shop.url}/items/3", headers=headers).status_code == 200
    assert httpx.get(f"{shop.url}/checkout/3", headers=headers).status_code == 500
    receiver.wait_for_events(1)
    receiver.wait_for_transactions(2)
    raw = b"".join(request.raw_body for request in receiver.requests)
    for secret in SECRETS:
        assert secret.encode() not in raw
    error = receiver.events()[0]
    assert error["request"]["headers"]["cookie"] == "[Filtered]"
    assert error["request"]["headers"]["authorization"] == "[Filtered]"
    assert "env" not in error["request"], "the client IP is PII, off by default"


def test_hypercorn_serves_the_same_app(receiver: EnvelopeReceiver) -> None:
    with run_app(
        "tests.apps.shop_bridge:app", env={"SENTRY_DSN": receiver.dsn}, server="hypercorn"
    ) as server:
        assert httpx.get(f"{server.url}/items/5").status_code == 200
        assert httpx.get(f"{server.url}/checkout/5").status_code == 500
        [error] = receiver.wait_for_events(1)
        transactions = receiver.wait_for_transactions(2)
    assert_relay_valid(error)
    assert error["tags"]["order"] == "5"
    assert {transaction["transaction"] for transaction in transactions} == {
        "tests.apps.shop.item_detail",
        "tests.apps.shop.checkout",
    }


def test_fields_agree_with_sentry_sdks_own_middleware() -> None:
    seen: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {}
    for variant, target in (
        ("bridge", "tests.apps.shop_bridge:app"),
        ("sentry", "tests.apps.shop_sentry:app"),
    ):
        with EnvelopeReceiver() as receiver, run_app(target, env={"SENTRY_DSN": receiver.dsn}) as server:
            assert httpx.get(f"{server.url}/items/9?x=1").status_code == 200
            assert httpx.get(f"{server.url}/checkout/9").status_code == 500
            [error] = receiver.wait_for_events(1)
            transactions = receiver.wait_for_transactions(2)
        seen[variant] = (error, _by_name(transactions))

    (ours_error, ours), (their_error, theirs) = seen["bridge"], seen["sentry"]
    assert set(ours) == set(theirs), "same transaction names"
    for name in ours:
        for field in ("op", "status"):
            assert ours[name]["contexts"]["trace"][field] == theirs[name]["contexts"]["trace"][field], (
                name,
                field,
            )
        assert ours[name]["transaction_info"] == theirs[name]["transaction_info"]
        assert ours[name]["request"]["method"] == theirs[name]["request"]["method"]
        assert ours[name]["request"].get("query_string") == theirs[name]["request"].get("query_string")
    ours_exception, their_exception = (
        ours_error["exception"]["values"][-1],
        their_error["exception"]["values"][-1],
    )
    for field in ("type", "value", "mechanism"):
        assert ours_exception[field] == their_exception[field]
    assert (
        ours_exception["stacktrace"]["frames"][-1]["function"]
        == their_exception["stacktrace"]["frames"][-1]["function"]
    )
    assert ours_error["tags"]["order"] == their_error["tags"]["order"]
    assert ours_error["transaction"] == their_error["transaction"]
    assert json.dumps(ours_error["request"]["headers"], sort_keys=True).count("[Filtered]") == json.dumps(
        their_error["request"]["headers"], sort_keys=True
    ).count("[Filtered]")


def test_adopted_client_with_sentry_integrations_still_gives_one_event_and_one_transaction(
    receiver: EnvelopeReceiver,
) -> None:
    with run_app("tests.apps.shop_adopted:app", env={"SENTRY_DSN": receiver.dsn}) as server:
        assert httpx.get(f"{server.url}/checkout/77").status_code == 500
        assert httpx.get(f"{server.url}/items/77").status_code == 200
        [error] = receiver.wait_for_events(1)
        transactions = receiver.wait_for_transactions(2)
        time.sleep(1.0)
    assert len(receiver.events()) == 1
    assert len(receiver.transactions()) == 2, "sentry-sdk's own tracing must not add a second transaction"
    assert_relay_valid(error)
    assert error["tags"]["order"] == "77"
    by_name = _by_name(transactions)
    assert by_name["tests.apps.shop.checkout"]["tags"]["order"] == "77"
    assert by_name["tests.apps.shop.item_detail"]["tags"]["item"] == "77"
    assert (
        error["contexts"]["trace"]["trace_id"]
        == by_name["tests.apps.shop.checkout"]["contexts"]["trace"]["trace_id"]
    )
