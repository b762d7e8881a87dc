"""RSS growth of the app process over many requests under uvicorn, with the Sentry endpoint up and down.

Per variant (``sentry``, ``bridge`` by default; any of ``variants.py``'s) and per endpoint state, a fresh
app process (``server.py``: uvicorn, one worker, the ``200 ok`` app) gets a warm-up of ``--warmup``
requests (5 000), then ``--requests`` requests (200 000; ``--quick`` 20 000), closed loop (``wrk``, or the
Python generator when ``wrk`` is not installed, each bounded in time as well as in count). The app
process's ``VmRSS`` is read after the warm-up, every half second during the load, at the end of the load,
and once more after delivery settled (up: nothing arrived for 2 s; down: 2 s later).

* ``up``: the DSN points at ``benchmarks/endpoint.py`` (its own process), answering at once;
* ``down``: the DSN points at a closed port on 127.0.0.1 (every connection refused), so whatever a
  variant queues or retries stays in the process.

Growth = RSS at the end of the load - RSS after the warm-up, in MB (10^6 bytes); the peak during the load
and the figure after settling are shown too. Each (variant, state) is one ``where`` of the report
(``rss up``, ``rss down``), so the targets of ``report.py`` can name it.

    .venv/bin/python benchmarks/rss.py                   # 200 000 requests, sentry and bridge, up and down
    .venv/bin/python benchmarks/rss.py --quick           # 20 000 requests, bridge only
    .venv/bin/python benchmarks/rss.py -n 50000 --variants bridge --states down

Results also go to ``benchmarks/results/rss-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import benchlib
import report
import server
import variants

STATES = ("up", "down")
MIB_TO_MB = 1.048576


def sample_rss(pid: int, stop: threading.Event, samples: list[tuple[float, float]], interval: float) -> None:
    started = time.monotonic()
    while not stop.wait(interval):
        value = benchlib.status_mib(pid, "VmRSS")
        if value is not None:
            samples.append((time.monotonic() - started, value * MIB_TO_MB))


def measure(
    variant: str, state: str, endpoint: str, project: int, args: argparse.Namespace
) -> dict[str, Any]:
    if state == "up":
        return measure_at(variant, state, endpoint, endpoint.split("://", 1)[1], project, args)
    with benchlib.closed_port() as port:
        return measure_at(variant, state, endpoint, f"{benchlib.HOST}:{port}", project, args)


def measure_at(
    variant: str, state: str, endpoint: str, host_port: str, project: int, args: argparse.Namespace
) -> dict[str, Any]:
    dsn = benchlib.dsn_for(host_port, project)
    sends = variants.sends(variant) and state == "up"
    target = endpoint if sends else None
    kind = variants.delivered_item(variant)  # a transaction, or an OTLP root span
    # bounded in time as well as in count: at least 300 requests/s, or the load stops early (and says so)
    warm_bound = args.warmup / 300 + 10
    bound = args.requests / 300 + 30
    with server.app_process(variant, "normal", dsn) as app:
        rss_start = (app.rss_mib() or math.nan) * MIB_TO_MB
        warm = app.load(args.loader, warm_bound, args.connections, args.threads, args.warmup)
        benchlib.wait_for_items(target, project, {kind: 1 << 60}, quiet=1.0, limit=10)
        served_warm = app.served()
        rss_warm = (app.rss_mib() or math.nan) * MIB_TO_MB
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(app.pid, stop, samples, 0.5), daemon=True)
        sampler.start()
        started = time.monotonic()
        try:
            load = app.load(args.loader, bound, args.connections, args.threads, args.requests)
        finally:
            stop.set()
            sampler.join()
        load_s = time.monotonic() - started
        served = app.served() - served_warm
        rss_end = (app.rss_mib() or math.nan) * MIB_TO_MB
        if target is not None:
            benchlib.wait_for_items(target, project, {kind: served_warm + served}, quiet=2.0, limit=60)
        else:
            time.sleep(2.0)
        rss_settled = (app.rss_mib() or math.nan) * MIB_TO_MB
        hwm = (benchlib.status_mib(app.pid, "VmHWM") or math.nan) * MIB_TO_MB
        threads = benchlib.thread_count(app.pid)
        exit_info = app.stop()
        stderr_tail = app.stderr_tail()
    peak = max([value for _, value in samples] + [rss_end])
    delivered = None
    counts = None
    if sends:
        counts = benchlib.endpoint_counts(endpoint, project)
        delivered = int(counts["items"].get(kind, 0))
    return {
        "where": f"rss {state}",
        "variant": variant,
        "endpoint": state,
        "project": project,
        **app.info,
        "figures": {
            "requests": served,
            "requests_share": served / args.requests,
            "rps": served / load_s if load_s else math.nan,
            "rss_after_warmup": rss_warm,
            "rss_end": rss_end,
            "growth": rss_end - rss_warm,
            "growth_peak": peak - rss_warm,
            "growth_settled": rss_settled - rss_warm,
            "delivered": delivered / (served_warm + served) if delivered is not None else None,
        },
        "warmup_requests": warm["requests"],
        "requests_asked": args.requests,
        "load_s": load_s,
        "non_2xx": load["non_2xx"],
        "socket_errors": load["socket_errors"],
        "rss_start_mb": rss_start,
        "rss_settled_mb": rss_settled,
        "rss_peak_during_load_mb": peak,
        "vm_hwm_mb": hwm,
        "growth_per_10k_requests_kb": (rss_end - rss_warm) * 1000 / served * 10_000 if served else math.nan,
        "samples": [(round(at, 2), round(value, 2)) for at, value in samples],
        "threads": threads,
        "delivered_transactions": delivered,
        "client_reported_discards": counts["discarded"] if counts is not None else None,
        "bridge_drops": exit_info.get("bridge_drops"),
        "exit": exit_info,
        "stderr_tail": stderr_tail,
    }


COLUMNS = ("requests", "rps", "rss_after_warmup", "growth", "growth_peak", "growth_settled", "delivered")


def notes(runs: list[dict[str, Any]]) -> list[str]:
    found = []
    for run in runs:
        problems = []
        if run["figures"]["requests"] < 0.98 * run["requests_asked"]:
            problems.append(
                f"only {run['figures']['requests']} of {run['requests_asked']} requests in the time bound"
            )
        if run["non_2xx"] or run["socket_errors"]:
            problems.append(f"{run['non_2xx']} non-2xx answers, {run['socket_errors']} socket errors")
        if problems:
            found.append(f"{run['variant']} ({run['endpoint']}): " + "; ".join(problems))
    return found


def parse_arguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", "-n", type=int, help="requests measured (200 000; --quick 20 000)")
    parser.add_argument(
        "--warmup", type=int, help="warm-up requests before the first reading (5 000; --quick 1 000)"
    )
    parser.add_argument("--variants", help="comma-separated (sentry,bridge; --quick: bridge)")
    parser.add_argument("--states", default="up,down", help="endpoint states: up,down (default both)")
    parser.add_argument("--threads", "-t", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--connections", "-c", type=int, default=50, help="connections (50)")
    parser.add_argument("--loader", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=2,
        help="runs at the same time (2: one app holds the GIL on one core, so two apps fill 2 cores; "
        "memory is per process; 1 for one at a time)",
    )
    parser.add_argument("--quick", action="store_true", help="20 000 requests, the bridge only")
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/*.json")
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 20_000 if args.quick else 200_000
    if args.warmup is None:
        args.warmup = 1_000 if args.quick else 5_000
    if args.variants is None:
        args.variants = "bridge" if args.quick else "sentry,bridge"
    try:
        args.variant_list = variants.pick(args.variants)
        args.state_list = variants.pick(args.states, STATES)
    except ValueError as error:
        parser.error(str(error))
    if args.requests <= 0 or args.warmup < 0 or args.jobs <= 0:
        parser.error("--requests and --jobs must be above 0, --warmup 0 or more")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_arguments(argv)
    args.loader = benchlib.choose_loader(args.loader)
    started = datetime.datetime.now()
    # the slowest first (the bridge, the endpoint down), so that --jobs 2 keeps both slots busy
    tasks = sorted(
        ((variant, state) for state in args.state_list for variant in args.variant_list),
        key=lambda task: (not task[0].startswith("bridge"), task[1] != "down"),
    )

    projects = {task: 3000 + index for index, task in enumerate(tasks)}

    def run_one(endpoint: str, variant: str, state: str) -> dict[str, Any]:
        print(f"rss: {variant}, endpoint {state}, {args.requests} requests ...", file=sys.stderr, flush=True)
        run = measure(variant, state, endpoint, projects[(variant, state)], args)
        figures = run["figures"]
        print(
            f"rss: {variant:<8} {state:<4} {figures['requests']} requests at {figures['rps']:.0f}/s: "
            f"{figures['rss_after_warmup']:.1f} -> {figures['rss_end']:.1f} MB ({figures['growth']:+.1f})",
            file=sys.stderr,
            flush=True,
        )
        return run

    with benchlib.running_endpoint() as endpoint, ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, endpoint, variant, state) for variant, state in tasks]
        finished = [future.result() for future in futures]
    order = [(variant, state) for state in args.state_list for variant in args.variant_list]
    runs = sorted(finished, key=lambda run: order.index((run["variant"], run["endpoint"])))
    for run in runs:
        run["round"] = 1
    heading = (
        f"rss: uvicorn (1 worker), {args.requests} requests after a warm-up of {args.warmup}, closed loop "
        f"({args.loader}, {args.connections} connections, {args.jobs} run(s) at a time); "
        "endpoint up = loopback endpoint, down = closed port; MB = 10^6 bytes"
    )
    config = {
        key: getattr(args, key)
        for key in ("requests", "warmup", "threads", "connections", "loader", "jobs", "quick")
    }
    config.update(variants=args.variant_list, states=args.state_list)
    report.finish("rss", started, config, runs, heading, COLUMNS, (), notes(runs), not args.no_save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
