"""The versions a run tests against, beside the newest the package registry has (after the summary)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version

TRACKED = (
    "sentry-sdk",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-asgi",
    "fastapi",
    "starlette",
    "uvicorn",
)


def newest_on_registry(package: str, pre: bool = False) -> str | None:
    """The newest release pip can install (pre-releases too with ``pre``), or ``None`` when the registry
    cannot be asked."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "index",
        "versions",
        package,
        "--json",
        "--disable-pip-version-check",
    ]
    try:
        found = subprocess.run(
            [*command, *(["--pre"] if pre else [])],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return str(json.loads(found.stdout)["latest"]) if found.returncode == 0 else None
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
        return None


def header_lines() -> list[str]:
    """One line of ``package installed`` pairs, each saying whether it is the newest on the registry
    (``make test`` installs the newest releases the bounds admit, so a breaking minor shows up here)."""
    installed = {}
    for package in TRACKED:
        try:
            installed[package] = version(package)
        except PackageNotFoundError:
            continue
    with ThreadPoolExecutor(len(installed) or 1) as pool:
        newest = dict(
            zip(
                installed,
                pool.map(lambda p: newest_on_registry(p, pre="b" in installed[p]), installed),
                strict=False,
            )
        )
    pairs = []
    for package, current in installed.items():
        if newest[package] is None:
            pairs.append(f"{package} {current}")
        elif newest[package] == current:
            pairs.append(f"{package} {current} (the newest)")
        else:
            pairs.append(f"{package} {current} (NOT the newest: {newest[package]})")
    return ["tested against: " + ", ".join(pairs)]
