"""`make demo EXAMPLE=NAME` (`otel-bridge demo --example NAME`) works for every example the README lists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from otel_bridge.cli import EXAMPLES
from tests.test_cli import _clean_env


@pytest.mark.parametrize("example", [name for name in EXAMPLES if name != "seed"])
def test_every_example_demo_sees_all_its_requests(tmp_path: Path, example: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "otel_bridge.cli", "demo", "--example", example],
        env=_clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout
    assert "OK: 4 requests became 4 Sentry transactions" in result.stdout
