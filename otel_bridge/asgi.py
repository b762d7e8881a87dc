"""``SentryAsgiMiddleware``: a Sentry isolation scope and an OpenTelemetry SERVER span for every request.

Configuration lives on the middleware; what belongs to one request lives on a small ``RequestContext``
that the span processor picks up when the server span starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, MutableMapping, Sequence
from functools import partial
from typing import Any, Callable, Optional, Union

import sentry_sdk
from asgiref.compatibility import guarantee_single_callable
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.trace import Span, TracerProvider
from opentelemetry.util.http import ExcludeList, get_excluded_urls, parse_excluded_urls

from otel_bridge._collect import frameworks
from otel_bridge._collect.live_errors import capture_unhandled
from otel_bridge._collect.request_state import RequestContext, current_request
from otel_bridge._collect.sessions import track_request_session
from otel_bridge._compat.sentry_asgi import mark_sentry_asgi_applied, unmark_sentry_asgi_applied
from otel_bridge._compat.sentry_scope import custom_name_of
from otel_bridge._convert.naming import SOURCE_CUSTOM, SOURCE_URL, name_from_asgi
from otel_bridge._convert.options import convert_options
from otel_bridge._convert.request_interface import request_from_asgi
from otel_bridge._drops import RateLimitedLogger
from otel_bridge._setup import flush_before_exit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Any]
ServerRequestHook = Optional[Callable[[Span, Scope], None]]

TRANSACTION_STYLES = ("endpoint", "url")
logger = logging.getLogger("otel_bridge")
_untraced = RateLimitedLogger(logger, interval=60.0)
# sentry-sdk's middleware starts transactions for these methods only by default: not OPTIONS (CORS
# preflights) nor HEAD.
DEFAULT_HTTP_METHODS_TO_CAPTURE = ("CONNECT", "DELETE", "GET", "PATCH", "POST", "PUT", "TRACE")
SPAN_NAMES = ("receive", "send")
# Public markers that tell a framework its requests are already traced, so that it does not start a second
# server span of its own: FastAPI's native telemetry skips a scope holding "fastapi.telemetry" (as it does
# when OpenTelemetry's ASGI middleware is in its own stack), Starlette's OpenTelemetryMiddleware one marked
# "starlette.opentelemetry".
ALREADY_TRACED_MARKERS = (("fastapi.telemetry", None), ("starlette.opentelemetry", True))


class SentryAsgiMiddleware:
    """Wrap any ASGI 2 or ASGI 3 app: ``app = SentryAsgiMiddleware(app)``.

    ``transaction_style`` is ``"endpoint"`` (the view function, as sentry-sdk's ASGI middleware does) or
    ``"url"`` (the route template). ``internal_spans`` re-enables OTel's per-message ``receive``/``send``
    spans. ``excluded_urls`` (a comma-separated string of regexes) defaults to
    ``OTEL_PYTHON_ASGI_EXCLUDED_URLS`` or ``OTEL_PYTHON_EXCLUDED_URLS``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        transaction_style: str = "endpoint",
        mechanism_type: str = "asgi",
        internal_spans: Union[bool, Sequence[str]] = False,
        excluded_urls: Optional[str] = None,
        tracer_provider: Optional[TracerProvider] = None,
        server_request_hook: ServerRequestHook = None,
        http_capture_headers_server_request: Optional[list[str]] = None,
        http_capture_headers_server_response: Optional[list[str]] = None,
        http_capture_headers_sanitize_fields: Optional[list[str]] = None,
        default_span_details: Optional[Callable[[Scope], tuple[str, dict[str, Any]]]] = None,
        client_request_hook: Optional[Callable[[Span, Scope, Message], None]] = None,
        client_response_hook: Optional[Callable[[Span, Scope, Message], None]] = None,
        span_origin: Optional[str] = None,
        http_methods_to_capture: Sequence[str] = DEFAULT_HTTP_METHODS_TO_CAPTURE,
        asgi_version: Optional[int] = None,
        unsafe_context_data: bool = False,
        root_path_in_path: Any = None,
    ) -> None:
        if transaction_style not in TRANSACTION_STYLES:
            # sentry-sdk's wording, word for word: code moving from its middleware may match on it
            raise ValueError(
                f"Invalid value for transaction_style: {transaction_style} (must be in {TRANSACTION_STYLES})"
            )
        self.app = app
        self.transaction_style = transaction_style
        self.mechanism_type = mechanism_type
        self._app3: ASGIApp = _as_asgi3(app, asgi_version)
        self._methods = frozenset(method.upper() for method in http_methods_to_capture)
        self._origin = span_origin
        if (
            root_path_in_path is not None
            and getattr(root_path_in_path, "value", root_path_in_path) != "excluded"
        ):
            logger.warning(
                "otel_bridge: SentryAsgiMiddleware(root_path_in_path=%s) has no effect here: URLs and names "
                "are root_path + path, as the ASGI specification says",
                getattr(root_path_in_path, "name", root_path_in_path),
            )
        self._framework = frameworks.adapt(app, _report_framework_exception)
        self._user_hook = server_request_hook
        excluded: Optional[ExcludeList] = (
            parse_excluded_urls(excluded_urls) if excluded_urls is not None else get_excluded_urls("ASGI")
        )
        self._otel = OpenTelemetryMiddleware(
            self._call_app,
            excluded_urls=excluded,
            tracer_provider=tracer_provider,
            server_request_hook=self._note_server_span,
            exclude_spans=_excluded_span_names(internal_spans),  # type: ignore[arg-type]
            http_capture_headers_server_request=http_capture_headers_server_request,
            http_capture_headers_server_response=http_capture_headers_server_response,
            http_capture_headers_sanitize_fields=http_capture_headers_sanitize_fields,
            default_span_details=default_span_details,
            client_request_hook=client_request_hook,
            client_response_hook=client_response_hook,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            if self._framework is not None and not self._framework.speaks_lifespan:
                await _answer_lifespan(receive, _flushing_at_shutdown(send))
            else:
                await self._app3(scope, receive, _flushing_at_shutdown(send))
            return
        if kind not in ("http", "websocket"):
            await self._app3(scope, receive, send)
            return
        for marker, value in ALREADY_TRACED_MARKERS:
            scope.setdefault(marker, value)
        request = RequestContext(
            scope,
            self.transaction_style,
            resolve_route=self._framework.resolve_route if self._framework is not None else None,
        )
        request_token = current_request.set(request)
        # a sentry-sdk SentryAsgiMiddleware inside this one passes the request straight through
        sentry_token = mark_sentry_asgi_applied()
        _InFlight.count += 1
        try:
            with sentry_sdk.isolation_scope() as sentry_scope, track_request_session(sentry_scope, request):
                sentry_scope.clear_breadcrumbs()
                describe = partial(
                    _describe_request, request=request, methods=self._methods, origin=self._origin
                )
                sentry_scope.add_event_processor(describe)  # type: ignore[arg-type]
                try:
                    await self._serve_traced(scope, receive, send, request)
                except Exception as exc:
                    op = f"{scope['type']}.server"
                    capture_unhandled(
                        exc, request.server_span, request.server_context, op, self.mechanism_type
                    )
                    raise
        finally:
            unmark_sentry_asgi_applied(sentry_token)
            current_request.reset(request_token)
            request.close()
            _InFlight.count -= 1

    async def _serve_traced(
        self, scope: Scope, receive: Receive, send: Send, request: RequestContext
    ) -> None:
        try:
            await self._otel(scope, receive, send)
        except Exception:
            if request.app_called:
                raise
            _untraced.warning(
                "OpenTelemetry's ASGI middleware failed before the app ran; serving the request untraced",
                exc_info=True,
            )
            await self._app3(scope, receive, send)

    async def _call_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = current_request.get()
        if request is None:
            await self._app3(scope, receive, send)
            return
        request.app_called = True

        async def send_to_otel(message: Message) -> None:
            headers = message.get("headers")
            if headers is not None and not isinstance(headers, (list, tuple)):
                # Sanic hands its headers over as a one-shot generator, which OpenTelemetry's middleware
                # would consume before the server sees them.
                message["headers"] = list(headers)
            await send(message)

        await self._app3(scope, receive, send_to_otel)

    def _note_server_span(self, span: Span, scope: Scope) -> None:
        request = current_request.get()
        if request is not None and request.asgi_scope is scope:
            request.server_span = span
            request.server_context = otel_context.get_current()
        if self._user_hook is not None:
            self._user_hook(span, scope)


def _report_framework_exception(exc: BaseException, framework: str) -> None:
    """An exception a framework turned into an error response: reported as unhandled, in its request."""
    request = current_request.get()
    if request is None:
        capture_unhandled(exc, None, None, "http.server", framework)
        return
    op = f"{request.asgi_scope.get('type', 'http')}.server"
    capture_unhandled(exc, request.server_span, request.server_context, op, framework)


async def _answer_lifespan(receive: Receive, send: Send) -> None:
    """The lifespan protocol on behalf of an app that does not speak it (Django raises on it): startup and
    shutdown succeed, and what is queued for Sentry is sent at shutdown."""
    while True:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message.get("type") == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class _InFlight:
    """How many requests the middleware is serving, in this process."""

    count = 0


IN_FLIGHT_WAIT_SECONDS = 1.0


async def _requests_finished(timeout: float) -> None:
    """Some servers (granian, hypercorn) run the lifespan shutdown while the last requests are still
    winding down after their response went out; their transactions are handed off when they end."""
    deadline = time.monotonic() + timeout
    while _InFlight.count > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def _flushing_at_shutdown(send: Send) -> Send:
    """Servers end the process right after the lifespan shutdown (uvicorn re-raises SIGTERM, so ``atexit``
    never runs): what is still queued for Sentry is sent first, for at most sentry-sdk's
    ``shutdown_timeout`` (2 s by default)."""

    async def send_after_flushing(message: Message) -> None:
        if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            await _requests_finished(IN_FLIGHT_WAIT_SECONDS)
            flush_before_exit()
        await send(message)

    return send_after_flushing


def _as_asgi3(app: ASGIApp, asgi_version: Optional[int]) -> ASGIApp:
    """The app as an ASGI 3 callable: detected as asgiref does, or as ``asgi_version`` says."""
    if asgi_version is None:
        return guarantee_single_callable(app)  # type: ignore[no-untyped-call, no-any-return]
    if asgi_version == 3:
        return app
    if asgi_version == 2:

        async def asgi2_app(scope: Scope, receive: Receive, send: Send) -> None:
            await app(scope)(receive, send)

        return asgi2_app
    raise ValueError(f"asgi_version={asgi_version!r} is not valid: accepted values are None, 2, 3")


def _excluded_span_names(internal_spans: Union[bool, Sequence[str]]) -> list[str]:
    if internal_spans is True:
        return []
    if internal_spans is False:
        return list(SPAN_NAMES)
    wanted = set(internal_spans)
    unknown = wanted.difference(SPAN_NAMES)
    if unknown:
        raise ValueError(
            f"internal_spans={sorted(unknown)!r} is not valid: accepted values are True, False, "
            f"or a list of {', '.join(SPAN_NAMES)}"
        )
    return [name for name in SPAN_NAMES if name not in wanted]


def _describe_request(
    event: dict[str, Any],
    hint: Any,
    request: RequestContext,
    methods: frozenset[str] = frozenset(DEFAULT_HTTP_METHODS_TO_CAPTURE),
    origin: Optional[str] = None,
) -> Optional[dict[str, Any]]:
    """Scope event processor: request data on every event of the request, and its name on errors.
    Transactions of HTTP methods outside ``methods`` are dropped, as sentry-sdk's middleware does not
    start them (its default leaves out ``OPTIONS`` and ``HEAD``)."""
    if event.get("type") == "transaction":
        asgi_scope = request.asgi_scope
        if asgi_scope.get("type") == "http" and str(asgi_scope.get("method") or "").upper() not in methods:
            return None
        if origin is not None:
            trace_context = (event.get("contexts") or {}).get("trace")
            if isinstance(trace_context, dict):
                trace_context["origin"] = origin
    client = sentry_sdk.get_client()
    options = convert_options(client)
    asgi_scope = request.asgi_scope
    described = request_from_asgi(asgi_scope, options.collection)
    event["request"] = {**(event.get("request") or {}), **described}
    named_by_user = (event.get("transaction_info") or {}).get("source") == SOURCE_CUSTOM
    if event.get("type") != "transaction" and not (event.get("transaction") and named_by_user):
        named = custom_name_of(sentry_sdk.get_current_scope(), sentry_sdk.get_isolation_scope())
        if named is None:
            named = name_from_asgi(asgi_scope, request.transaction_style, request.current_route())
        if named is None:
            named = (f"{asgi_scope.get('root_path', '')}{asgi_scope.get('path', '')}", SOURCE_URL)
        event["transaction"], source = named
        event["transaction_info"] = {"source": source}
    return event


__all__ = ["SentryAsgiMiddleware"]
