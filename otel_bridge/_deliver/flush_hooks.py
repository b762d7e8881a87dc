"""``sentry_sdk.flush()`` and ``Client.close()`` also wait for the bridge's background work.

Tools, scripts, serverless handlers and tests call sentry-sdk's ``flush``, not ``otel_bridge.flush()``.
Finished traces first wait in the bridge (each ``SentrySpanProcessor``'s worker queue; on the exporter
path, the ``BatchSpanProcessor`` in front of ``SentrySpanExporter``) before they reach sentry-sdk's client.
sentry-sdk has no public hook into its flush, so the active client's ``flush`` and ``close`` are wrapped
on the instance: first the bridge's queues are handed to the client, then the client's own flush runs
(session aggregates, batchers, transport) with what is left of the caller's timeout.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, Optional, Protocol

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

logger = logging.getLogger("otel_bridge")

_WRAPPED = "__otel_bridge_waits__"
_local = threading.local()
_said: set[str] = set()


class Drainable(Protocol):
    def drain(self, timeout: float) -> bool: ...


_drainables: weakref.WeakSet[Any] = weakref.WeakSet()


def register(drainable: Drainable) -> None:
    _drainables.add(drainable)


def unregister(drainable: Drainable) -> None:
    _drainables.discard(drainable)


def _say_once(key: str, message: str) -> None:
    if key not in _said:
        _said.add(key)
        logger.warning(message)


@contextmanager
def flushing_client() -> Iterator[None]:
    """On this thread, a flush the bridge itself started: the client's wrapped ``flush`` runs alone."""
    previous = getattr(_local, "inside", False)
    _local.inside = True
    try:
        yield
    finally:
        _local.inside = previous


def _processors_of(provider: TracerProvider) -> Optional[tuple[SpanProcessor, ...]]:
    """The span processors added to an SDK ``TracerProvider``; ``None`` when its layout is not the one
    checked: ``_active_span_processor._span_processors`` (a tuple), opentelemetry-sdk 1.28 and 1.45."""
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", None)
    return processors if isinstance(processors, tuple) else None


def _is_shut_down(processor: BatchSpanProcessor) -> bool:
    """``BatchSpanProcessor.force_flush`` after its shutdown only logs a warning (opentelemetry-sdk 1.28:
    ``done``; 1.45: ``_batch_processor._shutdown``)."""
    if getattr(processor, "done", False):
        return True
    return bool(getattr(getattr(processor, "_batch_processor", None), "_shutdown", False))


def _flush_exporter_path(deadline: float) -> bool:
    """Export what the global provider's ``BatchSpanProcessor`` in front of ``SentrySpanExporter`` still
    holds: ``SentrySpanExporter.export`` hands it to the client."""
    from otel_bridge.exporter import SentrySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return True
    processors = _processors_of(provider)
    if processors is None:
        _say_once(
            "layout",
            "otel_bridge: this opentelemetry-sdk's TracerProvider is laid out differently than expected; "
            "sentry_sdk.flush() flushes the whole provider instead of only the Sentry exporter's queue",
        )
        return provider.force_flush(_millis_left(deadline))
    done = True
    for processor in processors:
        if (
            isinstance(processor, BatchSpanProcessor)
            and isinstance(getattr(processor, "span_exporter", None), SentrySpanExporter)
            and not _is_shut_down(processor)
        ):
            done = processor.force_flush(_millis_left(deadline)) and done
    return done


def _millis_left(deadline: float) -> int:
    return max(0, int((deadline - time.monotonic()) * 1000))


def drain_bridge(timeout: float) -> bool:
    """Hand everything the bridge holds to sentry-sdk's client, within ``timeout`` seconds; ``False`` when
    time ran out."""
    deadline = time.monotonic() + timeout
    done = _flush_exporter_path(deadline)
    for drainable in list(_drainables):
        done = drainable.drain(max(0.0, deadline - time.monotonic())) and done
    return done


def _waiting(original: Callable[..., Any], client: Any) -> Callable[..., Any]:
    def wait_for_bridge_then(timeout: Optional[float] = None, callback: Optional[Any] = None) -> Any:
        if getattr(_local, "inside", False):
            return original(timeout=timeout, callback=callback)
        total = float(client.options.get("shutdown_timeout") or 0) if timeout is None else timeout
        deadline = time.monotonic() + total
        with flushing_client():
            try:
                drain_bridge(total)
            except Exception:
                logger.warning("otel_bridge could not flush its queues", exc_info=True)
            return original(timeout=max(0.0, deadline - time.monotonic()), callback=callback)

    setattr(wait_for_bridge_then, _WRAPPED, True)
    return wait_for_bridge_then


def wait_for_bridge(client: Any) -> None:
    """Make ``client.flush`` and ``client.close`` wait for the bridge's queues first. Idempotent.

    Wraps the two methods on the client instance, which sentry-sdk's public API has no hook for; checked
    against sentry-sdk 2.57 and 2.75: ``_Client`` has no ``__slots__``, both methods take
    ``(timeout=None, callback=None)``, ``sentry_sdk.flush()`` calls ``get_client().flush`` and ``close``
    flushes through ``self.flush``. Where the assumption fails, it says so once: ``otel_bridge.flush()``
    then still waits for everything.
    """
    if not client.is_active() or getattr(client.flush, _WRAPPED, False):
        return
    try:
        flush, close = client.flush, client.close
        client.flush = _waiting(flush, client)
        client.close = _waiting(close, client)
    except (AttributeError, TypeError):
        _say_once(
            "wrap",
            "otel_bridge: this sentry-sdk client cannot be extended; sentry_sdk.flush() does not wait for "
            "the bridge's queues, call otel_bridge.flush() instead",
        )
