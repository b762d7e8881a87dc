"""sentry-sdk's ``ignore_errors`` and ``trace_ignore_status_codes`` for what the bridge converts from spans.

sentry-sdk applies ``ignore_errors`` only to events captured with a live exception (``exc_info`` in the
hint) and ``trace_ignore_status_codes`` only to its own transactions; here the same rules are applied to
error events built from recorded exceptions and to transactions built from spans. Pure functions.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from typing import Any

from otel_bridge._convert import semconv


def _type_names(exception: Mapping[str, Any]) -> tuple[str, str]:
    short = str(exception.get("type") or "")
    module = exception.get("module")
    return (f"{module}.{short}" if module else short), short


def _entry_names(entry: Any) -> tuple[str, ...]:
    if isinstance(entry, str):
        return (entry,)
    if isinstance(entry, type):
        qualified = f"{entry.__module__}.{entry.__qualname__}"
        return (qualified, entry.__qualname__) if entry.__module__ == "builtins" else (qualified,)
    return ()


def is_ignored_error(event: Mapping[str, Any], ignore_errors: Iterable[Any]) -> bool:
    """Whether the exception an error event reports (the last of its chain) is named by ``ignore_errors``.

    A string matches the type's name with or without its module, as in sentry-sdk; a class matches its
    own qualified name only (the class hierarchy of an exception known by name is not known)."""
    values = (event.get("exception") or {}).get("values") or ()
    if not values:
        return False
    full, short = _type_names(values[-1])
    for entry in ignore_errors:
        names = _entry_names(entry)
        if isinstance(entry, str) and entry in (full, short):
            return True
        if not isinstance(entry, str) and full in names:
            return True
    return False


def has_ignored_status(root_attributes: Mapping[str, Any], ignored_codes: Container[int]) -> bool:
    """Whether the server span's HTTP status code is one of ``trace_ignore_status_codes``."""
    code = semconv.status_code(root_attributes)
    if code is None:
        return False
    try:
        return code in ignored_codes
    except TypeError:
        return False
