"""Whether a frame is the app's own (``in_app``): one rule for frames parsed from recorded exception text and
for the frames of exceptions sent live.

The order is sentry-sdk's (``set_in_app_in_frames``): a frame already marked keeps its mark, then
``in_app_include`` (module prefixes) says yes, then ``in_app_exclude`` says no, then a frame without a path
is left unmarked, then site-packages and dist-packages say no, then ``project_root`` says yes for the files
under it. Where sentry-sdk's rule ends without an answer the bridge gives one, so that both paths mark every
frame alike: no for its own plumbing (ASGI servers, middlewares, OpenTelemetry, sentry-sdk and the bridge,
wherever they are installed: its frames are not the app's even in a checkout under the project root), the
standard library and frozen modules (a live frozen frame's path is made absolute against the current
directory, and so may lie under ``project_root``), and files outside ``project_root``; yes when no
``project_root`` is known.
"""

from __future__ import annotations

import functools
import os
import re
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Optional

PLUMBING_MODULES = (
    "otel_bridge",
    "opentelemetry",
    "sentry_sdk",
    "asgiref",
    "uvicorn",
    "hypercorn",
    "anyio",
)
"""Top-level packages whose frames are the request's plumbing, not the app (unless ``in_app_include``
names them)."""

_EXTERNAL = re.compile(r"[\\/](?:dist|site)-packages[\\/]")
_STDLIB_LIKE = re.compile(r"[\\/]lib(?:64)?[\\/]python\d+(?:\.\d+)?t?[\\/]")
_FROZEN = re.compile(r"(?:^|[\\/])<frozen [\w.]+>$")


def is_plumbing(module: Optional[str]) -> bool:
    return _module_in(module, PLUMBING_MODULES)


@dataclass(frozen=True)
class InApp:
    """The rule for one client's options: ``in_app_include``, ``in_app_exclude``, ``project_root``."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    project_root: Optional[str] = None

    @cached_property
    def _root(self) -> Optional[str]:
        return _directory(self.project_root) if self.project_root else None

    def __call__(self, module: Optional[str], abs_path: Optional[str]) -> Optional[bool]:
        """Whether a frame of ``module`` in the file ``abs_path`` is the app's; ``None`` (left to Sentry) only
        for a frame that names neither a listed module nor any path."""
        if _module_in(module, self.include):
            return True
        if _module_in(module, self.exclude):
            return False
        if is_plumbing(module):
            return False
        if abs_path is None:
            return None
        path = os.path.normpath(abs_path) if os.path.isabs(abs_path) else abs_path
        if (
            _EXTERNAL.search(path)
            or _FROZEN.search(path)
            or path.startswith(_stdlib_prefixes())
            or _STDLIB_LIKE.search(path)
        ):
            return False
        if self._root is not None:
            return path.startswith(self._root)
        return True

    def mark(self, frames: Iterable[Any]) -> None:
        """Set ``in_app`` on each frame (a dict) that has none yet, as sentry-sdk's client would after."""
        for frame in frames:
            if not isinstance(frame, dict) or frame.get("in_app") is not None:
                continue
            module = frame.get("module")
            path = frame.get("abs_path")
            answer = self(
                module if isinstance(module, str) else None, path if isinstance(path, str) else None
            )
            if answer is not None:
                frame["in_app"] = answer


@functools.lru_cache(maxsize=8)
def in_app_rule(
    include: Sequence[str] = (), exclude: Sequence[str] = (), project_root: Optional[str] = None
) -> InApp:
    """The rule for these options (one object per set of options)."""
    return InApp(tuple(include), tuple(exclude), project_root)


def rule_of(options: Mapping[str, Any]) -> InApp:
    """The rule for a sentry-sdk client's ``options``."""
    return in_app_rule(
        tuple(options.get("in_app_include") or ()),
        tuple(options.get("in_app_exclude") or ()),
        options.get("project_root"),
    )


@functools.lru_cache(maxsize=1)
def _stdlib_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    found = {os.path.normpath(paths[key]) for key in ("stdlib", "platstdlib") if paths.get(key)}
    return tuple(path.rstrip(os.sep) + os.sep for path in found)


def _directory(path: str) -> str:
    path = os.path.normpath(path) if os.path.isabs(path) else path
    return path.rstrip(os.sep) + os.sep


def _module_in(module: Optional[str], prefixes: Sequence[str]) -> bool:
    return module is not None and any(
        module == prefix or module.startswith(prefix + ".") for prefix in prefixes
    )
