"""``otel-bridge``: check the configuration, send a test event, or watch events arrive on a local receiver."""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO, Any, Optional

import otel_bridge
from otel_bridge import sentry_options
from otel_bridge.config import RATIO_SAMPLERS, ConfigError, read_config, validate_otel_environment
from otel_bridge.devserver import DevServer, ReceivedItem

DEMO_INSTALL_HINT = "pip install 'otel-bridge[demo]'"
DEMO_SERVICE_NAME = "seed-example"
DEFAULT_PROPAGATORS = "tracecontext,baggage"
DEFAULT_SAMPLER = "parentbased_always_on"
ITEMS_TIMEOUT = 10.0
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
TEST_EVENT_TIMEOUT = 5.0
TEST_EVENT_MESSAGE = "otel-bridge doctor test event"


def _out(text: str = "") -> None:
    print(text, flush=True)


def _fail(text: str) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def examples_dir() -> Path:
    return Path(otel_bridge.__file__).resolve().parents[1] / "examples"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _child_environment(dsn: str) -> dict[str, str]:
    # The demo must behave the same whatever the user's shell configures for their real apps.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SENTRY_"))}
    package_root = str(Path(otel_bridge.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["SENTRY_DSN"] = dsn
    env["OTEL_SERVICE_NAME"] = DEMO_SERVICE_NAME
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def _server_log(log: IO[bytes], lines: int = 60) -> str:
    log.seek(0)
    text = log.read().decode("utf-8", "replace").rstrip()
    return "\n".join(text.splitlines()[-lines:]) or "(uvicorn printed nothing)"


def _missing(items: Sequence[ReceivedItem], transactions: int, errors: int) -> list[str]:
    got_transactions = sum(item.type == "transaction" for item in items)
    got_errors = sum(item.type == "event" for item in items)
    missing = []
    if got_transactions < transactions:
        missing.append(f"transactions: expected {transactions}, got {got_transactions}")
    if got_errors < errors:
        missing.append(f"error events: expected {errors}, got {got_errors}")
    return missing


EXAMPLES = ("seed", "asgi2", "asgi3", "starlette", "fastapi", "quart", "litestar", "django", "sanic")
SERVERS = ("uvicorn", "hypercorn", "granian")
EXAMPLE_PATHS = ("/items/42", "/nowhere", "/boom", "/background")


def _server_command(server: str, module: str, port: int, examples: Path) -> list[str]:
    target = f"{module}:app"
    if server == "hypercorn":
        return [sys.executable, "-m", "hypercorn", target, "--bind", f"127.0.0.1:{port}", "--workers", "0"]
    listen = ["--host", "127.0.0.1", "--port", str(port)]
    if server == "granian":
        return [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            *listen,
            "--log-level",
            "warning",
            target,
        ]
    return [sys.executable, "-m", "uvicorn", target, "--app-dir", str(examples), *listen]


def _expected_note(path: str) -> str:
    if path.startswith(("/divide", "/boom")):
        return "  (expected: the app divides by zero)"
    if path == "/background":
        return "  (a background task raises after the answer, where the framework has them)"
    return ""


def demo(requests: int, example: str = "seed", server: str = "uvicorn") -> int:
    try:
        import httpx
    except ImportError:
        _fail(f"the demo needs httpx and uvicorn: {DEMO_INSTALL_HINT}")
        return 1
    if importlib.util.find_spec(server) is None:
        _fail(f"the demo needs {server}: pip install {server}")
        return 1
    module = f"{example}_app"
    examples = examples_dir()
    if not (examples / f"{module}.py").is_file():
        _fail(
            f"the demo runs examples/{module}.py from a checkout of the otel-bridge repository, and there is "
            f"none at {examples}: clone the repository and run `make demo` there"
        )
        return 1

    paths = ["/"] * requests + ["/divide?user=demo"] if example == "seed" else list(EXAMPLE_PATHS)
    expected_errors = 1
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    with DevServer() as receiver, tempfile.TemporaryFile() as log:
        _out(
            f"otel-bridge demo: the {example} example, traced by OpenTelemetry, reporting to a local receiver"
        )
        _out(f"  receiver  http://127.0.0.1:{receiver.port}/api/{receiver.project}/envelope/")
        _out(f"  app       {base_url}  ({server} {module}:app from {examples}, service {DEMO_SERVICE_NAME})")
        _out()
        env = _child_environment(receiver.dsn)
        env["PYTHONPATH"] = os.pathsep.join([str(examples), env["PYTHONPATH"]])
        process = subprocess.Popen(
            _server_command(server, module, port, examples),
            cwd=str(examples),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            if not _wait_listening(port, process, START_TIMEOUT):
                state = (
                    f"exited with code {process.returncode}" if process.poll() is not None else "timed out"
                )
                _fail(f"{server} did not start listening on {base_url} ({state}); its output:")
                print(_indent(_server_log(log), "  | "), file=sys.stderr)
                return 1
            request_failed = False
            with httpx.Client(base_url=base_url, timeout=10.0) as client:
                for path in paths:
                    try:
                        response = client.get(path)
                    except httpx.HTTPError as exc:
                        _out(f"  GET {path:<20} failed: {exc}")
                        request_failed = True
                        continue
                    if path == "/background" and response.status_code == 200:
                        expected_errors += 1
                    note = _expected_note(path) if response.status_code != 404 else ""
                    _out(f"  GET {path:<20} -> {response.status_code} {response.reason_phrase}{note}")
            _out()
            _out(
                f"Waiting up to {ITEMS_TIMEOUT:.0f} s for {len(paths)} transactions and "
                f"{expected_errors} error event(s)..."
            )
            receiver.wait_for(lambda items: not _missing(items, len(paths), expected_errors), ITEMS_TIMEOUT)
        finally:
            _stop(process)

        items = receiver.items
        _out()
        _out(f"The receiver got {len(items)} item(s)" + (":" if items else "."))
        for number, item in enumerate(items, 1):
            _out()
            _out(_indent(f"[{number}] {item.describe()}", "  "))
        _out()
        missing = _missing(items, len(paths), expected_errors)
        if missing or request_failed:
            problems = missing + (["some requests failed (see above)"] if request_failed else [])
            _fail("the demo did not see everything it expected: " + "; ".join(problems))
            print(f"{server}'s output:", file=sys.stderr)
            print(_indent(_server_log(log), "  | "), file=sys.stderr)
            return 1
        _out(
            f"OK: {len(paths)} requests became {len(paths)} Sentry transactions, and the app's exceptions "
            f"became {expected_errors} Sentry error event(s)."
        )
        return 0


def receive(port: int) -> int:
    print_lock = threading.Lock()

    def show(item: ReceivedItem) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(item.received_at))
        with print_lock:
            _out(f"[{stamp}] {item.describe()}")
            _out()

    try:
        server = DevServer(port, on_item=show)
    except OSError as exc:
        _fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}")
        return 1
    with server:
        with print_lock:
            _out(f"Local Sentry receiver listening on http://127.0.0.1:{server.port}")
            _out("Point an app at it with:")
            _out(f"  export SENTRY_DSN={server.dsn}")
            _out("Waiting for events; Ctrl-C to stop.")
            _out()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            _out("Stopped.")
    return 0


def _names(raw: str) -> list[str]:
    return [name.strip().lower() for name in raw.split(",") if name.strip()]


def _check_installed(variable: str, names: list[str], group: str, always: Sequence[str]) -> None:
    installed = {entry.name for entry in entry_points(group=group)}
    accepted = sorted({*always, *installed})
    for name in names:
        if name not in accepted:
            raise ConfigError(
                f"{variable} names {name!r}, which is not installed: "
                f"accepted values are {', '.join(accepted)}"
            )


def _resource_attributes() -> Mapping[str, Any]:
    from opentelemetry.sdk.resources import Resource

    return Resource.create().attributes


def _described_dsn(dsn: str) -> tuple[str, str]:
    from sentry_sdk.utils import Dsn

    try:
        parsed = Dsn(dsn)
    except ValueError as exc:
        raise ConfigError(f"SENTRY_DSN is not a valid Sentry DSN ({exc})") from None
    host = f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"
    return host, parsed.project_id


def _configuration(env: Mapping[str, str]) -> tuple[list[tuple[str, str]], Optional[str]]:
    """The lines ``doctor`` prints, and the DSN; raises :class:`ConfigError` for a value init() rejects."""
    validate_otel_environment(env)
    config = read_config({}, env)
    exporter_names = _names(env.get("OTEL_TRACES_EXPORTER", ""))
    _check_installed(
        "OTEL_TRACES_EXPORTER", exporter_names, "opentelemetry_traces_exporter", ("none", "sentry")
    )
    propagators = _names(env.get("OTEL_PROPAGATORS", "")) or _names(DEFAULT_PROPAGATORS)
    _check_installed("OTEL_PROPAGATORS", propagators, "opentelemetry_propagator", ("none",))
    resource = _resource_attributes()
    lines: list[tuple[str, str]] = []

    if config.dsn:
        host, project = _described_dsn(config.dsn)
        lines += [("dsn host", host), ("dsn project", project)]
    else:
        lines += [("dsn host", "(no SENTRY_DSN)"), ("dsn project", "(no SENTRY_DSN)")]

    if config.environment:
        lines.append(("environment", f"{config.environment} (SENTRY_ENVIRONMENT)"))
    elif resource.get("deployment.environment.name") or resource.get("deployment.environment"):
        value = resource.get("deployment.environment.name") or resource.get("deployment.environment")
        lines.append(("environment", f"{value} (OTEL_RESOURCE_ATTRIBUTES)"))
    else:
        lines.append(("environment", "production (sentry-sdk default)"))

    if config.release:
        lines.append(("release", f"{config.release} (SENTRY_RELEASE)"))
    elif resource.get("service.version"):
        lines.append(("release", f"{resource['service.version']} (OTEL_RESOURCE_ATTRIBUTES)"))
    else:
        from sentry_sdk.utils import get_default_release

        detected = get_default_release()
        lines.append(("release", f"{detected} (detected by sentry-sdk)" if detected else "(none)"))

    if config.disabled:
        lines.append(("otel sdk disabled", "yes (OTEL_SDK_DISABLED=true): otel_bridge.init() does nothing"))
    else:
        lines.append(("otel sdk disabled", "no"))

    service = resource.get("service.name", "unknown_service")
    if env.get("OTEL_SERVICE_NAME", "").strip():
        origin = "OTEL_SERVICE_NAME"
    elif "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        origin = "OTEL_RESOURCE_ATTRIBUTES"
    else:
        origin = "OTel default; set OTEL_SERVICE_NAME"
    lines.append(("service name", f"{service} ({origin})"))

    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler:
        if sampler in RATIO_SAMPLERS:
            arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip() or "1.0 (default)"
            lines.append(("sampler", f"{sampler}, arg {arg}"))
        else:
            lines.append(("sampler", sampler))
    else:
        lines.append(("sampler", f"{DEFAULT_SAMPLER} (default)"))
    rate_origin = "OTEL_BRIDGE_TRACES_SAMPLE_RATE" if env.get("OTEL_BRIDGE_TRACES_SAMPLE_RATE") else "default"
    lines.append(("sentry sample rate", f"{config.traces_sample_rate} ({rate_origin})"))

    exporters = [name for name in exporter_names if name not in ("none", "sentry")]
    if exporters:
        lines.append(("exporters", f"{', '.join(exporters)} and Sentry (OTEL_TRACES_EXPORTER)"))
    elif env.get("OTEL_TRACES_EXPORTER", "").strip():
        lines.append(("exporters", "Sentry only (OTEL_TRACES_EXPORTER)"))
    else:
        lines.append(("exporters", "Sentry only (OTEL_TRACES_EXPORTER unset)"))

    origin = "OTEL_PROPAGATORS" if env.get("OTEL_PROPAGATORS", "").strip() else "default"
    lines.append(("propagators", f"{', '.join(propagators)} ({origin})"))

    pii = getattr(config, "send_default_pii", None)
    if pii is None:
        pii = config.sentry_options.get("send_default_pii")
    if pii is None:
        note = "default"
        if env.get("SENTRY_SEND_DEFAULT_PII", "").strip():
            note = (
                "default; SENTRY_SEND_DEFAULT_PII is set but not read: pass send_default_pii=True to init()"
            )
        lines.append(("send_default_pii", f"False ({note})"))
    else:
        lines.append(("send_default_pii", str(bool(pii))))

    candidates = ("OTEL_PYTHON_ASGI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS")
    variable = next((name for name in candidates if name in env), None)
    excluded = env[variable].strip() if variable else ""
    lines.append(("excluded urls", f"{excluded} ({variable})" if excluded else "(none)"))
    for label, suffix in (
        ("captured request headers", "SERVER_REQUEST"),
        ("captured response headers", "SERVER_RESPONSE"),
    ):
        captured = env.get(f"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_{suffix}", "").strip()
        lines.append((label, captured or "(none)"))
    opt_in = env.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").strip()
    lines.append(("semconv opt-in", opt_in or "(unset: the old HTTP semantic conventions)"))
    return lines, config.dsn


def _outcome_of_drop(reason: str) -> str:
    if reason.startswith("status_"):
        code = reason[len("status_") :]
        return "rate limited (HTTP 429)" if code == "429" else f"rejected with HTTP {code}"
    if reason == "self_rate_limits":
        return "held back: sentry-sdk is still rate limited by an earlier answer"
    if reason == "full_queue":
        return "dropped: sentry-sdk's queue is full"
    return f"dropped by sentry-sdk ({reason})"


def _send_test_event(dsn: str) -> tuple[bool, str]:
    """Send one message; ``(True, ...)`` only when the server answered it with a 2xx status."""
    import sentry_sdk
    from sentry_sdk.transport import HttpTransport
    from sentry_sdk.utils import Dsn

    parsed = Dsn(dsn)
    secrets = [value for value in (parsed.public_key, parsed.secret_key) if value]

    def redacted(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    class CheckedTransport(HttpTransport):
        def __init__(self, options: dict[str, Any]) -> None:
            super().__init__(options)
            self.outcome: Optional[str] = None
            self.done = threading.Event()

        def on_dropped_event(self, reason: str) -> None:
            if self.outcome is None and reason != "network":
                self.outcome = _outcome_of_drop(reason)
            super().on_dropped_event(reason)
            if reason in ("self_rate_limits", "full_queue"):
                self.done.set()

        def _send_request(self, *args: Any, **kwargs: Any) -> None:
            try:
                super()._send_request(*args, **kwargs)
            except Exception as exc:
                if self.outcome is None:
                    self.outcome = redacted(f"network error: {type(exc).__name__}: {exc}")[:300]
                raise
            finally:
                if self.outcome is None:
                    self.outcome = "accepted"
                self.done.set()

    sentry_sdk.init(dsn=dsn, transport=CheckedTransport, default_integrations=False)
    client = sentry_sdk.get_client()
    try:
        event_id = sentry_sdk.capture_message(TEST_EVENT_MESSAGE, level="info")
        client.flush(timeout=TEST_EVENT_TIMEOUT)
        transport = client.transport
        if not isinstance(transport, CheckedTransport) or event_id is None:
            return False, "not sent: sentry-sdk did not hand it to its transport"
        if not transport.done.wait(TEST_EVENT_TIMEOUT) or transport.outcome is None:
            return False, f"could not be sent within {TEST_EVENT_TIMEOUT:.0f} s"
        if transport.outcome == "accepted":
            return True, f"sent to {parsed.netloc}, accepted (event id {event_id})"
        return False, f"not sent to {parsed.netloc}: {transport.outcome}"
    finally:
        client.close(timeout=1)


def doctor(send_test_event: bool) -> int:
    try:
        lines, dsn = _configuration(os.environ)
    except ConfigError as exc:
        _fail(str(exc))
        return 2
    width = max(len(name) for name, _ in lines) + 1
    for name, value in lines:
        _out(f"{name + ':':<{width}} {value}")
    if not dsn:
        _out()
        _fail("no Sentry DSN: set SENTRY_DSN (or pass dsn=... to otel_bridge.init()); nothing is sent")
        return 1
    if send_test_event:
        sent, outcome = _send_test_event(dsn)
        _out(f"{'test event:':<{width}} {outcome}")
        return 0 if sent else 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-bridge",
        description="OpenTelemetry spans of ASGI apps as Sentry transactions and error events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {otel_bridge.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    command = commands.add_parser(
        "demo",
        help="run the example app and show the Sentry events it sends",
        description="Run an example app from examples/ (the seed app by default) under a real server, send "
        "it a few requests, and show the Sentry transactions and error events that reach an embedded local "
        "receiver. Needs no Sentry account.",
    )
    command.add_argument(
        "--example",
        choices=EXAMPLES,
        default="seed",
        help="which example app: examples/NAME_app.py (default seed)",
    )
    command.add_argument("--server", choices=SERVERS, default="uvicorn", help="ASGI server (default uvicorn)")
    command.add_argument(
        "--requests",
        type=int,
        default=2,
        metavar="N",
        help="GET / requests before the failing one, for the seed example (default 2)",
    )
    command = commands.add_parser(
        "receive",
        help="run a local Sentry receiver and print every event it gets",
        description="Listen on 127.0.0.1, print a DSN to point apps at, and print each item as it arrives.",
    )
    command.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
    command = commands.add_parser(
        "doctor",
        help="check and print the configuration otel_bridge.init() will use",
        description="Print the effective configuration from SENTRY_* and OTEL_* variables (never the DSN "
        "key). Exit 2 on an invalid value, 1 when there is no DSN.",
    )
    command.add_argument(
        "--send-test-event", action="store_true", help="also send a test message to the DSN's project"
    )
    commands.add_parser(
        "options",
        help="print what each sentry_sdk.init option does here (the README's table)",
        description="Print, as a Markdown table, each sentry_sdk.init option and whether it acts through "
        "sentry-sdk, through the bridge, differs, or has no effect here.",
    )
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.requests < 0:
            parser.error("--requests must be 0 or more")
        try:
            return demo(args.requests, args.example, args.server)
        except KeyboardInterrupt:
            _fail("interrupted")
            return 130
    if args.command == "receive":
        return receive(args.port)
    if args.command == "doctor":
        return doctor(args.send_test_event)
    if args.command == "options":
        print(sentry_options.markdown_table())
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
