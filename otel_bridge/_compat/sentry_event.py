"""Private keys of a sentry-sdk event: keys its client reads and removes before the event is sent."""

from __future__ import annotations

import inspect
import re

import sentry_sdk.client

from otel_bridge._compat import reach

EVENT_DROPPED_SPANS = "event _dropped_spans"

# sentry-sdk 2.57 to 2.75: ``span_recorder_dropped_spans: int = event.pop("_dropped_spans", 0)``, then
# ``record_lost_event("buffer_overflow", data_category="span", quantity=span_recorder_dropped_spans)``
_POPS_KEY = re.compile(r"""event\.pop\(\s*["']_dropped_spans["']""")
_RECORDS_LOSS = re.compile(
    r"""record_lost_event\(\s*["']buffer_overflow["']\s*,\s*data_category=["']span["']"""
)


@reach(
    EVENT_DROPPED_SPANS,
    target='event["_dropped_spans"] on a transaction: _Client._prepare_event pops it and records that many '
    "spans lost (buffer_overflow)",
    verified="sentry-sdk 2.57, 2.75",
    fallback="the spans a trace dropped are recorded with transport.record_lost_event, and the event does "
    "not carry the key",
)
def _dropped_spans_read() -> bool:
    """The source of ``_Client._prepare_event`` (under any ``functools.wraps`` wrapper) pops the key and
    records the spans as lost. Read rather than run: a throw-away client would take its options from the
    environment (``SENTRY_SPOTLIGHT`` would send the probe to a Spotlight sidecar, or warn)."""
    prepare = getattr(getattr(sentry_sdk.client, "_Client", None), "_prepare_event", None)
    if not callable(prepare):
        return False
    source = inspect.getsource(inspect.unwrap(prepare))
    return bool(_POPS_KEY.search(source) and _RECORDS_LOSS.search(source))
