"""Every reach into sentry-sdk's and OpenTelemetry's private internals, each checked before it is trusted.

A reach is registered with :func:`reach` in one of this package's modules (one module per library part it
touches). It names the private thing, the versions it was verified against and what the bridge does when
the assumption no longer holds. :func:`verify` runs every check at ``otel_bridge.init()``; code that runs
without ``init()`` asks :func:`holds`, which checks on first use. A broken reach is named once in a
warning and its public fallback is used from then on, so a new sentry-sdk minor cannot silently corrupt
a payload.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
from dataclasses import dataclass
from typing import Callable, Optional

logger = logging.getLogger("otel_bridge")

Check = Callable[[], bool]


@dataclass(frozen=True)
class Reach:
    name: str
    target: str
    """The private names relied upon."""
    verified: str
    """The versions the reach was checked against."""
    check: Check
    """Probes the assumption (a signature, an attribute, a throw-away object); ``True`` when it holds."""
    fallback: str
    """What the bridge does instead when the check fails."""


_registry: dict[str, Reach] = {}
_results: dict[str, bool] = {}
_lock = threading.RLock()
_loaded = False


def reach(name: str, *, target: str, verified: str, fallback: str) -> Callable[[Check], Check]:
    """Register the decorated function as the check of the reach ``name``."""

    def register(check: Check) -> Check:
        _registry[name] = Reach(name, target, verified, check, fallback)
        return check

    return register


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    _loaded = True


def reaches() -> list[Reach]:
    """Every registered reach, by name."""
    with _lock:
        _load_all()
        return [_registry[name] for name in sorted(_registry)]


def _probe(entry: Reach) -> tuple[bool, str]:
    try:
        return bool(entry.check()), ""
    except Exception as exc:
        return False, f": {exc!r}"


def _run(entry: Reach) -> bool:
    held, detail = _probe(entry)
    _record(entry, held, detail)
    return held


def failing() -> list[tuple[Reach, str]]:
    """The reaches that do not hold on the installed libraries, each with why, without warning or
    remembering (``otel-bridge doctor``)."""
    found = []
    for entry in reaches():
        held, detail = _probe(entry)
        if not held:
            found.append((entry, detail.removeprefix(": ")))
    return found


def _record(entry: Reach, held: bool, detail: str = "") -> None:
    if not held and _results.get(entry.name) is not False:
        logger.warning(
            "otel_bridge: the installed %s no longer has what %s relies on (%s; verified on %s)%s; %s",
            library_versions(),
            entry.name,
            entry.target,
            entry.verified,
            detail,
            entry.fallback,
        )
    _results[entry.name] = held


def note_broken(name: str, detail: str) -> None:
    """A reach found not to hold while in use (a probe of a particular object): warned once, then avoided."""
    with _lock:
        _load_all()
        _record(_registry[name], False, f": {detail}")


def verify() -> list[str]:
    """Check every reach again; the names of those that do not hold (each named once in a warning)."""
    with _lock:
        _load_all()
        return [name for name in sorted(_registry) if not _run(_registry[name])]


def holds(name: str) -> bool:
    """Whether the reach ``name`` may be used; checked on first use when :func:`verify` has not run."""
    known: Optional[bool] = _results.get(name)
    if known is not None:
        return known
    with _lock:
        _load_all()
        if name not in _results:
            _run(_registry[name])
        return _results[name]


def library_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("sentry-sdk", "opentelemetry-sdk"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            continue
    return " / ".join(found) or "sentry-sdk"


def reset() -> None:
    """Forget every check's result (tests change the libraries under the bridge)."""
    with _lock:
        _results.clear()


def markdown_table() -> str:
    """The README's table of reaches."""
    rows = ["| reach | relies on | verified on | when it does not hold |", "|---|---|---|---|"]
    for entry in reaches():
        rows.append(f"| {entry.name} | `{entry.target}` | {entry.verified} | {entry.fallback} |")
    return "\n".join(rows)
