"""The OpenTelemetry SDK's ``TracerProvider`` and ``BatchSpanProcessor``: which processors a provider has,
and whether a batch processor was shut down, which the SDK has no public getters for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from otel_bridge._compat import holds, reach

PROVIDER_PROCESSORS = "TracerProvider span processors"
BATCH_PROCESSOR_SHUTDOWN = "BatchSpanProcessor shut-down state"


@reach(
    PROVIDER_PROCESSORS,
    target="TracerProvider._active_span_processor._span_processors (a tuple)",
    verified="opentelemetry-sdk 1.28, 1.45",
    fallback="sentry_sdk.flush() flushes the whole TracerProvider, and doctor cannot list its processors",
)
def _processors_listed() -> bool:
    provider = TracerProvider()
    added = SpanProcessor()
    provider.add_span_processor(added)
    try:
        found = _processors(provider)
        return found is not None and found[-1] is added
    finally:
        provider.shutdown()


def _processors(provider: TracerProvider) -> Optional[tuple[SpanProcessor, ...]]:
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", None)
    return processors if isinstance(processors, tuple) else None


def span_processors_of(provider: TracerProvider) -> Optional[tuple[SpanProcessor, ...]]:
    """The span processors added to an SDK ``TracerProvider``; ``None`` where they cannot be read."""
    return _processors(provider) if holds(PROVIDER_PROCESSORS) else None


class _NothingExported(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _shut_down(processor: Any) -> bool:
    # opentelemetry-sdk 1.28 says ``done``; 1.45 ``_batch_processor._shutdown``
    if getattr(processor, "done", False):
        return True
    return bool(getattr(getattr(processor, "_batch_processor", None), "_shutdown", False))


@reach(
    BATCH_PROCESSOR_SHUTDOWN,
    target="BatchSpanProcessor.done (1.28) or BatchSpanProcessor._batch_processor._shutdown (1.45)",
    verified="opentelemetry-sdk 1.28, 1.45",
    fallback="a shut-down BatchSpanProcessor is flushed anyway (OpenTelemetry logs a warning for it)",
)
def _shutdown_readable() -> bool:
    processor = BatchSpanProcessor(_NothingExported())
    running = _shut_down(processor)
    processor.shutdown()  # type: ignore[no-untyped-call,unused-ignore]
    return not running and _shut_down(processor)


def is_shut_down(processor: BatchSpanProcessor) -> bool:
    """Whether ``processor`` was shut down (``False`` where that cannot be read)."""
    return holds(BATCH_PROCESSOR_SHUTDOWN) and _shut_down(processor)
