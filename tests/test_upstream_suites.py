"""sentry-python's and OpenTelemetry contrib's own ASGI middleware tests, run against our middleware.

Each upstream file (from the sdist of the installed version, see ``tests/upstream/fetch.py``) runs unchanged
but for its one import of the middleware, in a pytest subprocess with a conftest of ours
(``tests/upstream/*_conftest.py``). A failing upstream test fails this one, named with the first line of
its failure; the few that cannot pass by design are marked in those conftests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.upstream.fetch import OTEL, REPO, SENTRY, NotShipped, Unavailable, UpstreamFile, extract

HERE = Path(__file__).resolve().parent / "upstream"
RUN_TIMEOUT_SECONDS = 150
PYTEST_INI = """\
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
timeout = 60
"""


@dataclass(frozen=True)
class Suite:
    upstream: UpstreamFile
    conftest: str
    needs: tuple[str, ...]
    """Modules the upstream file imports beyond ours (from the ``test`` extra)."""


SUITES = {
    "sentry-sdk": Suite(
        SENTRY, "sentry_conftest.py", ("pytest_asyncio", "async_asgi_testclient", "opentelemetry.test")
    ),
    "opentelemetry-instrumentation-asgi": Suite(OTEL, "otel_conftest.py", ("opentelemetry.test",)),
}


def _build(suite: Suite, build: Path) -> Path:
    for module in suite.needs:
        pytest.importorskip(module, reason=f"{module} (from the test extra) is needed to run the suite")
    try:
        test_file = extract(suite.upstream, build)
    except Unavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"cannot run the upstream suite: {exc}")
        pytest.skip(f"needs {exc}")
    except NotShipped as exc:
        pytest.skip(f"nothing to run: {exc}")
    shutil.copyfile(HERE / suite.conftest, build / "conftest.py")
    (build / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
    return test_file


def _describe(summary: dict[str, Any]) -> str:
    failed = summary.get("failed") or []
    lines = [f"outcomes: {summary.get('outcomes')}", f"{len(failed)} upstream test(s) failed:"]
    lines.extend(f"  {entry['id']}: {entry['why']}" for entry in failed)
    return "\n".join(lines)


@pytest.mark.parametrize("name", list(SUITES))
def test_upstream_asgi_suite_passes_against_our_middleware(name: str, tmp_path: Path) -> None:
    suite = SUITES[name]
    build = tmp_path / "build"
    test_file = _build(suite, build)
    summary_path = tmp_path / "summary.json"
    env = {
        **os.environ,
        "OTEL_BRIDGE_REPO": str(REPO),
        "OTEL_BRIDGE_UPSTREAM_SUMMARY": str(summary_path),
    }
    for variable in ("SENTRY_DSN", "OTEL_TRACES_EXPORTER", "OTEL_PROPAGATORS", "OTEL_SDK_DISABLED"):
        env.pop(variable, None)
    # sentry-python runs its tests in its git checkout, where sentry-sdk takes the commit for the release
    # (sessions are only sent with one); the build directory is no checkout
    env["SENTRY_RELEASE"] = "upstream-suite"
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
        "-c", str(build / "pytest.ini"), "--rootdir", str(build), str(test_file.relative_to(build)),
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=build, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
    )
    output = (result.stdout + result.stderr)[-6000:]
    assert summary_path.exists(), (
        f"the upstream run ended without a summary (exit {result.returncode}):\n{output}"
    )
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    assert not summary["failed"] and result.returncode == 0, _describe(summary)
    assert summary["outcomes"].get("passed", 0) > 0, output
    assert summary.get("relay_rejections") == [], summary.get("relay_rejections")
    assert summary.get("receiver_errors") == [], summary.get("receiver_errors")
    assert summary["items"].get("transaction", 0) > 0, f"the bridge sent no transaction: {summary['items']}"
