"""Secrets planted everywhere in a request never reach Sentry: not one byte of any request body."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.servers import run_app


def planted(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"


@pytest.fixture
def secrets() -> dict[str, str]:
    names = (
        "cookie_session",
        "cookie_other",
        "authorization",
        "proxy_authorization",
        "x_api_key",
        "query_password",
        "query_token",
        "query_api_key",
    )
    return {name: planted(name) for name in names}


@pytest.fixture
def personal() -> dict[str, str]:
    return {
        "user_id": planted("user"),
        "email": f"{uuid.uuid4().hex}@shop.test",
        "forwarded_for": "203.0.113.77",
        "real_ip": "198.51.100.88",
    }


def send_requests(base_url: str, secrets: dict[str, str], personal: dict[str, str]) -> None:
    headers = {
        "Cookie": (
            f"session={secrets['cookie_session']}; other={secrets['cookie_other']}; "
            f"uid={personal['user_id']}; email={personal['email']}"
        ),
        "Authorization": f"Bearer {secrets['authorization']}",
        "Proxy-Authorization": f"Basic {secrets['proxy_authorization']}",
        "X-Api-Key": secrets["x_api_key"],
        "X-Forwarded-For": personal["forwarded_for"],
        "X-Real-Ip": personal["real_ip"],
    }
    params = {
        "password": secrets["query_password"],
        "token": secrets["query_token"],
        "api_key": secrets["query_api_key"],
        "page": "2",
    }
    with httpx.Client(base_url=base_url, headers=headers, params=params) as client:
        assert client.get("/login/ok").status_code == 200
        assert client.get("/login/fail").status_code == 500


@pytest.fixture
def default_run(
    receiver: EnvelopeReceiver, secrets: dict[str, str], personal: dict[str, str]
) -> Iterator[tuple[bytes, str]]:
    with run_app("tests.apps.secrets_app:app", env={"SENTRY_DSN": receiver.dsn}) as server:
        send_requests(server.url, secrets, personal)
        receiver.wait_for_events(1)
        receiver.wait_for_transactions(2)
        server.stop()
        yield b"".join(request.raw_body for request in receiver.requests), server.output()


def test_no_secret_and_no_personal_data_leaves_by_default(
    default_run: tuple[bytes, str],
    receiver: EnvelopeReceiver,
    secrets: dict[str, str],
    personal: dict[str, str],
) -> None:
    sent, _log = default_run
    for name, value in {**secrets, **personal}.items():
        assert value.encode() not in sent, f"{name} reached Sentry"
    for event in receiver.events() + receiver.transactions():
        assert_relay_valid(event)
    error = receiver.events()[0]
    assert error["request"]["headers"]["cookie"] == "[Filtered]"
    assert error["request"]["query_string"].count("[Filtered]") == 3
    assert "page=2" in error["request"]["query_string"]


def test_the_dsn_key_is_never_logged(default_run: tuple[bytes, str], receiver: EnvelopeReceiver) -> None:
    _sent, log = default_run
    assert "LoginFailed" in log, "the server log is captured (uvicorn logs the exception)"
    assert receiver.key not in log


def test_with_send_default_pii_the_documented_data_appears_and_secrets_still_do_not(
    receiver: EnvelopeReceiver, secrets: dict[str, str], personal: dict[str, str]
) -> None:
    env = {"SENTRY_DSN": receiver.dsn, "TEST_PII": "true"}
    with run_app("tests.apps.secrets_app:app", env=env) as server:
        send_requests(server.url, secrets, personal)
        [error] = receiver.wait_for_events(1)
        receiver.wait_for_transactions(2)
    sent = b"".join(request.raw_body for request in receiver.requests)
    for name, value in secrets.items():
        assert value.encode() not in sent, f"{name} reached Sentry"
    assert error["user"]["id"] == personal["user_id"]
    assert error["user"]["email"] == personal["email"]
    assert error["request"]["env"]["REMOTE_ADDR"] == personal["forwarded_for"]
    assert error["request"]["headers"]["x-real-ip"] == personal["real_ip"]
