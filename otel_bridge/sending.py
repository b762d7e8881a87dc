"""Hand a finished trace to sentry-sdk's client, inside the scopes of the request it came from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, cast

import sentry_sdk
from sentry_sdk.scope import Scope, use_isolation_scope, use_scope
from sentry_sdk.scrubber import DEFAULT_DENYLIST, DEFAULT_PII_DENYLIST
from sentry_sdk.utils import Dsn

from otel_bridge.convert import ConvertOptions, FinishedTrace, to_transaction

if TYPE_CHECKING:
    from sentry_sdk._types import Event

_cached: list[tuple[Any, ConvertOptions]] = []


def convert_options(client: Any) -> ConvertOptions:
    """The client's settings that conversion needs, computed once per client."""
    if _cached and _cached[0][0] is client:
        return _cached[0][1]
    options = client.options
    send_default_pii = bool(options.get("send_default_pii"))
    scrubber = options.get("event_scrubber")
    if scrubber is not None:
        denylist = tuple(scrubber.denylist)
    else:
        denylist = tuple(DEFAULT_DENYLIST) + (() if send_default_pii else tuple(DEFAULT_PII_DENYLIST))
    public_key: Optional[str] = None
    if options.get("dsn"):
        public_key = Dsn(options["dsn"]).public_key
    result = ConvertOptions(
        send_default_pii=send_default_pii,
        denylist=tuple(word.lower() for word in denylist),
        environment=options.get("environment"),
        release=options.get("release"),
        server_name=options.get("server_name"),
        public_key=public_key,
    )
    _cached[:] = [(client, result)]
    return result


def send_transaction(trace: FinishedTrace, isolation: Optional[Scope], current: Optional[Scope]) -> None:
    client = sentry_sdk.get_client()
    if not client.is_active():
        return
    options = convert_options(client)
    event = cast("Event", to_transaction(trace, options))
    if isolation is None:
        sentry_sdk.capture_event(event)
        return
    with use_isolation_scope(isolation):
        if current is not None and current is not isolation:
            with use_scope(current):
                sentry_sdk.capture_event(event)
        else:
            sentry_sdk.capture_event(event)
