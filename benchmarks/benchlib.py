"""Plumbing shared by every benchmark: processes, the loopback endpoint, ``/proc`` readings, the load
generators (``wrk``, or ``pyload.py`` in its own process) and what the machine and checkout are.

Every address used here is on 127.0.0.1; every load run is bounded in time (and, where asked, in count).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENDPOINT_SCRIPT = HERE / "endpoint.py"
PYLOAD_SCRIPT = HERE / "pyload.py"
SENTRY_KEY = "0123456789abcdef0123456789abcdef"
HOST = "127.0.0.1"
READY = "READY "
RESULT = "RESULT "
WRK_RESULT = "WRK-JSON "
WRK_INSTALL_HINT = "apt-get install -y wrk"

# ------------------------------------------------------------------------------------------ processes


def fill_in_sizes(args: Any, sizes: dict[str, tuple[float, float]]) -> None:
    """Each option in ``sizes`` the command line left out (``None``): its first value with ``--quick``, else
    its second, of the second's type."""
    for name, (quick, full) in sizes.items():
        if getattr(args, name, None) is None:
            setattr(args, name, type(full)(quick if args.quick else full))


def child_environment() -> dict[str, str]:
    """Ours, without ``SENTRY_*``/``OTEL_*`` settings that would change what a variant does."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SENTRY_", "OTEL_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


def stop(process: subprocess.Popen[str], timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; only ever the process we started."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_endpoint(delay_ms: float = 0.0) -> Iterator[str]:
    """``endpoint.py`` in its own process (its CPU does not count); yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, str(ENDPOINT_SCRIPT), "--port", "0", "--delay-ms", str(delay_ms)],
        stdout=subprocess.PIPE,
        text=True,
        env=child_environment(),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith(READY):
            raise RuntimeError(f"the endpoint did not start (it said {line!r})")
        yield f"http://{HOST}:{int(line.split()[1])}"
    finally:
        stop(process, 5)


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 where connections are refused (Sentry "down"): bound, never listening, so that
    no other process is handed it while we use it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        yield port


def dsn_for(host_port: str, project: int) -> str:
    return f"http://{SENTRY_KEY}@{host_port}/{project}"


def get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def endpoint_counts(endpoint: str, project: int) -> dict[str, Any]:
    counts: dict[str, Any] = get_json(f"{endpoint}/counts?project={project}")[str(project)]
    return counts


def wait_until_listening(port: int, process: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the app exited before it listened")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the app did not listen on {port} within {timeout} s")


async def read_http_answer(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 answer's head (its body, by its content-length, read and dropped)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return head


def item_counts(
    endpoint: Optional[str], project: int, kinds: Sequence[str] = ("transaction", "event")
) -> dict[str, int]:
    """Items of each of ``kinds`` the endpoint has received for ``project`` (zeros without one): by default
    transactions and error events; ``otlp_root_span`` for a variant that delivers OTLP."""
    if endpoint is None:
        return dict.fromkeys(kinds, 0)
    items = endpoint_counts(endpoint, project)["items"]
    return {kind: int(items.get(kind, 0)) for kind in kinds}


def wait_for_items(
    endpoint: Optional[str], project: int, expected: dict[str, int], quiet: float, limit: float
) -> float:
    """Until each item type reaches ``expected`` or nothing arrived for ``quiet`` s; ``limit`` s at most."""
    started = time.monotonic()
    if endpoint is None:
        return 0.0
    last: Optional[dict[str, int]] = None
    last_change = started
    while time.monotonic() - started < limit:
        counts = item_counts(endpoint, project, list(expected))
        now = time.monotonic()
        if all(counts[kind] >= count for kind, count in expected.items()):
            break
        if counts != last:
            last, last_change = counts, now
        elif now - last_change >= quiet:
            break
        time.sleep(0.1)
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------- /proc


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` so far (``/proc/<pid>/stat``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # after "pid (comm)": utime and stime are fields 14 and 15 of proc(5), so 12 and 13 here
    return (int(fields[11]) + int(fields[12])) / ticks


def status_mib(pid: int, key: str) -> Optional[float]:
    """A ``kB`` line of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``…) in MiB; ``None`` if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def thread_count(pid: int) -> Optional[int]:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


# ------------------------------------------------------------------------------------ load generators


def wrk_path() -> Optional[str]:
    return shutil.which("wrk")


def choose_loader(requested: str) -> str:
    """``wrk`` when asked for or found; otherwise the Python generator, saying so once, clearly."""
    if requested == "python":
        return "python"
    if wrk_path() is not None:
        return "wrk"
    if requested == "wrk":
        raise SystemExit(f"wrk is not installed (Debian: {WRK_INSTALL_HINT}); or pass --loader python")
    print(
        f"NOTE: wrk not found; using the Python load generator (benchmarks/pyload.py, its own process). "
        f"It is slower than wrk and takes more of the 2 cores from the app: install wrk "
        f"({WRK_INSTALL_HINT}) for the reference figures.",
        file=sys.stderr,
        flush=True,
    )
    return "python"


_WRK_SCRIPT = """
local limit = 0
local counter = 0
function init(args)
  limit = tonumber(args[1] or "0") or 0
end
%(response)s
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(prefix)s{"requests":%%d,"duration_us":%%d,"bytes":%%d,'
    .. '"errors":{"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d},'
    .. '"latency_us":{"mean":%%.1f,"max":%%d,"p50":%%d,"p90":%%d,"p99":%%d,"p999":%%d}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""

_WRK_COUNTING = """
function response(status, headers, body)
  counter = counter + 1
  if limit > 0 and counter >= limit then
    wrk.thread:stop()
  end
end
"""


def run_wrk(
    port: int,
    path: str,
    duration: float,
    connections: int,
    threads: int,
    requests: Optional[int] = None,
    done: Optional[Callable[[], bool]] = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Closed-loop ``wrk`` for ``duration`` seconds; returns the figures of its Lua ``done()``.

    With ``requests``, each wrk thread stops sending after its share; wrk itself still waits out its
    ``-d``, so ``done`` (polled every 0.1 s, e.g. "the app has served that many") ends it early with
    SIGINT, on which wrk reports as usual. The duration is then only the bound."""
    executable = wrk_path()
    if executable is None:
        raise RuntimeError(f"wrk is not installed ({WRK_INSTALL_HINT})")
    threads = max(1, min(threads, connections))
    script = _WRK_SCRIPT % {"response": _WRK_COUNTING if requests else "", "prefix": WRK_RESULT}
    per_thread = math.ceil(requests / threads) if requests else 0
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-") as lua:
        lua.write(script)
        lua.flush()
        command = [
            executable,
            "--latency",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, math.ceil(duration))}s",
            "--timeout",
            f"{max(1, math.ceil(timeout_s))}s",
            "-s",
            lua.name,
            f"http://{HOST}:{port}{path}",
            "--",
            str(per_thread),
        ]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if done is not None:
                deadline = time.monotonic() + duration + 5
                while process.poll() is None and time.monotonic() < deadline:
                    if done():
                        process.send_signal(signal.SIGINT)
                        break
                    time.sleep(0.1)
            stdout, stderr = process.communicate(timeout=duration + 60)
        finally:
            stop(process, 5)
    lines = [line for line in stdout.splitlines() if line.startswith(WRK_RESULT)]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed (exit {process.returncode}): {stderr[-1000:]}")
    raw = json.loads(lines[-1][len(WRK_RESULT) :])
    latency = raw["latency_us"]
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    return {
        "tool": "wrk",
        "requests": raw["requests"],
        "duration_s": seconds,
        "rps": raw["requests"] / seconds if seconds else math.nan,
        "latency_p50_ms": latency["p50"] / 1000,
        "latency_p90_ms": latency["p90"] / 1000,
        "latency_p99_ms": latency["p99"] / 1000,
        "latency_p999_ms": latency["p999"] / 1000,
        "latency_mean_ms": latency["mean"] / 1000,
        "latency_max_ms": latency["max"] / 1000,
        "non_2xx": errors["status"],
        "socket_errors": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        "errors": errors,
        "output": [line for line in stdout.splitlines() if not line.startswith(WRK_RESULT)],
    }


def run_python_load(
    port: int,
    path: str,
    duration: float,
    connections: int,
    requests: Optional[int] = None,
    rate: Optional[float] = None,
    drain: float = 10.0,
) -> dict[str, Any]:
    """``pyload.py`` in its own process: closed loop (the fallback for ``wrk``), or open loop at ``rate``."""
    command = [sys.executable, str(PYLOAD_SCRIPT), "--port", str(port), "--path", path]
    command += ["--duration", str(duration), "--connections", str(connections)]
    if requests:
        command += ["--requests", str(requests)]
    if rate is not None:
        command += ["--rate", str(rate), "--drain", str(drain)]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=child_environment(),
        timeout=duration + drain + 60,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT)]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"pyload failed (exit {completed.returncode}): {completed.stderr[-1000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT) :])
    return result


def run_load(
    loader: str,
    port: int,
    path: str,
    duration: float,
    connections: int,
    threads: int,
    requests: Optional[int] = None,
    done: Optional[Callable[[], bool]] = None,
) -> dict[str, Any]:
    """``requests``: stop after about that many (``done`` tells wrk's caller when; see ``run_wrk``)."""
    if loader == "wrk":
        return run_wrk(port, path, duration, connections, threads, requests, done)
    return run_python_load(port, path, duration, connections, requests)


# --------------------------------------------------------------------------------------- description


PACKAGES = (
    "otel-bridge",
    "sentry-sdk",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-asgi",
    "opentelemetry-exporter-otlp-proto-http",
    "urllib3",
    "uvicorn",
    "h11",
)
MODULES = ("httptools", "uvloop")


def versions(
    packages: Sequence[str] = PACKAGES, modules: Sequence[str] = MODULES, with_wrk: bool = True
) -> dict[str, str]:
    """Installed versions of ``packages``, whether ``modules`` import, and (``with_wrk``) wrk's version."""
    found: dict[str, str] = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    for module in modules:
        try:
            __import__(module)
            found[module] = "installed"
        except ImportError:
            found[module] = "not installed"
    if not with_wrk:
        return found
    wrk = wrk_path()
    if wrk is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            text = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10).stdout
            found["wrk"] = text.split("[")[0].replace("wrk", "").strip() or "installed"
    found.setdefault("wrk", "not installed")
    return found


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def git_commit_and_changes(checkout: Path = REPO) -> Optional[tuple[str, bool]]:
    """The short commit of ``checkout`` and whether its ``otel_bridge`` has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(checkout), "status", "--porcelain", "--", "otel_bridge"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit, bool(changes)


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile (nearest rank) of sorted values; NaN when there are none."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]
