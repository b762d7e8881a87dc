"""The one variant builder: the app under test and what each variant wraps it in.

Every benchmark (``overhead.py`` in-process, ``server.py`` under uvicorn for ``e2e.py``, ``rss.py`` and
``delivery.py``) builds its app here, so that a variant means the same thing in every figure. A variant
is built in the process that measures it (OTel and sentry-sdk keep global state, so one per process);
its imports happen inside ``build``.

To add a peer, add one ``Spec`` to ``SPECS``: its name is what ``--variants`` and the targets of
``report.py`` use.
"""

from __future__ import annotations

from collections.abc import Awaitable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCENARIOS = ("normal", "error")
BIG_QUEUE = 100_000

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
    """The error scenario: every request raises (a server answers 500 and logs the traceback)."""
    if scope["type"] != "http":
        return
    SERVED.count += 1
    raise AppError("benchmark: this request fails")


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
    sends: bool  # reports to the Sentry endpoint (its delivered share is measured)
    build: Callable[[ASGIApp, str, Optional[int]], Variant]


def discarding_tracer_provider() -> tuple[TracerProvider, Callable[[], int]]:
    """An SDK ``TracerProvider`` (set as the global one) with a ``BatchSpanProcessor`` and an exporter
    that discards; also a callable that says how many spans it has exported so far."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DiscardingExporter(SpanExporter):
        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

    exporter = DiscardingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider, lambda: exporter.spans


def _bare(app: ASGIApp, dsn: str, connections: Optional[int]) -> Variant:
    return Variant("bare", app)


def _otel(app: ASGIApp, dsn: str, connections: Optional[int]) -> Variant:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    provider, exported = discarding_tracer_provider()

    def counters() -> dict[str, Any]:
        return {"otel_spans_exported": exported()}

    def close(timeout: float) -> dict[str, Any]:
        flushed = provider.force_flush(int(timeout * 1000))
        provider.shutdown()
        return {"flushed": flushed, **counters()}

    return Variant(
        "otel",
        OpenTelemetryMiddleware(app, exclude_spans=["receive", "send"], tracer_provider=provider),
        lambda timeout: provider.force_flush(int(timeout * 1000)),
        close,
        counters,
    )


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
SPECS: dict[str, Spec] = {
    "bare": Spec("the app alone", False, _bare),
    "otel": Spec(
        "OpenTelemetryMiddleware(app, exclude_spans=[receive, send]), SDK TracerProvider, "
        "BatchSpanProcessor, an exporter that discards",
        False,
        _otel,
    ),
    "sentry": Spec(
        "sentry-sdk's SentryAsgiMiddleware, sentry_sdk.init(dsn, traces_sample_rate=1.0): a queue of 100, "
        "one sending thread",
        True,
        _sentry("sentry", {}),
    ),
    "sentry-deliver-all": Spec(
        f"sentry-sdk's SentryAsgiMiddleware, traces_sample_rate=1.0, transport_queue_size={BIG_QUEUE}: "
        "nothing dropped",
        True,
        _sentry("sentry-deliver-all", _DELIVER_ALL),
    ),
    "bridge": Spec(
        "otel_bridge.init(dsn), otel_bridge.asgi.SentryAsgiMiddleware(app), defaults",
        True,
        _bridge("bridge", {}),
    ),
    "bridge-deliver-all": Spec(
        f"the bridge with transport_queue_size and max_queued_traces={BIG_QUEUE}",
        True,
        _bridge("bridge-deliver-all", {**_DELIVER_ALL, "max_queued_traces": BIG_QUEUE}),
    ),
    "bridge-sdk-transport": Spec(
        "the bridge on sentry-sdk's HttpTransport: what the transport alone changes",
        True,
        _bridge("bridge-sdk-transport", {}),
    ),
}
NAMES = tuple(SPECS)


def sends(name: str) -> bool:
    return SPECS[name].sends


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
