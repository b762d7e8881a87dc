"""sentry-sdk's span streaming: the client's span batcher, which reads a trace's dynamic sampling context
from ``span["_segment_span"]``, and the scope merge it applies to every span, which no public API offers
for spans built elsewhere."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import sentry_sdk
from sentry_sdk.scope import Scope

from otel_bridge._compat import reach

SPAN_STREAMING = "span streaming"


@reach(
    SPAN_STREAMING,
    target="Client.span_batcher.add(span dict), span['_segment_span']._dynamic_sampling_context(), "
    "Scope._merge_scopes()",
    verified="sentry-sdk 2.75 (2.57's experimental batcher fails the probe)",
    fallback="traces are sent as transactions instead of span items",
)
def _streaming_usable() -> bool:
    """The active client's streaming works as verified; nothing is relied upon when it does not stream."""
    from otel_bridge._deliver.stream_capture import streaming_requested

    client = sentry_sdk.get_client()
    return not streaming_requested(client.options) or streaming_unusable(client) is None


def streaming_unusable(client: Any) -> Optional[str]:
    """Why ``client``'s span batcher and scopes cannot take the bridge's spans; ``None`` when they can."""
    batcher = getattr(client, "span_batcher", None)
    if batcher is None or not callable(getattr(batcher, "add", None)):
        return "the client has no span batcher"
    try:
        if not _batcher_works(batcher):
            return "its span batcher does not write span envelopes as expected"
    except Exception as exc:
        return f"its span batcher failed a probe: {exc!r}"
    try:
        if not _scope_works():
            return "its scopes do not apply attributes as expected"
    except Exception as exc:
        return f"its scopes failed a probe: {exc!r}"
    return None


class Segment:
    """What sentry-sdk's ``SpanBatcher`` reads from ``span["_segment_span"]`` of the first span of a
    trace's bucket when it flushes: ``._dynamic_sampling_context()``, the envelope header ``trace``
    (``client._capture_telemetry`` puts the ``StreamedSpan`` segment there; verified on sentry-sdk 2.75)."""

    __slots__ = ("_dsc",)

    def __init__(self, dsc: Mapping[str, str]) -> None:
        self._dsc = dict(dsc)

    def _dynamic_sampling_context(self) -> dict[str, str]:
        return dict(self._dsc)


def _batcher_works(batcher: Any) -> bool:
    """A fresh batcher of the same class, given one probe span, must put out one ``span`` item whose payload
    is ``{"version": 2, "items": [...]}`` without our ``_segment_span``, under the probe's DSC as the
    envelope header ``trace`` (the layout of sentry-sdk 2.75's ``SpanBatcher``). sentry-sdk 2.57's
    experimental one (``_experiments={"trace_lifecycle": "stream"}``) takes ``StreamedSpan`` objects and
    fails the probe, so that version gets transactions."""
    captured: list[Any] = []
    probe = type(batcher)(capture_func=captured.append, record_lost_func=lambda *a, **k: None)
    try:
        span = {
            "trace_id": "0" * 31 + "1",
            "span_id": "0" * 15 + "1",
            "name": "otel_bridge.probe",
            "status": "ok",
            "is_segment": True,
            "start_timestamp": 1.0,
            "end_timestamp": 2.0,
            "attributes": {"otel_bridge.probe": True},
            "_segment_span": Segment({"trace_id": "0" * 31 + "1"}),
        }
        probe.add(span)
        probe.flush()
    finally:
        probe.kill()
    if len(captured) != 1:
        return False
    envelope = captured[0]
    items = list(envelope.items)
    if envelope.headers.get("trace") != {"trace_id": "0" * 31 + "1"} or len(items) != 1:
        return False
    item = items[0]
    payload = item.payload.json
    return (
        item.type == "span"
        and isinstance(payload, dict)
        and payload.get("version") == 2
        and len(payload.get("items") or ()) == 1
        and "_segment_span" not in payload["items"][0]
        and payload["items"][0].get("attributes", {}).get("otel_bridge.probe")
        == {"value": True, "type": "boolean"}
    )


def merged_scope() -> Scope:
    """The global, isolation and current scopes merged, as sentry-sdk merges them for a span it captures
    (``Scope._merge_scopes``; verified on sentry-sdk 2.75). Called inside the request's scopes."""
    return sentry_sdk.get_current_scope()._merge_scopes()


def apply_scope(scope: Scope, item: dict[str, Any]) -> None:
    """Scope attributes and, where allowed (``send_default_pii`` / ``data_collection.user_info``), the
    user's as attributes, missing ones only: ``Scope.apply_to_telemetry`` (2.66+), which for a mapping with
    ``trace_id`` and ``span_id`` set does exactly that (verified on sentry-sdk 2.75)."""
    scope.apply_to_telemetry(item)  # type: ignore[arg-type,unused-ignore]


def _scope_works() -> bool:
    probe = Scope()
    probe.set_attribute("otel_bridge.probe", 1)  # type: ignore[attr-defined,unused-ignore]
    item: dict[str, Any] = {"trace_id": "0" * 31 + "1", "span_id": "0" * 15 + "1", "attributes": {}}
    apply_scope(probe._merge_scopes(), item)
    return bool(item["attributes"].get("otel_bridge.probe") == 1 and item["span_id"] == "0" * 15 + "1")
