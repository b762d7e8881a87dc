"""``otel-bridge``: check the configuration, send a test event, or watch events arrive on a local receiver."""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Optional

import otel_bridge
from otel_bridge._config import sentry_options
from otel_bridge._config.options import ConfigError
from otel_bridge._config.resolution import Resolved
from otel_bridge._dev.describe import Style, duration_of
from otel_bridge._dev.receiver import DevServer, ReceivedItem, in_reading_order

DEMO_INSTALL_HINT = "pip install 'otel-bridge[demo]'"
DEMO_SERVICE_NAME = "seed-example"
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
            # one connection per request: a server may close a kept-alive connection after an app's
            # exception, and a request sent on it just then is reset
            with httpx.Client(base_url=base_url, timeout=10.0, headers={"Connection": "close"}) as client:
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

        items = in_reading_order(receiver.items)
        _out()
        _out(
            f"The receiver got {len(items)} item(s)"
            + (", each request's transaction followed by its errors:" if items else ".")
        )
        style = Style(colour=wants_colour(sys.stdout), stable=True)
        for number, item in enumerate(items, 1):
            _out()
            _out(_indent(f"[{number}] {item.describe(style)}", "  "))
        durations = [
            (number, item, duration_of(item.type, item.payload))
            for number, item in enumerate(items, 1)
            if item.payload is not None and duration_of(item.type, item.payload)
        ]
        if durations:
            _out()
            _out("Durations (they change from run to run):")
            for number, item, duration in durations:
                name = (item.payload or {}).get("transaction")
                _out(f"  [{number}] {item.type} {name}  {duration}")
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


RECEIVE_KEY = "local"
DEFAULT_PROJECT = "1"
RECEIVE_EXIT_CODES = """output:
  Readable text by default, coloured only when stdout is a terminal (and NO_COLOR is unset). With --json,
  stdout has one JSON payload per line and the DSN and status lines go to stderr.

exit codes:
  0  stopped with Ctrl-C or SIGTERM (or stdout was closed)
  1  cannot listen on the port (in use, or not allowed), or cannot go on writing --save
  2  bad arguments: a port outside 0-65535, a --save file that cannot be written
"""


class _Stopped(Exception):
    """SIGTERM, for the receiver's main loop."""


def _raise_stopped(signum: int, frame: Any) -> None:
    raise _Stopped


def _port_number(text: str) -> Optional[int]:
    try:
        value = int(text.strip(), 10)
    except ValueError:
        return None
    return value if 0 <= value <= 65535 else None


def wants_colour(stream: Any) -> bool:
    """ANSI colour only on a terminal, and never with ``NO_COLOR`` set (https://no-color.org)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:
        return False


def _saved_line(item: ReceivedItem) -> str:
    stamp = datetime.fromtimestamp(item.received_at, UTC).isoformat().replace("+00:00", "Z")
    record: dict[str, Any] = {
        "type": item.type,
        "received_at": stamp,
        "project": item.project,
        "envelope": dict(item.envelope_headers),
        "headers": dict(item.headers),
    }
    if item.payload is not None:
        record["payload"] = item.payload
    else:
        record["payload_base64"] = base64.b64encode(item.raw).decode("ascii")
    return json.dumps(record, ensure_ascii=False, default=str)


def _raw_json(item: ReceivedItem) -> str:
    if item.payload is not None:
        return json.dumps(item.payload, ensure_ascii=False, separators=(",", ":"), default=str)
    return json.dumps(item.raw.decode("utf-8", "replace"), ensure_ascii=False)


def receive(port: str = "0", *, as_json: bool = False, save: Optional[str] = None) -> int:
    number = _port_number(str(port))
    if number is None:
        _fail(f"--port must be a number from 0 to 65535 (0 picks a free port), not {port!r}")
        return 2
    lock = threading.Lock()
    problems: list[str] = []
    stopping = threading.Event()
    saved: Optional[IO[str]] = None
    style = Style(colour=not as_json and wants_colour(sys.stdout))
    status = sys.stderr if as_json else sys.stdout
    count = 0

    def say(text: str = "") -> None:
        print(text, file=status, flush=True)

    def show(item: ReceivedItem) -> None:
        nonlocal count
        with lock:
            if stopping.is_set():
                return
            count += 1
            try:
                if saved is not None:
                    saved.write(_saved_line(item) + "\n")
                    saved.flush()
            except OSError as exc:
                problems.append(f"cannot go on writing --save {save}: {exc.strerror or exc}")
                stopping.set()
                return
            try:
                if as_json:
                    sys.stdout.write(_raw_json(item) + "\n")
                else:
                    where = "" if item.project == DEFAULT_PROJECT else f" project {item.project}"
                    stamp = time.strftime("%H:%M:%S", time.localtime(item.received_at))
                    sys.stdout.write(f"{style.paint(f'[{stamp}{where}]', '2')} {item.describe(style)}\n\n")
                sys.stdout.flush()
            except OSError:
                # stdout was closed (``| head``): stop quietly, as other command-line tools do.
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                stopping.set()

    try:
        server = DevServer(number, project=DEFAULT_PROJECT, public_key=RECEIVE_KEY, on_item=show)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = "; pick another --port, or leave it out for a free one" if number else ""
        _fail(f"cannot listen on 127.0.0.1:{number}: {reason}{hint}")
        return 1
    if save is not None:
        try:
            saved = open(save, "a", encoding="utf-8")  # noqa: SIM115 (closed below, after the server)
        except OSError as exc:
            server.stop()
            _fail(f"cannot write to --save {save}: {exc.strerror or exc}")
            return 2
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_stopped) if in_main_thread else None
    try:
        with contextlib.suppress(KeyboardInterrupt, _Stopped), server:
            say(
                f"otel-bridge receive: a local Sentry endpoint on http://127.0.0.1:{server.port} "
                "(no Sentry account; any key is accepted)"
            )
            say("Point apps at it (several can share it; another project number, e.g. /2, tells them apart):")
            say(f"  export SENTRY_DSN={server.dsn}")
            if save is not None:
                say(f"Appending every item to {save} as a JSON line.")
            say("Waiting for events; Ctrl-C to stop.")
            say()
            while not stopping.wait(0.5):
                pass
    finally:
        stopping.set()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        if saved is not None:
            with lock:
                saved.close()
    if problems:
        _fail(problems[0])
        return 1
    with contextlib.suppress(OSError):
        say(f"Stopped: {count} item(s) received" + (f", appended to {save}." if save else "."))
    return 0


def _resource_attributes() -> Mapping[str, Any]:
    from opentelemetry.sdk.resources import Resource

    return Resource.create().attributes


def _configuration(resolved: Resolved, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The lines ``doctor`` prints, all from what ``init()`` resolved."""
    config = resolved.config
    resource = _resource_attributes()
    lines: list[tuple[str, str]] = []

    if resolved.dsn_host and resolved.dsn_project:
        lines += [("dsn host", resolved.dsn_host), ("dsn project", resolved.dsn_project)]
    else:
        lines += [("dsn host", "(no SENTRY_DSN)"), ("dsn project", "(no SENTRY_DSN)")]
    lines.append(("spotlight", "on (spotlight / SENTRY_SPOTLIGHT)" if resolved.spotlight else "off"))
    if resolved.adopts_client:
        lines.append(
            ("sentry-sdk client", "already initialised in this process: otel_bridge.init() adopts it")
        )

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

    sampler_origin = "" if env.get("OTEL_TRACES_SAMPLER", "").strip() else " (default)"
    if resolved.sampler_arg is not None:
        lines.append(("sampler", f"{resolved.sampler}, arg {resolved.sampler_arg}{sampler_origin}"))
    else:
        lines.append(("sampler", f"{resolved.sampler}{sampler_origin}"))
    lines.append(("sentry sample rate", f"{resolved.sample_rate} ({resolved.sample_rate_origin})"))

    others = ", ".join(
        f"{exporter.name} ({exporter.entry_point.name})" if exporter.name == "otlp" else exporter.name
        for exporter in resolved.exporters
    )
    origin = (
        "OTEL_TRACES_EXPORTER"
        if env.get("OTEL_TRACES_EXPORTER", "").strip()
        else "OTEL_TRACES_EXPORTER unset"
    )
    if others:
        lines.append(("exporters", f"{others} and Sentry ({origin})"))
    else:
        lines.append(("exporters", f"Sentry only ({origin})"))
    if resolved.sentry_exporter:
        lines.append(
            (
                "sentry exporter",
                "named in OTEL_TRACES_EXPORTER: it sends only where otel_bridge.init() is not called "
                "(opentelemetry-instrument alone); with init(), init()'s processor sends instead",
            )
        )

    origin = "OTEL_PROPAGATORS" if resolved.propagators_from_env else "default"
    lines.append(("propagators", f"{', '.join(resolved.propagators)} ({origin})"))

    lines.append(("send_default_pii", f"{resolved.send_default_pii} ({resolved.pii_origin})"))
    if resolved.data_collection:
        lines.append(("data_collection", resolved.data_collection))

    if resolved.excluded_urls:
        lines.append(("excluded urls", f"{resolved.excluded_urls} ({resolved.excluded_urls_variable})"))
    else:
        lines.append(("excluded urls", "(none)"))
    for label, suffix in (
        ("captured request headers", "SERVER_REQUEST"),
        ("captured response headers", "SERVER_RESPONSE"),
    ):
        captured = env.get(f"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_{suffix}", "").strip()
        lines.append((label, captured or "(none)"))
    opt_in = env.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").strip()
    lines.append(("semconv opt-in", opt_in or "(unset: the old HTTP semantic conventions)"))
    lines.append(
        (
            "bridge limits",
            f"{config.max_spans_per_trace} spans a trace, {config.max_open_traces} open traces, "
            f"{config.max_queued_traces} queued traces, "
            f"{config.max_queued_bytes // (1024 * 1024)} MiB queued",
        )
    )
    return lines


def _test_event(resolved: Resolved) -> dict[str, Any]:
    import datetime
    import uuid

    event: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
        "platform": "python",
        "level": "info",
        "logger": "otel_bridge.doctor",
        "message": TEST_EVENT_MESSAGE,
        "sdk": {"name": "otel-bridge.doctor", "version": otel_bridge.__version__},
    }
    if resolved.config.environment:
        event["environment"] = resolved.config.environment
    if resolved.config.release:
        event["release"] = resolved.config.release
    return event


def _pool(url: str) -> Any:
    """An urllib3 pool as sentry-sdk's transport would use: CA bundle from ``SSL_CERT_FILE`` /
    ``REQUESTS_CA_BUNDLE`` / certifi, proxy from ``HTTPS_PROXY`` / ``HTTP_PROXY``."""
    import urllib.request
    from urllib.parse import urlsplit

    import certifi
    import urllib3

    ca_certs = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE") or certifi.where()
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return urllib3.ProxyManager(proxy, ca_certs=ca_certs, cert_reqs="CERT_REQUIRED")
    return urllib3.PoolManager(ca_certs=ca_certs, cert_reqs="CERT_REQUIRED")


def _send_test_event(resolved: Resolved) -> tuple[bool, str]:
    """POST one message event to the DSN's envelope endpoint and say what the server answered; ``True``
    only for a 2xx status."""
    from sentry_sdk.envelope import Envelope
    from sentry_sdk.utils import Dsn

    dsn = resolved.config.dsn
    assert dsn is not None
    parsed = Dsn(dsn)
    secrets = [value for value in (parsed.public_key, parsed.secret_key) if value]

    def redacted(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return " ".join(text.split())[:300]

    auth = parsed.to_auth(f"otel-bridge-doctor/{otel_bridge.__version__}")
    url = auth.get_api_url()
    event = _test_event(resolved)
    envelope = Envelope(headers={"event_id": event["event_id"], "sent_at": event["timestamp"]})
    envelope.add_event(event)  # type: ignore[arg-type]
    headers = {"Content-Type": "application/x-sentry-envelope", "X-Sentry-Auth": auth.to_header()}
    try:
        response = _pool(url).request(
            "POST",
            url,
            body=envelope.serialize(),
            headers=headers,
            timeout=TEST_EVENT_TIMEOUT,
            retries=False,
        )
    except Exception as exc:
        return False, redacted(f"not sent to {parsed.netloc}: {type(exc).__name__}: {exc}")
    status = int(response.status)
    reason = response.reason or ""
    if 200 <= status < 300:
        return True, f"accepted by {parsed.netloc}: HTTP {status} (event id {event['event_id']})"
    body = redacted(response.data.decode("utf-8", "replace")) or "(empty body)"
    if status == 429:
        retry = response.headers.get("Retry-After") or response.headers.get("X-Sentry-Rate-Limits") or "?"
        return False, redacted(f"rate limited by {parsed.netloc}: HTTP 429 (retry after {retry}): {body}")
    return False, redacted(f"rejected by {parsed.netloc}: HTTP {status} {reason}: {body}")


DOCTOR_EXIT_CODES = """exit codes:
  0  otel_bridge.init() would send to Sentry (or Spotlight); the test event, if sent, was accepted
  1  otel_bridge.init() would do nothing (no DSN, OTEL_SDK_DISABLED=true),
     or the test event was not accepted
  2  a value otel_bridge.init() rejects (one line on stderr naming it and the accepted values),
     or the module given to --app could not be imported
  3  it would work, but settings contradict each other or look mistyped
     (each one a "warning:" line on stderr)"""


def _integrations_warning(names: Sequence[str]) -> str:
    listed = ", ".join(names)
    sanic = " (and tags set in a Sanic view miss the transaction)" if "SanicIntegration" in names else ""
    return (
        f"the sentry-sdk client initialised with sentry_sdk.init() runs sentry-sdk's own {listed} next to "
        "this bridge: each request still gives one transaction and one event per exception, but they open "
        f"a second request scope on every request{sanic}; leave them out with "
        f"sentry_sdk.init(disabled_integrations=[{', '.join(name + '()' for name in names)}]), or let "
        "otel_bridge.init() create the client"
    )


def _import_app(target: str) -> None:
    """Import the app's module, as a server would, so the process is as the app leaves it."""
    import importlib

    module = target.split(":", 1)[0]
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    importlib.import_module(module)


def doctor(send_test_event: bool, app: Optional[str] = None) -> int:
    from otel_bridge._config.resolution import resolve

    try:
        if app:
            _import_app(app)
        resolved = resolve({}, os.environ)
    except ConfigError as exc:
        _fail(str(exc))
        return 2
    except Exception as exc:
        if not app:
            raise
        _fail(f"importing {app} failed: {type(exc).__name__}: {exc}")
        return 2
    lines = _configuration(resolved, os.environ)
    width = max(len(name) for name, _ in lines) + 1
    for name, value in lines:
        _out(f"{name + ':':<{width}} {value}")
    warnings = list(resolved.warnings)
    if resolved.adopted_integrations:
        warnings.append(_integrations_warning(resolved.adopted_integrations))
    warnings.extend(_broken_reaches())
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if resolved.off_reason is not None:
        _out()
        _fail(f"otel_bridge.init() would do nothing: {resolved.off_reason}")
        return 1
    if send_test_event:
        if not resolved.config.dsn:
            _out(f"{'test event:':<{width}} not sent: there is no DSN (Spotlight only)")
            return 1
        sent, outcome = _send_test_event(resolved)
        _out(f"{'test event:':<{width}} {outcome}")
        if not sent:
            return 1
    return 3 if warnings else 0


def _broken_reaches() -> list[str]:
    from otel_bridge import _compat

    return [
        f"this {_compat.library_versions()} breaks what {entry.name} relies on ({entry.target}; verified on "
        f"{entry.verified}){': ' + why if why else ''}; {entry.fallback}"
        for entry, why in _compat.failing()
    ]


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
        description="Listen on 127.0.0.1, print a DSN to point your apps at, and show each item they send\n"
        "as it arrives: transactions with their span tree, errors with their in-app frames, messages,\n"
        "sessions, logs, streamed spans, and client reports in words. Needs no Sentry account.",
        epilog=RECEIVE_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument(
        "--port", default="0", metavar="N", help="port to listen on, 0-65535 (default 0: any free port)"
    )
    command.add_argument(
        "--json", action="store_true", help="print each item's payload as one line of JSON instead of text"
    )
    command.add_argument(
        "--save",
        metavar="FILE",
        help="also append each item to FILE as a JSON line (type, envelope and item headers, payload)",
    )
    command = commands.add_parser(
        "doctor",
        help="check and print the configuration otel_bridge.init() will use",
        description="Print the configuration otel_bridge.init() resolves from SENTRY_* and OTEL_*\n"
        "variables, with the same code (never the DSN key), and warn about settings that\n"
        "contradict each other.",
        epilog=DOCTOR_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument(
        "--send-test-event",
        action="store_true",
        help="also send a test message to the DSN's project and print what the server answered",
    )
    command.add_argument(
        "--app",
        metavar="MODULE",
        help="import your app's module first (as a server would), so that its sentry_sdk.init(), "
        "otel_bridge.init() and TracerProvider are checked too",
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
        return receive(args.port, as_json=args.json, save=args.save)
    if args.command == "doctor":
        return doctor(args.send_test_event, args.app)
    if args.command == "options":
        print(sentry_options.markdown_table())
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
