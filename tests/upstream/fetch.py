"""Upstream test files taken from the sdist of the installed distribution, at test time.

``pip download --no-binary :all: --no-deps <distribution>==<installed version>`` fetches the sdist once into
``.cache/upstream/`` (gitignored); each run extracts the one test file into a build directory and points its
import of the middleware at ``otel_bridge``.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "upstream"
DOWNLOAD_TIMEOUT_SECONDS = 120


class Unavailable(Exception):
    """The sdist could not be had (no network, no such release): the caller skips, naming what is missing."""


class NotShipped(Exception):
    """That release's sdist has no such test file (sentry-sdk 2.57's ships no ``tests/integrations``)."""


@dataclass(frozen=True)
class UpstreamFile:
    distribution: str
    member: str
    """The file's path inside the sdist, below its top directory."""
    target: str
    """Where it goes in the build directory: a layout that keeps its module name where the tests need it."""
    rewrite: Callable[[str], str]


def _one_line(text: str, pattern: str, replace: Callable[[re.Match[str]], str], what: str) -> str:
    found = list(re.finditer(pattern, text, flags=re.MULTILINE))
    if len(found) != 1:
        raise RuntimeError(
            f"the upstream file has {len(found)} lines matching {pattern!r} ({what}), expected exactly one: "
            "its imports changed, update tests/upstream/fetch.py"
        )
    match = found[0]
    return text[: match.start()] + replace(match) + text[match.end() :]


def _sentry_imports_ours(text: str) -> str:
    """``from sentry_sdk.integrations.asgi import SentryAsgiMiddleware, ...``: the middleware comes from
    ``otel_bridge.asgi``, the other names (sentry-sdk's own helpers) still from sentry-sdk."""

    def replace(match: re.Match[str]) -> str:
        names = [name.strip() for name in match.group(1).split(",") if name.strip()]
        if "SentryAsgiMiddleware" not in names:
            raise RuntimeError(f"no SentryAsgiMiddleware in {match.group(0)!r}")
        others = [name for name in names if name != "SentryAsgiMiddleware"]
        lines = [f"from sentry_sdk.integrations.asgi import {', '.join(others)}"] if others else []
        lines.append("from otel_bridge.asgi import SentryAsgiMiddleware  # otel_bridge: was sentry-sdk's")
        return "\n".join(lines)

    return _one_line(
        text,
        r"^from sentry_sdk\.integrations\.asgi import ([\w, ]+)$",
        replace,
        "the import of sentry-sdk's middleware",
    )


def _otel_imports_ours(text: str) -> str:
    """``opentelemetry.instrumentation.asgi`` as ``otel_asgi`` becomes our shim of that module, whose
    ``OpenTelemetryMiddleware`` is ``SentryAsgiMiddleware`` and whose other names are OTel's own."""
    return _one_line(
        text,
        r"^import opentelemetry\.instrumentation\.asgi as otel_asgi$",
        lambda _match: "import tests.upstream.ours_as_otel_asgi as otel_asgi  # otel_bridge: was OTel's",
        "the import of OpenTelemetry's ASGI instrumentation",
    )


SENTRY = UpstreamFile(
    distribution="sentry-sdk",
    member="tests/integrations/asgi/test_asgi.py",
    # test_transaction_style expects the endpoint "tests.integrations.asgi.test_asgi.asgi3_app.<locals>.app"
    target="tests/integrations/asgi/test_asgi.py",
    rewrite=_sentry_imports_ours,
)
OTEL = UpstreamFile(
    distribution="opentelemetry-instrumentation-asgi",
    member="tests/test_asgi_middleware.py",
    target="test_asgi_middleware.py",
    rewrite=_otel_imports_ours,
)


def installed_version(distribution: str) -> str:
    return importlib.metadata.version(distribution)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _cached_sdist(distribution: str, version: str) -> Path | None:
    wanted = f"{_normalized(distribution)}-{version}".lower()
    for path in sorted(CACHE.glob("*.tar.gz")):
        name, _, found_version = path.name[: -len(".tar.gz")].rpartition("-")
        if f"{_normalized(name)}-{found_version}".lower() == wanted:
            return path
    return None


def sdist(distribution: str, version: str) -> Path:
    """The sdist of ``distribution==version``, downloaded into ``.cache/upstream/`` on first use."""
    cached = _cached_sdist(distribution, version)
    if cached is not None:
        return cached
    return _download(f"{distribution}=={version}", "sdist", CACHE)


def _download(requirement: str, kind: str, into: Path) -> Path:
    """One ``kind`` ("sdist" or "wheel") of ``requirement``, without its dependencies, moved into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    only = ["--no-binary", ":all:"] if kind == "sdist" else ["--only-binary", ":all:", "--pre"]
    with tempfile.TemporaryDirectory(dir=into, prefix=".download-") as scratch:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            *only, "--no-deps", "--dest", scratch, requirement,
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            raise Unavailable(
                f"the {kind} of {requirement}: pip download took over {DOWNLOAD_TIMEOUT_SECONDS} s"
            ) from None
        downloaded = sorted(Path(scratch).glob("*.tar.gz" if kind == "sdist" else "*.whl"))
        if result.returncode != 0 or len(downloaded) != 1:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise Unavailable(f"the {kind} of {requirement} (pip download failed: {' | '.join(tail)})")
        return Path(shutil.move(str(downloaded[0]), into / downloaded[0].name))


def extract(upstream: UpstreamFile, build: Path) -> Path:
    """``upstream``'s test file of the installed version, rewritten to import our middleware, in ``build``."""
    version = installed_version(upstream.distribution)
    archive = sdist(upstream.distribution, version)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.partition("/")[2] == upstream.member]
        if len(members) != 1:
            raise NotShipped(f"{archive.name} has no {upstream.member}")
        handle = tar.extractfile(members[0])
        assert handle is not None
        text = handle.read().decode("utf-8")
    destination = build / upstream.target
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(upstream.rewrite(text), encoding="utf-8")
    return destination


WHEELS = REPO / ".cache" / "wheels"


def unpacked_wheel(distribution: str, alongside: str) -> Path:
    """The wheel of ``distribution`` of the installed version of ``alongside`` (the same release line),
    else its newest, downloaded without its dependencies and unpacked into ``.cache/wheels/`` on first use:
    a directory to put on ``sys.path``. For a package a test needs that would, as a dependency of the test
    extra, hold other packages back from their newest releases."""
    version = installed_version(alongside)
    target = WHEELS / f"{_normalized(distribution)}-for-{version}"
    if (target / ".complete").exists():
        return target
    failures = []
    for requirement in (f"{distribution}=={version}", distribution):
        try:
            wheel = _download(requirement, "wheel", WHEELS)
        except Unavailable as exc:
            failures.append(str(exc))
            continue
        shutil.rmtree(target, ignore_errors=True)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
        wheel.unlink()
        (target / ".complete").write_text(wheel.name, encoding="utf-8")
        return target
    raise Unavailable("; ".join(failures))
