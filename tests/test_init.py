"""``otel_bridge.init()`` in fresh interpreters: global OTel and sentry-sdk state is per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.servers import REPO_ROOT


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    child_env = {key: value for key, value in os.environ.items() if not key.startswith(("SENTRY_", "OTEL_"))}
    child_env.update(env or {})
    child_env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_a_dsn_init_is_a_no_op_that_says_why() -> None:
    result = run_python("import otel_bridge; print(otel_bridge.init())")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"
    assert result.stderr.count("otel_bridge is off: no Sentry DSN") == 1


def test_otel_sdk_disabled_is_a_no_op_that_says_why(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        "import otel_bridge; print(otel_bridge.init())",
        {"SENTRY_DSN": receiver.dsn, "OTEL_SDK_DISABLED": "TRUE"},
    )
    assert result.stdout.strip() == "None"
    assert "otel_bridge is off: OTEL_SDK_DISABLED=true" in result.stderr
    assert receiver.key not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("env", "named", "accepted"),
    [
        ({"OTEL_SDK_DISABLED": "yes"}, "OTEL_SDK_DISABLED='yes'", "'true' or 'false'"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER='sometimes'", "parentbased_traceidratio"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
            "OTEL_TRACES_SAMPLER_ARG='half'",
            "0.0 to 1.0",
        ),
        ({"OTEL_BRIDGE_TRACES_SAMPLE_RATE": "2"}, "OTEL_BRIDGE_TRACES_SAMPLE_RATE='2'", "0.0 to 1.0"),
        ({"OTEL_SEMCONV_STABILITY_OPT_IN": "http/both"}, "OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup"),
        (
            {"OTEL_TRACES_EXPORTER": "carrier-pigeon"},
            "OTEL_TRACES_EXPORTER names 'carrier-pigeon'",
            "console",
        ),
        ({"SENTRY_DSN": "not a dsn"}, "SENTRY_DSN", "valid Sentry DSN"),
        ({"OTEL_PROPAGATORS": "tracecontext,b3"}, "OTEL_PROPAGATORS names 'b3'", "baggage, none, "),
        # read by the OTel SDK when first imported, where it raised a ValueError
        ({"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "lots"}, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT='lots'", "0 or more"),
        ({"SENTRY_SPOTLIGHT": "ture"}, "SENTRY_SPOTLIGHT='ture'", "http://localhost:8969/stream"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "-1"}, "OTEL_BSP_MAX_QUEUE_SIZE='-1'", "whole numbers above 0"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "5s"}, "OTEL_BSP_SCHEDULE_DELAY='5s'", "whole numbers above 0"),
        (
            {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"},
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=4096",
            "up to OTEL_BSP_MAX_QUEUE_SIZE (2048)",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='http/json'",
            "grpc, http/protobuf",
        ),
    ],
)
def test_a_bad_value_raises_one_clear_error_naming_it(
    receiver: EnvelopeReceiver, env: dict[str, str], named: str, accepted: str
) -> None:
    result = run_python(
        """
        import otel_bridge
        try:
            otel_bridge.init()
        except otel_bridge.ConfigError as error:
            print("ConfigError:", error)
        """,
        {"SENTRY_DSN": receiver.dsn, **env},
    )
    assert result.returncode == 0, result.stderr
    assert named in result.stdout
    assert accepted in result.stdout


def test_importing_never_fails_because_of_the_environment(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        """
        import os
        import otel_bridge
        from otel_bridge.asgi import SentryAsgiMiddleware
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        print("IMPORTED", os.environ["OTEL_PROPAGATORS"])
        try:
            otel_bridge.init()
        except otel_bridge.ConfigError as error:
            print("ConfigError:", error)
        """,
        {"SENTRY_DSN": receiver.dsn, "OTEL_PROPAGATORS": "b3", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "lots"},
    )
    assert result.returncode == 0, result.stderr
    assert "IMPORTED b3" in result.stdout, "the variable is left as the user set it"
    assert "ConfigError: OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT='lots' is not valid" in result.stdout
    assert result.stderr == ""


def test_otlp_over_http_is_created_from_the_protocol_variable(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        """
        import otel_bridge
        from opentelemetry import trace
        otel_bridge.init()
        processors = trace.get_tracer_provider()._active_span_processor._span_processors
        print("EXPORTERS", sorted(type(getattr(p, "span_exporter", p)).__module__ for p in processors))
        """,
        {
            "SENTRY_DSN": receiver.dsn,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        },
    )
    assert result.returncode == 0, result.stderr
    assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" in result.stdout


def test_an_unknown_option_is_named(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        """
        import otel_bridge
        try:
            otel_bridge.init(trace_sample_rate=0.5)
        except otel_bridge.ConfigError as error:
            print("ConfigError:", error)
        """,
        {"SENTRY_DSN": receiver.dsn},
    )
    assert "trace_sample_rate" in result.stdout


def _report(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    report: dict[str, Any] = json.loads(line.removeprefix("REPORT "))
    return report


def test_init_twice_is_harmless_and_adopts_the_users_provider(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        import otel_bridge

        mine = TracerProvider()
        trace.set_tracer_provider(mine)
        first = otel_bridge.init()
        second = otel_bridge.init()
        processors = mine._active_span_processor._span_processors
        with trace.get_tracer("t").start_as_current_span("job"):
            pass
        otel_bridge.flush(5)
        print("REPORT", json.dumps({
            "same": first is second,
            "global_is_mine": trace.get_tracer_provider() is mine,
            "bridge_processors": sum(type(p).__name__ == "SentrySpanProcessor" for p in processors),
        }))
        """,
        {"SENTRY_DSN": receiver.dsn},
    )
    report = _report(result)
    assert report == {"same": True, "global_is_mine": True, "bridge_processors": 1}
    [transaction] = receiver.wait_for_transactions(1)
    assert transaction["transaction"] == "job"
    assert_relay_valid(transaction)


def test_created_provider_follows_the_otel_environment(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        """
        import json
        from opentelemetry import trace
        import otel_bridge

        otel_bridge.init()
        provider = trace.get_tracer_provider()
        with trace.get_tracer("t").start_as_current_span("job"):
            pass
        otel_bridge.flush(5)
        print("REPORT", json.dumps({"sampler": type(provider.sampler).__name__}))
        """,
        {
            "SENTRY_DSN": receiver.dsn,
            "OTEL_SERVICE_NAME": "checkout",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=staging,service.version=4.5.6",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "1.0",
            "OTEL_TRACES_EXPORTER": "console",
        },
    )
    report = _report(result)
    assert report["sampler"] == "ParentBasedTraceIdRatio"
    assert '"name": "job"' in result.stdout, "the console exporter named in OTEL_TRACES_EXPORTER got the span"
    [transaction] = receiver.wait_for_transactions(1)
    assert transaction["contexts"]["otel"]["resource"]["service.name"] == "checkout"
    assert transaction["environment"] == "staging"
    assert transaction["release"] == "4.5.6"


def test_sentry_environment_wins_over_the_resource(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        """
        import json
        from opentelemetry import trace
        import otel_bridge

        otel_bridge.init(release="explicit-1")
        with trace.get_tracer("t").start_as_current_span("job"):
            pass
        otel_bridge.flush(5)
        print("REPORT", json.dumps({}))
        """,
        {
            "SENTRY_DSN": receiver.dsn,
            "SENTRY_ENVIRONMENT": "production-eu",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging,service.version=4.5.6",
        },
    )
    _report(result)
    [transaction] = receiver.wait_for_transactions(1)
    assert transaction["environment"] == "production-eu"
    assert transaction["release"] == "explicit-1"


def test_options_for_an_adopted_client_are_named_as_not_applied(receiver: EnvelopeReceiver) -> None:
    result = run_python(
        f"""
        import sentry_sdk
        import otel_bridge

        sentry_sdk.init(dsn="{receiver.dsn}")
        otel_bridge.init(sample_rate=0.5)
        print("REPORT", sentry_sdk.get_client().options["sample_rate"])
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "REPORT 1.0" in result.stdout
    assert "these options were not applied: sample_rate" in result.stderr
