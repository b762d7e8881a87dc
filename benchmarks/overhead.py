"""Per-request cost of ``otel_bridge`` against OTel's ASGI middleware alone and sentry-sdk's own middleware.

The same trivial ASGI 3 app (200 ``ok`` with a content-length header) is called in-process, with a
synthetic ``http`` scope and ``receive``/``send`` coroutines (no server, no sockets on the request path),
under each variant, everything sampled:

* ``bare``: the app alone;
* ``otel``: ``OpenTelemetryMiddleware(app, exclude_spans=["receive", "send"])``, an SDK ``TracerProvider``
  and a ``BatchSpanProcessor`` with an exporter that discards;
* ``sentry``: sentry-sdk's ``SentryAsgiMiddleware`` with ``sentry_sdk.init(dsn, traces_sample_rate=1.0)``;
* ``sentry-deliver-all``: the same with ``transport_queue_size=100_000``, so that nothing is dropped;
* ``bridge``: ``otel_bridge.init(dsn)`` and ``otel_bridge.asgi.SentryAsgiMiddleware(app)``;
* ``bridge-deliver-all``: the bridge with ``transport_queue_size=100_000`` and ``max_queued_traces=100_000``
  (passed through ``otel_bridge.init``), to compare CPU with ``sentry-deliver-all`` at equal delivery.

Each (round, variant) runs in a fresh subprocess (OTel and sentry-sdk keep global state); rounds alternate
the variants, each round in a rotated order. The Sentry DSNs point at ``benchmarks/endpoint.py``, run in
its own process so that receiving does not count. Per round and variant, after a warm-up:

1. request-path wall time: ``perf_counter_ns`` around each ``await app(scope, receive, send)``;
2. CPU per request: ``process_time`` (all threads of the process) across the whole round *including*
   the wait for the variant's background work to finish (its flush), divided by the number of requests;
3. delivered: transactions that reached the endpoint during the round, divided by the number of requests.

Usage::

    .venv/bin/python benchmarks/overhead.py            # 3 rounds x 5 000 requests, warm-up 500
    .venv/bin/python benchmarks/overhead.py --quick    # a smoke run
    .venv/bin/python benchmarks/overhead.py --variants bridge,bridge-deliver-all,sentry-deliver-all

Results also go to ``benchmarks/results/overhead-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import benchlib

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RESULT_PREFIX = "OVERHEAD-RESULT "

ALL_VARIANTS = ("bare", "otel", "sentry", "sentry-deliver-all", "bridge", "bridge-deliver-all")
DEFAULT_VARIANTS = ALL_VARIANTS
SENTRY_VARIANTS = frozenset({"sentry", "sentry-deliver-all", "bridge", "bridge-deliver-all"})
BIG_QUEUE = 100_000
OVERHEAD_PACKAGES = (
    "otel-bridge",
    "sentry-sdk",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-asgi",
    "urllib3",
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Flush = Callable[[float], bool]


# --------------------------------------------------------------------------------------------- the app


BODY = b"ok"
RESPONSE_START: dict[str, Any] = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
}
RESPONSE_BODY: dict[str, Any] = {"type": "http.response.body", "body": BODY, "more_body": False}
REQUEST_MESSAGE: dict[str, Any] = {"type": "http.request", "body": b"", "more_body": False}


async def hello_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The app under test: ``200 ok`` with a content-length header, nothing else."""
    if scope["type"] != "http":
        return
    await send(dict(RESPONSE_START))
    await send(dict(RESPONSE_BODY))


def http_scope() -> Scope:
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


async def receive() -> Message:
    return dict(REQUEST_MESSAGE)


class ResponseCheck:
    """The ``send`` callable: counts the 200 responses so that a broken variant cannot look fast."""

    def __init__(self) -> None:
        self.ok = 0
        self.other: list[Any] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if message.get("status") == 200:
                self.ok += 1
            else:
                self.other.append(message.get("status"))


# ------------------------------------------------------------------------------------------- variants


@dataclass
class Variant:
    app: ASGIApp
    flush: Flush
    details: Callable[[], dict[str, Any]]


def _sentry_flush(timeout: float) -> bool:
    import sentry_sdk

    started = time.monotonic()
    sentry_sdk.flush(timeout=timeout)
    return time.monotonic() - started < timeout


def build_variant(name: str, dsn: str) -> Variant:
    """Set up one variant's global state and wrap the app; imports happen here, inside the subprocess."""
    if name == "bare":
        return Variant(hello_app, lambda timeout: True, dict)

    if name == "otel":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        provider, exported = benchlib.discarding_tracer_provider()
        app = OpenTelemetryMiddleware(hello_app, exclude_spans=["receive", "send"], tracer_provider=provider)
        return Variant(
            app,
            lambda timeout: provider.force_flush(int(timeout * 1000)),
            lambda: {"otel_spans_exported": exported()},
        )

    if name in ("sentry", "sentry-deliver-all"):
        import sentry_sdk
        from sentry_sdk.integrations.asgi import SentryAsgiMiddleware as SdkMiddleware

        options: dict[str, Any] = {"traces_sample_rate": 1.0}
        if name == "sentry-deliver-all":
            options["transport_queue_size"] = BIG_QUEUE
        sentry_sdk.init(dsn=dsn, **options)
        return Variant(SdkMiddleware(hello_app), _sentry_flush, dict)

    if name in ("bridge", "bridge-deliver-all"):
        import otel_bridge
        from otel_bridge.asgi import SentryAsgiMiddleware as BridgeMiddleware

        bridge_options: dict[str, Any] = {}
        if name == "bridge-deliver-all":
            bridge_options = {"transport_queue_size": BIG_QUEUE, "max_queued_traces": BIG_QUEUE}
        processor = otel_bridge.init(dsn=dsn, **bridge_options)
        if processor is None:
            raise RuntimeError("otel_bridge.init() returned None: the bridge is off")

        def bridge_details() -> dict[str, Any]:
            totals = processor.drops.totals()
            return {
                "bridge_drops": {f"{reason}:{category}": n for (reason, category), n in totals.items()},
                "otel_bridge_file": otel_bridge.__file__,
            }

        return Variant(BridgeMiddleware(hello_app), otel_bridge.flush, bridge_details)

    raise ValueError(f"unknown variant {name!r}: accepted values are {', '.join(ALL_VARIANTS)}")


# ------------------------------------------------------------------------------ one round, in a child


async def drive(
    app: ASGIApp, n: int, check: ResponseCheck, timings: Optional[list[int]], interval: float = 0.0
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
        # after "pid (comm)": state is field 3, utime field 14 and stime field 15 of proc(5)
        name = thread.name if thread.name not in found else f"{thread.name}#{thread.native_id}"
        found[name] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def run_round(
    variant_name: str, endpoint: str, project: int, n: int, warmup: int, timeout: float, interval: float
) -> None:
    """The child's whole job: set up, warm up, measure one round, print one result line."""
    dsn = benchlib.dsn_for(endpoint.split("://", 1)[1], project)
    variant = build_variant(variant_name, dsn)
    check = ResponseCheck()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    loop.run_until_complete(drive(variant.app, warmup, check, None))
    warm_flushed = variant.flush(timeout)
    variant.flush(timeout)  # again: the first flush may lose the client report (see below)
    before = benchlib.endpoint_counts(endpoint, project) if variant_name in SENTRY_VARIANTS else None
    details_before = variant.details()
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
    cpu_by_thread = {
        name: (seconds - threads_started.get(name, 0.0)) / n * 1e6 for name, seconds in threads_ended.items()
    }

    delivered: Optional[float] = None
    delivery: dict[str, Any] = {}
    if before is not None:
        # Outside the measurement: a second flush. sentry-sdk's flush queues its client report (what it
        # dropped) as a job of its own, which is lost when the queue is still full at that moment.
        variant.flush(timeout)
        after = benchlib.endpoint_counts(endpoint, project)
        transactions = after["items"].get("transaction", 0) - before["items"].get("transaction", 0)
        delivered = transactions / n
        discarded = {
            key: value - before["discarded"].get(key, 0)
            for key, value in after["discarded"].items()
            if value - before["discarded"].get(key, 0)
        }
        reported = sum(value for key, value in discarded.items() if key.endswith(":transaction"))
        delivery = {
            "transactions": transactions,
            "unaccounted_transactions": n - transactions - reported,
            "envelopes": after["envelopes"] - before["envelopes"],
            "bytes": after["bytes"] - before["bytes"],
            "parse_errors": after["parse_errors"] - before["parse_errors"],
            "client_reported_discards": discarded,
        }
    details = variant.details()
    if "otel_spans_exported" in details:
        details["otel_spans_exported"] -= details_before.get("otel_spans_exported", 0)
    if "bridge_drops" in details:
        earlier = details_before.get("bridge_drops", {})
        details["bridge_drops"] = {
            key: value - earlier.get(key, 0)
            for key, value in details["bridge_drops"].items()
            if value - earlier.get(key, 0)
        }
    if check.other or check.ok != warmup + n:
        raise RuntimeError(
            f"{variant_name}: {check.ok} responses 200 of {warmup + n}; others {check.other[:5]}"
        )

    ordered = sorted(timings)
    result = {
        "variant": variant_name,
        "project": project,
        "requests": n,
        "warmup": warmup,
        "path_median_us": statistics.median(ordered) / 1000,
        "path_mean_us": statistics.fmean(ordered) / 1000,
        "path_p90_us": benchlib.percentile(ordered, 0.90) / 1000,
        "path_p99_us": benchlib.percentile(ordered, 0.99) / 1000,
        "path_max_us": ordered[-1] / 1000,
        "cpu_per_request_us": cpu / n * 1e6,
        "cpu_per_request_by_thread_us": cpu_by_thread,
        "wall_requests_s": wall_requests,
        "wall_round_s": wall_round,
        "flush_s": wall_round - wall_requests,
        "flushed": flushed,
        "warmup_flushed": warm_flushed,
        "delivered": delivered,
        "delivery": delivery,
        **details,
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------- the parent process


@contextlib.contextmanager
def running_endpoint() -> Iterator[str]:
    """Start ``endpoint.py`` in its own process; yield its base URL; stop it."""
    with benchlib.running_endpoint() as url:
        request = urllib.request.Request(f"{url}/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10):
            pass
        yield url


def run_child(
    variant: str, endpoint: str, project: int, args: argparse.Namespace
) -> tuple[dict[str, Any], list[str]]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        variant,
        "--endpoint",
        endpoint,
        "--project",
        str(project),
        "--requests",
        str(args.requests),
        "--warmup",
        str(args.warmup),
        "--flush-timeout",
        str(args.flush_timeout),
        "--interval-us",
        str(args.interval_us),
    ]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=benchlib.child_environment(),
        timeout=args.flush_timeout * 2 + 240,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    stderr = [line for line in completed.stderr.splitlines() if line.strip()]
    if completed.returncode != 0 or not lines:
        sys.stderr.write(completed.stderr)
        raise RuntimeError(f"variant {variant} failed (exit {completed.returncode})")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return result, stderr


def summarise(runs: list[dict[str, Any]], variants: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per variant: the median over rounds of every per-round figure, and the spread of the medians."""
    summary: dict[str, dict[str, Any]] = {}
    for variant in variants:
        mine = [run for run in runs if run["variant"] == variant]
        if not mine:
            continue
        figures: dict[str, Any] = {"rounds": len(mine)}
        for key in (
            "path_median_us",
            "path_mean_us",
            "path_p99_us",
            "cpu_per_request_us",
            "flush_s",
            "wall_round_s",
        ):
            figures[key] = statistics.median(run[key] for run in mine)
        medians = [run["path_median_us"] for run in mine]
        cpus = [run["cpu_per_request_us"] for run in mine]
        figures["path_median_spread"] = max(medians) / min(medians) - 1 if min(medians) else 0.0
        figures["cpu_spread"] = max(cpus) / min(cpus) - 1 if min(cpus) else 0.0
        delivered = [run["delivered"] for run in mine if run["delivered"] is not None]
        figures["delivered"] = statistics.median(delivered) if delivered else None
        figures["delivered_min"] = min(delivered) if delivered else None
        figures["all_flushed"] = all(run["flushed"] for run in mine)
        summary[variant] = figures
    return summary


RATIO_KEYS = (
    ("path_median_us", "request path, median"),
    ("path_mean_us", "request path, mean"),
    ("cpu_per_request_us", "CPU per request"),
)


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Optional[float]]]]:
    """``bridge ÷ other`` for each figure, with the difference in microseconds."""
    found: dict[str, dict[str, dict[str, Optional[float]]]] = {}
    for mine in ("bridge", "bridge-deliver-all"):
        if mine not in summary:
            continue
        for other in ("otel", "sentry", "sentry-deliver-all"):
            if other not in summary:
                continue
            entry: dict[str, dict[str, Optional[float]]] = {}
            for key, _label in RATIO_KEYS:
                ratio = summary[mine][key] / summary[other][key] if summary[other][key] else None
                entry[key] = {"ratio": ratio, "difference_us": summary[mine][key] - summary[other][key]}
            found[f"{mine} / {other}"] = entry
    return found


def _ratio(figures: dict[str, Optional[float]]) -> str:
    ratio, difference = figures["ratio"], figures["difference_us"]
    shown = "-" if ratio is None else f"{ratio:.2f}x"
    return shown if difference is None else f"{shown} ({difference:+.1f} µs)"


def render(
    summary: dict[str, dict[str, Any]],
    found_ratios: dict[str, dict[str, dict[str, Optional[float]]]],
    runs: list[dict[str, Any]],
    args: argparse.Namespace,
) -> str:
    rows = [
        [
            "variant",
            "path median µs",
            "path mean µs",
            "path p99 µs",
            "CPU/req µs",
            "delivered",
            "flush s",
            "spread med/CPU",
        ]
    ]
    for variant, figures in summary.items():
        rows.append(
            [
                variant,
                f"{figures['path_median_us']:.1f}",
                f"{figures['path_mean_us']:.1f}",
                f"{figures['path_p99_us']:.1f}",
                f"{figures['cpu_per_request_us']:.1f}",
                benchlib.share(figures["delivered"]),
                f"{figures['flush_s']:.2f}" + ("" if figures["all_flushed"] else " (timed out)"),
                f"{figures['path_median_spread'] * 100:.0f}%/{figures['cpu_spread'] * 100:.0f}%",
            ]
        )
    lines = [
        f"otel_bridge overhead: {args.rounds} round(s) x {args.requests} requests per variant "
        f"(warm-up {args.warmup}), in-process ASGI calls"
        + (f", {args.interval_us:g} µs idle between requests" if args.interval_us else ", back to back")
        + ", medians over rounds",
        "",
        *benchlib.table(rows, underline=True),
    ]
    if found_ratios:
        ratio_rows = [["", *(label for _key, label in RATIO_KEYS)]]
        for name, entry in found_ratios.items():
            ratio_rows.append(
                [
                    name,
                    *(_ratio(entry[key]) for key, _label in RATIO_KEYS),
                ]
            )
        lines += [
            "",
            "ratios (in brackets: the difference)",
            *benchlib.table(ratio_rows, False),
        ]
    notes = _notes(runs)
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _notes(runs: list[dict[str, Any]]) -> list[str]:
    notes: list[str] = []
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], []).append(run)
    for variant, mine in by_variant.items():
        discards: dict[str, int] = {}
        for run in mine:
            for key, value in (run.get("delivery", {}).get("client_reported_discards") or {}).items():
                discards[key] = discards.get(key, 0) + value
            for key, value in (run.get("bridge_drops") or {}).items():
                discards[f"bridge {key}"] = discards.get(f"bridge {key}", 0) + value
        if discards:
            listed = ", ".join(f"{key} {value}" for key, value in sorted(discards.items()))
            notes.append(f"{variant}: dropped over all rounds (client reports / bridge counters): {listed}")
        exported = [
            run["otel_spans_exported"] / run["requests"] for run in mine if "otel_spans_exported" in run
        ]
        if exported:
            notes.append(
                f"{variant}: spans reaching the discarding exporter: "
                + ", ".join(f"{share * 100:.1f}%" for share in exported)
            )
        by_thread: dict[str, list[float]] = {}
        for run in mine:
            for name, value in (run.get("cpu_per_request_by_thread_us") or {}).items():
                by_thread.setdefault(name, []).append(value)
        busy = sorted(((statistics.median(values), name) for name, values in by_thread.items()), reverse=True)
        shown = [f"{name} {value:.0f}" for value, name in busy if value >= 0.5]
        if len(shown) > 1:
            notes.append(f"{variant}: CPU µs per request by thread (median): {', '.join(shown)}")
        unaccounted = [run["delivery"].get("unaccounted_transactions", 0) for run in mine if run["delivery"]]
        if any(unaccounted):
            notes.append(
                f"{variant}: transactions neither delivered nor reported dropped, per round: "
                + ", ".join(str(value) for value in unaccounted)
            )
        parse_errors = sum(run.get("delivery", {}).get("parse_errors", 0) for run in mine)
        if parse_errors:
            notes.append(f"{variant}: {parse_errors} envelope(s) the endpoint could not parse")
    return notes


def code_under_test(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Which ``otel_bridge`` the bridge variants imported, and the git state of its checkout."""
    files = sorted({run["otel_bridge_file"] for run in runs if "otel_bridge_file" in run})
    found: dict[str, Any] = {"otel_bridge_files": files}
    if not files:
        return found
    state = benchlib.git_commit_and_changes(Path(files[0]).resolve().parent.parent)
    if state is None:
        return found
    found["git_commit"], found["uncommitted_changes"] = state
    return found


def describe_code(code: dict[str, Any]) -> str:
    files = code.get("otel_bridge_files") or []
    if not files:
        return ""
    where = str(Path(files[0]).resolve().parent)
    if "git_commit" not in code:
        return f"otel_bridge from {where}"
    dirty = " + uncommitted changes" if code.get("uncommitted_changes") else ""
    return f"otel_bridge from {where} (git {code['git_commit']}{dirty})"


def parse_arguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Per-request cost of otel_bridge vs OTel's and sentry-sdk's ASGI middleware."
    )
    parser.add_argument("--requests", "-n", type=int, default=None, help="requests per round (5000)")
    parser.add_argument("--rounds", "-r", type=int, default=None, help="rounds of every variant (3)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests per round (500)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 round x 500 requests, warm-up 50"
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, from {', '.join(ALL_VARIANTS)} (default: {','.join(DEFAULT_VARIANTS)})",
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
    quick = args.quick
    if args.requests is None:
        args.requests = 500 if quick else 5000
    if args.rounds is None:
        args.rounds = 1 if quick else 3
    if args.warmup is None:
        args.warmup = 50 if quick else 500
    if args.requests <= 0 or args.rounds <= 0 or args.warmup < 0 or args.interval_us < 0:
        parser.error("--requests and --rounds must be above 0, --warmup and --interval-us 0 or more")
    args.variant_list = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in args.variant_list if name not in ALL_VARIANTS]
    if unknown or not args.variant_list:
        parser.error(f"--variants {args.variants!r}: accepted values are {', '.join(ALL_VARIANTS)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_arguments(argv)
    if args.child:
        run_round(
            args.child,
            args.endpoint,
            args.project,
            args.requests,
            args.warmup,
            args.flush_timeout,
            args.interval_us / 1e6,
        )
        return 0

    variants: list[str] = args.variant_list
    started = datetime.datetime.now()
    runs: list[dict[str, Any]] = []
    child_stderr: dict[str, list[str]] = {}
    with running_endpoint() as endpoint:
        for round_index in range(args.rounds):
            shift = round_index % len(variants)
            for position, variant in enumerate(variants[shift:] + variants[:shift]):
                project = 1000 + round_index * 100 + ALL_VARIANTS.index(variant)
                result, stderr = run_child(variant, endpoint, project, args)
                result["round"] = round_index + 1
                result["position"] = position
                runs.append(result)
                if stderr:
                    child_stderr[f"{variant} round {round_index + 1}"] = stderr[-20:]
                print(
                    f"round {round_index + 1}/{args.rounds} {variant:<19} "
                    f"median {result['path_median_us']:8.1f} µs  CPU {result['cpu_per_request_us']:8.1f} µs"
                    f"  delivered {benchlib.share(result['delivered'])}",
                    file=sys.stderr,
                    flush=True,
                )
    summary = summarise(runs, variants)
    found_ratios = ratios(summary)
    code = code_under_test(runs)
    print(render(summary, found_ratios, runs, args))
    if describe_code(code):
        print(describe_code(code))

    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"overhead-{started.strftime('%Y%m%d-%H%M%S')}.json"
        document = {
            "started": started.isoformat(timespec="seconds"),
            "duration_s": (datetime.datetime.now() - started).total_seconds(),
            "config": {
                "requests": args.requests,
                "rounds": args.rounds,
                "warmup": args.warmup,
                "variants": variants,
                "flush_timeout_s": args.flush_timeout,
                "interval_us": args.interval_us,
            },
            "machine": {
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
            },
            "versions": benchlib.versions(OVERHEAD_PACKAGES, modules=(), with_wrk=False),
            "code_under_test": code,
            "summary": summary,
            "ratios": found_ratios,
            "runs": runs,
            "child_stderr": child_stderr,
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nresults: {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
