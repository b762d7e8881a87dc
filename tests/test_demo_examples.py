"""`make demo EXAMPLE=NAME` (`otel-bridge demo --example NAME`) works for every example the README lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_bridge._dev.cli import EXAMPLES
from tests.test_cli import run_demo


@pytest.mark.parametrize("example", [name for name in EXAMPLES if name != "seed"])
def test_every_example_demo_sees_all_its_requests(tmp_path: Path, example: str) -> None:
    printed = run_demo(tmp_path, "--example", example)
    assert "failed" not in printed
    assert "OK: 4 requests became 4 Sentry transactions" in printed
