"""Delivered share of transactions under steady open-loop load, when the ingest answers after 20 ms.

The app of ``variants.py`` (200 ``ok``) runs under uvicorn (``server.py``, its own process) wrapped by
each variant (default ``sentry,bridge``; ``bridge-sdk-transport`` and ``bare`` on request), sending to
``endpoint.py`` (its own process) answering each envelope after ``--delay-ms``. ``pyload.py --rate``, in
a third process, sends ``GET /`` open-loop: by default 500 requests/s for 10 s, then, in a fresh app
process, 2000 requests/s for 5 s. After the load the app gets ``--drain`` seconds to deliver what it
queued, then SIGTERM: uvicorn stops, the app flushes (5 s at most; this also sends the client reports).

Per (variant, rate), one ``where`` of the report (``delivery 500/s``…): the rate achieved (answered ÷ time
to the last answer), the delivered share (transactions that reached the endpoint ÷ requests answered),
the latency from each request's scheduled start, the app's peak RSS (``VmHWM``), and what the client
reports say was dropped.

    .venv/bin/python benchmarks/delivery.py                 # 500 r/s x 10 s and 2000 r/s x 5 s
    .venv/bin/python benchmarks/delivery.py --quick         # 500 r/s x 2 s and 2000 r/s x 1 s
    .venv/bin/python benchmarks/delivery.py --phases 1000:5 --variants bridge,bridge-sdk-transport
"""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import Any, Optional

import benchlib
import report
import server
import variants

DEFAULT_PHASES = "500:10,2000:5"
QUICK_PHASES = "500:2,2000:1"
COLUMNS: tuple[str, ...] = ("offered_rate", "achieved_rate", "answered", "transactions", "delivered")
COLUMNS += ("latency_p50", "latency_p99", "peak_rss")
RATIO_FIGURES = ("achieved_rate", "delivered", "latency_p99")


def run_phase(
    variant: str, rate: float, duration: float, endpoint: str, project: int, args: argparse.Namespace
) -> dict[str, Any]:
    dsn = benchlib.dsn_for(endpoint.split("://", 1)[1], project)
    sends = variants.sends(variant)
    kind = variants.delivered_item(variant)  # a transaction, or an OTLP root span
    with server.app_process(variant, "normal", dsn, connections=args.max_connections) as app:
        load = benchlib.run_python_load(
            app.port, "/", duration, args.connections, rate=rate, drain=args.drain
        )
        target = endpoint if sends else None
        expected = {kind: load["answered"]}
        waited = benchlib.wait_for_items(target, project, expected, quiet=2.0, limit=args.drain)
        before_exit = benchlib.item_counts(target, project, (kind,))[kind]
        peak = benchlib.status_mib(app.pid, "VmHWM")
        exit_info = app.stop(15)
        stderr_tail = app.stderr_tail()
    counts = benchlib.endpoint_counts(endpoint, project)
    delivered = int(counts["items"].get(kind, 0))
    dropped = {
        key.split(":", 1)[0]: value
        for key, value in counts["discarded"].items()
        if key.endswith(":transaction")
    }
    answered = load["answered"]
    return {
        "where": f"delivery {rate:g}/s",
        "variant": variant,
        "round": 1,
        "project": project,
        **app.info,
        "figures": {
            "offered_rate": load["offered_rate"],
            "achieved_rate": load["achieved_rate"],
            "answered": answered,
            "transactions": delivered if sends else None,
            "delivered": delivered / answered if answered and sends else None,
            "latency_p50": load["latency_p50_ms"],
            "latency_p99": load["latency_p99_ms"],
            "peak_rss": peak,
        },
        "load": load,
        "delivered_before_exit": before_exit,
        "unaccounted": answered - delivered - sum(dropped.values()),
        "waited_for_delivery_s": waited,
        "client_reported_discards": counts["discarded"],
        "bridge_drops": exit_info.get("bridge_drops"),
        "exit": exit_info,
        "endpoint_parse_errors": counts["parse_errors"],
        "stderr_tail": stderr_tail,
    }


def notes(runs: list[dict[str, Any]]) -> list[str]:
    found = []
    for run in runs:
        load = run["load"]
        shown = []
        if run.get("transport"):
            shown.append(
                f"transport {run['transport']} (queue {run['transport_queue_size']}, "
                f"up to {run['transport_max_connections']} connection(s) in flight)"
            )
        if load["failed"] or load["unanswered_after_drain"]:
            shown.append(
                f"{load['failed']} failed {load['failure_kinds'] or ''}, "
                f"{load['unanswered_after_drain']} unanswered after the drain"
            )
        if run["unaccounted"] and run.get("transport"):
            shown.append(f"{run['unaccounted']} transaction(s) neither delivered nor reported dropped")
        if run["endpoint_parse_errors"]:
            shown.append(f"{run['endpoint_parse_errors']} envelope(s) the endpoint could not parse")
        if shown:
            found.append(f"{run['where']}/{run['variant']}: " + "; ".join(shown))
    return found


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--variants", default="sentry,bridge", help=f"comma-separated, of {', '.join(variants.NAMES)}"
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
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/*.json")
    args = parser.parse_args(argv)
    try:
        chosen = variants.pick(args.variants)
    except ValueError as error:
        parser.error(f"--variants {error}")
    phases = []
    for phase in (QUICK_PHASES if args.quick else args.phases).split(","):
        rate, _, seconds = phase.partition(":")
        phases.append((float(rate), float(seconds)))

    started = datetime.datetime.now()
    runs: list[dict[str, Any]] = []
    project = 100
    with benchlib.running_endpoint(args.delay_ms) as endpoint:
        for rate, seconds in phases:
            for variant in chosen:
                project += 1
                print(
                    f"  {variant} at {rate:g} requests/s for {seconds:g} s ...", file=sys.stderr, flush=True
                )
                runs.append(run_phase(variant, rate, seconds, endpoint, project, args))
    heading = (
        f"delivery: endpoint answers each envelope after {args.delay_ms:g} ms; uvicorn, 1 worker; "
        f"open-loop load, up to {args.connections} connections; delivered = transactions ÷ requests answered"
    )
    config = {
        "variants": chosen,
        "phases": [{"rate": rate, "seconds": seconds} for rate, seconds in phases],
        "delay_ms": args.delay_ms,
        "connections": args.connections,
        "max_connections": args.max_connections,
        "drain_s": args.drain,
        "quick": args.quick,
    }
    report.finish(
        "delivery", started, config, runs, heading, COLUMNS, RATIO_FIGURES, notes(runs), not args.no_save
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
