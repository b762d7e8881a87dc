"""``SentrySpanProcessor`` and ``SentrySpanExporter`` with no sentry-sdk client say so once, with what to
call, at the first finished trace; a client initialised later is used. Fresh interpreters: the warning is
once per process."""

from __future__ import annotations

from tests.receiver import EnvelopeReceiver
from tests.test_init import run_python

WARNING = (
    "got a finished trace but no sentry-sdk client is active, so nothing is sent to Sentry; call "
    "otel_bridge.init() (or sentry_sdk.init(dsn=...)) at start-up"
)


def test_a_processor_without_a_client_warns_once_at_the_first_trace(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        f"""
        import sys
        import sentry_sdk
        from opentelemetry.sdk.trace import TracerProvider
        from otel_bridge import SentrySpanProcessor

        provider = TracerProvider()
        processor = SentrySpanProcessor()
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("t")
        print("CONSTRUCTED", file=sys.stderr, flush=True)
        for name in ("first", "second"):
            with tracer.start_as_current_span(name):
                pass
        print("ENDED", file=sys.stderr, flush=True)
        sentry_sdk.init(dsn="{receiver.dsn}", instrumenter="otel")
        with tracer.start_as_current_span("after-init"):
            pass
        processor.force_flush(5000)
        """,
    )
    assert result.returncode == 0, result.stderr
    before, during, after = (
        result.stderr.split("CONSTRUCTED")[0],
        result.stderr.split("CONSTRUCTED")[1].split("ENDED")[0],
        result.stderr.split("ENDED")[1],
    )
    assert WARNING not in before, "not at construction: a client may come later"
    assert during.count("SentrySpanProcessor " + WARNING) == 1
    assert WARNING not in after
    [transaction] = receiver.wait_for_transactions(1)
    assert transaction["transaction"] == "after-init"


def test_an_exporter_whose_client_went_away_warns_once(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        f"""
        import sentry_sdk
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from otel_bridge import SentrySpanExporter

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(SentrySpanExporter(dsn="{receiver.dsn}")))
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
        tracer = provider.get_tracer("t")
        for name in ("first", "second"):
            with tracer.start_as_current_span(name):
                pass
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("SentrySpanExporter " + WARNING) == 1


def test_an_exporter_that_said_it_is_off_does_not_say_more() -> None:
    result = run_python(
        """
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from otel_bridge import SentrySpanExporter

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(SentrySpanExporter()))
        with provider.get_tracer("t").start_as_current_span("job"):
            pass
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "otel_bridge's exporter is off: no Sentry DSN (set SENTRY_DSN)"
