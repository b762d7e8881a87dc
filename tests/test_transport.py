"""``ConcurrentHttpTransport`` against a real loopback endpoint, through a real sentry-sdk client."""

from __future__ import annotations

import importlib
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sentry_sdk

from otel_bridge._deliver import sender as sender_module
from otel_bridge._deliver.sender import SocketSender
from otel_bridge.transport import ConcurrentHttpTransport, ConcurrentWorker
from tests.receiver import EnvelopeReceiver

pytestmark = pytest.mark.timeout(60)


@contextmanager
def client_for(receiver: EnvelopeReceiver, **options: Any) -> Iterator[sentry_sdk.Client]:
    options.setdefault("transport", ConcurrentHttpTransport)
    options.setdefault("transport_queue_size", 1000)
    client = sentry_sdk.Client(dsn=receiver.dsn, **options)
    try:
        with sentry_sdk.new_scope() as scope:
            scope.set_client(client)
            yield client
    finally:
        client.close(timeout=2)


def transport_of(client: sentry_sdk.Client) -> ConcurrentHttpTransport:
    transport = client.transport
    assert isinstance(transport, ConcurrentHttpTransport)
    return transport


def sender_of(client: sentry_sdk.Client) -> SocketSender:
    sender = transport_of(client)._worker
    assert isinstance(sender, SocketSender)
    return sender


def sending_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("otel_bridge.")]


def request_count(receiver: EnvelopeReceiver) -> int:
    # without the deep copies of ``receiver.requests``: the predicate runs under the receiver's lock
    return len(receiver._requests)


def discarded(receiver: EnvelopeReceiver) -> Counter[tuple[str, str]]:
    totals: Counter[tuple[str, str]] = Counter()
    for report in receiver.client_reports():
        for entry in report.get("discarded_events", []):
            totals[(entry["reason"], entry["category"])] += entry["quantity"]
    return totals


def accepted_discards(receiver: EnvelopeReceiver) -> Counter[tuple[str, str]]:
    """Client reports in envelopes the endpoint accepted (a report answered 5xx is sent again)."""
    totals: Counter[tuple[str, str]] = Counter()
    for request in receiver.requests:
        if request.status != 200 or request.envelope is None:
            continue
        for item in request.envelope.items_of("client_report"):
            for entry in item.json().get("discarded_events", []):
                totals[(entry["reason"], entry["category"])] += entry["quantity"]
    return totals


def send_transaction(name: str) -> None:
    with sentry_sdk.start_transaction(name=name, op="test"):
        pass


def test_delivers_everything_concurrently_over_kept_alive_connections(receiver: EnvelopeReceiver) -> None:
    receiver.respond_with(delay=0.02)
    with client_for(receiver) as client:
        started = time.monotonic()
        for number in range(500):
            sentry_sdk.capture_message(f"message {number}")
        client.flush(timeout=10)
        elapsed = time.monotonic() - started

        # one sender at 20 ms an envelope would need 10 s
        assert elapsed < 5, f"500 envelopes took {elapsed:.1f} s"
        messages = sorted(event["message"] for event in receiver.events())
        assert messages == sorted(f"message {number}" for number in range(500))
        assert not discarded(receiver)
        assert 1 < receiver.connections_accepted <= ConcurrentHttpTransport.max_connections
        assert sending_threads().count("otel_bridge.sender") == 1


@pytest.mark.parametrize("options", [{"keep_alive": True}, {"socket_options": []}, {}])
def test_connections_keep_tcp_nodelay(receiver: EnvelopeReceiver, options: dict[str, Any]) -> None:
    with client_for(receiver, **options) as client:
        sentry_sdk.capture_message("hello")
        client.flush(timeout=5)
        connection = sender_of(client)._idle[0]
        assert connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def transaction(name: str) -> dict[str, Any]:
    """A minimal transaction event, as sentry_sdk.capture_event takes it."""
    now = time.time()
    return {
        "type": "transaction",
        "transaction": name,
        "start_timestamp": now - 0.01,
        "timestamp": now,
        "contexts": {"trace": {"trace_id": uuid.uuid4().hex, "span_id": uuid.uuid4().hex[:16], "op": "http"}},
        "spans": [],
    }


def test_queue_is_bounded_and_overflow_is_reported_once_the_endpoint_is_back(
    receiver: EnvelopeReceiver,
) -> None:
    threads, bound, captured = 4, 20, 300
    receiver.respond_with(delay=5.0)
    with client_for(
        receiver, transport=ConcurrentHttpTransport.with_max_connections(threads), transport_queue_size=bound
    ) as client:
        for number in range(threads):
            sentry_sdk.capture_event(transaction(f"request {number}"))
        # every connection now waits for its answer
        assert receiver.wait_for(lambda r: request_count(r) >= threads, timeout=5)
        for number in range(threads, captured):
            sentry_sdk.capture_event(transaction(f"request {number}"))
        assert sender_of(client).pending() == threads + bound
        receiver.respond_with()

        client.flush(timeout=15)

        assert len(receiver.transactions()) == threads + bound
        lost = captured - threads - bound
        assert discarded(receiver) == {
            ("queue_overflow", "transaction"): lost,
            ("queue_overflow", "span"): lost,
        }
        assert receiver.connections_accepted == threads


def test_envelopes_that_failed_while_the_endpoint_was_down_arrive_once_it_is_back(
    receiver: EnvelopeReceiver,
) -> None:
    receiver.respond_with(status=503)
    with client_for(receiver) as client:
        for number in range(5):
            sentry_sdk.capture_message(f"kept {number}")
        assert receiver.wait_for(lambda r: request_count(r) >= 5, timeout=5)
        receiver.respond_with()
        client.flush(timeout=10)
        assert sender_of(client).pending() == 0
    accepted = [
        item.json()
        for request in receiver.requests
        if request.status == 200 and request.envelope is not None
        for item in request.envelope.items_of("event")
    ]
    assert sorted(event["message"] for event in accepted) == [f"kept {n}" for n in range(5)]
    assert ("network_error", "error") not in accepted_discards(receiver)


def test_envelopes_given_up_after_the_last_attempt_are_reported_once_it_is_back(
    receiver: EnvelopeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sender_module, "RETRY_ATTEMPTS", 3)
    monkeypatch.setattr(sender_module, "RETRY_FIRST_DELAY", 0.05)
    receiver.respond_with(status=503)
    with client_for(receiver) as client:
        for number in range(5):
            sentry_sdk.capture_message(f"lost {number}")
        client.flush(timeout=5)
        assert request_count(receiver) >= 5 * 3, "each envelope was tried three times"
        # the report went out too, and failed like the rest
        assert accepted_discards(receiver) == {}

        receiver.clear()
        receiver.respond_with()
        sentry_sdk.capture_message("back")
        client.flush(timeout=5)

        assert [event["message"] for event in receiver.events()] == ["back"]
        assert accepted_discards(receiver) == {("network_error", "error"): 5}


def test_a_connection_dropped_by_the_other_side_is_tried_once_more(receiver: EnvelopeReceiver) -> None:
    with client_for(receiver) as client:
        sentry_sdk.capture_message("warm up the kept-alive connection")
        client.flush(timeout=5)
        receiver.respond_with(raw=b"", raw_times=1)
        sentry_sdk.capture_message("survives a reset")
        client.flush(timeout=5)
        sentry_sdk.capture_message("after")
        client.flush(timeout=5)
    messages = [event["message"] for event in receiver.events()]
    assert "survives a reset" in messages
    assert ("network_error", "error") not in discarded(receiver)


def test_rate_limited_category_stops_while_others_go_on(
    receiver: EnvelopeReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    threads = 8
    limited = {"Retry-After": "60", "X-Sentry-Rate-Limits": "60:transaction:organization"}
    caplog.set_level(logging.WARNING, logger="otel_bridge")
    with client_for(
        receiver, transport=ConcurrentHttpTransport.with_max_connections(threads), traces_sample_rate=1.0
    ) as client:
        receiver.respond_with(status=429, headers=limited, delay=0.02)
        for number in range(100):
            send_transaction(f"before {number}")
        client.flush(timeout=10)
        # only those already on the wire when the first 429 came back
        sent = len(receiver.transactions())
        assert 1 <= sent <= threads
        assert discarded(receiver)[("ratelimit_backoff", "transaction")] == 100 - sent

        receiver.clear()
        receiver.respond_with(headers=limited)
        for number in range(50):
            send_transaction(f"after {number}")
            if number % 5 == 0:
                sentry_sdk.capture_message(f"error {number}")
        client.flush(timeout=10)

        assert receiver.transactions() == []
        assert len(receiver.events()) == 10
        assert discarded(receiver)[("ratelimit_backoff", "transaction")] == 50
    warnings = [record for record in caplog.records if record.name == "otel_bridge"]
    assert len(warnings) == 1, [record.getMessage() for record in warnings]
    assert "transaction" in warnings[0].getMessage()


def test_a_longer_limit_is_not_shortened_by_an_answer_that_arrives_later(receiver: EnvelopeReceiver) -> None:
    with client_for(receiver) as client:
        receiver.respond_with(headers={"X-Sentry-Rate-Limits": "600:transaction:organization"})
        sentry_sdk.capture_message("first")
        client.flush(timeout=5)
        receiver.respond_with(headers={"X-Sentry-Rate-Limits": "1:transaction:organization"})
        sentry_sdk.capture_message("second")
        client.flush(timeout=5)

        time.sleep(1.1)
        assert transport_of(client)._check_disabled("transaction")
        assert not transport_of(client)._check_disabled("error")


def test_flush_returns_once_everything_is_sent(receiver: EnvelopeReceiver) -> None:
    receiver.respond_with(delay=0.3)
    with client_for(receiver) as client:
        for number in range(40):
            sentry_sdk.capture_message(f"message {number}")
        started = time.monotonic()
        client.flush(timeout=5)
        waited = time.monotonic() - started

        assert 0.25 < waited < 4
        assert sender_of(client).pending() == 0
        assert len(receiver.events()) == 40

        receiver.respond_with(delay=1.0)
        sentry_sdk.capture_message("slow")
        started = time.monotonic()
        client.flush(timeout=0.3)
        assert time.monotonic() - started < 0.8
        assert sender_of(client).pending() >= 1


def test_a_forked_child_sends_on_its_own_threads_and_connections(receiver: EnvelopeReceiver) -> None:
    with client_for(receiver) as client:
        sentry_sdk.capture_message("parent before fork")
        client.flush(timeout=5)
        parent_pool = transport_of(client)._pool
        assert sender_of(client).is_alive

        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                worker = sender_of(client)
                fresh = not worker.is_alive and transport_of(client)._pool is not parent_pool
                sentry_sdk.capture_message("from the child")
                client.flush(timeout=5)
                code = 0 if fresh and worker.pending() == 0 and worker.is_alive else 2
            finally:
                os._exit(code)

        deadline = time.monotonic() + 15
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("the forked child did not finish")
            time.sleep(0.02)
        assert os.waitstatus_to_exitcode(status) == 0

        sentry_sdk.capture_message("parent after fork")
        client.flush(timeout=5)
        messages = sorted(event["message"] for event in receiver.events())
        assert messages == ["from the child", "parent after fork", "parent before fork"]


@contextmanager
def client_through_proxy(receiver: EnvelopeReceiver) -> Iterator[Any]:
    """A current client whose envelopes go through an HTTP proxy: the receiver doubles as the proxy, and is
    sent the absolute URL of a host that does not exist. Closed after."""
    dsn = f"http://{receiver.key}@sentry.invalid/{receiver.project_id}"
    client = sentry_sdk.Client(
        dsn=dsn, transport=ConcurrentHttpTransport, http_proxy=receiver.url, transport_queue_size=100
    )
    try:
        with sentry_sdk.new_scope() as scope:
            scope.set_client(client)
            assert isinstance(transport_of(client)._worker, ConcurrentWorker)
            yield client
    finally:
        client.close(timeout=2)


def test_through_a_proxy_urllib3_sends_from_threads(receiver: EnvelopeReceiver) -> None:
    with client_through_proxy(receiver) as client:
        for number in range(20):
            sentry_sdk.capture_message(f"via proxy {number}")
        client.flush(timeout=10)
    assert sorted(event["message"] for event in receiver.events()) == sorted(
        f"via proxy {number}" for number in range(20)
    )


def _urllib3_instrumentation() -> Any:
    """contrib's urllib3 instrumentation, fetched at test time: as a dependency of the test extra it would
    hold the whole contrib line back (its newest release can trail the others' by a patch)."""
    from tests.upstream.fetch import Unavailable, unpacked_wheel

    try:
        path = str(
            unpacked_wheel("opentelemetry-instrumentation-urllib3", alongside="opentelemetry-instrumentation")
        )
    except Unavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"cannot check the proxy path against urllib3's instrumentation: {exc}")
        pytest.skip(f"needs {exc}")
    if path not in sys.path:
        sys.path.append(path)
    return importlib.import_module("opentelemetry.instrumentation.urllib3")


def test_the_proxy_paths_posts_are_not_traced_while_the_apps_own_urllib3_calls_are(
    receiver: EnvelopeReceiver,
) -> None:
    """With contrib's urllib3 instrumentation installed, the sending threads' POSTs would otherwise each be
    a span of the app's, sent to every backend (and through the bridge to Sentry, one more envelope each)."""
    urllib3_instrumentation = _urllib3_instrumentation()
    import urllib3
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = urllib3_instrumentation.URLLib3Instrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with client_through_proxy(receiver) as client:
            for number in range(5):
                sentry_sdk.capture_message(f"via proxy {number}")
            client.flush(timeout=10)
            # the app's own call, on its own thread
            urllib3.PoolManager().request("GET", f"{receiver.url}/health")
    finally:
        instrumentor.uninstrument()
    assert len(receiver.events()) == 5, "the POSTs went out through the proxy"
    methods = [
        span.attributes.get("http.request.method", span.attributes.get("http.method"))
        for span in exporter.get_finished_spans()
    ]
    assert methods == ["GET"], methods


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    try:
        command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        command += ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
        subprocess.run([*command, "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"needs the openssl command to make a test certificate: {error}")
    return cert, key


def test_https_is_verified_and_kept_alive(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    with EnvelopeReceiver(tls=server_side) as receiver:
        with client_for(receiver, ca_certs=cert) as client:
            for number in range(30):
                sentry_sdk.capture_message(f"over tls {number}")
            client.flush(timeout=10)
            assert len(receiver.events()) == 30
            assert receiver.connections_accepted <= ConcurrentHttpTransport.max_connections
            assert not discarded(receiver)

        # a certificate nobody vouches for: nothing goes out, the loss is counted
        with client_for(receiver) as client:
            receiver.clear()
            sentry_sdk.capture_message("unverified")
            client.flush(timeout=5)
            assert receiver.events() == []
            assert transport_of(client)._discarded_events[("error", "network_error")] == 1


def test_an_answer_that_never_comes_is_given_up_after_the_timeout(receiver: EnvelopeReceiver) -> None:
    impatient = type("Impatient", (ConcurrentHttpTransport,), {"TIMEOUT": 0.5})
    receiver.respond_with(delay=3.0)
    with client_for(receiver, transport=impatient) as client:
        started = time.monotonic()
        sentry_sdk.capture_message("too slow")
        client.flush(timeout=2.5)
        assert time.monotonic() - started < 2
        assert sender_of(client).pending() == 0
        assert transport_of(client)._discarded_events[("error", "network_error")] == 1

        receiver.respond_with()
        sentry_sdk.capture_message("fast again")
        client.flush(timeout=5)
    assert "fast again" in [event["message"] for event in receiver.events()]
