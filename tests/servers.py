"""Real ASGI servers (uvicorn, hypercorn, granian) running an app in a subprocess on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Literal, Mapping, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

ServerName = Literal["uvicorn", "hypercorn", "granian"]
SERVERS: tuple[ServerName, ...] = ("uvicorn", "hypercorn", "granian")

_HYPERCORN_LOG_OPTIONS = ("--log-level", "--error-log", "--log-config", "--log-file")
_GRANIAN_LOG_OPTIONS = ("--log-level", "--log-config", "--no-log")


class ServerStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def child_environment(
    env: Optional[Mapping[str, str]] = None, app_dir: Optional[str] = None
) -> dict[str, str]:
    """``os.environ`` minus ``SENTRY_*`` and ``OTEL_*``, plus ``env``; the repo and ``app_dir`` importable."""
    result = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "OTEL_"))}
    result.update(env or {})
    paths = [str(REPO_ROOT)]
    if app_dir:
        paths.append(str(Path(app_dir).resolve()))
    if result.get("PYTHONPATH"):
        paths.append(result["PYTHONPATH"])
    result["PYTHONPATH"] = os.pathsep.join(paths)
    result["PYTHONUNBUFFERED"] = "1"
    return result


def server_command(
    target: str,
    port: int,
    server: ServerName = "uvicorn",
    app_dir: Optional[str] = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    if server == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", target, "--host", HOST, "--port", str(port)]
        command += ["--log-level", "warning"]
        if app_dir:
            command += ["--app-dir", app_dir]
    elif server == "hypercorn":
        command = [sys.executable, "-m", "hypercorn", target, "--bind", f"{HOST}:{port}", "--workers", "0"]
    elif server == "granian":
        # One worker process (forked by granian's main process); ``app_dir`` is importable through
        # PYTHONPATH (see ``child_environment``), which the worker inherits. The access log is off; the
        # level stays "info" because readiness waits for the "Started worker-1" line.
        command = [sys.executable, "-m", "granian", "--interface", "asgi", "--workers", "1"]
        command += ["--host", HOST, "--port", str(port), "--no-access-log", "--log-level", "info", target]
    else:
        raise ValueError(f"unknown server {server!r}")
    return command + list(extra_args)


class RunningServer:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self._log_path = log_path
        self._final_output: Optional[str] = None
        self.killed = False

    def output(self) -> str:
        """Everything the server process wrote to stdout and stderr so far."""
        if self._final_output is not None:
            return self._final_output
        try:
            return self._log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; return the exit code. Safe to call repeatedly.

        After a graceful shutdown uvicorn re-raises the signal, so its code is ``-signal.SIGTERM``;
        hypercorn and granian return 0. ``killed`` tells whether SIGKILL was needed. SIGKILL goes to the
        whole process group, so granian's worker process goes with its main process.
        """
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        return int(self.process.returncode)

    def _close(self) -> None:
        self.stop()
        self._final_output = self.output()
        with contextlib.suppress(OSError):
            self._log_path.unlink()

    def __repr__(self) -> str:
        return f"RunningServer(url={self.url!r}, pid={self.process.pid}, returncode={self.process.poll()})"


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _wait_until_ready(
    running: RunningServer, server: ServerName, timeout: float, extra_args: Sequence[str]
) -> None:
    deadline = time.monotonic() + timeout
    ready_marker: Optional[str] = None
    if server == "hypercorn" and not any(arg.startswith(_HYPERCORN_LOG_OPTIONS) for arg in extra_args):
        ready_marker = f"Running on {running.url}"
    elif server == "granian" and not any(arg.startswith(_GRANIAN_LOG_OPTIONS) for arg in extra_args):
        ready_marker = "Started worker-1"
    while True:
        returncode = running.process.poll()
        if returncode is not None:
            raise ServerStartError(
                f"{server} exited with {returncode} before accepting connections; output:\n{running.output()}"
            )
        if _accepts_connections(running.port) and (ready_marker is None or ready_marker in running.output()):
            return
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"{server} did not accept connections on {running.url} within {timeout}s; "
                f"output:\n{running.output()}"
            )
        time.sleep(0.05)


@contextlib.contextmanager
def run_app(
    target: str,
    *,
    env: Optional[Mapping[str, str]] = None,
    server: ServerName = "uvicorn",
    app_dir: Optional[str] = None,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 20.0,
) -> Iterator[RunningServer]:
    """Run ``target`` (``module:attribute``) under a real server; stop it on exit.

    hypercorn runs with ``--workers 0`` so the app lives in the child process itself rather than in a
    grandchild spawned by hypercorn's supervisor; pass ``extra_args`` to override. hypercorn listens
    before the app's lifespan startup has finished, so readiness also waits for its "Running on" log
    line (unless ``extra_args`` change its logging). granian's main process listens before its worker has
    imported the app and run lifespan startup, so readiness waits for the worker's "Started worker-1" line
    (same proviso).
    """
    port = free_port()
    command = server_command(target, port, server, app_dir, extra_args)
    with tempfile.NamedTemporaryFile(prefix=f"otel_bridge_{server}_", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        process = subprocess.Popen(
            command,
            cwd=str(REPO_ROOT),
            env=child_environment(env, app_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = RunningServer(process, port, log_path)
    try:
        _wait_until_ready(running, server, startup_timeout, extra_args)
        yield running
    finally:
        running._close()
