"""The framework examples beyond the matrix: URL-style names, sentry-sdk's own integrations left active,
SIGTERM right after the last response, and ``opentelemetry-instrument`` with contrib's framework
instrumentations next to the middleware."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.otlp_receiver import OtlpReceiver
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.servers import SERVERS, ServerName, run_app
from tests.test_frameworks import (
    APP_DIR,
    NO_KEEPALIVE,
    exception_value,
    last_in_app_function,
    module_of,
    path_of,
    settle,
    trace_of,
)
from tests.test_zero_code import run_instrumented

pytestmark = pytest.mark.timeout(120)

PATHS = ("/items/42", "/nowhere", "/boom")
ROUTE_TEMPLATES = {
    "starlette": "/items/{item_id}",
    "fastapi": "/items/{item_id}",
    "quart": "/items/<int:item_id>",
    "litestar": "/items/{item_id}",
    "django": "/items/{item_id}",
    "sanic": "/items/<item_id:int>",
}


def _ask(base_url: str, paths: tuple[str, ...] = PATHS) -> list[int]:
    with httpx.Client(base_url=base_url, timeout=10, limits=NO_KEEPALIVE) as client:
        return [client.get(path).status_code for path in paths]


def _serve_variant(receiver: EnvelopeReceiver, framework: str, variant: str) -> None:
    env = {"EXAMPLE": module_of(framework), "VARIANT": variant, "SENTRY_DSN": receiver.dsn}
    with run_app("tests.apps.example_variant:app", env=env, app_dir=APP_DIR) as running:
        assert _ask(running.url) == [200, 404, 500], running.output()
        settle(receiver, transactions=len(PATHS), events=1)
        running.stop()
    for event in receiver.transactions() + receiver.events():
        assert_relay_valid(event)


@pytest.mark.parametrize("framework", list(ROUTE_TEMPLATES))
def test_url_style_names_by_the_frameworks_route_template(receiver: EnvelopeReceiver, framework: str) -> None:
    _serve_variant(receiver, framework, "url")
    by_path = {path_of(t): t for t in receiver.transactions()}
    item = by_path["/items/42"]
    assert (item["transaction"], item["transaction_info"]["source"]) == (ROUTE_TEMPLATES[framework], "route")
    [error] = receiver.events()
    assert error["transaction"] == by_path["/boom"]["transaction"]
    assert by_path["/boom"]["transaction_info"]["source"] == "route"


@pytest.mark.parametrize("framework", ["starlette", "fastapi", "quart", "litestar", "django", "sanic"])
def test_sentry_sdks_own_integrations_active_still_one_event_and_one_transaction(
    receiver: EnvelopeReceiver, framework: str
) -> None:
    _serve_variant(receiver, framework, "adopted")
    transactions = receiver.transactions()
    assert Counter(path_of(t) for t in transactions) == Counter(PATHS)
    assert all(trace_of(t).get("op") == "http.server" for t in transactions)
    [error] = receiver.events()
    value = exception_value(error, "ZeroDivisionError")
    assert value is not None and last_in_app_function(value) == "compute_total"
    [boom] = [t for t in transactions if path_of(t) == "/boom"]
    assert trace_of(error)["trace_id"] == trace_of(boom)["trace_id"]


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("framework", ["fastapi", "django"])
def test_sigterm_right_after_the_last_response_loses_no_transaction(
    receiver: EnvelopeReceiver, framework: str, server: ServerName
) -> None:
    count = 30
    env = {"SENTRY_DSN": receiver.dsn}
    with run_app(f"{module_of(framework)}:app", env=env, server=server, app_dir=APP_DIR) as running:
        with httpx.Client(base_url=running.url, timeout=10) as client:
            assert {client.get(f"/items/{n}").status_code for n in range(count)} == {200}
        running.stop()
        assert not running.killed, running.output()
    time.sleep(0.3)
    assert len(receiver.transactions()) == count, running.output()


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started


@pytest.mark.parametrize("framework", ["fastapi", "django"])
def test_under_opentelemetry_instrument_one_server_span_per_request(
    receiver: EnvelopeReceiver, otlp: OtlpReceiver, framework: str
) -> None:
    """``opentelemetry-instrument`` loads contrib's FastAPI/Django instrumentations, which start spans of
    their own inside the middleware's: they become INTERNAL children, not a second server span."""
    env = {
        "SENTRY_DSN": receiver.dsn,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp.traces_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "PYTHONPATH": str(Path(APP_DIR).resolve()),
        # contrib's Django instrumentation reads the settings before the app is imported.
        "DJANGO_SETTINGS_MODULE": "django_settings",
    }
    with run_instrumented(f"{module_of(framework)}:app", env) as running:
        assert _ask(running.url) == [200, 404, 500], running.output()
        settle(receiver, transactions=len(PATHS), events=1)
        otlp.wait_for_spans(lambda spans: sum(s["kind"] == "SERVER" for s in spans) >= len(PATHS))
        running.stop()
    servers = [span for span in otlp.spans if span["kind"] == "SERVER"]
    assert len(servers) == len(PATHS), [(s["name"], s["scope"]) for s in otlp.spans]
    framework_spans = [span for span in otlp.spans if span["scope"] != "opentelemetry.instrumentation.asgi"]
    assert framework_spans, "contrib's framework instrumentation was loaded and traced too"
    assert {span["trace_id"] for span in otlp.spans} == {span["trace_id"] for span in servers}

    transactions = receiver.transactions()
    assert Counter(path_of(t) for t in transactions) == Counter(PATHS)
    assert {trace_of(t)["trace_id"] for t in transactions} == {span["trace_id"] for span in servers}
    for transaction in transactions:
        assert_relay_valid(transaction)
        members = {trace_of(transaction)["span_id"]} | {s["span_id"] for s in transaction.get("spans", [])}
        assert all(s["parent_span_id"] in members for s in transaction.get("spans", []))
    [error] = errors_of_type_in(receiver)
    [boom] = [t for t in transactions if path_of(t) == "/boom"]
    assert trace_of(error)["trace_id"] == trace_of(boom)["trace_id"]


def errors_of_type_in(receiver: EnvelopeReceiver) -> list[dict[str, object]]:
    events = receiver.events()
    assert len(events) == 1, events
    return events
