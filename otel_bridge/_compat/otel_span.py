"""The OpenTelemetry SDK's ``Span.record_exception``, wrapped on the class so that each exception recorded on
a span stays linked to the live exception object (the span event itself carries only text)."""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable, Optional

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from otel_bridge._compat import holds, reach

SPAN_RECORD_EXCEPTION = "span record_exception"
logger = logging.getLogger("otel_bridge")

OnRecorded = Callable[[SdkSpan, BaseException, Event], None]
"""Called with the span, the exception and the span event ``record_exception`` just added for it."""

_WRAPPER_MARK = "_otel_bridge_links_exceptions"
_PARAMETERS = ["self", "exception", "attributes", "timestamp", "escaped"]


def _unwrapped(method: Any) -> Any:
    return getattr(method, "__wrapped__", method) if getattr(method, _WRAPPER_MARK, False) else method


class _Kept(SpanProcessor):
    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


@reach(
    SPAN_RECORD_EXCEPTION,
    target=(
        "opentelemetry.sdk.trace.Span.record_exception(self, exception, attributes, timestamp, escaped), "
        "wrapped on the class; the one event it adds is the newest of Span.events, the same object "
        "processors get at on_end"
    ),
    verified="opentelemetry-sdk 1.28, 1.45",
    fallback=(
        "an exception recorded on a span is matched to the exceptions reported live by its type, message "
        "and raise site only (a different exception with the same text, raised on the same line, is taken "
        "for the same one)"
    ),
)
def _record_exception_wrappable() -> bool:
    original = _unwrapped(SdkSpan.record_exception)
    if list(inspect.signature(original).parameters) != _PARAMETERS:
        return False
    kept = _Kept()
    provider = TracerProvider(sampler=ALWAYS_ON, resource=Resource.get_empty(), shutdown_on_exit=False)
    provider.add_span_processor(kept)
    probe = provider.get_tracer("otel_bridge.probe").start_span("otel_bridge.probe")
    if not isinstance(probe, SdkSpan):
        # OTEL_SDK_DISABLED: no span of the SDK is ever made, the wrap is never called
        return True
    exception = ValueError("otel_bridge.probe")
    original(probe, exception)
    added = probe.events[-1] if probe.events else None
    probe.end()
    if added is None or added.name != "exception" or len(probe.events) != 1:
        return False
    attributes = added.attributes or {}
    return (
        attributes.get("exception.type") == "ValueError"
        and attributes.get("exception.message") == "otel_bridge.probe"
        and len(kept.ended) == 1
        and kept.ended[0].events[-1] is added
    )


def wrap_record_exception(on_recorded: OnRecorded) -> bool:
    """Have every ``record_exception`` on an SDK span (any span: the class is wrapped, once per process)
    report the event it added to ``on_recorded``. ``False`` when the reach does not hold: nothing is
    wrapped then."""
    current = SdkSpan.record_exception
    if getattr(current, _WRAPPER_MARK, False):
        return True
    if not holds(SPAN_RECORD_EXCEPTION):
        return False
    original = current

    @functools.wraps(original)
    def record_exception(self: SdkSpan, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        before = _newest_event(self)
        original(self, exception, *args, **kwargs)
        added = _newest_event(self)
        # nothing is added to an ended span
        if added is not None and added is not before and added.name == "exception":
            try:
                on_recorded(self, exception, added)
            except Exception:  # the app's record_exception must not fail because of the bridge
                logger.debug(
                    "otel_bridge could not link a recorded exception to its span event", exc_info=True
                )

    setattr(record_exception, _WRAPPER_MARK, True)
    SdkSpan.record_exception = record_exception  # type: ignore[method-assign]
    return True


def _newest_event(span: SdkSpan) -> Optional[Event]:
    events = span.events
    return events[-1] if events else None
