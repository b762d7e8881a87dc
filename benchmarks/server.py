"""One variant's app under uvicorn, in its own process: what ``e2e.py``, ``rss.py`` and ``delivery.py`` load.

uvicorn runs one worker, no access log, log level warning (``h11`` and asyncio unless ``httptools`` /
``uvloop`` are installed); uvicorn logs every failed request's traceback to stderr, which goes to a file.
``GET /__bench__`` answers how many requests the app has served, outside every middleware;
``GET /__bench__/flush`` waits (on a thread, 30 s at most) for the variant's flush, as ``overhead.py`` does:
a ``BatchSpanProcessor`` otherwise holds its last spans for its schedule delay (5 s). On SIGTERM
uvicorn stops, the variant flushes and shuts down (``--flush-timeout`` s at most) and the process prints
one ``EXIT {json}`` line with what the variant counted.

    .venv/bin/python benchmarks/server.py --variant bridge --scenario error --dsn http://key@127.0.0.1:9/1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Callable, Optional

import benchlib
import variants

CONTROL_PATH = "/__bench__"
FLUSH_PATH = CONTROL_PATH + "/flush"
EXIT = "EXIT "


def with_control(app: variants.ASGIApp, flush: Callable[[float], bool]) -> variants.ASGIApp:
    async def outer(scope: variants.Scope, receive: variants.Receive, send: variants.Send) -> None:
        if scope["type"] == "http" and scope["path"] in (CONTROL_PATH, FLUSH_PATH):
            answer: dict[str, Any] = {"served": variants.SERVED.count}
            if scope["path"] == FLUSH_PATH:
                answer["flushed"] = await asyncio.to_thread(flush, 30.0)
            body = json.dumps(answer).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return outer


def serve(variant: str, scenario: str, dsn: str, flush_timeout: float, connections: Optional[int]) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # uvicorn re-raises the signal after its shutdown, which would end the process before the flush
            self.should_exit = True

    built = variants.build(variant, scenario, dsn, connections)
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((benchlib.HOST, 0))
    info = {**built.info, "port": sock.getsockname()[1], "pid": os.getpid()}
    config = uvicorn.Config(
        with_control(built.app, built.flush),
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=2048,
        timeout_keep_alive=120,
    )
    print(benchlib.READY + json.dumps(info), flush=True)
    Server(config).run(sockets=[sock])
    started = time.monotonic()
    finished = built.close(flush_timeout)
    finished.update(served=variants.SERVED.count, exit_flush_s=time.monotonic() - started)
    print(EXIT + json.dumps(finished), flush=True)


# ------------------------------------------------------------------------ the app process, from outside


class AppProcess:
    """``server.py`` in its own process, as its parent sees it."""

    def __init__(self, process: subprocess.Popen[str], errors: IO[str], info: dict[str, Any]) -> None:
        self.process = process
        self.errors = errors
        self.info = info
        self.port: int = info["port"]
        self.pid = process.pid
        self.exit_info: dict[str, Any] = {}

    def served(self) -> int:
        return int(benchlib.get_json(f"http://{benchlib.HOST}:{self.port}{CONTROL_PATH}")["served"])

    def flush(self) -> bool:
        """The variant's flush, in the app process (its CPU counts there); whether it finished in time."""
        answer = benchlib.get_json(f"http://{benchlib.HOST}:{self.port}{FLUSH_PATH}", timeout=40)
        return bool(answer["flushed"])

    def load(
        self, loader: str, bound: float, connections: int, threads: int, requests: int
    ) -> dict[str, Any]:
        """About ``requests`` requests (``bound`` seconds at most), stopping once the app has served them."""
        target = self.served() + requests
        return benchlib.run_load(
            loader, self.port, "/", bound, connections, threads, requests, lambda: self.served() >= target
        )

    def cpu_seconds(self) -> float:
        return benchlib.process_cpu_seconds(self.pid)

    def rss_mib(self) -> Optional[float]:
        return benchlib.status_mib(self.pid, "VmRSS")

    def stop(self, timeout: float = 20.0) -> dict[str, Any]:
        """SIGTERM; the app flushes and prints its ``EXIT`` line."""
        benchlib.stop(self.process, timeout)
        assert self.process.stdout is not None
        for line in self.process.stdout.read().splitlines():
            if line.startswith(EXIT):
                self.exit_info = json.loads(line[len(EXIT) :])
        return self.exit_info

    def stderr_tail(self, lines: int = 5) -> list[str]:
        """The last lines of the app's stderr, with uvicorn's per-request tracebacks left out."""
        self.errors.seek(0, os.SEEK_END)
        size = self.errors.tell()
        self.errors.seek(max(0, size - 20_000))
        text = self.errors.read().splitlines()
        noise = ("Traceback", "AppError", "variants.AppError", "ERROR:    Exception in ASGI application")
        kept = [line for line in text if line and not line.startswith((" ", *noise))]
        return kept[-lines:]


@contextlib.contextmanager
def app_process(
    variant: str, scenario: str, dsn: str, flush_timeout: float = 5.0, connections: Optional[int] = None
) -> Iterator[AppProcess]:
    command = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--scenario", scenario]
    command += ["--dsn", dsn, "--flush-timeout", str(flush_timeout)]
    if connections is not None:
        command += ["--connections", str(connections)]
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=errors, text=True, env=benchlib.child_environment()
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            if not line.startswith(benchlib.READY):
                benchlib.stop(process, 5)
                errors.seek(0)
                raise RuntimeError(f"{variant}: the app did not start: {line!r} {errors.read()[-2000:]}")
            app = AppProcess(process, errors, json.loads(line[len(benchlib.READY) :]))
            benchlib.wait_until_listening(app.port, process, 30)
            yield app
        finally:
            benchlib.stop(process, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--variant", choices=variants.NAMES, required=True)
    parser.add_argument("--scenario", choices=variants.SCENARIOS, default="normal")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--flush-timeout", type=float, default=5.0)
    parser.add_argument("--connections", type=int, help="the bridge: ConcurrentHttpTransport's bound")
    args = parser.parse_args()
    serve(args.variant, args.scenario, args.dsn, args.flush_timeout, args.connections)


if __name__ == "__main__":
    main()
