"""The one report of every benchmark: rounds, medians and spread, ratios against the peers measured in the
same run, the targets with met/missed, tables, and the JSON in ``benchmarks/results/``.

A *run* is one measurement of one variant in one round, a dict::

    {"where": "in-process", "variant": "bridge", "round": 1, "figures": {"cpu_per_request": 616.0, ...}, ...}

``where`` names the measurement (``in-process``, ``uvicorn``, ``uvicorn error``, ``rss up``…) so that the
figures of every part can be put side by side and a target can say which one it is about. Anything else
in a run (per-thread CPU, client reports…) goes to the JSON as it is.

Rounds alternate the variants (``alternate``), each round in a rotated order, so that a drift of the
machine spreads over every variant; the summary is the median over rounds of each figure and its spread
(max ÷ min - 1). pyperf was considered for this: its runner owns the worker processes and calibrates
loops of one timed function, while a round here is a fresh process per variant measuring CPU of every
thread, a flush and a delivered share; and ``make bench`` would need it installed.
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import benchlib
import variants

RESULTS = benchlib.HERE / "results"

# ------------------------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Figure:
    label: str
    unit: str = ""  # µs, ms, s, MB, MiB, /s, % (a share: 0.5 is shown 50.0%), or "" (a count)
    digits: int = 1
    spread: bool = False  # shown with its spread over rounds
    signed: bool = False  # a change: shown with its sign

    def header(self) -> str:
        return f"{self.label} {self.unit}" if self.unit in ("µs", "ms", "s", "MB", "MiB") else self.label

    def cell(self, value: Optional[float]) -> str:
        if value is None or math.isnan(value):
            return "-" if self.unit != "%" else "n/a"
        if self.unit == "%":
            return f"{value * 100:.1f}%"
        return f"{value:{'+' if self.signed else ''}.{self.digits}f}"

    def with_unit(self, value: Optional[float]) -> str:
        shown = self.cell(value)
        if self.unit in ("%", "") or shown in ("-", "n/a"):
            return shown
        return f"{shown}{self.unit}" if self.unit.startswith("/") else f"{shown} {self.unit}"


FIGURES: dict[str, Figure] = {
    # in-process (overhead.py)
    "path_median": Figure("path median", "µs", spread=True),
    "path_mean": Figure("path mean", "µs"),
    "path_p99": Figure("path p99", "µs"),
    "cpu_per_request": Figure("CPU/req", "µs", spread=True),
    "delivered": Figure("delivered", "%"),
    "flush": Figure("flush", "s", 2),
    # under uvicorn (e2e.py)
    "rps": Figure("req/s", "/s", 0, spread=True),
    "latency_p50": Figure("p50", "ms", 2),
    "latency_p99": Figure("p99", "ms", 2),
    "cpu_per_request_load_only": Figure("(load only)", "µs"),
    "delivered_events": Figure("error events", "%"),
    "discarded_events": Figure("events discarded", "%"),
    "log_events_built": Figure("log events built", "%"),  # the logging integration's, per failing request
    # memory (rss.py)
    "requests": Figure("requests", "", 0),
    "requests_share": Figure("of asked", "%"),
    "rss_after_warmup": Figure("RSS warm", "MB"),
    "growth": Figure("growth", "MB", signed=True),
    "growth_peak": Figure("peak growth", "MB", signed=True),
    "growth_settled": Figure("settled growth", "MB", signed=True),
    # open-loop delivery (delivery.py)
    "offered_rate": Figure("offered", "/s", 0),
    "achieved_rate": Figure("achieved", "/s", 0),
    "answered": Figure("answered", "", 0),
    "transactions": Figure("transactions", "", 0),
    "peak_rss": Figure("peak RSS", "MiB", 0),
}
MICRO = ("µs", "ms")

# --------------------------------------------------------------------------------- rounds and summary


def rotation(variants: Sequence[str], round_number: int) -> list[str]:
    """The order of round ``round_number`` (from 1): rotated by one each round, so that a drift of the
    machine, or the first process of a round being slower, does not always hit the same variant."""
    shift = (round_number - 1) % len(variants)
    return [*variants[shift:], *variants[:shift]]


def alternate(variants: Sequence[str], rounds: int) -> Iterator[tuple[int, str]]:
    """``(round, variant)``, round from 1: every variant once per round, in that round's rotation."""
    for round_number, _, variant in schedule(rounds, {"": variants}):
        yield round_number, variant


def schedule(
    rounds: int, variants_by_scenario: Mapping[str, Sequence[str]]
) -> Iterator[tuple[int, str, str]]:
    """``(round, scenario, variant)``, round from 1: per round, each scenario's variants once (scenarios in
    the mapping's order), in that round's rotation."""
    for round_number in range(1, rounds + 1):
        for scenario, chosen in variants_by_scenario.items():
            for variant in rotation(chosen, round_number):
                yield round_number, scenario, variant


def median(values: Iterable[Optional[float]]) -> Optional[float]:
    finite = [value for value in values if value is not None and not math.isnan(value)]
    return statistics.median(finite) if finite else None


def spread(values: Iterable[Optional[float]]) -> Optional[float]:
    """max ÷ min - 1 of the per-round figures (0 with one round; None without a positive figure)."""
    finite = [value for value in values if value is not None and not math.isnan(value) and value > 0]
    return max(finite) / min(finite) - 1 if finite else None


Summary = dict[str, dict[str, dict[str, Any]]]  # where -> variant -> {"rounds", "figures", "spread"...}


def summarise(runs: Sequence[dict[str, Any]]) -> Summary:
    """Per ``where`` and variant, in the order first run: the median over rounds of every figure, the
    spread of those marked so, and the per-round values."""
    summary: Summary = {}
    for run in runs:
        summary.setdefault(run["where"], {}).setdefault(run["variant"], {})
    for where, by_variant in summary.items():
        for variant in by_variant:
            mine = [run for run in runs if run["where"] == where and run["variant"] == variant]
            names = list(dict.fromkeys(name for run in mine for name in run["figures"]))
            per_round = {name: [run["figures"].get(name) for run in mine] for name in names}
            by_variant[variant] = {
                "rounds": len(mine),
                "figures": {name: median(values) for name, values in per_round.items()},
                "spread": {
                    name: spread(values)
                    for name, values in per_round.items()
                    if name in FIGURES and FIGURES[name].spread
                },
                "per_round": per_round,
            }
    return summary


def figure(summary: Summary, where: str, variant: str, name: str) -> Optional[float]:
    value: Optional[float] = summary.get(where, {}).get(variant, {}).get("figures", {}).get(name)
    return value


# -------------------------------------------------------------------------------------------- ratios

# our variants (the middleware path and the zero-code exporter path), compared with every peer measured
# beside them; OTel's and the bridge's own cost over the bare app too
SUBJECTS = ("bridge", "bridge-deliver-all", "bridge-sdk-transport", "zero-code")
OVER_BARE = ("otel", "bridge")


def pairs(present: Sequence[str]) -> list[tuple[str, str]]:
    peers = [name for name in present if name not in SUBJECTS and name != "bare"]
    found = [(mine, peer) for mine in present if mine in SUBJECTS for peer in peers]
    if "bare" in present:
        found += [(name, "bare") for name in OVER_BARE if name in present]
    return found


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def ratios(summary: Summary, names: Sequence[str]) -> dict[str, dict[str, dict[str, Optional[float]]]]:
    """Per ``where``: ``"mine / peer"`` → figure → ratio."""
    found: dict[str, dict[str, dict[str, Optional[float]]]] = {}
    for where, by_variant in summary.items():
        for mine, peer in pairs(list(by_variant)):
            found.setdefault(where, {})[f"{mine} / {peer}"] = {
                name: ratio(figure(summary, where, mine, name), figure(summary, where, peer, name))
                for name in names
            }
    return found


def _ratio_cell(summary: Summary, where: str, mine: str, peer: str, name: str) -> str:
    a, b = figure(summary, where, mine, name), figure(summary, where, peer, name)
    found = ratio(a, b)
    if found is None:
        return "-"
    unit = FIGURES[name].unit
    if unit in MICRO and a is not None and b is not None:
        return f"{found:.2f}x ({a - b:+.1f} {unit})"
    return f"{found:.2f}x"


# -------------------------------------------------------------------------------------------- tables


def table(rows: list[list[str]], underline: bool = True, header_rows: int = 1) -> list[str]:
    """Rows as aligned text: the first column left-aligned, the others right-aligned; a line of dashes
    under the ``header_rows`` first rows."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=False)
        ]
        lines.append("  ".join(cells).rstrip())
        if underline and index == header_rows - 1:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def figures_table(summary: Summary, where: str, columns: Sequence[str]) -> list[str]:
    """One row per variant, one column per figure, and the spread over rounds of the marked ones."""
    by_variant = summary.get(where, {})
    columns = [
        name for name in columns if any(figure(summary, where, v, name) is not None for v in by_variant)
    ]
    spread_of = [name for name in columns if FIGURES[name].spread]
    rounds = max((entry["rounds"] for entry in by_variant.values()), default=1)
    shown_spread = bool(spread_of) and rounds > 1
    header = [where, *(FIGURES[name].header() for name in columns)]
    if shown_spread:
        header.append("spread: " + ", ".join(FIGURES[name].label for name in spread_of))
    rows = [header]
    for variant, entry in by_variant.items():
        row = [variant, *(FIGURES[name].cell(entry["figures"].get(name)) for name in columns)]
        if shown_spread:
            spreads = [entry["spread"].get(name) for name in spread_of]
            row.append(", ".join("-" if value is None else f"{value * 100:.0f}%" for value in spreads))
        rows.append(row)
    return table(rows)


def ratios_table(summary: Summary, where: str, names: Sequence[str]) -> list[str]:
    found = pairs(list(summary.get(where, {})))
    if not found or not names:
        return []
    rows = [[f"ratios, {where}", *(FIGURES[name].label for name in names)]]
    for mine, peer in found:
        rows.append([f"{mine} / {peer}", *(_ratio_cell(summary, where, mine, peer, n) for n in names)])
    return table(rows)


def render(summary: Summary, columns: Sequence[str], ratio_figures: Sequence[str]) -> list[str]:
    """Every ``where`` of the summary: its figures, then its ratios against the peers."""
    lines: list[str] = []
    for where in summary:
        lines += ["", *figures_table(summary, where, columns)]
        shown = ratios_table(summary, where, ratio_figures)
        if shown:
            lines += ["", *shown]
    return lines


def side_by_side(summary: Summary, groups: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """One row per variant across several ``where`` (each a group of columns under its name)."""
    present = [(where, names) for where, names in groups if where in summary]
    variants = list(dict.fromkeys(variant for where, _ in present for variant in summary[where]))
    top, header = [""], ["variant"]
    for where, names in present:
        top += [where, *[""] * (len(names) - 1)]
        header += [FIGURES[name].header() for name in names]
    rows = [top, header]
    for variant in variants:
        row = [variant]
        for where, names in present:
            if variant not in summary[where]:
                row += ["-"] * len(names)
                continue
            row += [FIGURES[name].cell(figure(summary, where, variant, name)) for name in names]
        rows.append(row)
    return table(rows, header_rows=2)


def drop_notes(runs: Sequence[dict[str, Any]]) -> list[str]:
    """What was dropped, over all rounds: the runs' ``client_reported_discards`` and ``bridge_drops``."""
    totals: dict[str, dict[str, int]] = {}
    for run in runs:
        key = f"{run['where']}/{run['variant']}"
        for reason, count in (run.get("client_reported_discards") or {}).items():
            totals.setdefault(key, {}).setdefault(reason, 0)
            totals[key][reason] += count
        for reason, count in (run.get("bridge_drops") or {}).items():
            totals.setdefault(key, {}).setdefault(f"bridge {reason}", 0)
            totals[key][f"bridge {reason}"] += count
    return [
        f"{key}: dropped over all rounds (client reports / bridge counters): "
        + ", ".join(f"{reason} {count}" for reason, count in sorted(found.items()))
        for key, found in totals.items()
    ]


# ------------------------------------------------------------------------------------------- targets

IN_PROCESS, UVICORN, UVICORN_ERROR = "in-process", "uvicorn", "uvicorn error"
# overhead.py's others: requests started on a schedule (a moderate load), and every request failing, back to
# back and on a schedule
IN_PROCESS_PACED, IN_PROCESS_ERROR = "in-process paced", "in-process error"
IN_PROCESS_ERROR_PACED = "in-process error paced"
OPS = {"<=": "≤", ">=": "≥"}


@dataclass(frozen=True)
class Target:
    """``variant``'s ``figure`` ÷ ``peer``'s, measured in the same run (``peer`` None: the figure itself),
    ``op`` ``limit``. ``variant`` may list candidates: the first that meets ``require`` is taken (e.g. the
    bridge with its defaults, else its deliver-all configuration). ``require``: ``(figure, minimum)`` each
    side must show where it has that figure (a delivered share: CPU compared at equal delivery)."""

    variant: Union[str, tuple[str, ...]]
    peer: Optional[str]
    figure: str
    op: str
    limit: float
    where: str = IN_PROCESS
    require: tuple[tuple[str, float], ...] = ()
    issue: Optional[int] = None

    def __post_init__(self) -> None:
        names = [self.figure, *(name for name, _ in self.require)]
        if self.op not in OPS or any(name not in FIGURES for name in names):
            raise ValueError(f"target {self}: op is one of {', '.join(OPS)}, figures are of FIGURES")

    @property
    def candidates(self) -> tuple[str, ...]:
        return (self.variant,) if isinstance(self.variant, str) else self.variant

    @property
    def key(self) -> str:
        return f"{self.where}:{self.figure}:{self.candidates[0]}/{self.peer or '-'}"

    def label(self, variant: Optional[str] = None) -> str:
        name = variant or self.candidates[0]
        compared = f"{name} ÷ {self.peer}" if self.peer else name
        required = "".join(
            f", {FIGURES[figure].label} ≥ {FIGURES[figure].cell(minimum)}" for figure, minimum in self.require
        )
        return f"{FIGURES[self.figure].label} ({self.where}{required}): {compared}"

    def shown_limit(self) -> str:
        unit = FIGURES[self.figure].unit if self.peer is None else "x"
        return f"{OPS[self.op]} {self.limit:g}{'' if unit in ('x', '%', '') else ' '}{unit}"


DELIVERING = (("delivered", 0.99),)
ALL_ERRORS = (("delivered", 0.99), ("delivered_events", 0.99))
COMPLETE = (("requests_share", 0.98),)
BRIDGE = ("bridge", "bridge-deliver-all")

TARGETS: tuple[Target, ...] = (
    # issue 15, the normal path: CPU per delivered transaction against the peers OTel users choose between
    # (sentry-deliver-all: sentry-sdk's middleware at its best), each measured in the same run
    Target(BRIDGE, "otel+otlp", "cpu_per_request", "<=", 1.5, require=DELIVERING, issue=15),
    Target(BRIDGE, "sentry-deliver-all", "cpu_per_request", "<=", 0.4, require=DELIVERING, issue=15),
    Target("zero-code", "otel+otlp", "cpu_per_request", "<=", 1.5, require=DELIVERING, issue=15),
    # issue 15, the request path: at a moderate load (paced) and saturated (back to back)
    Target("bridge", "otel", "path_median", "<=", 1.3, IN_PROCESS_PACED, issue=15),
    Target("bridge", "otel", "path_median", "<=", 1.3, issue=15),
    # issue 15, the error path (the server's log line included): CPU per failing request, its latency on
    # the request path, and no event built only to be dropped as a duplicate
    Target(BRIDGE, "sentry-deliver-all", "cpu_per_request", "<=", 0.66, IN_PROCESS_ERROR, ALL_ERRORS, 15),
    Target("bridge", "otel", "path_median", "<=", 1.3, IN_PROCESS_ERROR_PACED, issue=15),
    Target("bridge", "otel", "path_median", "<=", 1.3, IN_PROCESS_ERROR, issue=15),
    Target("bridge", None, "discarded_events", "<=", 0.0, IN_PROCESS_ERROR, issue=15),
    Target(BRIDGE, "sentry-deliver-all", "cpu_per_request", "<=", 0.66, UVICORN_ERROR, ALL_ERRORS, 15),
    Target("bridge", "sentry", "rps", ">=", 1.5, UVICORN_ERROR, issue=15),
    Target("bridge", None, "discarded_events", "<=", 0.0, UVICORN_ERROR, issue=15),
    # issue 15: memory stays bounded, Sentry up or down
    Target("bridge", None, "growth", "<=", 20.0, "rss up", COMPLETE, issue=15),
    Target("bridge", None, "growth", "<=", 20.0, "rss down", COMPLETE, issue=15),
    # earlier ones
    Target("bridge", "sentry", "path_median", "<=", 0.3),
    Target("bridge", "sentry-deliver-all", "cpu_per_request", "<=", 0.4, UVICORN, DELIVERING),
    Target("bridge", "otel", "rps", ">=", 0.85, UVICORN),
    Target("bridge", "sentry", "rps", ">=", 1.8, UVICORN),
)

assert len({target.key for target in TARGETS}) == len(TARGETS), "two targets share a key"


@dataclass
class Verdict:
    key: str
    label: str
    limit: str
    status: str = "n/a"  # met, missed or n/a
    measured: Optional[float] = None
    shown: str = "n/a"
    detail: str = ""
    reason: str = ""
    issue: Optional[int] = None


def _requirement_missed(target: Target, summary: Summary, variant: str) -> list[str]:
    missed = []
    for side in [variant, *([target.peer] if target.peer else [])]:
        for name, minimum in target.require:
            value = figure(summary, target.where, side, name)
            if value is not None and value < minimum:
                missed.append(f"{side} {FIGURES[name].label} {FIGURES[name].cell(value)}")
    return missed


def _with_requirements(target: Target, summary: Summary, variant: str) -> str:
    shown = FIGURES[target.figure].with_unit(figure(summary, target.where, variant, target.figure))
    extra = [FIGURES[name].cell(figure(summary, target.where, variant, name)) for name, _ in target.require]
    return shown + (f" ({', '.join(extra)})" if extra else "")


def evaluate(target: Target, summary: Summary) -> Verdict:
    verdict = Verdict(target.key, target.label(), target.shown_limit(), issue=target.issue)
    measured_here = summary.get(target.where)
    if measured_here is None:
        verdict.reason = f"{target.where} not measured in this run"
        return verdict
    present = [name for name in target.candidates if name in measured_here]
    missing = [] if present else ["/".join(target.candidates)]
    missing += [target.peer] if target.peer and target.peer not in measured_here else []
    if missing:
        verdict.reason = f"{', '.join(missing)} not measured ({target.where})"
        return verdict
    variant = next((name for name in present if not _requirement_missed(target, summary, name)), present[0])
    verdict.label = target.label(variant)
    mine = figure(summary, target.where, variant, target.figure)
    verdict.detail = _with_requirements(target, summary, variant)
    measured = mine
    if target.peer:
        measured = ratio(mine, figure(summary, target.where, target.peer, target.figure))
        verdict.detail += " vs " + _with_requirements(target, summary, target.peer)
    if measured is None or math.isnan(measured):
        verdict.reason = "no figure"
        return verdict
    verdict.measured = measured
    verdict.shown = FIGURES[target.figure].with_unit(measured) if target.peer is None else f"{measured:.2f}x"
    within = measured <= target.limit if target.op == "<=" else measured >= target.limit
    missed = _requirement_missed(target, summary, variant)
    verdict.status = "met" if within and not missed else "missed"
    if missed:
        verdict.reason = "not compared at equal footing: " + ", ".join(missed)
    return verdict


def targets_table(verdicts: Sequence[Verdict]) -> list[str]:
    rows = [["target", "limit", "measured", "", "figures", "issue"]]
    for verdict in verdicts:
        shown = verdict.detail if verdict.status != "n/a" else verdict.reason
        rows.append(
            [verdict.label, verdict.limit, verdict.shown, verdict.status, shown, str(verdict.issue or "")]
        )
    met = sum(1 for verdict in verdicts if verdict.status == "met")
    missed = sum(1 for verdict in verdicts if verdict.status == "missed")
    return [
        *table(rows),
        "",
        f"{met} met, {missed} missed, {len(verdicts) - met - missed} not measured in this run",
        *(
            f"{verdict.key}: {verdict.reason}"
            for verdict in verdicts
            if verdict.status == "missed" and verdict.reason
        ),
    ]


# ---------------------------------------------------------------------------------------------- JSON


def code_under_test(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Which ``otel_bridge`` the variants imported, and the git state of its checkout."""
    files = sorted({run["otel_bridge_file"] for run in runs if run.get("otel_bridge_file")})
    checkout = Path(files[0]).resolve().parent.parent if files else benchlib.REPO
    found: dict[str, Any] = {"otel_bridge_files": files}
    state = benchlib.git_commit_and_changes(checkout)
    if state is not None:
        found["git_commit"], found["uncommitted_changes_in_otel_bridge"] = state
    return found


def describe_code(code: dict[str, Any]) -> str:
    files = code.get("otel_bridge_files") or []
    where = str(Path(files[0]).resolve().parent) if files else str(benchlib.REPO / "otel_bridge")
    if "git_commit" not in code:
        return f"otel_bridge from {where}"
    dirty = " + uncommitted changes" if code.get("uncommitted_changes_in_otel_bridge") else ""
    return f"otel_bridge from {where} (git {code['git_commit']}{dirty})"


def save(kind: str, started: datetime.datetime, document: dict[str, Any]) -> Path:
    """``benchmarks/results/<kind>-<timestamp>.json``: ``document`` with the run's context; says where."""
    full = {
        "kind": kind,
        "started": started.isoformat(timespec="seconds"),
        "duration_s": (datetime.datetime.now() - started).total_seconds(),
        "machine": benchlib.machine(),
        "versions": benchlib.versions(),
        **document,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{kind}-{started:%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(full, indent=2, default=_plain) + "\n")
    print(f"\nresults: {path.relative_to(benchlib.REPO)}", flush=True)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, (Target, Verdict)):
        return asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def finish(
    kind: str,
    started: datetime.datetime,
    config: dict[str, Any],
    runs: list[dict[str, Any]],
    heading: str,
    columns: Sequence[str],
    ratio_figures: Sequence[str],
    notes: Sequence[str] = (),
    save_json: bool = True,
) -> Summary:
    """A part's end: summarise its runs, print its tables, ratios and notes, save its JSON."""
    summary = summarise(runs)
    code = code_under_test(runs)
    lines = [heading, *render(summary, columns, ratio_figures)]
    notes = [*notes, *drop_notes(runs)]
    if notes:
        lines += ["", *notes]
    lines.append(describe_code(code))
    text = "\n".join(lines)
    print(text, flush=True)
    if save_json:
        document = {
            "config": config,
            "variants": {
                name: variants.SPECS[name].description
                for name in dict.fromkeys(run["variant"] for run in runs)
            },
            "code_under_test": code,
            "summary": summary,
            "ratios": ratios(summary, ratio_figures),
            "runs": runs,
            "report": text,
        }
        save(kind, started, document)
    return summary
