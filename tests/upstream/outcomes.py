"""pytest plugin of the upstream suites' conftests: each test's outcome, written as JSON at the end.

``tests/test_upstream_suites.py`` reads the file (``OTEL_BRIDGE_UPSTREAM_SUMMARY``) to name the upstream
tests that failed, with the first line of each failure.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import pytest

outcomes: Counter[str] = Counter()
failed: list[dict[str, str]] = []
extra: dict[str, Any] = {}
"""Whatever else a conftest reports (items the receiver got, Relay's verdicts)."""


def _first_line(report: pytest.TestReport) -> str:
    text = report.longreprtext.strip()
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")] or text.splitlines()
    return lines[0][:300] if lines else ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        when = "" if report.when == "call" else f" (in {report.when})"
        failed.append({"id": report.nodeid + when, "why": _first_line(report)})
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            outcomes["xfailed" if report.skipped else "xpassed"] += 1
        else:
            outcomes[report.outcome] += 1


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("OTEL_BRIDGE_UPSTREAM_SUMMARY")
    if path:
        summary = {"outcomes": dict(outcomes), "failed": failed, **extra}
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=1)
