"""``otel-bridge doctor`` as a person runs it: it resolves what ``otel_bridge.init()`` resolves, says what
contradicts, and reports what the Sentry endpoint answered. Each case runs in fresh interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest

from tests.receiver import EnvelopeReceiver
from tests.servers import REPO_ROOT

DSN = "https://feedfacefeedfacefeedfacefeedface@o77.ingest.example.com/9876"


def _env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SENTRY_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(overrides)
    return env


def _doctor(*args: str, env: dict[str, str], cwd: Optional[Path] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_bridge._dev.cli", "doctor", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _init(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = """
        import json
        import otel_bridge
        try:
            result = "on" if otel_bridge.init() is not None else "off"
        except otel_bridge.ConfigError as error:
            result = "ConfigError: " + str(error)
        print("RESULT", json.dumps(result))
        """
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=60
    )


def _init_result(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    value: str = json.loads(line.removeprefix("RESULT "))
    return value


@pytest.mark.parametrize(
    "settings",
    [
        # the README's "several backends" settings: OTLP over HTTP next to Sentry
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
        {"OTEL_TRACES_EXPORTER": "otlp,sentry", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
        {"OTEL_TRACES_EXPORTER": "otlp"},  # grpc by default, and its exporter is not installed here
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        {"OTEL_TRACES_EXPORTER": "carrier-pigeon"},
        {"OTEL_PROPAGATORS": "tracecontext,baggage,sentry"},
        {"OTEL_PROPAGATORS": "b3"},
        {"OTEL_TRACES_SAMPLER": "bogus"},
        {"OTEL_SDK_DISABLED": "true"},
        {"SENTRY_DSN": "not a dsn"},
        {"SENTRY_DSN": ""},
    ],
)
def test_doctor_and_init_agree(settings: dict[str, str]) -> None:
    env = _env(**{"SENTRY_DSN": DSN, **settings})
    doctor = _doctor(env=env)
    init = _init_result(_init(env))
    if init.startswith("ConfigError: "):
        assert doctor.returncode == 2, doctor.stdout + doctor.stderr
        assert doctor.stderr == f"error: {init.removeprefix('ConfigError: ')}\n"
        assert doctor.stdout == ""
    elif init == "off":
        assert doctor.returncode == 1, doctor.stdout + doctor.stderr
        assert "otel_bridge.init() would do nothing" in doctor.stderr
    else:
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert doctor.stderr == ""
    assert "Traceback" not in doctor.stderr


def test_doctor_names_the_otlp_exporter_the_protocol_chooses() -> None:
    env = _env(SENTRY_DSN=DSN, OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    result = _doctor(env=env)
    assert result.returncode == 0, result.stderr
    assert "otlp (otlp_proto_http) and Sentry (OTEL_TRACES_EXPORTER)" in result.stdout


def test_doctor_says_which_package_otlp_over_grpc_needs() -> None:
    result = _doctor(env=_env(SENTRY_DSN=DSN, OTEL_TRACES_EXPORTER="otlp"))
    assert result.returncode == 2
    assert result.stderr == (
        "error: OTEL_TRACES_EXPORTER names 'otlp', which for protocol grpc needs "
        "opentelemetry-exporter-otlp-proto-grpc, not installed: install it, or set "
        "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf\n"
    )


def test_a_bad_propagator_is_one_line_naming_the_accepted_values() -> None:
    result = _doctor(env=_env(SENTRY_DSN=DSN, OTEL_PROPAGATORS="tracecontext,b3"))
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: OTEL_PROPAGATORS names 'b3', which is not installed: accepted values are ")
    for name in ("baggage", "none", "sentry", "tracecontext"):
        assert name in line.split("accepted values are ")[1]


def test_doctor_flags_mistyped_otel_variables() -> None:
    env = _env(SENTRY_DSN=DSN, OTEL_TRACE_EXPORTER="otlp", OTEL_BRIDGE_SAMPLE_RATE="0.5")
    result = _doctor(env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "warning: OTEL_BRIDGE_SAMPLE_RATE is not a variable OpenTelemetry or otel_bridge reads: did you mean "
        "OTEL_BRIDGE_TRACES_SAMPLE_RATE?",
        "warning: OTEL_TRACE_EXPORTER is not a variable OpenTelemetry or otel_bridge reads: did you mean "
        "OTEL_TRACES_EXPORTER?",
    ]
    assert "dsn host:" in result.stdout


def test_init_logs_the_same_mistyped_variable_once() -> None:
    result = _init(_env(SENTRY_DSN=DSN, OTEL_TRACE_EXPORTER="otlp"))
    assert _init_result(result) == "on"
    assert result.stderr.count("OTEL_TRACE_EXPORTER is not a variable") == 1
    assert "did you mean OTEL_TRACES_EXPORTER?" in result.stderr


def test_variables_of_other_instrumentations_are_not_flagged() -> None:
    env = _env(
        SENTRY_DSN=DSN,
        OTEL_PYTHON_DJANGO_INSTRUMENT="false",
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST="x-request-id",
        OTEL_EXPORTER_ZIPKIN_ENDPOINT="http://localhost:9411",
        OTEL_BSP_SCHEDULE_DELAY="500",
        OTEL_LOG_LEVEL="info",
    )
    result = _doctor(env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def _app_module(tmp_path: Path, code: str) -> Path:
    (tmp_path / "checked_app.py").write_text(textwrap.dedent(code))
    return tmp_path


def test_doctor_flags_sentry_sdks_own_framework_integrations_in_an_adopted_client(tmp_path: Path) -> None:
    _app_module(
        tmp_path,
        f"""
        import sentry_sdk
        from sentry_sdk.integrations.fastapi import FastApiIntegration
        import otel_bridge

        sentry_sdk.init(dsn="{DSN}", disabled_integrations=[FastApiIntegration()])
        otel_bridge.init()
        """,
    )
    result = _doctor("--app", "checked_app", env=_env(), cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "runs sentry-sdk's own" in warning
    assert "StarletteIntegration" in warning
    assert "FastApiIntegration" not in warning
    assert "disabled_integrations=[" in warning
    assert "already initialised in this process" in result.stdout


def test_doctor_finds_nothing_to_flag_when_init_created_the_client(tmp_path: Path) -> None:
    _app_module(tmp_path, f'import otel_bridge\notel_bridge.init(dsn="{DSN}")\n')
    result = _doctor("--app", "checked_app", env=_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""


def test_doctor_flags_a_processor_added_by_hand_next_to_the_exporter(tmp_path: Path) -> None:
    _app_module(
        tmp_path,
        f"""
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from otel_bridge import SentrySpanExporter, SentrySpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(SentrySpanExporter(dsn="{DSN}")))
        provider.add_span_processor(SentrySpanProcessor())
        trace.set_tracer_provider(provider)
        """,
    )
    result = _doctor("--app", "checked_app", env=_env(), cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert (
        "warning: a SentrySpanProcessor was added to the TracerProvider by hand, next to SentrySpanExporter"
        in result.stderr
    )
    assert "every trace reaches Sentry twice" in result.stderr


def test_doctor_reports_an_app_that_cannot_be_imported(tmp_path: Path) -> None:
    _app_module(tmp_path, "raise RuntimeError('no database')\n")
    result = _doctor("--app", "checked_app", env=_env(SENTRY_DSN=DSN), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: importing checked_app failed: RuntimeError: no database\n"


def test_doctor_reports_a_config_error_raised_by_the_apps_init(tmp_path: Path) -> None:
    _app_module(tmp_path, "import otel_bridge\notel_bridge.init()\n")
    result = _doctor("--app", "checked_app", env=_env(SENTRY_DSN=DSN, OTEL_PROPAGATORS="b3"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: OTEL_PROPAGATORS names 'b3', which is not installed")
    assert "Traceback" not in result.stderr


def test_the_test_event_reports_the_status_the_endpoint_answered(receiver: EnvelopeReceiver) -> None:
    result = _doctor("--send-test-event", env=_env(SENTRY_DSN=receiver.dsn, SENTRY_ENVIRONMENT="ci"))
    assert result.returncode == 0, result.stdout + result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("test event:")]
    assert f"accepted by 127.0.0.1:{receiver.port}: HTTP 200 (event id " in line
    [event] = receiver.wait_for_events(1)
    assert event["message"] == "otel-bridge doctor test event"
    assert event["environment"] == "ci"
    assert receiver.key not in result.stdout + result.stderr


def test_the_test_event_reports_a_rejection_with_the_body(receiver: EnvelopeReceiver) -> None:
    receiver.respond_with(status=403, body=b'{"detail":"event submission rejected with_reason: ProjectId"}')
    result = _doctor("--send-test-event", env=_env(SENTRY_DSN=receiver.dsn))
    assert result.returncode == 1
    [line] = [line for line in result.stdout.splitlines() if line.startswith("test event:")]
    assert line.endswith(
        f"rejected by 127.0.0.1:{receiver.port}: HTTP 403 Forbidden: "
        '{"detail":"event submission rejected with_reason: ProjectId"}'
    )


def test_the_test_event_reports_a_rate_limit(receiver: EnvelopeReceiver) -> None:
    receiver.respond_with(status=429, headers={"Retry-After": "60"}, body=b"")
    result = _doctor("--send-test-event", env=_env(SENTRY_DSN=receiver.dsn))
    assert result.returncode == 1
    assert f"rate limited by 127.0.0.1:{receiver.port}: HTTP 429 (retry after 60)" in result.stdout


def test_doctor_help_documents_the_exit_codes() -> None:
    result = _doctor("--help", env=_env())
    assert result.returncode == 0
    assert "exit codes:" in result.stdout
    for code in ("0", "1", "2", "3"):
        assert f"\n  {code}  " in result.stdout


def test_doctor_says_when_the_sentry_exporter_sends() -> None:
    env = _env(
        SENTRY_DSN=DSN, OTEL_TRACES_EXPORTER="otlp,sentry", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf"
    )
    result = _doctor(env=env)
    assert result.returncode == 0, result.stderr
    assert "otlp (otlp_proto_http) and Sentry (OTEL_TRACES_EXPORTER)" in result.stdout
    assert "sentry exporter:" in result.stdout
    assert "with init(), init()'s processor sends instead" in result.stdout
