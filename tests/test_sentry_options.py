"""Every ``sentry_sdk.init`` option acts on what the bridge sends, or ``init()`` says it has no effect."""

from __future__ import annotations

import asyncio
import http.server
import inspect
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode
from sentry_sdk.consts import ClientConstructor

from otel_bridge._config import sentry_options
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.conftest import StartTraced
from tests.receiver import EnvelopeReceiver, parse_envelope
from tests.relay import assert_relay_valid
from tests.test_init import run_python
from tests.test_middleware import call, http_scope

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_option_of_the_installed_sentry_sdk_is_accounted_for() -> None:
    parameters = set(inspect.signature(ClientConstructor.__init__).parameters) - {"self"}
    assert parameters - set(sentry_options.OPTIONS) == set(), "add them to sentry_options.OPTIONS"


def test_the_readme_shows_the_option_table_as_the_code_has_it() -> None:
    assert sentry_options.markdown_table() in README.read_text(encoding="utf-8"), (
        "regenerate with: otel-bridge options"
    )


def test_options_with_no_effect_are_named_once_at_init(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        f"""
        import otel_bridge
        otel_bridge.init(
            dsn="{receiver.dsn}",
            max_request_body_size="always",
            functions_to_trace=[{{"qualified_name": "os.getcwd"}}],
            profile_lifecycle="trace",
            max_breadcrumbs=10,
            trace_propagation_targets=[".*"],
        )
        """
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "have no effect here" in line]
    assert len(warnings) == 1, result.stderr
    for named in ("max_request_body_size", "functions_to_trace", "profile_lifecycle"):
        assert named in warnings[0]
    # options that act, or were left at sentry-sdk's default, are not named
    assert "max_breadcrumbs" not in warnings[0]
    assert "trace_propagation_targets" not in warnings[0]


def test_an_adopted_client_with_inert_options_is_named_too(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        f"""
        import sentry_sdk, otel_bridge
        sentry_sdk.init(dsn="{receiver.dsn}", enable_backpressure_handling=False)
        otel_bridge.init()
        """
    )
    assert result.returncode == 0, result.stderr
    assert "have no effect here: enable_backpressure_handling" in result.stderr


def test_an_adopted_clients_traces_sample_rate_thins_what_goes_to_sentry(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        f"""
        import sentry_sdk, otel_bridge
        from opentelemetry import trace
        sentry_sdk.init(dsn="{receiver.dsn}", traces_sample_rate=0.0)
        otel_bridge.init()
        with trace.get_tracer("t").start_as_current_span("job"):
            sentry_sdk.capture_message("still sent")
        otel_bridge.flush(5)
        """
    )
    assert result.returncode == 0, result.stderr
    [message] = receiver.wait_for_events(1)
    assert message["message"] == "still sent"
    assert receiver.transactions() == []


def test_enable_tracing_false_sends_no_transactions(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        f"""
        import otel_bridge
        from opentelemetry import trace
        otel_bridge.init(dsn="{receiver.dsn}", enable_tracing=False)
        with trace.get_tracer("t").start_as_current_span("job"):
            pass
        print("FLUSHED", otel_bridge.flush(5))
        """
    )
    assert "FLUSHED True" in result.stdout, result.stderr
    assert receiver.transactions() == []


async def named_by_the_view(scope: Any, receive: Any, send: Any) -> None:
    sentry_sdk.get_current_scope().set_transaction_name("checkout flow", source="custom")
    sentry_sdk.capture_message("inside the view")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_name_set_on_the_request_scope_names_the_transaction_and_its_events(
    start_traced: StartTraced, receiver: EnvelopeReceiver
) -> None:
    provider, processor = start_traced()
    asyncio.run(call(SentryAsgiMiddleware(named_by_the_view, tracer_provider=provider), http_scope("/pay/7")))
    processor.force_flush(5000)
    [transaction] = receiver.wait_for_transactions(1)
    [message] = receiver.wait_for_events(1)
    for event in (transaction, message):
        assert_relay_valid(event)
        assert event["transaction"] == "checkout flow"
        assert event["transaction_info"] == {"source": "custom"}
    header = receiver.envelope_of(transaction["event_id"])
    assert header is not None
    assert header.headers["trace"]["transaction"] == "checkout flow"


def test_without_a_name_set_the_path_names_the_transaction(
    start_traced: StartTraced, receiver: EnvelopeReceiver
) -> None:
    async def plain(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    provider, processor = start_traced()
    asyncio.run(call(SentryAsgiMiddleware(plain, tracer_provider=provider), http_scope("/pay/7")))
    processor.force_flush(5000)
    [transaction] = receiver.wait_for_transactions(1)
    assert transaction["transaction"] == "/pay/7"
    assert transaction["transaction_info"] == {"source": "url"}


class PaymentDeclined(Exception):
    pass


@pytest.mark.parametrize(
    "ignored", [[PaymentDeclined], ["PaymentDeclined"], [f"{__name__}.PaymentDeclined"]], ids=str
)
def test_ignore_errors_applies_to_exceptions_known_only_from_span_events(
    start_traced: StartTraced, receiver: EnvelopeReceiver, ignored: list[Any]
) -> None:
    provider, processor = start_traced(ignore_errors=ignored)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("charge") as span:
        span.record_exception(PaymentDeclined("card expired"))
        span.record_exception(KeyError("kept"))
        span.set_status(Status(StatusCode.ERROR))
    processor.force_flush(5000)
    [transaction] = receiver.wait_for_transactions(1)
    assert transaction["transaction"] == "charge"
    receiver.wait_for_events(1)
    assert [event["exception"]["values"][-1]["type"] for event in receiver.events()] == ["KeyError"]


async def not_found(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"no"})


def test_trace_ignore_status_codes_drops_those_transactions_and_counts_them(
    start_traced: StartTraced, receiver: EnvelopeReceiver
) -> None:
    provider, processor = start_traced(trace_ignore_status_codes={404})
    app = SentryAsgiMiddleware(not_found, tracer_provider=provider)
    asyncio.run(call(app, http_scope("/missing")))
    asyncio.run(call(SentryAsgiMiddleware(named_by_the_view, tracer_provider=provider), http_scope("/pay")))
    processor.force_flush(5000)
    [transaction] = receiver.wait_for_transactions(1)
    assert transaction["transaction"] == "checkout flow"
    sentry_sdk.get_client().close(timeout=5)
    discarded = [entry for report in receiver.client_reports() for entry in report["discarded_events"]]
    assert {"reason": "event_processor", "category": "transaction", "quantity": 1} in discarded


class _SpotlightSidecar(http.server.ThreadingHTTPServer):
    """Spotlight's sidecar as sentry-sdk talks to it: envelopes POSTed to one URL."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.bodies.append(self.rfile.read(length))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/stream"

    def item_types(self) -> list[str]:
        return [item.type or "" for body in self.bodies for item in parse_envelope(body).items]


@pytest.mark.parametrize("how", ["option", "SENTRY_SPOTLIGHT"])
def test_spotlight_turns_the_bridge_on_without_a_dsn(how: str) -> None:
    sidecar = _SpotlightSidecar()
    try:
        argument = f"spotlight={sidecar.url!r}" if how == "option" else ""
        result = run_python(
            f"""
            import sentry_sdk, otel_bridge
            from opentelemetry import trace
            print("ON", otel_bridge.init({argument}) is not None)
            with trace.get_tracer("t").start_as_current_span("job"):
                sentry_sdk.capture_message("to spotlight")
            otel_bridge.flush(5)
            """,
            {"SENTRY_SPOTLIGHT": sidecar.url} if how == "SENTRY_SPOTLIGHT" else None,
        )
        assert "ON True" in result.stdout, result.stderr
        assert "no Sentry DSN" not in result.stderr
        deadline = time.monotonic() + 10
        while sorted(sidecar.item_types()) != ["event", "transaction"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(sidecar.item_types()) == ["event", "transaction"]
    finally:
        sidecar.shutdown()


def test_spotlight_false_keeps_the_bridge_off_without_a_dsn() -> None:
    result = run_python(
        "import otel_bridge; print(otel_bridge.init(spotlight=False))", {"SENTRY_SPOTLIGHT": "1"}
    )
    assert result.stdout.strip() == "None"
    assert "otel_bridge is off: no Sentry DSN" in result.stderr


def test_logs_sentry_sdk_sends_are_linked_to_the_otel_trace(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        f"""
        import logging, sentry_sdk, otel_bridge
        from opentelemetry import trace
        otel_bridge.init(dsn="{receiver.dsn}", enable_logs=True)
        with trace.get_tracer("t").start_as_current_span("job") as span:
            logging.getLogger("shop").warning("stock low")
            print("TRACE", trace.format_trace_id(span.get_span_context().trace_id))
        otel_bridge.flush(5)
        """
    )
    assert result.returncode == 0, result.stderr
    trace_id = result.stdout.split("TRACE ", 1)[1].split()[0]
    assert receiver.wait_for(lambda r: bool(r.items("log")))
    logs = [entry for item in receiver.items("log") for entry in item.json()["items"]]
    [log] = [entry for entry in logs if entry["body"] == "stock low"]
    assert log["trace_id"] == trace_id
    [transaction] = receiver.wait_for_transactions(1)
    assert transaction["contexts"]["trace"]["trace_id"] == trace_id


def raise_and_record(provider: TracerProvider) -> None:
    with provider.get_tracer("t").start_as_current_span("charge") as span:
        try:
            raise KeyError("sku-42")
        except KeyError as exc:
            span.record_exception(exc)


@pytest.mark.parametrize("include", [True, False])
def test_include_source_context_applies_to_frames_parsed_from_span_events(
    start_traced: StartTraced, receiver: EnvelopeReceiver, include: bool
) -> None:
    provider, processor = start_traced(include_source_context=include)
    raise_and_record(provider)
    processor.force_flush(5000)
    [event] = receiver.wait_for_events(1)
    assert_relay_valid(event)
    [frame] = event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert frame["function"] == "raise_and_record"
    if include:
        assert frame["context_line"].strip() == 'raise KeyError("sku-42")'
        assert frame["pre_context"] and frame["post_context"]
    else:
        assert not {"context_line", "pre_context", "post_context"} & set(frame)


def test_the_org_id_option_is_in_the_dynamic_sampling_context(
    start_traced: StartTraced, receiver: EnvelopeReceiver
) -> None:
    provider, processor = start_traced(org_id="17")
    raise_and_record(provider)
    processor.force_flush(5000)
    [transaction] = receiver.wait_for_transactions(1)
    [event] = receiver.wait_for_events(1)
    for sent in (transaction, event):
        envelope = receiver.envelope_of(sent["event_id"])
        assert envelope is not None
        assert envelope.headers["trace"]["org_id"] == "17"


@pytest.mark.skipif(
    "trace_lifecycle" not in inspect.signature(ClientConstructor.__init__).parameters,
    reason="this sentry-sdk has no span streaming (trace_lifecycle, 2.66 and later)",
)
def test_a_sentry_sdk_span_in_a_streamed_request_does_not_rename_it(
    start_traced: StartTraced, receiver: EnvelopeReceiver
) -> None:
    async def uses_sentry_spans(scope: Any, receive: Any, send: Any) -> None:
        with sentry_sdk.traces.start_span(name="load cart"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    provider, processor = start_traced(trace_lifecycle="stream")
    asyncio.run(call(SentryAsgiMiddleware(uses_sentry_spans, tracer_provider=provider), http_scope("/cart")))
    processor.force_flush(5000)
    sentry_sdk.flush(5)
    assert receiver.wait_for(lambda r: bool(r.items("span")))
    spans = [span for item in receiver.items("span") for span in item.json()["items"]]
    [segment] = [span for span in spans if span["is_segment"]]
    assert segment["name"] == "/cart"


@pytest.mark.skipif(
    "data_collection" not in inspect.signature(ClientConstructor.__init__).parameters,
    reason="this sentry-sdk has no data_collection option",
)
@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({"url_query_params": {"mode": "sometimes"}}, "'off', 'denylist', 'allowlist'"),
        ("yes", "must be a dict"),
    ],
)
def test_an_option_sentry_sdk_rejects_is_one_config_error(
    receiver: EnvelopeReceiver, value: Any, named: str
) -> None:
    result = run_python(
        f"""
        import otel_bridge
        try:
            otel_bridge.init(dsn="{receiver.dsn}", data_collection={value!r})
        except otel_bridge.ConfigError as exc:
            print("CONFIG ERROR", exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "CONFIG ERROR sentry_sdk.init rejected an option" in result.stdout
    assert named in result.stdout
