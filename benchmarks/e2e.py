"""End to end under uvicorn: req/s, latency, CPU and delivered share of each variant, normal and error path.

The app of ``variants.py`` (``200 ok``; in the error scenario it raises on every request, uvicorn answers
500 and logs the traceback) runs under uvicorn (``server.py``, its own process) wrapped by each variant.
Sentry DSNs point at ``endpoint.py`` in its own process (its CPU does not count). The load is closed-loop:
``wrk`` (2 threads, 50 connections) when installed, otherwise ``pyload.py`` in its own process, with a
note. Rounds alternate the variants; every (round, scenario, variant) gets a fresh app process:

1. warm-up load, then wait until the endpoint stops receiving;
2. the measured load for ``--duration`` seconds: req/s and latency as the load generator saw them;
3. wait (bounded) until every transaction (and error event) has arrived or none arrived for a while, then
   read the app process's CPU (every thread, ``/proc/<pid>/stat``) from the start of the load: CPU per
   request *including* the background delivery ("load only": up to the end of the load);
4. SIGTERM: the app flushes (5 s at most) and exits; the endpoint's counts give the delivered shares
   (transactions, and error events, ÷ requests the app served).

    .venv/bin/python benchmarks/e2e.py                 # 3 rounds x 5 s per variant and scenario
    .venv/bin/python benchmarks/e2e.py --quick         # 1 round x 1 s
    .venv/bin/python benchmarks/e2e.py --scenarios error --variants sentry,bridge -r 5
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from collections.abc import Sequence
from typing import Any, Optional

import benchlib
import report
import server
import variants

DEFAULT_VARIANTS = ("bare", "otel", "sentry", "sentry-deliver-all", "bridge")
WHERE = {"normal": report.UVICORN, "error": report.UVICORN_ERROR}
COLUMNS = (
    "rps",
    "latency_p50",
    "latency_p99",
    "cpu_per_request",
    "cpu_per_request_load_only",
    "delivered",
    "delivered_events",
    "discarded_events",
)
RATIO_FIGURES = ("rps", "latency_p99", "cpu_per_request")


def measure(
    variant: str, scenario: str, endpoint: str, project: int, args: argparse.Namespace
) -> dict[str, Any]:
    sends = variants.sends(variant)
    target = endpoint if sends else None
    kind = variants.delivered_item(variant)  # a transaction, or an OTLP root span
    kinds = (kind, "event")
    dsn = benchlib.dsn_for(endpoint.split("://", 1)[1], project)
    with server.app_process(variant, scenario, dsn) as app:
        if args.warmup > 0:
            app.load(args.loader, args.warmup_bound, args.connections, args.threads, args.warmup)
        app.flush()  # what the warm-up queued (a BatchSpanProcessor holds it up to 5 s) is not counted
        benchlib.wait_for_items(target, project, {kind: 1 << 60}, quiet=args.quiet, limit=10)
        before = benchlib.item_counts(target, project, kinds)
        served_before = app.served()
        cpu_before = app.cpu_seconds()
        load = benchlib.run_load(args.loader, app.port, "/", args.duration, args.connections, args.threads)
        cpu_after_load = app.cpu_seconds()
        served = app.served() - served_before
        flushed = app.flush()  # the variant's own delivery work, counted in CPU/req
        expected = {kind: before[kind] + served}
        if scenario == "error":
            expected["event"] = before["event"] + served
        waited = benchlib.wait_for_items(target, project, expected, quiet=args.quiet, limit=args.drain)
        cpu_after_drain = app.cpu_seconds()
        at_drain = benchlib.item_counts(target, project, kinds)
        rss = app.rss_mib()
        hwm = benchlib.status_mib(app.pid, "VmHWM")
        threads = benchlib.thread_count(app.pid)
        exit_info = app.stop()
        stderr_tail = app.stderr_tail()
    counts = benchlib.endpoint_counts(endpoint, project) if sends else None
    after = benchlib.item_counts(target, project, kinds)

    def share(kind: str, at: dict[str, int]) -> Optional[float]:
        return (at[kind] - before[kind]) / served if sends and served else None

    def per_request(seconds: float) -> float:
        return seconds / served * 1e6 if served else math.nan

    discarded_events: Optional[float] = None
    errors = scenario == "error" and variants.reports_errors(variant)
    if counts is not None and errors and exit_info.get("served"):
        # events built and then dropped by an event processor (sentry-sdk's dedupe: the server's log record
        # of an exception already reported), over every request the app served, warm-up included
        discarded_events = counts["discarded"].get("event_processor:error", 0) / exit_info["served"]
    wrong = load["requests"] - load["non_2xx"] if scenario == "error" else load["non_2xx"]
    return {
        "where": WHERE[scenario],
        "variant": variant,
        "scenario": scenario,
        "project": project,
        **app.info,
        "figures": {
            "rps": load["rps"],
            "latency_p50": load["latency_p50_ms"],
            "latency_p99": load["latency_p99_ms"],
            "cpu_per_request": per_request(cpu_after_drain - cpu_before),
            "cpu_per_request_load_only": per_request(cpu_after_load - cpu_before),
            "delivered": share(kind, after),
            "delivered_before_exit": share(kind, at_drain),
            **({"delivered_events": share("event", after)} if errors else {}),
            **({"discarded_events": discarded_events} if discarded_events is not None else {}),
        },
        "load": {key: value for key, value in load.items() if key != "output"},
        "load_output": load.get("output", []),
        "served": served,
        "unexpected_status": wrong,
        "expected_status": "non-2xx" if scenario == "error" else "2xx",
        "socket_errors": load["socket_errors"],
        "cpu_load_s": cpu_after_load - cpu_before,
        "cpu_total_s": cpu_after_drain - cpu_before,
        "drain_wait_s": waited,
        "flushed": flushed,
        "rss_mib": rss,
        "peak_rss_mib": hwm,
        "threads": threads,
        "exit": exit_info,
        "bridge_drops": exit_info.get("bridge_drops"),
        "client_reported_discards": counts["discarded"] if counts is not None else None,
        "endpoint_parse_errors": counts["parse_errors"] if counts is not None else 0,
        "stderr_tail": stderr_tail,
    }


def notes(runs: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for run in runs:
        name = f"{run['where']}/{run['variant']} round {run['round']}"
        if run["unexpected_status"]:
            found.append(f"{name}: {run['unexpected_status']} answers were not {run['expected_status']}")
        if run["socket_errors"]:
            found.append(f"{name}: {run['socket_errors']} socket errors {run['load']['errors']}")
        before, after = run["figures"]["delivered_before_exit"], run["figures"]["delivered"]
        if before is not None and after is not None and after - before > 0.01:
            found.append(
                f"{name}: {(after - before) * 100:.1f}% of the transactions arrived only at the exit flush "
                f"(their CPU is not in CPU/req)"
            )
        if run["endpoint_parse_errors"]:
            found.append(f"{name}: {run['endpoint_parse_errors']} envelope(s) the endpoint could not parse")
    return found


def parse_arguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
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
        help=f"comma-separated, from {', '.join(variants.NAMES)} (default: %(default)s)",
    )
    parser.add_argument(
        "--scenarios", default=",".join(variants.SCENARIOS), help="normal,error (default: both)"
    )
    parser.add_argument(
        "--loader",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (auto: wrk if found)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round x 1 s")
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/*.json")
    args = parser.parse_args(argv)
    benchlib.fill_in_sizes(
        args,
        {
            "rounds": (1, 3),
            "duration": (1.0, 5.0),
            "warmup": (200, 1000),
            "drain": (10.0, 30.0),
            "quiet": (0.5, 1.0),
            "warmup_bound": (1.0, 2.0),
        },
    )
    if args.rounds <= 0 or args.duration <= 0 or args.warmup < 0 or args.connections <= 0:
        parser.error("--rounds, --duration and --connections must be above 0, --warmup 0 or more")
    try:
        args.variant_list = variants.pick(args.variants)
        args.scenario_list = variants.pick(args.scenarios, variants.SCENARIOS)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_arguments(argv)
    args.loader = benchlib.choose_loader(args.loader)
    started = datetime.datetime.now()
    runs: list[dict[str, Any]] = []
    project = 2000
    with benchlib.running_endpoint() as endpoint:
        planned = {scenario: args.variant_list for scenario in args.scenario_list}
        for round_number, scenario, variant in report.schedule(args.rounds, planned):
            project += 1
            result = measure(variant, scenario, endpoint, project, args)
            result["round"] = round_number
            runs.append(result)
            figures = result["figures"]
            print(
                f"round {round_number}/{args.rounds} {scenario:<6} {variant:<19} "
                f"{figures['rps']:7.0f} req/s  p99 {figures['latency_p99']:6.2f} ms  "
                f"CPU {figures['cpu_per_request']:6.0f} µs/req  "
                f"delivered {report.FIGURES['delivered'].cell(figures['delivered'])}",
                file=sys.stderr,
                flush=True,
            )
    tool = "wrk" if args.loader == "wrk" else "the Python load generator (wrk not installed)"
    heading = (
        f"e2e: uvicorn, 1 worker, no access log; {args.rounds} round(s) x {args.duration:g} s per variant "
        f"and scenario, closed loop with {tool}: {args.threads} threads, {args.connections} connections; "
        "medians over rounds. CPU/req: the app process, all threads, from the start of the load until "
        "delivery ended ('load only': until the load ended); delivered: transactions delivered ÷ requests "
        "served; events discarded: built, then dropped by an event processor, ÷ requests served"
    )
    config = {
        key: getattr(args, key)
        for key in ("rounds", "duration", "warmup", "warmup_bound", "threads", "connections", "loader")
    }
    config.update(
        variants=args.variant_list, scenarios=args.scenario_list, drain_s=args.drain, quiet_s=args.quiet
    )
    config["quick"] = args.quick
    report.finish(
        "e2e", started, config, runs, heading, COLUMNS, RATIO_FIGURES, notes(runs), not args.no_save
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
