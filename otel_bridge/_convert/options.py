"""What of a sentry-sdk client's options conversion needs, read once per client."""

from __future__ import annotations

from typing import Any

from sentry_sdk.scrubber import DEFAULT_DENYLIST, DEFAULT_PII_DENYLIST

from otel_bridge._convert.collection import data_collection_from_options
from otel_bridge._convert.events import ConvertOptions
from otel_bridge._tracing import dsc

_cached: list[tuple[Any, ConvertOptions]] = []


def convert_options(client: Any) -> ConvertOptions:
    """The client's settings that conversion needs, computed once per client."""
    if _cached and _cached[0][0] is client:
        return _cached[0][1]
    options = client.options
    data_collection = data_collection_from_options(options)
    if data_collection is not None:
        # sentry-sdk then ignores send_default_pii and drops its EventScrubber; our deny-list still applies
        send_default_pii = data_collection.user_info
    else:
        send_default_pii = bool(options.get("send_default_pii"))
    scrubber = options.get("event_scrubber")
    if scrubber is not None:
        denylist = tuple(scrubber.denylist)
    else:
        denylist = tuple(DEFAULT_DENYLIST) + (() if send_default_pii else tuple(DEFAULT_PII_DENYLIST))
    public_key, org_id = dsc.dsn_keys(client)
    result = ConvertOptions(
        send_default_pii=send_default_pii,
        denylist=tuple(word.lower() for word in denylist),
        data_collection=data_collection,
        environment=options.get("environment"),
        release=options.get("release"),
        server_name=options.get("server_name"),
        public_key=public_key,
        in_app_include=tuple(options.get("in_app_include") or ()),
        in_app_exclude=tuple(options.get("in_app_exclude") or ()),
        project_root=options.get("project_root"),
        include_source_context=options.get("include_source_context") is not False,
        org_id=org_id,
    )
    _cached[:] = [(client, result)]
    return result
