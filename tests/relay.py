"""Relay's own ingestion normalizer as a test oracle for event payloads."""

from __future__ import annotations

import copy
import json
import threading
from typing import Any, Mapping

from sentry_relay.exceptions import RelayError
from sentry_relay.processing import StoreNormalizer

_normalizer: StoreNormalizer | None = None
_lock = threading.Lock()
_DUMP_LIMIT = 4000


def _get_normalizer() -> StoreNormalizer:
    global _normalizer
    if _normalizer is None:
        _normalizer = StoreNormalizer(project_id=1)
    return _normalizer


def _dump(event: Any) -> str:
    text = json.dumps(event, indent=1, sort_keys=True, default=repr)
    if len(text) > _DUMP_LIMIT:
        return f"{text[:_DUMP_LIMIT]}\n... ({len(text) - _DUMP_LIMIT} more characters)"
    return text


def _describe(event: Mapping[str, Any]) -> str:
    return f"{event.get('type', 'event')} {event.get('event_id', '(no event_id)')}"


def relay_normalize(event: Mapping[str, Any]) -> dict[str, Any]:
    """Relay's normalized form of ``event``; raises ``RelayError`` where Relay would drop the event."""
    payload = copy.deepcopy(dict(event))
    with _lock:
        normalized = _get_normalizer().normalize_event(payload)
    if not isinstance(normalized, dict):
        raise AssertionError(f"Relay returned {type(normalized).__name__}, expected a JSON object")
    return normalized


def assert_relay_valid(event: Mapping[str, Any]) -> dict[str, Any]:
    """Normalize ``event`` with Relay and fail if Relay rejects it or reports errors; return the result.

    Relay moves and reshapes fields (``tags`` and request headers become lists of pairs, ``server_name``
    of a transaction becomes a tag, empty ``measurements`` vanish), so compare fields on the input event
    unless the normalized form is what matters.
    """
    try:
        normalized = relay_normalize(event)
    except RelayError as exc:
        message = getattr(exc, "message", None) or str(exc).split("\n\nstacktrace:")[0]
        raise AssertionError(
            f"Relay rejected {_describe(event)}: {type(exc).__name__}: {message}\nevent: {_dump(event)}"
        ) from None
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{_describe(event)} is not serializable as JSON: {exc}") from None
    errors = normalized.get("errors")
    if errors:
        listed = "\n".join(f"  - {json.dumps(error, default=repr)}" for error in errors)
        raise AssertionError(
            f"Relay reported {len(errors)} error(s) for {_describe(event)}:\n{listed}\n"
            f"_meta: {_dump(normalized.get('_meta'))}\nevent: {_dump(event)}"
        )
    return normalized


def transaction_from_spans(spans: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The transaction event a trace's streamed (span v2) items stand for: the segment as the transaction,
    the others as its spans, attributes as data. Relay's Python package has no span normalizer, so this is
    how streamed spans meet Relay's checks on ids, timestamps, ops, statuses and data."""
    [segment] = [span for span in spans if span.get("is_segment")]

    def attributes(span: Mapping[str, Any]) -> dict[str, Any]:
        return {key: typed.get("value") for key, typed in (span.get("attributes") or {}).items()}

    def status(span: Mapping[str, Any]) -> str:
        return "ok" if span.get("status") == "ok" else "internal_error"

    segment_data = attributes(segment)
    return {
        "type": "transaction",
        "event_id": "0" * 31 + "1",
        "platform": "python",
        "transaction": segment["name"],
        "transaction_info": {"source": segment_data.get("sentry.segment.name.source", "custom")},
        "start_timestamp": segment["start_timestamp"],
        "timestamp": segment["end_timestamp"],
        "contexts": {
            "trace": {
                "trace_id": segment["trace_id"],
                "span_id": segment["span_id"],
                **({"parent_span_id": segment["parent_span_id"]} if segment.get("parent_span_id") else {}),
                "op": segment_data.get("sentry.op", "default"),
                "status": status(segment),
                "data": segment_data,
            }
        },
        "spans": [
            {
                "trace_id": span["trace_id"],
                "span_id": span["span_id"],
                "parent_span_id": span.get("parent_span_id"),
                "op": attributes(span).get("sentry.op", "default"),
                "description": span["name"],
                "status": status(span),
                "start_timestamp": span["start_timestamp"],
                "timestamp": span["end_timestamp"],
                "data": attributes(span),
            }
            for span in spans
            if span is not segment
        ],
    }
