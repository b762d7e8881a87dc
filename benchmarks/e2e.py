"""End to end under a real server: requests/s, latency, CPU and delivered share of each variant under uvicorn.

A trivial ASGI app (``200 ok``; in the error scenario it raises on every request and uvicorn answers
500) runs under uvicorn (one worker, no access log, log level warning, its own process) wrapped by:

* ``bare``: nothing;
* ``otel``: ``OpenTelemetryMiddleware(app, exclude_spans=["receive", "send"])``, an SDK ``TracerProvider``
  with a ``BatchSpanProcessor`` and an exporter that discards;
* ``sentry``: sentry-sdk's ``SentryAsgiMiddleware``, ``sentry_sdk.init(dsn, traces_sample_rate=1.0)``,
  everything else default (a queue of 100 envelopes, one sending thread);
* ``sentry-deliver-all``: the same with ``transport_queue_size=100_000``, so that it drops nothing;
* ``bridge``: ``otel_bridge.init(dsn)`` and ``otel_bridge.asgi.SentryAsgiMiddleware(app)``, defaults;
* ``bridge-deliver-all`` (not run unless asked): the bridge with ``transport_queue_size=100_000`` and
  ``max_queued_traces=100_000``.

Sentry DSNs point at ``benchmarks/endpoint.py`` in its own process (its CPU does not count). The load is
closed-loop: ``wrk`` (2 threads, 50 connections, ``--latency``) when installed, otherwise the Python
generator ``benchmarks/pyload.py`` in its own process, with a note. Rounds alternate the variants (a
rotated order each round); every (round, scenario, variant) gets a fresh app process:

1. warm-up load, then wait until the endpoint stops receiving;
2. the measured load for ``--duration`` seconds: req/s and latency as the load generator saw them;
3. wait (bounded) until every transaction has arrived or none arrived for a while, then read the app
   process's CPU (every thread, ``/proc/<pid>/stat``) from the start of the load: CPU per request
   *including* the background delivery;
4. SIGTERM: the app flushes (5 s at most) and exits; the endpoint's counts give the delivered share
   (transactions, and in the error scenario error events, ÷ requests the app served).

Usage::

    .venv/bin/python benchmarks/e2e.py                 # 3 rounds x 5 s per variant and scenario
    .venv/bin/python benchmarks/e2e.py --quick         # 1 round x 1 s
    .venv/bin/python benchmarks/e2e.py --scenarios error --variants sentry,bridge -r 5

Results also go to ``benchmarks/results/e2e-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Optional

import benchlib

ALL_VARIANTS = ("bare", "otel", "sentry", "sentry-deliver-all", "bridge", "bridge-deliver-all")
DEFAULT_VARIANTS = ("bare", "otel", "sentry", "sentry-deliver-all", "bridge")
SENTRY_VARIANTS = frozenset({"sentry", "sentry-deliver-all", "bridge", "bridge-deliver-all"})
SCENARIOS = ("normal", "error")
BIG_QUEUE = 100_000
CONTROL_PATH = "/__bench__"
EXIT = "EXIT "

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# -------------------------------------------------------------------------------- the app (``serve``)


class AppError(RuntimeError):
    """What the app raises on every request of the error scenario."""


@dataclass
class Served:
    count: int = 0


SERVED = Served()
OK_START: dict[str, Any] = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
}
OK_BODY: dict[str, Any] = {"type": "http.response.body", "body": b"ok", "more_body": False}


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    SERVED.count += 1
    await send(dict(OK_START))
    await send(dict(OK_BODY))


async def failing(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    SERVED.count += 1
    raise AppError("benchmark: this request fails")


@dataclass
class Built:
    app: ASGIApp
    info: dict[str, Any] = field(default_factory=dict)
    finish: Callable[[float], dict[str, Any]] = lambda timeout: {}


def build_variant(variant: str, scenario: str, dsn: str) -> Built:
    """One variant's global state and its wrapped app; imports happen here, in the app's process."""
    inner: ASGIApp = failing if scenario == "error" else hello
    if variant == "bare":
        return Built(inner)

    if variant == "otel":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        provider, exported = benchlib.discarding_tracer_provider()
        wrapped = OpenTelemetryMiddleware(inner, exclude_spans=["receive", "send"], tracer_provider=provider)

        def finish_otel(timeout: float) -> dict[str, Any]:
            provider.force_flush(int(timeout * 1000))
            provider.shutdown()
            return {"otel_spans_exported": exported()}

        return Built(wrapped, {}, finish_otel)

    import sentry_sdk

    def transport_info() -> dict[str, Any]:
        client = sentry_sdk.get_client()
        return {
            "transport": type(client.transport).__name__,
            "transport_queue_size": client.options.get("transport_queue_size"),
        }

    if variant in ("sentry", "sentry-deliver-all"):
        from sentry_sdk.integrations.asgi import SentryAsgiMiddleware as SdkMiddleware

        options: dict[str, Any] = {"traces_sample_rate": 1.0}
        if variant == "sentry-deliver-all":
            options["transport_queue_size"] = BIG_QUEUE
        sentry_sdk.init(dsn=dsn, **options)

        def finish_sentry(timeout: float) -> dict[str, Any]:
            sentry_sdk.get_client().close(timeout=timeout)
            return {}

        return Built(SdkMiddleware(inner), transport_info(), finish_sentry)

    if variant in ("bridge", "bridge-deliver-all"):
        import otel_bridge
        from otel_bridge.asgi import SentryAsgiMiddleware as BridgeMiddleware

        bridge_options: dict[str, Any] = {}
        if variant == "bridge-deliver-all":
            bridge_options = {"transport_queue_size": BIG_QUEUE, "max_queued_traces": BIG_QUEUE}
        processor = otel_bridge.init(dsn=dsn, **bridge_options)
        if processor is None:
            raise RuntimeError("otel_bridge.init() returned None: the bridge is off")

        def finish_bridge(timeout: float) -> dict[str, Any]:
            flushed = otel_bridge.flush(timeout)
            sentry_sdk.get_client().close(timeout=timeout)
            totals = processor.drops.totals()
            return {
                "bridge_flushed": flushed,
                "bridge_drops": {f"{reason}:{category}": n for (reason, category), n in totals.items()},
            }

        info = {**transport_info(), "otel_bridge_file": otel_bridge.__file__}
        return Built(BridgeMiddleware(inner), info, finish_bridge)

    raise ValueError(f"unknown variant {variant!r}: accepted values are {', '.join(ALL_VARIANTS)}")


def with_control(app: ASGIApp) -> ASGIApp:
    """``GET /__bench__`` answers how many requests the app has served, outside every middleware."""

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == CONTROL_PATH:
            body = json.dumps({"served": SERVED.count}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return outer


def serve(variant: str, scenario: str, dsn: str, flush_timeout: float) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # uvicorn re-raises the signal after its shutdown, which would end the process before the flush
            self.should_exit = True

    built = build_variant(variant, scenario, dsn)
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((benchlib.HOST, 0))
    info = {**built.info, "port": sock.getsockname()[1], "pid": os.getpid()}
    config = uvicorn.Config(
        with_control(built.app),
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=2048,
        timeout_keep_alive=120,
    )
    print(benchlib.READY + json.dumps(info), flush=True)
    Server(config).run(sockets=[sock])
    started = time.monotonic()
    finished = built.finish(flush_timeout)
    finished.update(served=SERVED.count, exit_flush_s=time.monotonic() - started)
    print(EXIT + json.dumps(finished), flush=True)


# ------------------------------------------------------------------------ the app process, from outside


class AppProcess:
    """``e2e.py serve`` in its own process; stderr goes to a file (uvicorn logs every failed request)."""

    def __init__(self, process: subprocess.Popen[str], errors: IO[str], info: dict[str, Any]) -> None:
        self.process = process
        self.errors = errors
        self.info = info
        self.port: int = info["port"]
        self.pid = process.pid
        self.exit_info: dict[str, Any] = {}

    def served(self) -> int:
        return int(benchlib.get_json(f"http://{benchlib.HOST}:{self.port}{CONTROL_PATH}")["served"])

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
        noise = ("Traceback", "AppError", "ERROR:    Exception in ASGI application")
        kept = [line for line in text if line and not line.startswith((" ", *noise))]
        return kept[-lines:]


@contextlib.contextmanager
def app_process(variant: str, scenario: str, dsn: str, flush_timeout: float = 5.0) -> Iterator[AppProcess]:
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "serve",
                "--variant",
                variant,
                "--scenario",
                scenario,
                "--dsn",
                dsn,
                "--flush-timeout",
                str(flush_timeout),
            ],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=benchlib.child_environment(),
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


def item_counts(endpoint: Optional[str], project: int) -> dict[str, int]:
    if endpoint is None:
        return {"transaction": 0, "event": 0}
    items = benchlib.endpoint_counts(endpoint, project)["items"]
    return {"transaction": int(items.get("transaction", 0)), "event": int(items.get("event", 0))}


def wait_for_items(
    endpoint: Optional[str],
    project: int,
    expected: dict[str, int],
    quiet: float,
    limit: float,
) -> float:
    """Until each item type reaches ``expected`` or nothing arrived for ``quiet`` s; ``limit`` s at most."""
    started = time.monotonic()
    if endpoint is None:
        return 0.0
    last: Optional[dict[str, int]] = None
    last_change = started
    while time.monotonic() - started < limit:
        counts = item_counts(endpoint, project)
        now = time.monotonic()
        if all(counts[kind] >= count for kind, count in expected.items()):
            break
        if counts != last:
            last, last_change = counts, now
        elif now - last_change >= quiet:
            break
        time.sleep(0.1)
    return time.monotonic() - started


# ------------------------------------------------------------------------------------ one measurement


def measure(
    variant: str, scenario: str, endpoint: str, project: int, args: argparse.Namespace
) -> dict[str, Any]:
    sends = variant in SENTRY_VARIANTS
    target = endpoint if sends else None
    dsn = benchlib.dsn_for(endpoint.split("://", 1)[1], project)
    with app_process(variant, scenario, dsn) as app:
        if args.warmup > 0:
            app.load(args.loader, args.warmup_bound, args.connections, args.threads, args.warmup)
        wait_for_items(target, project, {"transaction": 1 << 60}, quiet=args.quiet, limit=10)
        before = item_counts(target, project)
        served_before = app.served()
        cpu_before = app.cpu_seconds()
        load = benchlib.run_load(args.loader, app.port, "/", args.duration, args.connections, args.threads)
        cpu_after_load = app.cpu_seconds()
        served = app.served() - served_before
        expected = {"transaction": before["transaction"] + served}
        if scenario == "error":
            expected["event"] = before["event"] + served
        waited = wait_for_items(target, project, expected, quiet=args.quiet, limit=args.drain)
        cpu_after_drain = app.cpu_seconds()
        at_drain = item_counts(target, project)
        rss = app.rss_mib()
        hwm = benchlib.status_mib(app.pid, "VmHWM")
        threads = benchlib.thread_count(app.pid)
        exit_info = app.stop()
        stderr_tail = app.stderr_tail()
    counts = benchlib.endpoint_counts(endpoint, project) if sends else None
    after = item_counts(target, project)

    def delivered(kind: str, at: dict[str, int]) -> Optional[float]:
        if not sends or not served:
            return None
        return (at[kind] - before[kind]) / served

    expected_status = "non-2xx" if scenario == "error" else "2xx"
    wrong = load["requests"] - load["non_2xx"] if scenario == "error" else load["non_2xx"]
    result: dict[str, Any] = {
        "variant": variant,
        "scenario": scenario,
        "project": project,
        **app.info,
        "load": {key: value for key, value in load.items() if key != "output"},
        "load_output": load.get("output", []),
        "rps": load["rps"],
        "latency_p50_ms": load["latency_p50_ms"],
        "latency_p99_ms": load["latency_p99_ms"],
        "answered": load["requests"],
        "served": served,
        "unexpected_status": wrong,
        "expected_status": expected_status,
        "socket_errors": load["socket_errors"],
        "cpu_load_s": cpu_after_load - cpu_before,
        "cpu_total_s": cpu_after_drain - cpu_before,
        "cpu_per_request_us": (cpu_after_drain - cpu_before) / served * 1e6 if served else math.nan,
        "cpu_per_request_load_only_us": (cpu_after_load - cpu_before) / served * 1e6 if served else math.nan,
        "drain_wait_s": waited,
        "delivered_transactions": delivered("transaction", after),
        "delivered_transactions_before_exit": delivered("transaction", at_drain),
        "delivered_events": delivered("event", after) if scenario == "error" else None,
        "rss_mib": rss,
        "peak_rss_mib": hwm,
        "threads": threads,
        "exit": exit_info,
        "stderr_tail": stderr_tail,
    }
    if counts is not None:
        result["client_reported_discards"] = counts["discarded"]
        result["endpoint_parse_errors"] = counts["parse_errors"]
    return result


# ------------------------------------------------------------------------------------------- summary

FIGURES = (
    "rps",
    "latency_p50_ms",
    "latency_p99_ms",
    "cpu_per_request_us",
    "cpu_per_request_load_only_us",
    "delivered_transactions",
    "delivered_events",
)


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per scenario and variant: the median over rounds of every figure, and the spread of req/s."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        summary.setdefault(run["scenario"], {}).setdefault(run["variant"], {})
    for scenario, variants in summary.items():
        for variant in variants:
            mine = [run for run in runs if run["scenario"] == scenario and run["variant"] == variant]
            figures: dict[str, Any] = {"rounds": len(mine)}
            for key in FIGURES:
                values = [run[key] for run in mine if run[key] is not None]
                figures[key] = benchlib.median(values) if values else None
            figures["rps_spread"] = benchlib.spread([run["rps"] for run in mine])
            figures["rps_rounds"] = [run["rps"] for run in mine]
            delivered = [
                run["delivered_transactions"] for run in mine if run["delivered_transactions"] is not None
            ]
            figures["delivered_transactions_min"] = min(delivered) if delivered else None
            figures["unexpected_status"] = sum(run["unexpected_status"] for run in mine)
            figures["socket_errors"] = sum(run["socket_errors"] for run in mine)
            variants[variant] = figures
    return summary


RATIO_PAIRS = (
    ("bridge", "otel"),
    ("bridge", "sentry"),
    ("bridge", "sentry-deliver-all"),
    ("bridge-deliver-all", "sentry-deliver-all"),
    ("otel", "bare"),
    ("bridge", "bare"),
)
RATIO_KEYS = (
    ("rps", "req/s"),
    ("latency_p99_ms", "p99"),
    ("cpu_per_request_us", "CPU/req"),
)


def ratios(summary: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, Optional[float]]]]:
    found: dict[str, dict[str, dict[str, Optional[float]]]] = {}
    for scenario, variants in summary.items():
        for mine, other in RATIO_PAIRS:
            if mine not in variants or other not in variants:
                continue
            entry: dict[str, Optional[float]] = {}
            for key, _label in RATIO_KEYS:
                a, b = variants[mine][key], variants[other][key]
                entry[key] = a / b if a is not None and b else None
            found.setdefault(scenario, {})[f"{mine} / {other}"] = entry
    return found


def _number(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def render(
    summary: dict[str, dict[str, dict[str, Any]]],
    found: dict[str, dict[str, dict[str, Optional[float]]]],
    runs: list[dict[str, Any]],
    args: argparse.Namespace,
) -> str:
    tool = "wrk" if args.loader == "wrk" else "the Python load generator (wrk not installed)"
    lines = [
        f"e2e: uvicorn, 1 worker, no access log; {args.rounds} round(s) x {args.duration:g} s per variant "
        f"and scenario, closed loop with {tool}: {args.threads} threads, {args.connections} connections; "
        "medians over rounds. CPU/req: the app process, all threads, from the start of the load until "
        "delivery ended ('load only': until the load ended); transactions: delivered ÷ requests served",
    ]
    for scenario, variants in summary.items():
        rows = [
            [
                f"{scenario} path",
                "req/s",
                "spread",
                "p50 ms",
                "p99 ms",
                "CPU/req µs",
                "(load only)",
                "transactions",
                *(["error events"] if scenario == "error" else []),
            ]
        ]
        for variant, figures in variants.items():
            rows.append(
                [
                    variant,
                    _number(figures["rps"], 0),
                    f"{figures['rps_spread'] * 100:.0f}%" if not math.isnan(figures["rps_spread"]) else "-",
                    _number(figures["latency_p50_ms"], 2),
                    _number(figures["latency_p99_ms"], 2),
                    _number(figures["cpu_per_request_us"], 0),
                    _number(figures["cpu_per_request_load_only_us"], 0),
                    benchlib.share(figures["delivered_transactions"]),
                    *([benchlib.share(figures["delivered_events"])] if scenario == "error" else []),
                ]
            )
        lines += ["", *benchlib.table(rows)]
        if scenario in found:
            ratio_rows = [["", *(label for _key, label in RATIO_KEYS)]]
            for name, entry in found[scenario].items():
                ratio_rows.append([name, *(_number(entry[key], 2) + "x" for key, _label in RATIO_KEYS)])
            lines += ["", f"ratios, {scenario} path", *benchlib.table(ratio_rows, underline=False)]
    notes = _notes(runs)
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _notes(runs: list[dict[str, Any]]) -> list[str]:
    notes: list[str] = []
    for run in runs:
        name = f"{run['scenario']}/{run['variant']} round {run['round']}"
        if run["unexpected_status"]:
            notes.append(f"{name}: {run['unexpected_status']} answers were not {run['expected_status']}")
        if run["socket_errors"]:
            notes.append(f"{name}: {run['socket_errors']} socket errors {run['load']['errors']}")
        before, after = run["delivered_transactions_before_exit"], run["delivered_transactions"]
        if before is not None and after is not None and after - before > 0.01:
            notes.append(
                f"{name}: {(after - before) * 100:.1f}% of the transactions arrived only at the exit flush "
                f"(their CPU is not in CPU/req)"
            )
        if run.get("endpoint_parse_errors"):
            notes.append(f"{name}: {run['endpoint_parse_errors']} envelope(s) the endpoint could not parse")
    discards: dict[str, dict[str, int]] = {}
    for run in runs:
        key = f"{run['scenario']}/{run['variant']}"
        for reason, count in (run.get("client_reported_discards") or {}).items():
            discards.setdefault(key, {}).setdefault(reason, 0)
            discards[key][reason] += count
        for reason, count in (run.get("exit", {}).get("bridge_drops") or {}).items():
            discards.setdefault(key, {}).setdefault(f"bridge {reason}", 0)
            discards[key][f"bridge {reason}"] += count
    for key, found in discards.items():
        listed = ", ".join(f"{reason} {count}" for reason, count in sorted(found.items()))
        notes.append(f"{key}: dropped over all rounds (client reports / bridge counters): {listed}")
    return notes


# --------------------------------------------------------------------------------- the parent process


def parse_arguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="(internal) run one variant's app under uvicorn")
    serve_parser.add_argument("--variant", choices=ALL_VARIANTS, required=True)
    serve_parser.add_argument("--scenario", choices=SCENARIOS, default="normal")
    serve_parser.add_argument("--dsn", required=True)
    serve_parser.add_argument("--flush-timeout", type=float, default=5.0)
    parser.add_argument("--rounds", "-r", type=int, help="rounds (3; --quick 1)")
    parser.add_argument(
        "--duration", "-d", type=float, help="seconds of measured load per run (5; --quick 1)"
    )
    parser.add_argument(
        "--warmup", type=int, help="warm-up requests per run, 2 s at most (1000; --quick 200, 1 s at most)"
    )
    parser.add_argument("--threads", "-t", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--connections", "-c", type=int, default=50, help="connections (50)")
    parser.add_argument(
        "--drain", type=float, help="seconds at most to wait for delivery after the load (30; --quick 10)"
    )
    parser.add_argument(
        "--quiet", type=float, help="delivery is over when nothing arrived for this long (1 s; --quick 0.5)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, from {', '.join(ALL_VARIANTS)} (default: %(default)s)",
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="normal,error (default: both)")
    parser.add_argument(
        "--loader",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (auto: wrk if found)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round x 1 s")
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/*.json")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return args
    quick = args.quick
    defaults: dict[str, tuple[float, float]] = {
        "rounds": (1, 3),
        "duration": (1.0, 5.0),
        "warmup": (200, 1000),
    }
    defaults.update(drain=(10.0, 30.0), quiet=(0.5, 1.0), warmup_bound=(1.0, 2.0))
    for name, (small, full) in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, type(full)(small if quick else full))
    if args.rounds <= 0 or args.duration <= 0 or args.warmup < 0 or args.connections <= 0:
        parser.error("--rounds, --duration and --connections must be above 0, --warmup 0 or more")
    args.variant_list = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in args.variant_list if name not in ALL_VARIANTS]
    if unknown or not args.variant_list:
        parser.error(f"--variants {args.variants!r}: accepted values are {', '.join(ALL_VARIANTS)}")
    args.scenario_list = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    if not args.scenario_list or any(name not in SCENARIOS for name in args.scenario_list):
        parser.error(f"--scenarios {args.scenarios!r}: accepted values are {', '.join(SCENARIOS)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_arguments(argv)
    if args.command == "serve":
        serve(args.variant, args.scenario, args.dsn, args.flush_timeout)
        return 0
    args.loader = benchlib.choose_loader(args.loader)
    variants: list[str] = args.variant_list
    started = datetime.datetime.now()
    runs: list[dict[str, Any]] = []
    with benchlib.running_endpoint() as endpoint:
        for round_index in range(args.rounds):
            shift = round_index % len(variants)
            for scenario in args.scenario_list:
                for variant in variants[shift:] + variants[:shift]:
                    project = 2000 + round_index * 100 + SCENARIOS.index(scenario) * 10
                    project += ALL_VARIANTS.index(variant)
                    result = measure(variant, scenario, endpoint, project, args)
                    result["round"] = round_index + 1
                    runs.append(result)
                    print(
                        f"round {round_index + 1}/{args.rounds} {scenario:<6} {variant:<19} "
                        f"{result['rps']:7.0f} req/s  p99 {result['latency_p99_ms']:6.2f} ms  "
                        f"CPU {result['cpu_per_request_us']:6.0f} µs/req  "
                        f"delivered {benchlib.share(result['delivered_transactions'])}",
                        file=sys.stderr,
                        flush=True,
                    )
    summary = summarise(runs)
    found = ratios(summary)
    text = render(summary, found, runs, args)
    print(text)
    if not args.no_save:
        config = {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_requests": args.warmup,
            "warmup_bound_s": args.warmup_bound,
            "threads": args.threads,
            "connections": args.connections,
            "loader": args.loader,
            "variants": variants,
            "scenarios": args.scenario_list,
            "drain_s": args.drain,
            "quiet_s": args.quiet,
            "quick": args.quick,
        }
        benchlib.save_report("e2e", started, config, summary=summary, ratios=found, runs=runs, report=text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
