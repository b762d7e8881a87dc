"""The one variant builder: the app under test and what each variant wraps it in.

Every benchmark (``overhead.py`` in-process, ``server.py`` under uvicorn for ``e2e.py``, ``rss.py`` and
``delivery.py``) builds its app here, so that a variant means the same thing in every figure. A variant
is built in the process that measures it (OTel and sentry-sdk keep global state, so one per process);
its imports happen inside ``build``.

To add a peer, add one ``Spec`` to ``SPECS``: its name is what ``--variants`` and the targets of
``report.py`` use.

Every variant that sends, sends to ``endpoint.py`` (its own process): Sentry envelopes at the DSN, OTLP/HTTP
trace exports at ``otlp_url(dsn)`` (another OTel backend) or, for sentry-sdk's ``OTLPIntegration``, at the
DSN's OTLP path. What counts as *delivered* is ``Spec.delivers``: a Sentry transaction, or an OTLP span
without a parent (the request's server span) for the OTLP variants.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCENARIOS = ("normal", "error")
BIG_QUEUE = 100_000
# what a variant delivers, one per request (endpoint.py counts both, per project)
TRANSACTION, OTLP_ROOT_SPAN = "transaction", "otlp_root_span"
# where a server logs an exception escaping the app, and how (uvicorn's RequestResponseCycle.run_asgi)
SERVER_LOGGER = "uvicorn.error"
SERVER_LOG_MESSAGE = "Exception in ASGI application\n"

# ------------------------------------------------------------------------------------------- the app

BODY = b"ok"
RESPONSE_START: dict[str, Any] = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
}
RESPONSE_BODY: dict[str, Any] = {"type": "http.response.body", "body": BODY, "more_body": False}


class AppError(RuntimeError):
    """What the app raises on every request of the error scenario."""


@dataclass
class Served:
    """Requests that reached the app, inside every middleware (a broken variant cannot look fast)."""

    count: int = 0


SERVED = Served()


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """The normal scenario: ``200 ok`` with a content-length header, nothing else."""
    if scope["type"] != "http":
        return
    SERVED.count += 1
    await send(dict(RESPONSE_START))
    await send(dict(RESPONSE_BODY))


async def failing(scope: Scope, receive: Receive, send: Send) -> None:
    """The error scenario: every request raises in app code, with a few local variables as a view has (a
    server answers 500 and logs the traceback: ``SERVER_LOGGER``)."""
    if scope["type"] != "http":
        return
    SERVED.count += 1
    items = ["widget", "gadget", "gizmo"]
    order: dict[str, Any] = {"id": 4217, "items": items, "currency": "EUR"}
    customer = "customer-42"
    quantity = len(items)
    unit_price = 19.99
    raise AppError(f"benchmark: order {order['id']} of {customer} failed ({quantity} x {unit_price})")


APPS: dict[str, ASGIApp] = {"normal": hello, "error": failing}

# -------------------------------------------------------------------------------------- the variants


def _no_flush(timeout: float) -> bool:
    return True


def _nothing() -> dict[str, Any]:
    return {}


@dataclass
class Variant:
    """One variant, built: the wrapped app and how to wait for its background work.

    ``flush``: wait for queued work, the process goes on (True when done in time); ``close``: flush and
    shut down at exit, returning the final ``counters``; ``counters``: cumulative figures only the
    variant knows (the bridge's drop counters, spans OTel exported); ``info``: what it runs on."""

    name: str
    app: ASGIApp
    flush: Callable[[float], bool] = _no_flush
    close: Callable[[float], dict[str, Any]] = lambda timeout: {}
    counters: Callable[[], dict[str, Any]] = _nothing
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Spec:
    description: str
    # what reaches endpoint.py once per request (its delivered share is measured): TRANSACTION or
    # OTLP_ROOT_SPAN; None: sends nothing
    delivers: Optional[str]
    build: Callable[[ASGIApp, str, Optional[int]], Variant]
    errors: bool = True  # when it sends: error events too (a Sentry SDK), not only spans


def otlp_url(dsn: str) -> str:
    """The OTLP/HTTP traces URL of ``endpoint.py`` for the project of ``dsn`` (another OTel backend)."""
    parts = urlsplit(dsn)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}/otlp/{parts.path.strip('/')}/v1/traces"


def batching_tracer_provider(exporter: SpanExporter, max_queue_size: Optional[int] = None) -> TracerProvider:
    """An SDK ``TracerProvider``, set as the global one, with a ``BatchSpanProcessor`` on ``exporter``."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=max_queue_size))
    trace.set_tracer_provider(provider)
    return provider


def otel_middleware(app: ASGIApp, provider: Any) -> ASGIApp:
    """OTel's ASGI middleware as every OTel variant has it: one server span per request."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    middleware: ASGIApp = OpenTelemetryMiddleware(
        app, exclude_spans=["receive", "send"], tracer_provider=provider
    )
    return middleware


def discarding_tracer_provider() -> tuple[TracerProvider, Callable[[], int]]:
    """An SDK ``TracerProvider`` (set as the global one) with a ``BatchSpanProcessor`` and an exporter
    that discards; also a callable that says how many spans it has exported so far."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class DiscardingExporter(SpanExporter):
        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

    exporter = DiscardingExporter()
    provider = batching_tracer_provider(exporter)
    return provider, lambda: exporter.spans


def _bare(app: ASGIApp, dsn: str, connections: Optional[int]) -> Variant:
    return Variant("bare", app)


def _otel_variant(
    name: str,
    app: ASGIApp,
    provider: TracerProvider,
    counters: Callable[[], dict[str, Any]] = _nothing,
    info: Optional[dict[str, Any]] = None,
    then: Optional[Callable[[float], bool]] = None,
) -> Variant:
    """OTel's middleware on ``provider``. Flushing is the provider's (its ``BatchSpanProcessor`` exports
    what it holds, without calling the exporter's ``force_flush``), then ``then``'s: an exporter's own
    background work."""

    def flush(timeout: float) -> bool:
        flushed = provider.force_flush(int(timeout * 1000))
        return (then(timeout) if then is not None else True) and flushed

    def close(timeout: float) -> dict[str, Any]:
        flushed = flush(timeout)
        provider.shutdown()
        return {"flushed": flushed, **counters()}

    return Variant(name, otel_middleware(app, provider), flush, close, counters, info or {})


def _otel(app: ASGIApp, dsn: str, connections: Optional[int]) -> Variant:
    provider, exported = discarding_tracer_provider()
    return _otel_variant("otel", app, provider, lambda: {"otel_spans_exported": exported()})


def _otel_otlp(app: ASGIApp, dsn: str, connections: Optional[int]) -> Variant:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    url = otlp_url(dsn)
    # a queue that holds a whole round: nothing dropped, so CPU compares at equal delivery
    provider = batching_tracer_provider(OTLPSpanExporter(endpoint=url), max_queue_size=BIG_QUEUE)
    return _otel_variant("otel+otlp", app, provider, info={"otlp_endpoint": url, "bsp_queue": BIG_QUEUE})


def _sentry_otlp(app: ASGIApp, dsn: str, connections: Optional[int]) -> Variant:
    import os

    import sentry_sdk
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from sentry_sdk.integrations.otlp import OTLPIntegration

    # the integration builds its own BatchSpanProcessor: its queue size comes from the environment
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(BIG_QUEUE)
    sentry_sdk.init(
        dsn=dsn,
        integrations=[OTLPIntegration(capture_exceptions=True)],
        transport_queue_size=BIG_QUEUE,
    )
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        raise RuntimeError(f"OTLPIntegration set no SDK TracerProvider ({type(provider).__name__})")

    def flush(timeout: float) -> bool:
        flushed = provider.force_flush(int(timeout * 1000))
        sentry_sdk.flush(timeout=timeout)
        return flushed

    def close(timeout: float) -> dict[str, Any]:
        flushed = flush(timeout)
        provider.shutdown()
        sentry_sdk.get_client().close(timeout=timeout)
        return {"flushed": flushed}

    info = {**_transport_info(), "bsp_queue": BIG_QUEUE}
    return Variant("sentry-otlp", otel_middleware(app, provider), flush, close, info=info)


def _zero_code(app: ASGIApp, dsn: str, connections: Optional[int]) -> Variant:
    import otel_bridge

    # by hand what OTEL_TRACES_EXPORTER=sentry with SENTRY_DSN sets up; queues that hold a whole round
    exporter = otel_bridge.SentrySpanExporter(
        dsn=dsn, transport_queue_size=BIG_QUEUE, max_queued_traces=BIG_QUEUE
    )
    provider = batching_tracer_provider(exporter, max_queue_size=BIG_QUEUE)

    def counters() -> dict[str, Any]:
        totals = exporter.drops.totals()
        return {"bridge_drops": {f"{reason}:{category}": n for (reason, category), n in totals.items()}}

    info = {**_transport_info(), "bsp_queue": BIG_QUEUE, "otel_bridge_file": otel_bridge.__file__}
    # the exporter hands each trace to the bridge's background queues: otel_bridge.flush waits for those
    return _otel_variant("zero-code", app, provider, counters, info, then=otel_bridge.flush)


def _transport_info() -> dict[str, Any]:
    import sentry_sdk

    client = sentry_sdk.get_client()
    transport = client.transport
    return {
        "transport": type(transport).__name__,
        "transport_queue_size": client.options.get("transport_queue_size"),
        "transport_max_connections": getattr(transport, "max_connections", 1),
        "worker": type(getattr(transport, "_worker", None)).__name__,
    }


def _sentry(name: str, options: dict[str, Any]) -> Callable[[ASGIApp, str, Optional[int]], Variant]:
    def build(app: ASGIApp, dsn: str, connections: Optional[int]) -> Variant:
        import time

        import sentry_sdk
        from sentry_sdk.integrations.asgi import SentryAsgiMiddleware

        sentry_sdk.init(dsn=dsn, traces_sample_rate=1.0, **options)

        def flush(timeout: float) -> bool:
            started = time.monotonic()
            sentry_sdk.flush(timeout=timeout)
            return time.monotonic() - started < timeout

        def close(timeout: float) -> dict[str, Any]:
            sentry_sdk.get_client().close(timeout=timeout)
            return {}

        return Variant(name, SentryAsgiMiddleware(app), flush, close, info=_transport_info())

    return build


def _bridge(name: str, options: dict[str, Any]) -> Callable[[ASGIApp, str, Optional[int]], Variant]:
    def build(app: ASGIApp, dsn: str, connections: Optional[int]) -> Variant:
        import sentry_sdk

        import otel_bridge
        from otel_bridge.asgi import SentryAsgiMiddleware

        chosen = dict(options)
        if name == "bridge-sdk-transport":
            from sentry_sdk.transport import HttpTransport

            chosen["transport"] = HttpTransport
        elif connections is not None:
            from otel_bridge.transport import ConcurrentHttpTransport

            chosen["transport"] = ConcurrentHttpTransport.with_max_connections(connections)
        processor = otel_bridge.init(dsn=dsn, **chosen)
        if processor is None:
            raise RuntimeError("otel_bridge.init() returned None: the bridge is off")

        def counters() -> dict[str, Any]:
            totals = processor.drops.totals()
            return {"bridge_drops": {f"{reason}:{category}": n for (reason, category), n in totals.items()}}

        def close(timeout: float) -> dict[str, Any]:
            flushed = otel_bridge.flush(timeout)
            sentry_sdk.get_client().close(timeout=timeout)
            return {"flushed": flushed, **counters()}

        info = {**_transport_info(), "otel_bridge_file": otel_bridge.__file__}
        return Variant(name, SentryAsgiMiddleware(app), otel_bridge.flush, close, counters, info)

    return build


_DELIVER_ALL = {"transport_queue_size": BIG_QUEUE}
# sentry-sdk at its best: a queue that holds a whole round, and TCP_NODELAY said explicitly. Given
# socket_options, sentry-sdk hands urllib3 exactly those; without them urllib3 keeps its defaults (TCP_NODELAY
# among them) unless keep_alive=True replaces them with keep-alive probes only, and then Nagle holds back
# each POST's body (urllib3 writes headers and body separately) until the receiver's delayed ACK.
_SENTRY_AT_BEST = {**_DELIVER_ALL, "socket_options": [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]}
SPECS: dict[str, Spec] = {
    "bare": Spec("the app alone", None, _bare),
    "otel": Spec(
        "OpenTelemetryMiddleware(app, exclude_spans=[receive, send]), SDK TracerProvider, "
        "BatchSpanProcessor, an exporter that discards",
        None,
        _otel,
    ),
    "otel+otlp": Spec(
        "OTel's middleware, TracerProvider, BatchSpanProcessor (max_queue_size="
        f"{BIG_QUEUE}), OTLPSpanExporter (OTLP/HTTP protobuf) to a loopback receiver: one more OTel backend",
        OTLP_ROOT_SPAN,
        _otel_otlp,
        errors=False,
    ),
    "sentry-otlp": Spec(
        "OTel's middleware, sentry_sdk.init(dsn, integrations=[OTLPIntegration(capture_exceptions=True)]): "
        f"spans over OTLP/HTTP to the DSN's OTLP endpoint (OTEL_BSP_MAX_QUEUE_SIZE={BIG_QUEUE}), errors as "
        "events; no transactions, no request data",
        OTLP_ROOT_SPAN,
        _sentry_otlp,
    ),
    "zero-code": Spec(
        "OTel's middleware, TracerProvider, BatchSpanProcessor(otel_bridge.SentrySpanExporter(dsn)) (what "
        f"OTEL_TRACES_EXPORTER=sentry sets up), queues of {BIG_QUEUE}: the bridge's exporter path",
        TRANSACTION,
        _zero_code,
    ),
    "sentry": Spec(
        "sentry-sdk's SentryAsgiMiddleware, sentry_sdk.init(dsn, traces_sample_rate=1.0): a queue of 100, "
        "one sending thread",
        TRANSACTION,
        _sentry("sentry", {}),
    ),
    "sentry-deliver-all": Spec(
        f"sentry-sdk's SentryAsgiMiddleware at its best: traces_sample_rate=1.0, transport_queue_size="
        f"{BIG_QUEUE} (nothing dropped), socket_options=[TCP_NODELAY]",
        TRANSACTION,
        _sentry("sentry-deliver-all", _SENTRY_AT_BEST),
    ),
    "bridge": Spec(
        "otel_bridge.init(dsn), otel_bridge.asgi.SentryAsgiMiddleware(app), defaults",
        TRANSACTION,
        _bridge("bridge", {}),
    ),
    "bridge-deliver-all": Spec(
        f"the bridge with transport_queue_size and max_queued_traces={BIG_QUEUE}",
        TRANSACTION,
        _bridge("bridge-deliver-all", {**_DELIVER_ALL, "max_queued_traces": BIG_QUEUE}),
    ),
    "bridge-sdk-transport": Spec(
        "the bridge on sentry-sdk's HttpTransport: what the transport alone changes",
        TRANSACTION,
        _bridge("bridge-sdk-transport", {}),
    ),
}
NAMES = tuple(SPECS)


def sends(name: str) -> bool:
    """Whether ``name`` sends anything to ``endpoint.py`` (its delivered share is measured)."""
    return SPECS[name].delivers is not None


def reports_errors(name: str) -> bool:
    """Whether ``name`` sends error events to ``endpoint.py`` (their share is measured)."""
    return sends(name) and SPECS[name].errors


def delivered_item(name: str) -> str:
    """The item ``endpoint.py`` counts once per request ``name`` delivers (a transaction by default)."""
    return SPECS[name].delivers or TRANSACTION


def build(name: str, scenario: str, dsn: str, connections: Optional[int] = None) -> Variant:
    """Set up variant ``name``'s global state around the ``scenario``'s app. ``connections``: the bridge
    on ``ConcurrentHttpTransport.with_max_connections(connections)``."""
    return SPECS[name].build(APPS[scenario], dsn, connections)


def pick(text: str, allowed: Sequence[str] = NAMES) -> list[str]:
    """A comma-separated list of names, each one of ``allowed``; ``ValueError`` saying which are."""
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    if not chosen or any(name not in allowed for name in chosen):
        raise ValueError(f"{text!r}: accepted values are {', '.join(allowed)}")
    return chosen
