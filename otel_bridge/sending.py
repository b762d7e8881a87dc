"""Hand a finished trace to sentry-sdk's client, inside the scopes of the request it came from."""

from __future__ import annotations

from typing import Any, Optional

import sentry_sdk
from sentry_sdk.scope import Scope, use_isolation_scope, use_scope
from sentry_sdk.utils import Dsn

from otel_bridge.convert import ConvertOptions, FinishedTrace, to_transaction

_options_cache: dict[int, ConvertOptions] = {}


def convert_options(client: Any, transaction_style: str) -> ConvertOptions:
    key = hash((id(client), transaction_style))
    cached = _options_cache.get(key)
    if cached is not None:
        return cached
    options = client.options
    scrubber = options.get("event_scrubber")
    denylist = tuple(getattr(scrubber, "denylist", ()) or ())
    public_key: Optional[str] = None
    if options.get("dsn"):
        public_key = Dsn(options["dsn"]).public_key
    result = ConvertOptions(
        send_default_pii=bool(options.get("send_default_pii")),
        denylist=tuple(word.lower() for word in denylist),
        environment=options.get("environment"),
        release=options.get("release"),
        server_name=options.get("server_name"),
        public_key=public_key,
        transaction_style=transaction_style,
    )
    _options_cache.clear()
    _options_cache[key] = result
    return result


def send_transaction(trace: FinishedTrace, isolation: Optional[Scope], current: Optional[Scope]) -> None:
    client = sentry_sdk.get_client()
    if not client.is_active():
        return
    options = convert_options(client, trace.transaction_style or "endpoint")
    event = to_transaction(trace, options)
    if isolation is None:
        sentry_sdk.capture_event(event)
        return
    with use_isolation_scope(isolation):
        if current is not None and current is not isolation:
            with use_scope(current):
                sentry_sdk.capture_event(event)
        else:
            sentry_sdk.capture_event(event)

