"""``make bench``: every benchmark of the bridge in one run, one summary of the targets, one JSON.

Runs, one after the other, each in its own processes (and each alternating its variants in rounds):

1. ``overhead.py`` (its full default; ``--quick`` its smoke run): request-path time, CPU per request
   including background threads, and the delivered share, in-process;
2. ``e2e.py``: requests/s, latency, CPU per request and delivered share under uvicorn with ``wrk`` (or
   the Python load generator when ``wrk`` is missing), the normal path and the error path;
3. ``rss.py``: RSS growth over 200 000 requests under uvicorn, the Sentry endpoint up and down.

Then prints the absolute figures, every target with the measured ratio and pass/MISS, and writes
``benchmarks/results/suite-<timestamp>.json`` (the parts' own JSONs are referenced from it).

    .venv/bin/python benchmarks/suite.py                  # the full run (about 15 minutes on 2 cores)
    .venv/bin/python benchmarks/suite.py --quick          # a smoke run (1 to 2 minutes)
    .venv/bin/python benchmarks/suite.py --compare benchmarks/results/suite-20260101-120000.json
    .venv/bin/python benchmarks/suite.py --parts e2e,rss --rss-requests 50000
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import benchlib

PARTS = ("overhead", "e2e", "rss")
SCRIPTS = {
    "overhead": benchlib.HERE / "overhead.py",
    "e2e": benchlib.HERE / "e2e.py",
    "rss": benchlib.HERE / "rss.py",
}
# generous bounds, so that a hung part cannot hold the suite forever
TIMEOUTS = {"overhead": 1200.0, "e2e": 1800.0, "rss": 2400.0}
RSS_LIMIT_MB = 20.0
RSS_REQUESTS = 200_000
DELIVERING = 0.99


@dataclass
class Target:
    key: str
    label: str
    limit: float
    at_most: bool  # True: measured ≤ limit passes; False: measured ≥ limit passes
    measured: Optional[float] = None
    unit: str = "x"
    detail: str = ""
    condition_met: bool = True

    @property
    def passed(self) -> Optional[bool]:
        if self.measured is None or math.isnan(self.measured):
            return None
        within = self.measured <= self.limit if self.at_most else self.measured >= self.limit
        return within and self.condition_met

    def shown_limit(self) -> str:
        sign = "≤" if self.at_most else "≥"
        return f"{sign} {self.limit:g}{' MB' if self.unit == 'MB' else 'x'}"

    def shown_measured(self) -> str:
        if self.measured is None or math.isnan(self.measured):
            return "n/a"
        return f"{self.measured:+.1f} MB" if self.unit == "MB" else f"{self.measured:.2f}x"

    def verdict(self) -> str:
        passed = self.passed
        return "n/a" if passed is None else ("pass" if passed else "MISS")


# --------------------------------------------------------------------------------------- running parts


def run_part(name: str, arguments: list[str]) -> dict[str, Any]:
    """One part in its own process; its report is echoed as it comes; returns where its JSON went."""
    command = [sys.executable, str(SCRIPTS[name]), *arguments]
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
    path: Optional[str] = None
    for line in lines:
        if line.startswith("results: "):
            path = line[len("results: ") :].strip()
    document: Optional[dict[str, Any]] = None
    if path is not None and process.returncode == 0:
        document = json.loads((benchlib.REPO / path).read_text())
    return {
        "command": command[1:],
        "returncode": process.returncode,
        "duration_s": time.monotonic() - started,
        "json": path,
        "document": document,
    }


# ------------------------------------------------------------------------------------------- figures


def _get(document: Optional[dict[str, Any]], *keys: str) -> Any:
    value: Any = document
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _rss_run(document: Optional[dict[str, Any]], variant: str, state: str) -> Optional[dict[str, Any]]:
    for run in _get(document, "runs") or []:
        if run["variant"] == variant and run["endpoint"] == state:
            found: dict[str, Any] = run
            return found
    return None


def targets(parts: dict[str, dict[str, Any]]) -> list[Target]:
    overhead = _get(parts.get("overhead"), "document", "summary")
    e2e = _get(parts.get("e2e"), "document", "summary")
    rss = _get(parts.get("rss"), "document")
    found: list[Target] = []

    def path(variant: str) -> Optional[float]:
        value: Optional[float] = _get(overhead, variant, "path_median_us")
        return value

    for against in ("otel", "sentry"):
        found.append(
            Target(
                f"path_vs_{against}",
                f"request path (in-process median): bridge ÷ {against}",
                1.3 if against == "otel" else 0.3,
                True,
                _ratio(path("bridge"), path(against)),
                detail=f"{_us(path('bridge'))} vs {_us(path(against))}",
            )
        )

    # CPU at equal delivery: the bridge with its defaults when it delivers ≥ 99 % in the tight loop,
    # otherwise its deliver-all configuration, against sentry-sdk's deliver-all
    bridge_name = "bridge"
    if (_get(overhead, "bridge", "delivered") or 0) < DELIVERING and _get(overhead, "bridge-deliver-all"):
        bridge_name = "bridge-deliver-all"
    bridge_delivered = _get(overhead, bridge_name, "delivered")
    sentry_delivered = _get(overhead, "sentry-deliver-all", "delivered")
    cpu_bridge = _get(overhead, bridge_name, "cpu_per_request_us")
    cpu_sentry = _get(overhead, "sentry-deliver-all", "cpu_per_request_us")
    found.append(
        Target(
            "cpu_vs_sentry_deliver_all",
            f"CPU/request (in-process, ≥99% delivered): {bridge_name} ÷ sentry-deliver-all",
            0.4,
            True,
            _ratio(cpu_bridge, cpu_sentry),
            detail=f"{_us(cpu_bridge)} ({_pct(bridge_delivered)}) vs {_us(cpu_sentry)} "
            f"({_pct(sentry_delivered)})",
            condition_met=(bridge_delivered or 0) >= DELIVERING and (sentry_delivered or 0) >= DELIVERING,
        )
    )
    normal = _get(e2e, "normal") or {}
    error = _get(e2e, "error") or {}
    e2e_cpu_bridge = _get(normal, "bridge", "cpu_per_request_us")
    e2e_cpu_sentry = _get(normal, "sentry-deliver-all", "cpu_per_request_us")
    e2e_bridge_delivered = _get(normal, "bridge", "delivered_transactions")
    e2e_sentry_delivered = _get(normal, "sentry-deliver-all", "delivered_transactions")
    found.append(
        Target(
            "e2e_cpu_vs_sentry_deliver_all",
            "CPU/request (uvicorn, ≥99% delivered): bridge ÷ sentry-deliver-all",
            0.4,
            True,
            _ratio(e2e_cpu_bridge, e2e_cpu_sentry),
            detail=f"{_us(e2e_cpu_bridge)} ({_pct(e2e_bridge_delivered)}) vs {_us(e2e_cpu_sentry)} "
            f"({_pct(e2e_sentry_delivered)})",
            condition_met=(e2e_bridge_delivered or 0) >= DELIVERING
            and (e2e_sentry_delivered or 0) >= DELIVERING,
        )
    )

    def rps(scenario: dict[str, Any], variant: str) -> Optional[float]:
        value: Optional[float] = _get(scenario, variant, "rps")
        return value

    for key, label, limit, scenario, against in (
        ("e2e_rps_vs_otel", "req/s (uvicorn)", 0.85, normal, "otel"),
        ("e2e_rps_vs_sentry", "req/s (uvicorn)", 1.8, normal, "sentry"),
        ("error_rps_vs_sentry", "error path req/s (uvicorn)", 1.5, error, "sentry"),
    ):
        found.append(
            Target(
                key,
                f"{label}: bridge ÷ {against}",
                limit,
                False,
                _ratio(rps(scenario, "bridge"), rps(scenario, against)),
                detail=f"{_rate(rps(scenario, 'bridge'))} vs {_rate(rps(scenario, against))}",
            )
        )
    asked = _get(rss, "config", "requests") or RSS_REQUESTS
    for state in ("up", "down"):
        run = _rss_run(rss, "bridge", state)
        requests = run["requests"] if run else None
        found.append(
            Target(
                f"rss_growth_endpoint_{state}",
                f"RSS growth, bridge, {_thousands(asked)} requests, endpoint {state}"
                + ("" if asked >= RSS_REQUESTS else " (not the target's 200 000)"),
                RSS_LIMIT_MB,
                True,
                run["growth_mb"] if run else None,
                unit="MB",
                detail=(
                    f"{requests} requests, {run['rss_after_warmup_mb']:.1f} -> {run['rss_end_mb']:.1f} MB, "
                    f"peak {run['growth_peak_mb']:+.1f}"
                    if run
                    else ""
                ),
                condition_met=requests is not None and requests >= asked * 0.98,
            )
        )
    return found


def _thousands(value: int) -> str:
    return f"{value:,}".replace(",", " ")


def _us(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1f} µs"


def _pct(value: Optional[float]) -> str:
    return benchlib.share(value)


def _rate(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.0f}/s"


def _cell(value: Optional[float], digits: int = 0, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}{suffix}"


def absolute_rows(parts: dict[str, dict[str, Any]]) -> list[list[str]]:
    overhead = _get(parts.get("overhead"), "document", "summary") or {}
    e2e = _get(parts.get("e2e"), "document", "summary") or {}
    rss = _get(parts.get("rss"), "document")
    normal, error = e2e.get("normal") or {}, e2e.get("error") or {}
    variants = list(dict.fromkeys([*overhead, *normal, *error]))
    rows = [
        [
            "",
            "in-process",
            "",
            "",
            "uvicorn",
            "",
            "",
            "",
            "",
            "error path",
            "",
            "",
            "RSS growth",
            "",
        ],
        [
            "variant",
            "path µs",
            "CPU µs",
            "deliv.",
            "req/s",
            "p50 ms",
            "p99 ms",
            "CPU µs",
            "deliv.",
            "err req/s",
            "err p99",
            "err tx/ev",
            "up MB",
            "down MB",
        ],
    ]
    for variant in variants:
        o, n, e = overhead.get(variant) or {}, normal.get(variant) or {}, error.get(variant) or {}
        up, down = _rss_run(rss, variant, "up"), _rss_run(rss, variant, "down")
        tx_ev = "-"
        if e.get("delivered_transactions") is not None:
            tx_ev = f"{_pct(e.get('delivered_transactions'))}/{_pct(e.get('delivered_events'))}"
        rows.append(
            [
                variant,
                _cell(o.get("path_median_us"), 1),
                _cell(o.get("cpu_per_request_us"), 0),
                _pct(o.get("delivered")) if o else "-",
                _cell(n.get("rps"), 0),
                _cell(n.get("latency_p50_ms"), 1),
                _cell(n.get("latency_p99_ms"), 1),
                _cell(n.get("cpu_per_request_us"), 0),
                _pct(n.get("delivered_transactions")) if n else "-",
                _cell(e.get("rps"), 0),
                _cell(e.get("latency_p99_ms"), 1),
                tx_ev,
                f"{up['growth_mb']:+.1f}" if up else "-",
                f"{down['growth_mb']:+.1f}" if down else "-",
            ]
        )
    return rows


def render(
    parts: dict[str, dict[str, Any]], found: list[Target], args: argparse.Namespace, wall: float
) -> str:
    lines = [
        "=" * 100,
        "otel_bridge benchmark suite"
        + (" (--quick: a smoke run, figures indicative only)" if args.quick else "")
        + f": {wall / 60:.1f} min",
        "",
        "absolute figures (medians over rounds; deliv. = transactions delivered ÷ requests; "
        "err tx/ev = transactions/error events delivered)",
        *benchlib.table(absolute_rows(parts), header_rows=2),
        "",
        "targets (ratios from this run)",
    ]
    rows = [["target", "limit", "measured", "", "figures"]]
    for target in found:
        rows.append(
            [target.label, target.shown_limit(), target.shown_measured(), target.verdict(), target.detail]
        )
    lines += benchlib.table(rows)
    notes = []
    for target in found:
        if not target.condition_met and target.measured is not None:
            if target.unit == "MB":
                notes.append(f"{target.key}: fewer requests than asked were measured, so not a pass")
            else:
                notes.append(f"{target.key}: a variant delivered < {DELIVERING:.0%}, so not a pass")
    for name, part in parts.items():
        if part["returncode"] != 0:
            notes.append(f"{name}: failed (exit {part['returncode']}); its targets are n/a")
    passed = sum(1 for target in found if target.passed)
    lines += ["", f"{passed} of {len(found)} targets met", *notes]
    return "\n".join(lines)


def compare(found: list[Target], previous_path: Path) -> str:
    previous = json.loads(previous_path.read_text())
    before = {entry["key"]: entry for entry in previous.get("targets", [])}
    rows = [["target", "before", "now", "change"]]
    for target in found:
        old = before.get(target.key, {}).get("measured")
        now = target.measured
        change = "-"
        if old is not None and now is not None and old:
            change = f"{(now / old - 1) * 100:+.0f}%"
        rows.append(
            [
                target.key,
                "n/a" if old is None else f"{old:.2f}",
                "n/a" if now is None else f"{now:.2f}",
                change,
            ]
        )
    return "\n".join([f"compared with {previous_path}:", *benchlib.table(rows)])


# --------------------------------------------------------------------------------------------- main


def parse_arguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="every part's smoke run (1 to 2 minutes)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated, of overhead,e2e,rss")
    parser.add_argument(
        "--rss-requests", type=int, help=f"requests of each RSS run ({RSS_REQUESTS}; --quick 20 000)"
    )
    parser.add_argument("--loader", choices=("auto", "wrk", "python"), default="auto", help="e2e and rss")
    parser.add_argument("--compare", type=Path, help="a previous suite-*.json: show the targets' change")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    args.part_list = [name.strip() for name in args.parts.split(",") if name.strip()]
    if not args.part_list or any(name not in PARTS for name in args.part_list):
        parser.error(f"--parts {args.parts!r}: accepted values are {', '.join(PARTS)}")
    if args.compare is not None and not args.compare.is_file():
        parser.error(f"--compare {args.compare}: no such file")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_arguments(argv)
    started = datetime.datetime.now()
    clock = time.monotonic()
    code_at_start = benchlib.git_state()
    loader = benchlib.choose_loader(args.loader) if {"e2e", "rss"} & set(args.part_list) else None
    quick = ["--quick"] if args.quick else []
    arguments = {
        "overhead": quick,
        "e2e": [*quick, "--loader", loader or "auto"],
        "rss": [
            *quick,
            "--loader",
            loader or "auto",
            *(["--requests", str(args.rss_requests)] if args.rss_requests else []),
        ],
    }
    parts: dict[str, dict[str, Any]] = {}
    for name in args.part_list:
        parts[name] = run_part(name, arguments[name])
    wall = time.monotonic() - clock
    found = targets(parts)
    text = render(parts, found, args, wall)
    print("\n" + text)
    if args.compare is not None:
        print("\n" + compare(found, args.compare))

    document = {
        "kind": "suite",
        "started": started.isoformat(timespec="seconds"),
        "duration_s": wall,
        "quick": args.quick,
        "loader": loader,
        "machine": benchlib.machine(),
        "versions": benchlib.versions(),
        "code_under_test": {"at_start": code_at_start, "at_end": benchlib.git_state()},
        "parts": {
            name: {key: value for key, value in part.items() if key != "document"}
            for name, part in parts.items()
        },
        "targets": [{**asdict(target), "passed": target.passed} for target in found],
        "absolute": {
            "overhead": _get(parts.get("overhead"), "document", "summary"),
            "e2e": _get(parts.get("e2e"), "document", "summary"),
            "rss": [
                {key: value for key, value in run.items() if key not in ("samples", "stderr_tail")}
                for run in _get(parts.get("rss"), "document", "runs") or []
            ],
        },
        "report": text,
    }
    path = benchlib.save("suite", started, document)
    print(f"\nresults: {path.relative_to(benchlib.REPO)}")
    failed = any(part["returncode"] != 0 for part in parts.values())
    missed = any(target.passed is False for target in found)
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
