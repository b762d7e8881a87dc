"""Per-request cost of each variant in-process: request-path time, CPU of every thread, delivered share.

The app of ``variants.py`` is called in-process, with a synthetic ``http`` scope and ``receive``/``send``
coroutines (no server, no sockets on the request path), wrapped by each variant, everything sampled. Each
(round, scenario, variant) runs in a fresh subprocess (OTel and sentry-sdk keep global state); rounds
alternate the variants. DSNs and OTLP URLs point at ``endpoint.py`` in its own process, so receiving does
not count. Per round and variant, after a warm-up:

1. request-path wall time: ``perf_counter_ns`` around each request;
2. CPU per request: ``process_time`` (all threads) across the whole round *including* the wait for the
   variant's background work (its flush), divided by the number of requests;
3. delivered: transactions (OTLP variants: server spans) that reached the endpoint during the round ÷
   requests.

Three measurements (``where``):

* ``in-process``: the normal app (``200 ok``), requests back to back (a saturated process);
* ``in-process paced``: the same process, then requests started on a schedule (``--paced-rate`` per
  second, open loop): the request path at a moderate load, background threads running between requests;
* ``in-process error``: every request raises in app code; the driver does what uvicorn does with it (logs
  ``Exception in ASGI application`` with the traceback on ``uvicorn.error``, sentry-sdk's logging
  integration seeing that record, then answers 500), inside the timed request path. Also error events
  delivered, and events built and then dropped by an event processor (client reports'
  ``event_processor:error``: the server's record of an exception already reported) per failing request;
* ``in-process error paced``: the same process, then failing requests started on a schedule
  (``--error-paced-rate`` per second): a failing request's path at a moderate load, where the work a
  variant does off the request path no longer holds up the next request (back to back, every thread's
  work lands on some request's path through the one GIL).

    .venv/bin/python benchmarks/overhead.py            # 3 rounds x 5 000 requests, warm-up 500
    .venv/bin/python benchmarks/overhead.py --quick    # a smoke run
    .venv/bin/python benchmarks/overhead.py --variants bridge,bridge-deliver-all,sentry-deliver-all
    .venv/bin/python benchmarks/overhead.py --scenarios error --error-variants otel,sentry-deliver-all,bridge
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import benchlib
import report
import variants

RESULT_PREFIX = "OVERHEAD-RESULT "
DEFAULT_VARIANTS = (
    "bare",
    "otel",
    "otel+otlp",
    "sentry-otlp",
    "zero-code",
    "sentry",
    "sentry-deliver-all",
    "bridge",
    "bridge-deliver-all",
)
# the error path: OTel alone, sentry-sdk's middleware (delivering everything) and the bridge
DEFAULT_ERROR_VARIANTS = ("otel", "sentry-deliver-all", "bridge", "bridge-deliver-all")
WHERE = {"normal": report.IN_PROCESS, "error": report.IN_PROCESS_ERROR}
# what an option left out is: with --quick, without
SIZES: dict[str, tuple[float, float]] = {
    "requests": (500, 5000),
    "rounds": (1, 3),
    "warmup": (50, 500),
    "error_requests": (300, 2000),
    "paced_requests": (500, 2500),
    "error_paced_requests": (150, 500),
}
COLUMNS = (
    "path_median",
    "path_mean",
    "path_p99",
    "cpu_per_request",
    "delivered",
    "delivered_events",
    "discarded_events",
    "log_events_built",
    "flush",
)
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
    """The ``send`` callable: counts the expected responses (200, or 500 in the error scenario) so that a
    broken variant cannot look fast."""

    def __init__(self, expected: int = 200) -> None:
        self.expected = expected
        self.ok = 0
        self.other: list[Any] = []
        self.started = False

    async def __call__(self, message: variants.Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            if message.get("status") == self.expected:
                self.ok += 1
            else:
                self.other.append(message.get("status"))


SERVER_ERROR: list[dict[str, Any]] = [
    {"type": "http.response.start", "status": 500, "headers": [(b"content-length", b"21")]},
    {"type": "http.response.body", "body": b"Internal Server Error"},
]


def server_logger() -> logging.Logger:
    """uvicorn's error logger as its default logging config sets it up: the ``uvicorn`` logger at INFO,
    not propagated, one stream handler "LEVEL:     message" (the traceback formatted into it), written to
    ``os.devnull`` here; records go through ``uvicorn.error``."""
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 (the process's lifetime)
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    parent = logging.getLogger("uvicorn")
    parent.addHandler(handler)
    parent.setLevel(logging.INFO)
    parent.propagate = False
    return logging.getLogger(variants.SERVER_LOGGER)


# ------------------------------------------------------------------------------ one round, in a child


async def drive(
    app: variants.ASGIApp,
    n: int,
    check: ResponseCheck,
    timings: Optional[list[int]],
    interval: float = 0.0,
    rate: float = 0.0,
    server_log: Optional[logging.Logger] = None,
) -> None:
    """``n`` requests: back to back, with ``interval`` seconds of idle event loop between them, or (``rate``)
    request *i* started at *t0 + i / rate* (open loop: late ones go at once). An exception escaping the app
    is handled as uvicorn does, on the timed request path: logged on ``server_log``, then a 500."""
    clock = time.perf_counter_ns
    origin = clock()
    for index in range(n):
        if rate:
            delay = (origin + index * 1e9 / rate - clock()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
        scope = http_scope()
        check.started = False
        started = clock()
        try:
            await app(scope, receive, check)
        except Exception as error:
            if server_log is None:
                raise
            server_log.error(variants.SERVER_LOG_MESSAGE, exc_info=error)
            if not check.started:
                for message in SERVER_ERROR:
                    await check(dict(message))
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


@dataclass
class Round:
    """One child's setting: its variant built, what it sends to, how its requests go."""

    name: str
    scenario: str
    variant: variants.Variant
    endpoint: str
    project: int
    timeout: float
    loop: asyncio.AbstractEventLoop
    check: ResponseCheck
    server_log: Optional[logging.Logger]


def measure(setting: Round, where: str, n: int, interval: float = 0.0, rate: float = 0.0) -> dict[str, Any]:
    """``n`` requests measured: request path, CPU of every thread including the flush, delivered shares."""
    variant, endpoint, project = setting.variant, setting.endpoint, setting.project
    sends = variants.sends(setting.name)
    kind = variants.delivered_item(setting.name)
    before = benchlib.endpoint_counts(endpoint, project) if sends else None
    counters_before = variant.counters()
    answered_before = setting.check.ok
    gc.collect()

    timings = [0] * n
    threads_started = thread_cpu_seconds()
    cpu_started = time.process_time()
    wall_started = time.perf_counter()
    setting.loop.run_until_complete(
        drive(variant.app, n, setting.check, timings, interval, rate, setting.server_log)
    )
    wall_requests = time.perf_counter() - wall_started
    flushed = variant.flush(setting.timeout)
    wall_round = time.perf_counter() - wall_started
    cpu = time.process_time() - cpu_started
    threads_ended = thread_cpu_seconds()

    delivered: Optional[float] = None
    shares: dict[str, Optional[float]] = {}
    delivery: dict[str, Any] = {}
    discarded: dict[str, int] = {}
    if before is not None:
        # Outside the measurement: a second flush. sentry-sdk's flush queues its client report (what it
        # dropped) as a job of its own, which is lost when the queue is still full at that moment.
        variant.flush(setting.timeout)
        after = benchlib.endpoint_counts(endpoint, project)
        transactions = after["items"].get(kind, 0) - before["items"].get(kind, 0)
        delivered = transactions / n
        discarded = _difference(after["discarded"], before["discarded"])
        reported = sum(value for key, value in discarded.items() if key.endswith(":transaction"))
        delivery = {
            "item": kind,
            "transactions": transactions,
            "unaccounted_transactions": n - transactions - reported,
            "envelopes": after["envelopes"] - before["envelopes"],
            "otlp_exports": after.get("otlp_exports", 0) - before.get("otlp_exports", 0),
            "bytes": after["bytes"] - before["bytes"],
            "parse_errors": after["parse_errors"] - before["parse_errors"],
        }
        if setting.scenario == "error" and variants.reports_errors(setting.name):
            events = after["items"].get("event", 0) - before["items"].get("event", 0)
            shares = {
                "delivered_events": events / n,
                # built, then dropped by an event processor (the dedupe of the server's log record)
                "discarded_events": discarded.get("event_processor:error", 0) / n,
            }
    counters = variant.counters()
    if "otel_spans_exported" in counters:
        counters["otel_spans_exported"] -= counters_before.get("otel_spans_exported", 0)
    if "bridge_drops" in counters:
        counters["bridge_drops"] = _difference(counters["bridge_drops"], counters_before["bridge_drops"])
    if setting.check.other or setting.check.ok - answered_before != n:
        raise RuntimeError(
            f"{setting.name}: {setting.check.ok - answered_before} responses {setting.check.expected} "
            f"of {n}; others {setting.check.other[:5]}"
        )

    ordered = sorted(timings)
    return {
        "where": where,
        "variant": setting.name,
        "scenario": setting.scenario,
        "project": project,
        "requests": n,
        "pace": {"interval_s": interval, "rate": rate},
        "figures": {
            "path_median": statistics.median(ordered) / 1000,
            "path_mean": statistics.fmean(ordered) / 1000,
            "path_p90": benchlib.percentile(ordered, 0.90) / 1000,
            "path_p99": benchlib.percentile(ordered, 0.99) / 1000,
            "path_max": ordered[-1] / 1000,
            "cpu_per_request": cpu / n * 1e6,
            "flush": wall_round - wall_requests,
            "delivered": delivered,
            **shares,
        },
        "cpu_per_request_by_thread_us": {
            name: (seconds - threads_started.get(name, 0.0)) / n * 1e6
            for name, seconds in threads_ended.items()
        },
        "wall_requests_s": wall_requests,
        "wall_round_s": wall_round,
        "flushed": flushed,
        "delivery": delivery,
        "client_reported_discards": discarded,
        **variant.info,
        **counters,
    }


@contextlib.contextmanager
def counting_log_events() -> Iterator[list[int]]:
    """While inside: how many times sentry-sdk's logging integration builds an event from a log record's
    exception (``[count]``; ``[-1]`` when the integration is not loaded). Used in the warm-up only, outside
    the measurement: a direct view of the server's record being built into an event, whatever drops it."""
    module = sys.modules.get("sentry_sdk.integrations.logging")
    original = getattr(module, "event_from_exception", None)
    count = [-1 if original is None else 0]
    if module is None or original is None:
        yield count
        return

    @functools.wraps(original)
    def counted(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return original(*args, **kwargs)

    module.event_from_exception = counted  # type: ignore[attr-defined]
    try:
        yield count
    finally:
        module.event_from_exception = original  # type: ignore[attr-defined]


def run_round(args: argparse.Namespace) -> None:
    """The child's whole job: set up, warm up, measure one round and the paced one after it, print one
    result line per measurement."""
    name, scenario = args.child, args.scenario
    server_log = server_logger() if scenario == "error" else None
    variant = variants.build(name, scenario, benchlib.dsn_for(args.endpoint.split("://", 1)[1], args.project))
    check = ResponseCheck(500 if scenario == "error" else 200)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    setting = Round(
        name, scenario, variant, args.endpoint, args.project, args.flush_timeout, loop, check, server_log
    )

    with counting_log_events() as log_events:
        loop.run_until_complete(drive(variant.app, args.warmup, check, None, server_log=server_log))
    warm_flushed = variant.flush(args.flush_timeout)
    variant.flush(args.flush_timeout)  # again: the first flush may lose the client report (see measure)

    interval = args.interval_us / 1e6
    requests = args.error_requests if scenario == "error" else args.requests
    result = measure(setting, WHERE[scenario], requests, interval)
    result.update(warmup=args.warmup, warmup_flushed=warm_flushed)
    if scenario == "error" and log_events[0] >= 0 and args.warmup:
        result["figures"]["log_events_built"] = log_events[0] / args.warmup
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    if scenario == "normal" and args.paced_rate > 0 and args.paced_requests > 0:
        paced = measure(setting, report.IN_PROCESS_PACED, args.paced_requests, rate=args.paced_rate)
        print(RESULT_PREFIX + json.dumps(paced), flush=True)
    if scenario == "error" and args.error_paced_rate > 0 and args.error_paced_requests > 0:
        paced = measure(
            setting, report.IN_PROCESS_ERROR_PACED, args.error_paced_requests, rate=args.error_paced_rate
        )
        print(RESULT_PREFIX + json.dumps(paced), flush=True)


# --------------------------------------------------------------------------------- the parent process


def run_child(
    variant: str, scenario: str, endpoint: str, project: int, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], list[str]]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--scenario", scenario]
    command += ["--endpoint", endpoint, "--project", str(project), "--warmup", str(args.warmup)]
    command += ["--requests", str(args.requests), "--error-requests", str(args.error_requests)]
    command += ["--paced-rate", str(args.paced_rate), "--paced-requests", str(args.paced_requests)]
    command += ["--error-paced-rate", str(args.error_paced_rate)]
    command += ["--error-paced-requests", str(args.error_paced_requests)]
    command += ["--flush-timeout", str(args.flush_timeout), "--interval-us", str(args.interval_us)]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=benchlib.child_environment(),
        timeout=args.flush_timeout * 4 + 240,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if completed.returncode != 0 or not lines:
        sys.stderr.write(completed.stderr)
        raise RuntimeError(f"variant {variant} ({scenario}) failed (exit {completed.returncode})")
    results = [json.loads(line[len(RESULT_PREFIX) :]) for line in lines]
    return results, [line for line in completed.stderr.splitlines() if line.strip()]


def notes(runs: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for where, name in dict.fromkeys((run["where"], run["variant"]) for run in runs):
        mine = [run for run in runs if run["variant"] == name and run["where"] == where]
        variant = f"{where}/{name}"
        exported = [
            run["otel_spans_exported"] / run["requests"] for run in mine if "otel_spans_exported" in run
        ]
        if exported:
            shares = ", ".join(f"{share * 100:.1f}%" for share in exported)
            found.append(f"{variant}: spans reaching the discarding exporter: {shares}")
        by_thread: dict[str, list[float]] = {}
        for run in mine:
            for thread, value in run["cpu_per_request_by_thread_us"].items():
                by_thread.setdefault(thread, []).append(value)
        busy = sorted(((statistics.median(values), key) for key, values in by_thread.items()), reverse=True)
        shown = [f"{thread} {value:.0f}" for value, thread in busy if value >= 0.5]
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
    parser.add_argument(
        "--error-requests",
        type=int,
        default=None,
        help="failing requests per error round (2000; --quick 300)",
    )
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=500.0,
        help="requests/s of the paced measurement after each normal round (500; 0: none)",
    )
    parser.add_argument(
        "--paced-requests",
        type=int,
        default=None,
        help="requests of the paced measurement (2500; --quick 500)",
    )
    parser.add_argument(
        "--error-paced-rate",
        type=float,
        default=100.0,
        help="failing requests/s of the paced measurement after each error round (100; 0: none)",
    )
    parser.add_argument(
        "--error-paced-requests",
        type=int,
        default=None,
        help="failing requests of the paced measurement (500; --quick 150)",
    )
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
        "--error-variants",
        default=",".join(DEFAULT_ERROR_VARIANTS),
        help="the variants of the error scenario (default: %(default)s)",
    )
    parser.add_argument(
        "--scenarios", default=",".join(variants.SCENARIOS), help="normal,error (default: both)"
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
    parser.add_argument("--scenario", default="normal", choices=variants.SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--project", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    benchlib.fill_in_sizes(args, SIZES)
    if min(args.requests, args.error_requests, args.rounds) <= 0:
        parser.error("--requests, --error-requests and --rounds must be above 0")
    paced = (args.paced_rate, args.paced_requests, args.error_paced_rate, args.error_paced_requests)
    if min(args.warmup, args.interval_us, *paced) < 0:
        parser.error("--warmup, --interval-us and the paced rates and requests must be 0 or more")
    try:
        args.variant_list = variants.pick(args.variants)
        args.error_variant_list = variants.pick(args.error_variants)
        args.scenario_list = variants.pick(args.scenarios, variants.SCENARIOS)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_arguments(argv)
    if args.child:
        run_round(args)
        return 0

    started = datetime.datetime.now()
    runs: list[dict[str, Any]] = []
    child_stderr: dict[str, list[str]] = {}
    chosen = {"normal": args.variant_list, "error": args.error_variant_list}
    project = 1000
    with benchlib.running_endpoint() as endpoint:
        planned = {scenario: chosen[scenario] for scenario in args.scenario_list}
        for round_number, scenario, variant in report.schedule(args.rounds, planned):
            project += 1
            results, stderr = run_child(variant, scenario, endpoint, project, args)
            if stderr:
                child_stderr[f"{variant} {scenario} round {round_number}"] = stderr[-20:]
            for result in results:
                result["round"] = round_number
                runs.append(result)
                figures = result["figures"]
                print(
                    f"round {round_number}/{args.rounds} {result['where']:<17} {variant:<19} "
                    f"median {figures['path_median']:8.1f} µs  "
                    f"CPU {figures['cpu_per_request']:8.1f} µs  "
                    f"delivered {report.FIGURES['delivered'].cell(figures['delivered'])}",
                    file=sys.stderr,
                    flush=True,
                )
    pace = f"{args.interval_us:g} µs idle between requests" if args.interval_us else "back to back"
    heading = (
        f"overhead: {args.rounds} round(s) per variant, in-process ASGI calls (warm-up {args.warmup}); "
        f"{report.IN_PROCESS}: {args.requests} requests, {pace}; "
        f"{report.IN_PROCESS_PACED}: {args.paced_requests} requests started at {args.paced_rate:g}/s; "
        f"{report.IN_PROCESS_ERROR}: {args.error_requests} failing requests, each logged as uvicorn does; "
        f"{report.IN_PROCESS_ERROR_PACED}: {args.error_paced_requests} of them started at "
        f"{args.error_paced_rate:g}/s; "
        "medians over rounds. Delivered: transactions (OTLP variants: server spans) ÷ requests; error events "
        "likewise; events discarded: built, then dropped by an event processor, ÷ requests"
    )
    keys = (
        "requests",
        "error_requests",
        "paced_rate",
        "paced_requests",
        "error_paced_rate",
        "error_paced_requests",
        "rounds",
        "warmup",
        "flush_timeout",
        "interval_us",
    )
    config = {key: getattr(args, key) for key in keys}
    config.update(
        variants=args.variant_list,
        error_variants=args.error_variant_list,
        scenarios=args.scenario_list,
        quick=args.quick,
        child_stderr=child_stderr,
    )
    report.finish(
        "overhead", started, config, runs, heading, COLUMNS, RATIO_FIGURES, notes(runs), not args.no_save
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
