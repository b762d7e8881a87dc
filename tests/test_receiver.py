"""The test oracles themselves: the envelope receiver, the Relay check and the server runner."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import signal
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import httpx
import pytest
import sentry_sdk

from tests.apps.hello import SHUTDOWN_MARKER
from tests.receiver import EnvelopeParseError, EnvelopeReceiver, parse_envelope
from tests.relay import assert_relay_valid
from tests.servers import SERVERS, ServerName, ServerStartError, child_environment, run_app


@contextlib.contextmanager
def sdk_client(dsn: str, **options: Any) -> Iterator[sentry_sdk.Client]:
    """A sentry-sdk client bound to a fresh scope only, closed afterwards; the global client is untouched."""
    client = sentry_sdk.Client(
        dsn=dsn, default_integrations=False, auto_enabling_integrations=False, **options
    )
    try:
        with sentry_sdk.isolation_scope() as isolation, sentry_sdk.new_scope() as scope:
            # A fresh trace: sentry-sdk caches the sampling context it derived from whatever client was
            # current when an earlier test first needed it.
            isolation.set_new_propagation_context()
            scope.set_client(client)
            yield client
    finally:
        client.close(timeout=5)


def auth_header(key: str) -> dict[str, str]:
    return {"X-Sentry-Auth": f"Sentry sentry_version=7, sentry_key={key}, sentry_client=raw/1.0"}


def raw_envelope(event: dict[str, Any], item_type: str = "event") -> bytes:
    payload = json.dumps(event).encode()
    header = json.dumps({"type": item_type, "length": len(payload)}).encode()
    return b"\n".join([json.dumps({"event_id": event["event_id"]}).encode(), header, payload]) + b"\n"


def raise_and_capture() -> Optional[str]:
    settings: dict[str, str] = {}
    try:
        settings["missing"]
    except KeyError:
        return sentry_sdk.capture_exception()
    return None


def test_sentry_sdk_error_and_transaction_arrive_parsed(receiver: EnvelopeReceiver) -> None:
    with sdk_client(receiver.dsn, traces_sample_rate=1.0, release="r1", environment="test") as client:
        event_id = raise_and_capture()
        with sentry_sdk.start_transaction(name="GET /things", op="http"), sentry_sdk.start_span(op="db"):
            pass
        client.flush(timeout=5)

    (event,) = receiver.wait_for_events(1)
    (transaction,) = receiver.wait_for_transactions(1)
    assert not sentry_sdk.get_client().is_active()

    assert event["event_id"] == event_id
    assert event["exception"]["values"][-1]["type"] == "KeyError"
    assert transaction["transaction"] == "GET /things"
    assert [span["op"] for span in transaction["spans"]] == ["db"]

    requests = receiver.requests
    assert [r.status for r in requests] == [200, 200]
    for request in requests:
        assert request.path == "/api/1/envelope/"
        assert request.headers["content-encoding"] == "gzip"
        assert request.raw_body.startswith(b'{"event_id":')
        assert request.authorized
        assert request.auth["sentry_key"] == receiver.key
        assert request.auth["sentry_version"] == "7"
        assert request.auth["sentry_client"].startswith("sentry.python/")

    assert event_id is not None
    envelope = receiver.envelope_of(event_id)
    assert envelope is not None
    assert envelope.headers["event_id"] == event_id
    assert envelope.headers["trace"]["public_key"] == receiver.key
    assert envelope.headers["trace"]["release"] == "r1"
    tx_envelope = receiver.envelope_of(transaction["event_id"])
    assert tx_envelope is not None
    assert tx_envelope.headers["trace"]["transaction"] == "GET /things"
    assert tx_envelope.headers["trace"]["trace_id"] == transaction["contexts"]["trace"]["trace_id"]
    assert receiver.envelope_of(uuid.uuid4().hex) is None

    assert_relay_valid(event)
    normalized = assert_relay_valid(transaction)
    assert normalized["type"] == "transaction"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"type": "transaction"}, "start_timestamp hard-required"),
        ({"timestamp": "not a time", "level": 123}, "'name': 'level'"),
        ({"event_id": uuid.uuid4().hex, "not_a_field": 1}, "invalid_attribute"),
    ],
)
def test_relay_check_rejects_broken_events(event: dict[str, Any], expected: str) -> None:
    with pytest.raises(AssertionError) as info:
        assert_relay_valid(event)
    assert expected in str(info.value).replace('"', "'")
    assert "stacktrace:" not in str(info.value)


def test_rate_limit_stops_sentry_sdk_sending_errors(receiver: EnvelopeReceiver) -> None:
    receiver.respond_with(429, {"X-Sentry-Rate-Limits": "60:error:organization"})
    with sdk_client(receiver.dsn) as client:
        for i in range(3):
            sentry_sdk.capture_message(f"message {i}")
            client.flush(timeout=5)

    with_events = [r for r in receiver.requests if r.envelope and r.envelope.items_of("event")]
    assert len(with_events) == 1, receiver.summary()
    assert with_events[0].status == 429
    discarded = [
        entry
        for report in receiver.client_reports()
        for entry in report.get("discarded_events", [])
        if entry["reason"] == "ratelimit_backoff" and entry["category"] == "error"
    ]
    assert sum(entry["quantity"] for entry in discarded) == 2

    receiver.respond_with()
    event_id = uuid.uuid4().hex
    envelope_url = f"{receiver.url}/api/1/envelope/"
    body = raw_envelope({"event_id": event_id})
    assert httpx.post(envelope_url, content=body, headers=auth_header("k")).status_code == 401
    response = httpx.post(envelope_url, content=body, headers=auth_header(receiver.key))
    assert response.status_code == 200
    assert response.json() == {"id": event_id}


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "identity"])
def test_raw_envelopes_and_store_requests(receiver: EnvelopeReceiver, encoding: str) -> None:
    body = raw_envelope({"event_id": uuid.uuid4().hex, "message": "a\nb"})
    compressors: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "identity": bytes,
    }
    compressed = compressors[encoding](body)
    auth = auth_header(receiver.key)
    headers = {**auth, "Content-Encoding": encoding}
    store_event = {"event_id": uuid.uuid4().hex, "type": "transaction", "transaction": "/store"}
    with httpx.Client(base_url=receiver.url) as http:
        assert http.post("/api/1/envelope/", content=compressed, headers=headers).status_code == 200
        assert http.post(f"/api/1/store/?sentry_key={receiver.key}", json=store_event).status_code == 200
        assert http.post("/api/1/envelope/", content=body).status_code == 401
        assert http.post("/api/1/envelope/", content=b"{}\n\n", headers=auth).status_code == 400
        assert http.get("/elsewhere").status_code == 404

    events = receiver.events()
    assert [e["message"] for e in events] == ["a\nb"]
    assert receiver.transactions() == [store_event]
    statuses = [(r.status, r.authorized) for r in receiver.requests]
    assert statuses == [(200, True), (200, True), (401, False), (400, True), (404, False)]
    assert receiver.requests[0].raw_body == body
    assert receiver.requests[1].auth == {"sentry_key": receiver.key}
    assert "unexpected end" in (receiver.requests[3].error or "")
    receiver.clear()
    assert receiver.requests == []


def test_envelope_parser_follows_relay_rules() -> None:
    header = b'{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}'
    assert parse_envelope(header).items == []
    assert parse_envelope(header + b"\n").items == []

    envelope = parse_envelope(
        header + b'\n{"type":"attachment","length":10}\n\xef\xbb\xbfHello\r\n\n'
        b'{"type":"event"}\n{"message":"hi"}\n{"type":"attachment"}\nhelloworld'
    )
    assert [(i.type, i.payload) for i in envelope.items] == [
        ("attachment", b"\xef\xbb\xbfHello\r\n"),
        ("event", b'{"message":"hi"}'),
        ("attachment", b"helloworld"),
    ]
    assert envelope.items[1].json() == {"message": "hi"}
    assert envelope.items[0].json() is None
    assert [i.payload for i in parse_envelope(header + b'\n{"type":"attachment"}').items] == [b""]

    for broken in [
        b"",
        header + b" x\n",
        header + b'\n{"type":"event","length":50}\n{}\n',
        header + b'\n{"type":"event","length":1}\n{}\n',
        header + b'\n{"type":"event"}\n{}\n\n',
        header + b'\n{"length":2}\n{}\n',
    ]:
        with pytest.raises(EnvelopeParseError):
            parse_envelope(broken)


def test_waiting_reports_what_arrived(receiver: EnvelopeReceiver) -> None:
    with sdk_client(receiver.dsn) as client:
        sentry_sdk.capture_message("only an error")
        client.flush(timeout=5)
    assert receiver.wait_for(lambda r: len(r.events()) == 1, timeout=5)
    started = time.monotonic()
    with pytest.raises(AssertionError) as info:
        receiver.wait_for_transactions(1, timeout=0.3)
    assert time.monotonic() - started < 2
    assert "'event': 1" in str(info.value)
    assert "-> 200" in str(info.value)


def test_child_environment_drops_sentry_and_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRY_DSN", "http://x@example.invalid/1")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "leak")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = child_environment({"SENTRY_ENVIRONMENT": "test"}, app_dir="/apps")
    assert "SENTRY_DSN" not in env and "OTEL_SERVICE_NAME" not in env
    assert env["SENTRY_ENVIRONMENT"] == "test"
    assert env["PYTHONPATH"].split(":")[1:] == ["/apps", "/elsewhere"]
    assert env["PYTHONUNBUFFERED"] == "1"


@pytest.mark.parametrize("server", SERVERS)
def test_run_app_serves_and_stops(server: ServerName) -> None:
    with run_app("tests.apps.hello:app", server=server) as running:
        response = httpx.get(f"{running.url}/anything", timeout=5)
        assert response.status_code == 200
        assert response.text == "hello"
        started = time.monotonic()
        code = running.stop()
        assert time.monotonic() - started < 5
        assert code in (0, -signal.SIGTERM), running.output()
        assert not running.killed
        assert running.stop() == code
    assert SHUTDOWN_MARKER in running.output()
    assert "Traceback" not in running.output()


@pytest.mark.parametrize("server", SERVERS)
def test_run_app_reports_startup_failure(server: ServerName) -> None:
    with pytest.raises(ServerStartError) as info, run_app("tests.apps.no_such_module:app", server=server):
        pass
    assert "no_such_module" in str(info.value)


def _granian_worker_pid(output: str) -> int:
    match = re.search(r"Spawning worker-1 with PID: (\d+)", output)
    assert match, output
    return int(match.group(1))


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers signal 0; it has exited all the same.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")
    return False


@pytest.mark.parametrize("graceful", [True, False])
def test_granian_worker_does_not_outlive_stop(graceful: bool) -> None:
    """granian serves from a worker process: SIGTERM stops it via the main process, SIGKILL via the group."""
    with run_app("tests.apps.hello:app", server="granian") as running:
        assert httpx.get(f"{running.url}/", timeout=5).text == "hello"
        worker = _granian_worker_pid(running.output())
        if graceful:
            running.stop()
        else:
            running.stop(timeout=0)
    assert running.killed is not graceful
    deadline = time.monotonic() + 5
    while not _process_gone(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _process_gone(worker), running.output()


def test_respond_with_custom_answer_and_delay(receiver: EnvelopeReceiver) -> None:
    receiver.respond_with(500, {"Retry-After": "1"}, body=b'{"detail":"boom"}', delay=0.3)
    body = raw_envelope({"event_id": uuid.uuid4().hex})
    started = time.monotonic()
    response = httpx.post(f"{receiver.url}/api/1/envelope/", content=body, headers=auth_header(receiver.key))
    assert time.monotonic() - started >= 0.3
    assert (response.status_code, response.headers["retry-after"]) == (500, "1")
    assert response.text == '{"detail":"boom"}'
    assert [r.status for r in receiver.requests] == [500]
    assert len(receiver.events()) == 1
