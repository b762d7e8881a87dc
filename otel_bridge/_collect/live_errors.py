"""Error events with the live exception object, linked to the OpenTelemetry trace they happened in."""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Optional

import sentry_sdk
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.trace import Span, SpanContext, format_span_id, format_trace_id
from sentry_sdk.utils import event_from_exception

from otel_bridge._collect.request_state import current_request, exception_key, recent_reports
from otel_bridge._convert.naming import current_route_name
from otel_bridge._convert.privacy import clean_frames, filter_user, scrub_breadcrumbs
from otel_bridge._deliver.capture import convert_options
from otel_bridge._tracing.sampling import started_dsc
from otel_bridge.propagation import get_dynamic_sampling_context

_HINT_KEY = "otel_bridge_trace_linked"
_REPORTED_ATTRIBUTE = "__otel_bridge_reported__"


def trace_context(span_context: SpanContext, parent_span_id: Optional[int] = None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "trace_id": format_trace_id(span_context.trace_id),
        "span_id": format_span_id(span_context.span_id),
        "type": "trace",
    }
    if parent_span_id:
        result["parent_span_id"] = format_span_id(parent_span_id)
    return result


_ON_SPAN_ATTRIBUTE = "__otel_bridge_on_sampled_span__"


def install_span_exception_marking() -> None:
    """Mark exceptions as they are recorded on a sampled span, which the span processor or exporter will
    report with their trace. sentry-sdk's logging integration then need not report them a second time
    (servers log the exceptions that escaped the app, outside of any span)."""
    original = SdkSpan.record_exception
    if getattr(original, "_otel_bridge_marks", False):
        return

    @functools.wraps(original)
    def record_exception(self: SdkSpan, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        if self.is_recording() and self.get_span_context().trace_flags.sampled:
            with contextlib.suppress(AttributeError, TypeError):
                setattr(exception, _ON_SPAN_ATTRIBUTE, True)
        original(self, exception, *args, **kwargs)

    record_exception._otel_bridge_marks = True  # type: ignore[attr-defined]
    SdkSpan.record_exception = record_exception  # type: ignore[method-assign]


def was_reported(exc: BaseException) -> bool:
    return bool(getattr(exc, _REPORTED_ATTRIBUTE, False))


def mark_reported(exc: BaseException) -> None:
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _REPORTED_ATTRIBUTE, True)


def dsc_of(span_context: SpanContext, otel_context: Optional[Context] = None) -> dict[str, str]:
    """The dynamic sampling context of the trace ``span_context`` belongs to, for an error's envelope."""
    return get_dynamic_sampling_context(otel_context) or started_dsc(span_context, current_route_name())


def capture_unhandled(
    exc: BaseException, span: Optional[Span], otel_context: Optional[Context], op: str, mechanism_type: str
) -> None:
    """Report an exception escaping the app, once, with frames from the live traceback, in ``span``."""
    if was_reported(exc):
        return
    client = sentry_sdk.get_client()
    if not client.is_active():
        return
    event, hint = event_from_exception(
        exc, client_options=client.options, mechanism={"type": mechanism_type, "handled": False}
    )
    span_context = span.get_span_context() if span is not None else None
    if span_context is not None and span_context.is_valid:
        parent = getattr(span, "parent", None)
        linked = trace_context(span_context, parent.span_id if parent is not None else None)
        linked["op"] = op
        linked["dynamic_sampling_context"] = dsc_of(span_context, otel_context)
        event["contexts"] = {"trace": linked}
        hint[_HINT_KEY] = True
    event["level"] = "error"
    sentry_sdk.capture_event(event, hint=hint)
    mark_reported(exc)


# Log records in which a server repeats, as text without the exception object, that the app raised: the
# middleware reports every exception escaping the app, so these would be a second event for the same one.
SERVER_ECHOES = (("_granian", "Application callable raised an exception"),)


def _is_server_echo(record: Any) -> bool:
    name = getattr(record, "name", None)
    message = str(getattr(record, "msg", ""))
    return isinstance(name, str) and any(
        (name == logger or name.startswith(f"{logger}.")) and message.startswith(text)
        for logger, text in SERVER_ECHOES
    )


def prepare_event(event: Any, hint: Any) -> Any:
    """Global event processor: errors captured inside an OTel span point at that span's trace; no event
    carries the user's identity without ``send_default_pii``, nor secrets in its frames' local variables
    or in the URLs of its breadcrumbs.

    It also marks the exception as reported so that no other path (a framework integration of sentry-sdk
    that runs outside, or this bridge's middleware) reports the same exception object a second time.
    """
    options = convert_options(sentry_sdk.get_client())
    if not options.send_default_pii:
        filter_user(event)
    if event.get("breadcrumbs"):
        scrub_breadcrumbs(event, options.denylist, send_default_pii=options.send_default_pii)
    if event.get("type") == "transaction":
        return event
    if hint and hint.get("log_record") is not None and _is_server_echo(hint["log_record"]):
        return None
    exc_info = hint.get("exc_info") if hint else None
    exc = exc_info[1] if exc_info else None
    if exc is not None:
        if was_reported(exc):
            return None
        if hint.get("log_record") is not None and getattr(exc, _ON_SPAN_ATTRIBUTE, False):
            return None
        mark_reported(exc)
        recent_reports.add(exc)
        request = current_request.get()
        if request is not None:
            request.reported.add(exception_key(exc))
    if "exception" in event:
        clean_frames(event, send_default_pii=options.send_default_pii, denylist=options.denylist)
    if hint and hint.get(_HINT_KEY):
        return event
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        contexts = event.setdefault("contexts", {})
        previous = contexts.get("trace") or {}
        linked = trace_context(span_context)
        linked["dynamic_sampling_context"] = dsc_of(span_context)
        for key in ("op", "status", "data"):
            if key in previous:
                linked[key] = previous[key]
        contexts["trace"] = linked
    return event
