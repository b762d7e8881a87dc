"""Per-request cost of each variant in-process: request-path time, CPU of every thread, delivered share.

The app of ``variants.py`` (200 ``ok``) is called in-process, with a synthetic ``http`` scope and
``receive``/``send`` coroutines (no server, no sockets on the request path), wrapped by each variant,
everything sampled. Each (round, variant) runs in a fresh subprocess (OTel and sentry-sdk keep global
state); rounds alternate the variants. Sentry DSNs point at ``endpoint.py`` in its own process, so
receiving does not count. Per round and variant, after a warm-up:

1. request-path wall time: ``perf_counter_ns`` around each ``await app(scope, receive, send)``;
2. CPU per request: ``process_time`` (all threads) across the whole round *including* the wait for the
   variant's background work (its flush), divided by the number of requests;
3. delivered: transactions that reached the endpoint during the round ÷ requests.

    .venv/bin/python benchmarks/overhead.py            # 3 rounds x 5 000 requests, warm-up 500
    .venv/bin/python benchmarks/overhead.py --quick    # a smoke run
    .venv/bin/python benchmarks/overhead.py --variants bridge,bridge-deliver-all,sentry-deliver-all
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import benchlib
import report
import variants

RESULT_PREFIX = "OVERHEAD-RESULT "
DEFAULT_VARIANTS = ("bare", "otel", "sentry", "sentry-deliver-all", "bridge", "bridge-deliver-all")
COLUMNS = ("path_median", "path_mean", "path_p99", "cpu_per_request", "delivered", "flush")
RATIO_FIGURES = ("path_median", "path_mean", "cpu_per_request")
REQUEST_MESSAGE: dict[str, Any] = {"type": "http.request", "body": b"", "more_body": False}


def http_scope() -> variants.Scope:
    """A fresh synthetic ASGI 3 ``http`` scope, as uvicorn would build it for ``GET /hello?x=1``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/hello",
        "raw_path": b"/hello",
        "query_string": b"x=1",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"otel-bridge-benchmark/1.0"),
            (b"accept", b"*/*"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def receive() -> variants.Message:
    return dict(REQUEST_MESSAGE)


class ResponseCheck:
    """The ``send`` callable: counts the 200 responses so that a broken variant cannot look fast."""

    def __init__(self) -> None:
        self.ok = 0
        self.other: list[Any] = []

    async def __call__(self, message: variants.Message) -> None:
        if message["type"] == "http.response.start":
            if message.get("status") == 200:
                self.ok += 1
            else:
                self.other.append(message.get("status"))


# ------------------------------------------------------------------------------ one round, in a child


async def drive(
    app: variants.ASGIApp, n: int, check: ResponseCheck, timings: Optional[list[int]], interval: float = 0.0
) -> None:
    """``n`` requests, back to back or with ``interval`` seconds of idle event loop between them."""
    clock = time.perf_counter_ns
    for index in range(n):
        scope = http_scope()
        started = clock()
        await app(scope, receive, check)
        if timings is not None:
            timings[index] = clock() - started
        if interval:
            await asyncio.sleep(interval)


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) of every live Python thread, by name; empty where ``/proc`` is missing."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    found: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after "pid (comm)": utime and stime are fields 14 and 15 of proc(5), so 12 and 13 here
        name = thread.name if thread.name not in found else f"{thread.name}#{thread.native_id}"
        found[name] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def _difference(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: value - before.get(key, 0) for key, value in after.items() if value - before.get(key, 0)}


def run_round(
    name: str, endpoint: str, project: int, n: int, warmup: int, timeout: float, interval: float
) -> None:
    """The child's whole job: set up, warm up, measure one round, print one result line."""
    variant = variants.build(name, "normal", benchlib.dsn_for(endpoint.split("://", 1)[1], project))
    sends = variants.sends(name)
    check = ResponseCheck()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    loop.run_until_complete(drive(variant.app, warmup, check, None))
    warm_flushed = variant.flush(timeout)
    variant.flush(timeout)  # again: the first flush may lose the client report (see below)
    before = benchlib.endpoint_counts(endpoint, project) if sends else None
    counters_before = variant.counters()
    gc.collect()

    timings = [0] * n
    threads_started = thread_cpu_seconds()
    cpu_started = time.process_time()
    wall_started = time.perf_counter()
    loop.run_until_complete(drive(variant.app, n, check, timings, interval))
    wall_requests = time.perf_counter() - wall_started
    flushed = variant.flush(timeout)
    wall_round = time.perf_counter() - wall_started
    cpu = time.process_time() - cpu_started
    threads_ended = thread_cpu_seconds()

    delivered: Optional[float] = None
    delivery: dict[str, Any] = {}
    discarded: dict[str, int] = {}
    if before is not None:
        # Outside the measurement: a second flush. sentry-sdk's flush queues its client report (what it
        # dropped) as a job of its own, which is lost when the queue is still full at that moment.
        variant.flush(timeout)
        after = benchlib.endpoint_counts(endpoint, project)
        transactions = after["items"].get("transaction", 0) - before["items"].get("transaction", 0)
        delivered = transactions / n
        discarded = _difference(after["discarded"], before["discarded"])
        reported = sum(value for key, value in discarded.items() if key.endswith(":transaction"))
        delivery = {
            "transactions": transactions,
            "unaccounted_transactions": n - transactions - reported,
            "envelopes": after["envelopes"] - before["envelopes"],
            "bytes": after["bytes"] - before["bytes"],
            "parse_errors": after["parse_errors"] - before["parse_errors"],
        }
    counters = variant.counters()
    if "otel_spans_exported" in counters:
        counters["otel_spans_exported"] -= counters_before.get("otel_spans_exported", 0)
    if "bridge_drops" in counters:
        counters["bridge_drops"] = _difference(counters["bridge_drops"], counters_before["bridge_drops"])
    if check.other or check.ok != warmup + n:
        raise RuntimeError(f"{name}: {check.ok} responses 200 of {warmup + n}; others {check.other[:5]}")

    ordered = sorted(timings)
    result = {
        "where": report.IN_PROCESS,
        "variant": name,
        "project": project,
        "requests": n,
        "warmup": warmup,
        "figures": {
            "path_median": statistics.median(ordered) / 1000,
            "path_mean": statistics.fmean(ordered) / 1000,
            "path_p90": benchlib.percentile(ordered, 0.90) / 1000,
            "path_p99": benchlib.percentile(ordered, 0.99) / 1000,
            "path_max": ordered[-1] / 1000,
            "cpu_per_request": cpu / n * 1e6,
            "flush": wall_round - wall_requests,
            "delivered": delivered,
        },
        "cpu_per_request_by_thread_us": {
            name: (seconds - threads_started.get(name, 0.0)) / n * 1e6
            for name, seconds in threads_ended.items()
        },
        "wall_requests_s": wall_requests,
        "wall_round_s": wall_round,
        "flushed": flushed,
        "warmup_flushed": warm_flushed,
        "delivery": delivery,
        "client_reported_discards": discarded,
        **variant.info,
        **counters,
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------- the parent process


def run_child(
    variant: str, endpoint: str, project: int, args: argparse.Namespace
) -> tuple[dict[str, Any], list[str]]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--endpoint", endpoint]
    command += ["--project", str(project), "--requests", str(args.requests), "--warmup", str(args.warmup)]
    command += ["--flush-timeout", str(args.flush_timeout), "--interval-us", str(args.interval_us)]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=benchlib.child_environment(),
        timeout=args.flush_timeout * 2 + 240,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if completed.returncode != 0 or not lines:
        sys.stderr.write(completed.stderr)
        raise RuntimeError(f"variant {variant} failed (exit {completed.returncode})")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return result, [line for line in completed.stderr.splitlines() if line.strip()]


def notes(runs: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for variant in dict.fromkeys(run["variant"] for run in runs):
        mine = [run for run in runs if run["variant"] == variant]
        exported = [
            run["otel_spans_exported"] / run["requests"] for run in mine if "otel_spans_exported" in run
        ]
        if exported:
            shares = ", ".join(f"{share * 100:.1f}%" for share in exported)
            found.append(f"{variant}: spans reaching the discarding exporter: {shares}")
        by_thread: dict[str, list[float]] = {}
        for run in mine:
            for name, value in run["cpu_per_request_by_thread_us"].items():
                by_thread.setdefault(name, []).append(value)
        busy = sorted(((statistics.median(values), name) for name, values in by_thread.items()), reverse=True)
        shown = [f"{name} {value:.0f}" for value, name in busy if value >= 0.5]
        if len(shown) > 1:
            found.append(f"{variant}: CPU µs per request by thread (median): {', '.join(shown)}")
        unaccounted = [run["delivery"].get("unaccounted_transactions", 0) for run in mine if run["delivery"]]
        if any(unaccounted):
            found.append(
                f"{variant}: transactions neither delivered nor reported dropped, per round: "
                + ", ".join(str(value) for value in unaccounted)
            )
        parse_errors = sum(run["delivery"].get("parse_errors", 0) for run in mine)
        if parse_errors:
            found.append(f"{variant}: {parse_errors} envelope(s) the endpoint could not parse")
        if not all(run["flushed"] for run in mine):
            found.append(f"{variant}: its flush timed out in some round")
    return found


def parse_arguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", "-n", type=int, default=None, help="requests per round (5000)")
    parser.add_argument("--rounds", "-r", type=int, default=None, help="rounds of every variant (3)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests per round (500)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 round x 500 requests, warm-up 50"
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, from {', '.join(variants.NAMES)} (default: %(default)s)",
    )
    parser.add_argument(
        "--flush-timeout", type=float, default=60.0, help="seconds a variant may take to flush (60)"
    )
    parser.add_argument(
        "--interval-us",
        type=float,
        default=0.0,
        help="idle event loop between measured requests, in µs (0: back to back, the default); "
        "background threads then get the GIL as in a server that is not saturated",
    )
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/*.json")
    parser.add_argument("--child", metavar="VARIANT", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--project", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 500 if args.quick else 5000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.warmup is None:
        args.warmup = 50 if args.quick else 500
    if args.requests <= 0 or args.rounds <= 0 or args.warmup < 0 or args.interval_us < 0:
        parser.error("--requests and --rounds must be above 0, --warmup and --interval-us 0 or more")
    try:
        args.variant_list = variants.pick(args.variants)
    except ValueError as error:
        parser.error(f"--variants {error}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_arguments(argv)
    if args.child:
        interval = args.interval_us / 1e6
        run_round(
            args.child, args.endpoint, args.project, args.requests, args.warmup, args.flush_timeout, interval
        )
        return 0

    started = datetime.datetime.now()
    runs: list[dict[str, Any]] = []
    child_stderr: dict[str, list[str]] = {}
    with benchlib.running_endpoint() as endpoint:
        for project, (round_number, variant) in enumerate(
            report.alternate(args.variant_list, args.rounds), 1000
        ):
            result, stderr = run_child(variant, endpoint, project, args)
            result["round"] = round_number
            runs.append(result)
            if stderr:
                child_stderr[f"{variant} round {round_number}"] = stderr[-20:]
            figures = result["figures"]
            print(
                f"round {round_number}/{args.rounds} {variant:<19} median {figures['path_median']:8.1f} µs  "
                f"CPU {figures['cpu_per_request']:8.1f} µs  "
                f"delivered {report.FIGURES['delivered'].cell(figures['delivered'])}",
                file=sys.stderr,
                flush=True,
            )
    pace = f"{args.interval_us:g} µs idle between requests" if args.interval_us else "back to back"
    heading = (
        f"overhead: {args.rounds} round(s) x {args.requests} requests per variant (warm-up {args.warmup}), "
        f"in-process ASGI calls, {pace}; medians over rounds"
    )
    config = {
        key: getattr(args, key) for key in ("requests", "rounds", "warmup", "flush_timeout", "interval_us")
    }
    config.update(variants=args.variant_list, quick=args.quick, child_stderr=child_stderr)
    report.finish(
        "overhead", started, config, runs, heading, COLUMNS, RATIO_FIGURES, notes(runs), not args.no_save
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
