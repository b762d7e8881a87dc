"""Reaches into sentry-sdk's private state that no public API offers, each checked before it is trusted.

Every reach names the sentry-sdk versions it was verified against. ``verify()`` runs at ``init()``: it
probes each assumption on a throw-away object and, where one no longer holds, the reach answers as if the
state were absent (the public behaviour) and one warning names it.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import sentry_sdk
from sentry_sdk.scope import Scope

logger = logging.getLogger("otel_bridge")

_broken: set[str] = set()


def _scope_name_readable() -> bool:
    probe = Scope()
    probe.set_transaction_name("otel_bridge.probe", source="custom")
    return (
        getattr(probe, "_transaction", None) == "otel_bridge.probe"
        and getattr(probe, "_transaction_info", {}).get("source") == "custom"
    )


def scope_transaction_name(scope: Optional[Scope]) -> Optional[tuple[str, Optional[str]]]:
    """The name and source ``scope.set_transaction_name()`` gave the scope, if any.

    sentry-sdk keeps them in ``Scope._transaction`` / ``Scope._transaction_info`` and has no getter
    (verified on 2.57 and 2.75).
    """
    if scope is None or "scope_transaction_name" in _broken:
        return None
    name = getattr(scope, "_transaction", None)
    if not isinstance(name, str) or not name:
        return None
    info = getattr(scope, "_transaction_info", None)
    source = info.get("source") if isinstance(info, dict) else None
    return name, str(getattr(source, "value", source)) if source else None


_PROBES = {"scope_transaction_name": _scope_name_readable}
_CONSEQUENCES = {
    "scope_transaction_name": "a name set with scope.set_transaction_name() will not rename transactions",
}


def verify() -> list[str]:
    """Probe every reach; the names of those that failed (each said once in a warning)."""
    failed: list[str] = []
    for name, probe in _PROBES.items():
        try:
            holds = probe()
        except Exception:
            holds = False
        if holds:
            _broken.discard(name)
            continue
        failed.append(name)
        if name not in _broken:
            logger.warning(
                "otel_bridge: this sentry-sdk no longer has what %s relies on; %s",
                name,
                _CONSEQUENCES[name],
            )
        _broken.add(name)
    return failed


def custom_name_of(*scopes: Any) -> Optional[tuple[str, str]]:
    """The name the app set with ``set_transaction_name(name)`` or ``(name, source="custom")`` on the first
    of ``scopes`` that has one. Names sentry-sdk's own framework integrations set (with source ``route``,
    ``component`` or ``url``) are left to the bridge's own naming, which follows the same rules.

    With span streaming, sentry-sdk's own span API also leaves a name without a source on the scope (each
    ``sentry_sdk.traces.start_span`` outside a Sentry span is a segment of its own, and names the scope
    after itself), so there only ``source="custom"`` marks a name the app chose.
    """
    allowed: tuple[Optional[str], ...] = ("custom",) if _streams_spans() else (None, "custom")
    for scope in scopes:
        named = scope_transaction_name(scope)
        if named is not None and named[1] in allowed:
            return named[0], "custom"
    return None


def _streams_spans() -> bool:
    options = sentry_sdk.get_client().options or {}
    experiments = options.get("_experiments") or {}
    return "stream" in (options.get("trace_lifecycle"), experiments.get("trace_lifecycle"))
