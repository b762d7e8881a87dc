"""``make bench``: every benchmark in one run, the figures side by side, every target met or missed, one JSON.

Runs, one after the other, each in its own processes (each alternating its variants in rounds):

1. ``overhead.py`` (its full default; ``--quick`` its smoke run): request-path time, CPU per request
   including background threads, and the delivered share, in-process;
2. ``e2e.py``: requests/s, latency, CPU per request and delivered share under uvicorn, normal and error path;
3. ``rss.py``: RSS growth over 200 000 requests under uvicorn, the Sentry endpoint up and down;
4. ``delivery.py`` only when asked (``--parts``): the delivered share under open-loop load, slow ingest.

Then prints the parts' figures side by side and every target of ``report.TARGETS`` with its ratio from
this run and met/missed, and writes ``benchmarks/results/suite-<timestamp>.json`` (the parts' own JSONs
are referenced from it).

    .venv/bin/python benchmarks/suite.py                  # the full run (about 15 minutes on 2 cores)
    .venv/bin/python benchmarks/suite.py --quick          # a smoke run (1 to 2 minutes)
    .venv/bin/python benchmarks/suite.py --compare benchmarks/results/suite-20260101-120000.json
    .venv/bin/python benchmarks/suite.py --parts e2e,rss --rss-requests 50000
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import benchlib
import report
import variants

PARTS = ("overhead", "e2e", "rss", "delivery")
DEFAULT_PARTS = ("overhead", "e2e", "rss")
# generous bounds, so that a hung part cannot hold the suite forever
TIMEOUTS = {"overhead": 1200.0, "e2e": 1800.0, "rss": 2400.0, "delivery": 600.0}
SIDE_BY_SIDE = (
    (report.IN_PROCESS, ("path_median", "cpu_per_request", "delivered")),
    (report.IN_PROCESS_PACED, ("path_median",)),
    (report.IN_PROCESS_ERROR, ("path_median", "cpu_per_request", "delivered_events", "discarded_events")),
    (report.IN_PROCESS_ERROR_PACED, ("path_median",)),
    (report.UVICORN, ("rps", "latency_p50", "latency_p99", "cpu_per_request", "delivered")),
    (report.UVICORN_ERROR, ("rps", "latency_p99", "cpu_per_request", "delivered", "delivered_events")),
    ("rss up", ("growth",)),
    ("rss down", ("growth",)),
)


def run_part(name: str, arguments: list[str]) -> dict[str, Any]:
    """One part in its own process; its report is echoed as it comes; returns where its JSON went."""
    command = [sys.executable, str(benchlib.HERE / f"{name}.py"), *arguments]
    print(f"\n=== {name}: {' '.join(Path(part).name if part.endswith('.py') else part for part in command)}")
    sys.stdout.flush()
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=benchlib.child_environment())
    lines: list[str] = []
    deadline = started + TIMEOUTS[name]
    assert process.stdout is not None
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line.rstrip("\n"))
        if time.monotonic() > deadline:
            break
    try:
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        benchlib.stop(process, 10)
    path = next(
        (line[len("results: ") :].strip() for line in reversed(lines) if line.startswith("results: ")), None
    )
    summary: report.Summary = {}
    if path is not None and process.returncode == 0:
        summary = json.loads((benchlib.REPO / path).read_text())["summary"]
    return {
        "command": command[1:],
        "returncode": process.returncode,
        "duration_s": time.monotonic() - started,
        "json": path,
        "summary": summary,
    }


def compare(verdicts: Sequence[report.Verdict], previous_path: Path) -> list[str]:
    previous = json.loads(previous_path.read_text())
    before = {entry["key"]: entry for entry in previous.get("targets", [])}
    rows = [["target", "before", "now", "change"]]
    for verdict in verdicts:
        old, now = before.get(verdict.key, {}).get("measured"), verdict.measured
        change = f"{(now / old - 1) * 100:+.0f}%" if old and now is not None else "-"
        shown_old = "n/a" if old is None else f"{old:.2f}"
        rows.append([verdict.key, shown_old, "n/a" if now is None else f"{now:.2f}", change])
    return [f"compared with {previous_path}:", *report.table(rows)]


def parse_arguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="every part's smoke run (1 to 2 minutes)")
    parser.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        help=f"comma-separated, of {','.join(PARTS)} (%(default)s)",
    )
    parser.add_argument("--rss-requests", type=int, help="requests of each RSS run (200 000; --quick 20 000)")
    parser.add_argument("--loader", choices=("auto", "wrk", "python"), default="auto", help="e2e and rss")
    parser.add_argument("--compare", type=Path, help="a previous suite-*.json: show the targets' change")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    try:
        args.part_list = variants.pick(args.parts, PARTS)
    except ValueError as error:
        parser.error(f"--parts {error}")
    if args.compare is not None and not args.compare.is_file():
        parser.error(f"--compare {args.compare}: no such file")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_arguments(argv)
    started = datetime.datetime.now()
    clock = time.monotonic()
    code_at_start = report.code_under_test([])
    loader = benchlib.choose_loader(args.loader) if {"e2e", "rss"} & set(args.part_list) else "auto"
    quick = ["--quick"] if args.quick else []
    rss_requests = ["--requests", str(args.rss_requests)] if args.rss_requests else []
    arguments = {
        "overhead": quick,
        "e2e": [*quick, "--loader", loader],
        "rss": [*quick, "--loader", loader, *rss_requests],
        "delivery": quick,
    }
    parts = {name: run_part(name, arguments[name]) for name in args.part_list}
    wall = time.monotonic() - clock

    summary: report.Summary = {}
    for part in parts.values():
        summary.update(part["summary"])
    verdicts = [report.evaluate(target, summary) for target in report.TARGETS]
    failed = [
        f"{name}: failed (exit {part['returncode']})" for name, part in parts.items() if part["returncode"]
    ]
    lines = [
        "=" * 100,
        "otel_bridge benchmark suite"
        + (" (--quick: a smoke run, figures indicative only)" if args.quick else "")
        + f": {wall / 60:.1f} min",
        "",
        "medians over rounds; delivered = transactions delivered ÷ requests; error events likewise",
        *report.side_by_side(summary, SIDE_BY_SIDE),
        "",
        "targets (ratios from this run)",
        *report.targets_table(verdicts),
        *failed,
    ]
    if args.compare is not None:
        lines += ["", *compare(verdicts, args.compare)]
    text = "\n".join(lines)
    print("\n" + text)

    document = {
        "quick": args.quick,
        "loader": loader,
        "code_under_test": {"at_start": code_at_start, "at_end": report.code_under_test([])},
        "parts": {
            name: {key: value for key, value in part.items() if key != "summary"}
            for name, part in parts.items()
        },
        "targets": [asdict(verdict) for verdict in verdicts],
        "declared_targets": [{**asdict(target), "key": target.key} for target in report.TARGETS],
        "summary": summary,
        "report": text,
    }
    report.save("suite", started, document)
    missed = any(verdict.status == "missed" for verdict in verdicts)
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
