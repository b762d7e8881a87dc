"""Error events with the live exception object, linked to the OpenTelemetry trace they happened in."""

from __future__ import annotations

from functools import partial
from types import TracebackType
from typing import Any, Callable, Optional

import sentry_sdk
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, format_span_id, format_trace_id
from sentry_sdk.scope import Scope, use_isolation_scope, use_scope
from sentry_sdk.utils import event_from_exception

from otel_bridge._collect import reported
from otel_bridge._collect.request_state import Errands, current_request
from otel_bridge._convert.in_app import in_app_rule
from otel_bridge._convert.naming import current_route_name
from otel_bridge._convert.options import convert_options
from otel_bridge._convert.privacy import clean_frames, filter_user, scrub_breadcrumbs
from otel_bridge._tracing.dsc import started_dsc
from otel_bridge.propagation import get_dynamic_sampling_context

_HINT_KEY = "otel_bridge_trace_linked"

Later = Callable[[Callable[[], Any]], None]
ExcInfo = tuple[type[BaseException], BaseException, Optional[TracebackType]]


def trace_context(span_context: SpanContext, parent_span_id: Optional[int] = None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "trace_id": format_trace_id(span_context.trace_id),
        "span_id": format_span_id(span_context.span_id),
        "type": "trace",
    }
    if parent_span_id:
        result["parent_span_id"] = format_span_id(parent_span_id)
    return result


def dsc_of(span_context: SpanContext, otel_context: Optional[Context] = None) -> dict[str, str]:
    """The dynamic sampling context of the trace ``span_context`` belongs to, for an error's envelope."""
    return get_dynamic_sampling_context(otel_context) or started_dsc(span_context, current_route_name())


def capture_unhandled(
    exc: BaseException, span: Optional[Span], otel_context: Optional[Context], op: str, mechanism_type: str
) -> None:
    """Report an exception escaping the app, once, with frames from the live traceback, in ``span``.

    Inside a request served by the middleware, with the bridge's worker running, only what must be read now
    is read on the request path (the trace the exception belongs to, the request's scopes, the traceback as
    it is before the exception travels further up); the event is built and captured on the worker, before
    the request's transaction, which is queued after it. The exception and its traceback stay alive until
    then. The exception counts as reported at once, so that no other path (a framework hook, the server's
    log line, its span events) reports it again meanwhile.
    """
    if reported.was_reported(exc):
        return
    client = sentry_sdk.get_client()
    if not client.is_active():
        return
    exc_info = (type(exc), exc, exc.__traceback__)
    later = _later_for_this_request()
    link = _trace_link(span, otel_context, op, or_current=later is not None)
    if later is None:
        _capture(exc_info, mechanism_type, link, reserved=False)
        # also when no event processor of the bridge saw it (the middleware without init())
        reported.note_reported(exc)
        return
    reported.note_reported(exc)
    later(
        partial(
            _capture_in_scopes,
            sentry_sdk.get_isolation_scope(),
            sentry_sdk.get_current_scope(),
            exc_info,
            mechanism_type,
            link,
        )
    )


_later: Optional[Later] = None


def build_errors_on(run_soon: Later) -> None:
    """Error events of requests are built by ``run_soon`` (the worker of the bridge's span processor)."""
    global _later
    _later = run_soon


def stop_building_on(run_soon: Later) -> None:
    global _later
    if _later == run_soon:
        _later = None


def _later_for_this_request() -> Optional[Later]:
    request = current_request.get()
    later = _later
    if request is None or later is None or request.keep_errors_inline:
        return None
    if request.errands is None:
        request.errands = Errands()
    errands = request.errands
    return lambda job: later(errands.wrap(job))


def _trace_link(
    span: Optional[Span], otel_context: Optional[Context], op: str, or_current: bool
) -> Optional[dict[str, Any]]:
    """The trace context of the span the exception escaped from (``or_current``: else of the current span,
    which ``prepare_event`` would find on the request's thread), with its dynamic sampling context, read
    while the request's OTel context is still the current one."""
    span_context = span.get_span_context() if span is not None else None
    if span_context is not None and span_context.is_valid:
        parent = getattr(span, "parent", None)
        linked = trace_context(span_context, parent.span_id if parent is not None else None)
        linked["op"] = op
        linked["dynamic_sampling_context"] = dsc_of(span_context, otel_context)
        return linked
    current = trace.get_current_span().get_span_context()
    if not or_current or not current.is_valid:
        return None
    linked = trace_context(current)
    linked["dynamic_sampling_context"] = dsc_of(current)
    return linked


def _capture_in_scopes(
    isolation: Scope,
    current: Scope,
    exc_info: ExcInfo,
    mechanism_type: str,
    link: Optional[dict[str, Any]],
) -> None:
    with use_isolation_scope(isolation), use_scope(current):
        _capture(exc_info, mechanism_type, link, reserved=True)


def _capture(
    exc_info: ExcInfo, mechanism_type: str, link: Optional[dict[str, Any]], *, reserved: bool
) -> None:
    client = sentry_sdk.get_client()
    if not client.is_active():
        return
    event, hint = event_from_exception(
        exc_info, client_options=client.options, mechanism={"type": mechanism_type, "handled": False}
    )
    if link is not None:
        event["contexts"] = {"trace": link}
        hint[_HINT_KEY] = True
    if reserved:
        hint[reported.RESERVED_FOR_THIS_EVENT] = True
    event["level"] = "error"
    sentry_sdk.capture_event(event, hint=hint)


def prepare_event(event: Any, hint: Any) -> Any:
    """Global event processor: errors captured inside an OTel span point at that span's trace; no event
    carries the user's identity without ``send_default_pii``, nor secrets in its frames' local variables
    or in the URLs of its breadcrumbs.

    It also drops a second report of one exception, and notes the first (see ``reported.first_report``), so
    that no other path (a framework integration of sentry-sdk that runs outside, this bridge's middleware,
    the spans the exception was recorded on) reports the same exception object a second time.
    """
    options = convert_options(sentry_sdk.get_client())
    if not options.send_default_pii:
        filter_user(event)
    if event.get("breadcrumbs"):
        scrub_breadcrumbs(event, options.denylist, send_default_pii=options.send_default_pii)
    if event.get("type") == "transaction":
        return event
    if not reported.first_report(hint):
        return None
    if "exception" in event:
        clean_frames(
            event,
            send_default_pii=options.send_default_pii,
            denylist=options.denylist,
            in_app=in_app_rule(options.in_app_include, options.in_app_exclude, options.project_root),
        )
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
