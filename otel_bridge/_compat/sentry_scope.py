"""The transaction name an app set on a sentry-sdk scope, which sentry-sdk offers no getter for."""

from __future__ import annotations

from typing import Any, Optional

import sentry_sdk
from sentry_sdk.scope import Scope

from otel_bridge._compat import holds, reach

SCOPE_TRANSACTION_NAME = "scope transaction name"


@reach(
    SCOPE_TRANSACTION_NAME,
    target="Scope._transaction, Scope._transaction_info['source']",
    verified="sentry-sdk 2.57, 2.75",
    fallback="a name set with scope.set_transaction_name() will not rename transactions",
)
def _scope_name_readable() -> bool:
    probe = Scope()
    probe.set_transaction_name("otel_bridge.probe", source="custom")
    return (
        getattr(probe, "_transaction", None) == "otel_bridge.probe"
        and getattr(probe, "_transaction_info", {}).get("source") == "custom"
    )


def scope_transaction_name(scope: Optional[Scope]) -> Optional[tuple[str, Optional[str]]]:
    """The name and source ``scope.set_transaction_name()`` gave the scope, if any."""
    if scope is None or not holds(SCOPE_TRANSACTION_NAME):
        return None
    name = getattr(scope, "_transaction", None)
    if not isinstance(name, str) or not name:
        return None
    info = getattr(scope, "_transaction_info", None)
    source = info.get("source") if isinstance(info, dict) else None
    return name, str(getattr(source, "value", source)) if source else None


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
