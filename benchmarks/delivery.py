"""Delivered share of transactions under steady load: sentry-sdk's ASGI middleware against ``otel_bridge``.

A trivial ASGI app (200 ``ok``) runs under uvicorn (one worker, its own process) wrapped by each variant:

* ``sentry``: sentry-sdk's ``SentryAsgiMiddleware``, ``sentry_sdk.init(dsn, traces_sample_rate=1.0)``,
  everything else default (one sending thread, a queue of 100 envelopes);
* ``bridge``: ``otel_bridge.init(dsn)`` and ``otel_bridge.asgi.SentryAsgiMiddleware``, defaults (the
  transport is whichever ``init`` picks; the notes name it);
* ``bridge-sdk-transport`` (not run unless asked): the bridge forced onto sentry-sdk's ``HttpTransport``,
  to see what the transport alone changes;
* ``bare`` (not run unless asked): the app alone, for the latency and memory baseline.

Every variant sends to ``benchmarks/endpoint.py`` (its own process) answering each envelope after
``--delay-ms`` (20). A load generator in a third process sends ``GET /`` open-loop at a fixed rate
(each request at its scheduled time, whatever the earlier ones are doing; up to ``--connections`` kept-alive
connections), by default 500 requests/s for 10 s, then, in a fresh app process, 2000 requests/s for 5 s.
After the load the app gets ``--drain`` seconds to deliver what it has queued, then SIGTERM: uvicorn
stops, the app flushes its SDK (5 s at most; this also sends the client reports) and exits.

Per (variant, rate) it prints: the rate achieved (requests answered / time to the last answer), the
delivered share (transactions that reached the endpoint / requests answered), what the SDK's client
reports say it dropped, the latency the load generator saw (from each request's scheduled start, so
waiting for a connection counts), and the app process's peak RSS (``VmHWM``).

Usage::

    .venv/bin/python benchmarks/delivery.py                 # 500 r/s x 10 s and 2000 r/s x 5 s, both variants
    .venv/bin/python benchmarks/delivery.py --quick         # 500 r/s x 2 s and 2000 r/s x 1 s
    .venv/bin/python benchmarks/delivery.py --phases 1000:5 --variants bridge,bridge-sdk-transport

Results also go to ``benchmarks/results/delivery-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

import benchlib

REPO = benchlib.REPO
VARIANTS = ("sentry", "bridge", "bridge-sdk-transport", "bare")
DEFAULT_PHASES = "500:10,2000:5"
QUICK_PHASES = "500:2,2000:1"
DELIVERY_PACKAGES = (
    "sentry-sdk",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-asgi",
    "urllib3",
    "uvicorn",
)
READY = benchlib.READY
RESULT = benchlib.RESULT

# --------------------------------------------------------------------------------- the app (``serve``)


async def hello(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def build_app(variant: str, dsn: str, max_connections: Optional[int]) -> tuple[Any, dict[str, Any]]:
    import sentry_sdk

    if variant == "bare":
        return hello, {"transport": None, "transport_queue_size": None, "transport_max_connections": None}
    if variant == "sentry":
        from sentry_sdk.integrations.asgi import SentryAsgiMiddleware

        sentry_sdk.init(dsn=dsn, traces_sample_rate=1.0)
        app: Any = SentryAsgiMiddleware(hello)
    else:
        sys.path.insert(0, str(REPO))
        import otel_bridge
        from otel_bridge.asgi import SentryAsgiMiddleware as BridgeMiddleware

        options: dict[str, Any] = {"dsn": dsn}
        if variant == "bridge-sdk-transport":
            from sentry_sdk.transport import HttpTransport

            options["transport"] = HttpTransport
        elif max_connections is not None:
            from otel_bridge.transport import ConcurrentHttpTransport

            options["transport"] = ConcurrentHttpTransport.with_max_connections(max_connections)
        otel_bridge.init(**options)
        app = BridgeMiddleware(hello)
    client = sentry_sdk.get_client()
    transport = client.transport
    worker = getattr(transport, "_worker", None)
    info = {
        "transport": type(transport).__name__,
        "transport_queue_size": client.options.get("transport_queue_size"),
        "transport_max_connections": getattr(transport, "max_connections", 1),
        "worker": type(worker).__name__,
    }
    if variant != "sentry":
        import otel_bridge

        info["otel_bridge_file"] = otel_bridge.__file__
    return app, info


def serve(variant: str, dsn: str, flush_timeout: float, max_connections: Optional[int]) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # uvicorn re-raises the signal after its shutdown, which would end the process before the flush
            self.should_exit = True

    app, info = build_app(variant, dsn, max_connections)
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    info["port"] = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, backlog=1024, timeout_keep_alive=120
    )
    server = Server(config)
    print(READY + json.dumps(info), flush=True)
    server.run(sockets=[sock])
    if variant == "sentry":
        import sentry_sdk

        sentry_sdk.get_client().close(timeout=flush_timeout)
    elif variant != "bare":
        import sentry_sdk

        import otel_bridge

        otel_bridge.flush(flush_timeout)
        sentry_sdk.get_client().close(timeout=flush_timeout)


# ------------------------------------------------------------------------- the load generator (``load``)


class Connections:
    """Kept-alive HTTP/1.1 connections to the app, at most ``limit`` of them."""

    def __init__(self, port: int, limit: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(limit)
        self.opened = 0

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await self.slots.acquire()
        if self.idle:
            return self.idle.pop()
        try:
            connection = await asyncio.open_connection("127.0.0.1", self.port)
        except BaseException:
            self.slots.release()
            raise
        connection[1].get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1
        return connection

    def put(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], reusable: bool) -> None:
        if reusable:
            self.idle.append(connection)
        else:
            connection[1].close()
        self.slots.release()


REQUEST = b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nuser-agent: delivery-benchmark\r\n\r\n"


async def one_request(connections: Connections, scheduled: float, results: list[tuple[float, float]]) -> None:
    loop = asyncio.get_running_loop()
    connection = await connections.get()
    reader, writer = connection
    reusable = False
    try:
        writer.write(REQUEST)
        head = await benchlib.read_http_answer(reader)
        if not head.startswith(b"HTTP/1.1 200 "):
            status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
            raise RuntimeError(f"answered {status_line!r}")
        results.append((scheduled, loop.time()))
        reusable = True
    finally:
        connections.put(connection, reusable)


async def generate(port: int, rate: float, duration: float, limit: int, drain: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    connections = Connections(port, limit)
    warm = [await connections.get() for _ in range(min(limit, 32))]
    for connection in warm:
        connections.put(connection, True)
    total = int(rate * duration)
    results: list[tuple[float, float]] = []
    tasks: list[asyncio.Task[None]] = []
    start = loop.time() + 0.05
    sent = 0
    while sent < total:
        due = min(total, int((loop.time() - start) * rate) + 1)
        while sent < due:
            tasks.append(loop.create_task(one_request(connections, start + sent / rate, results)))
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))
    scheduled_until = loop.time()
    done, pending = await asyncio.wait(tasks, timeout=drain) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    failures = Counter(type(task.exception()).__name__ for task in done if task.exception() is not None)
    latencies = sorted(finished - scheduled for scheduled, finished in results)
    last = max((finished for _, finished in results), default=start)
    return {
        "target_rate": rate,
        "duration_s": duration,
        "scheduled": total,
        "offered_rate": total / max(1e-9, scheduled_until - start),
        "answered": len(results),
        "failed": sum(failures.values()),
        "failure_kinds": dict(failures),
        "unanswered_after_drain": len(pending),
        "achieved_rate": len(results) / max(1e-9, last - start),
        "connections_opened": connections.opened,
        "latency_p50_ms": benchlib.percentile(latencies, 0.50) * 1000,
        "latency_p99_ms": benchlib.percentile(latencies, 0.99) * 1000,
        "latency_max_ms": (latencies[-1] if latencies else math.nan) * 1000,
    }


def load(port: int, rate: float, duration: float, limit: int, drain: float) -> None:
    result = asyncio.run(generate(port, rate, duration, limit, drain))
    print(RESULT + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------- the parent process


def transactions_at(endpoint: str, project: int) -> int:
    return int(benchlib.endpoint_counts(endpoint, project)["items"].get("transaction", 0))


def wait_for_delivery(endpoint: str, project: int, expected: int, quiet: float, limit: float) -> float:
    """Until every answered request's transaction arrived, or nothing arrived for ``quiet`` s; bounded."""
    started = time.monotonic()
    last_count, last_change = -1, started
    while time.monotonic() - started < limit:
        count = transactions_at(endpoint, project)
        now = time.monotonic()
        if count >= expected:
            break
        if count != last_count:
            last_count, last_change = count, now
        elif now - last_change >= quiet:
            break
        time.sleep(0.1)
    return time.monotonic() - started


def run_phase(
    variant: str, rate: float, duration: float, endpoint: str, project: int, args: argparse.Namespace
) -> dict[str, Any]:
    dsn = benchlib.dsn_for(endpoint.split("://", 1)[1], project)
    script = str(Path(__file__).resolve())
    with tempfile.TemporaryFile("w+") as errors:
        app = subprocess.Popen(
            [
                sys.executable,
                script,
                "serve",
                "--variant",
                variant,
                "--dsn",
                dsn,
                *(["--max-connections", str(args.max_connections)] if args.max_connections else []),
            ],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=benchlib.child_environment(),
        )
        try:
            assert app.stdout is not None
            line = app.stdout.readline().strip()
            if not line.startswith(READY):
                benchlib.stop(app, 5)
                errors.seek(0)
                raise RuntimeError(f"{variant}: the app did not start: {line!r} {errors.read()[-2000:]}")
            info = json.loads(line[len(READY) :])
            benchlib.wait_until_listening(info["port"], app, 30)
            rss_at_start = benchlib.status_mib(app.pid, "VmHWM")
            generator = subprocess.run(
                [
                    sys.executable,
                    script,
                    "load",
                    "--port",
                    str(info["port"]),
                    "--rate",
                    str(rate),
                    "--duration",
                    str(duration),
                    "--connections",
                    str(args.connections),
                    "--drain",
                    str(args.drain),
                ],
                capture_output=True,
                text=True,
                env=benchlib.child_environment(),
                timeout=duration + args.drain + 60,
            )
            lines = [item for item in generator.stdout.splitlines() if item.startswith(RESULT)]
            if generator.returncode != 0 or not lines:
                raise RuntimeError(f"{variant}: the load generator failed: {generator.stderr[-2000:]}")
            result = json.loads(lines[-1][len(RESULT) :])
            waited = wait_for_delivery(endpoint, project, result["answered"], quiet=2.0, limit=args.drain)
            before_exit = transactions_at(endpoint, project)
            peak = benchlib.status_mib(app.pid, "VmHWM")
            benchlib.stop(app, 15)
        finally:
            benchlib.stop(app, 5)
        errors.seek(0)
        stderr = errors.read()
    counts = benchlib.endpoint_counts(endpoint, project)
    delivered = int(counts["items"].get("transaction", 0))
    dropped = {
        key.split(":", 1)[0]: value
        for key, value in counts["discarded"].items()
        if key.endswith(":transaction")
    }
    answered = result["answered"]
    return {
        "variant": variant,
        "project": project,
        **info,
        **result,
        "delivered": delivered,
        "delivered_before_exit": before_exit,
        "delivered_share": delivered / answered if answered and variant != "bare" else None,
        "reported_dropped_transactions": dropped,
        "unaccounted": answered - delivered - sum(dropped.values()),
        "waited_for_delivery_s": waited,
        "rss_at_start_mib": rss_at_start,
        "peak_rss_mib": peak,
        "endpoint_parse_errors": counts["parse_errors"],
        "app_stderr_tail": stderr.strip().splitlines()[-5:],
    }


def describe_dropped(dropped: dict[str, int]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in sorted(dropped.items())) or "none"


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"delivery: endpoint answers each envelope after {args.delay_ms:g} ms; uvicorn, 1 worker; "
        f"{os.cpu_count()} CPUs; open-loop load, up to {args.connections} connections",
        "",
        f"{'variant':<21} {'target':>6} {'achieved':>8} {'answered':>8} {'delivered':>9} {'share':>7} "
        f"{'p50 ms':>7} {'p99 ms':>8} {'peak RSS':>9}  dropped (client reports)",
    ]
    for run in runs:
        lines.append(
            f"{run['variant']:<21} {run['target_rate']:>6.0f} {run['achieved_rate']:>8.0f} "
            f"{run['answered']:>8} {run['delivered']:>9} {benchlib.share(run['delivered_share']):>7} "
            f"{run['latency_p50_ms']:>7.1f} {run['latency_p99_ms']:>8.1f} {run['peak_rss_mib']:>6.0f} MiB  "
            f"{describe_dropped(run['reported_dropped_transactions'])}"
        )
    lines.append("")
    for run in runs:
        notes = [f"offered {run['offered_rate']:.0f}/s"]
        if run["transport"] is not None:
            notes.insert(
                0,
                f"transport {run['transport']} (queue {run['transport_queue_size']}, "
                f"up to {run['transport_max_connections']} connection(s) in flight)",
            )
        if run["failed"] or run["unanswered_after_drain"]:
            notes.append(
                f"{run['failed']} failed {run['failure_kinds'] or ''}, "
                f"{run['unanswered_after_drain']} unanswered after the drain"
            )
        if run["unaccounted"] and run["transport"] is not None:
            notes.append(f"{run['unaccounted']} transaction(s) neither delivered nor reported dropped")
        if run["endpoint_parse_errors"]:
            notes.append(f"{run['endpoint_parse_errors']} envelope(s) the endpoint could not parse")
        lines.append(f"  {run['variant']} @ {run['target_rate']:.0f}/s: " + "; ".join(notes))
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="(internal) run the app under uvicorn")
    serve_parser.add_argument("--variant", choices=VARIANTS, required=True)
    serve_parser.add_argument("--dsn", required=True)
    serve_parser.add_argument("--flush-timeout", type=float, default=5.0)
    serve_parser.add_argument("--max-connections", type=int)
    load_parser = sub.add_parser("load", help="(internal) the load generator")
    load_parser.add_argument("--port", type=int, required=True)
    load_parser.add_argument("--rate", type=float, required=True)
    load_parser.add_argument("--duration", type=float, required=True)
    load_parser.add_argument("--connections", type=int, default=256)
    load_parser.add_argument("--drain", type=float, default=10.0)
    parser.add_argument(
        "--variants", default="sentry,bridge", help=f"comma-separated, of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--phases", default=DEFAULT_PHASES, help="rate:seconds,... (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"phases {QUICK_PHASES}")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the endpoint's answer delay")
    parser.add_argument("--connections", type=int, default=256, help="the load generator's connection limit")
    parser.add_argument(
        "--max-connections",
        type=int,
        help="bridge: ConcurrentHttpTransport.with_max_connections(N) instead of the default",
    )
    parser.add_argument(
        "--drain", type=float, default=10.0, help="seconds for answers and for delivery after the load"
    )
    args = parser.parse_args(argv)

    if args.command == "serve":
        serve(args.variant, args.dsn, args.flush_timeout, args.max_connections)
        return
    if args.command == "load":
        load(args.port, args.rate, args.duration, args.connections, args.drain)
        return

    variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}: accepted are {', '.join(VARIANTS)}")
    phases = []
    for phase in (QUICK_PHASES if args.quick else args.phases).split(","):
        rate, _, seconds = phase.partition(":")
        phases.append((float(rate), float(seconds)))

    started = datetime.datetime.now()
    runs: list[dict[str, Any]] = []
    with benchlib.running_endpoint(args.delay_ms) as endpoint:
        project = 100
        for rate, seconds in phases:
            for variant in variants:
                project += 1
                print(
                    f"  {variant} at {rate:g} requests/s for {seconds:g} s ...", file=sys.stderr, flush=True
                )
                runs.append(run_phase(variant, rate, seconds, endpoint, project, args))
    text = report(runs, args)
    print(text)

    document = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": (datetime.datetime.now() - started).total_seconds(),
        "config": {
            "variants": variants,
            "phases": [{"rate": rate, "seconds": seconds} for rate, seconds in phases],
            "delay_ms": args.delay_ms,
            "connections": args.connections,
            "drain_s": args.drain,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "versions": benchlib.versions(DELIVERY_PACKAGES, with_wrk=False),
        "code_under_test": benchlib.git_state(),
        "runs": runs,
        "report": text,
    }
    path = benchlib.save("delivery", started, document)
    print(f"\nresults: {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
