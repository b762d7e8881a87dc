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
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_bridge._compat import holds
from otel_bridge._compat.otel_sdk import is_shut_down, span_processors_of
from otel_bridge._compat.sentry_client import CLIENT_FLUSH

logger = logging.getLogger("otel_bridge")

_WRAPPED = "__otel_bridge_waits__"
_local = threading.local()


class Drainable(Protocol):
    def drain(self, timeout: float) -> bool: ...


_drainables: weakref.WeakSet[Any] = weakref.WeakSet()


def register(drainable: Drainable) -> None:
    _drainables.add(drainable)


def unregister(drainable: Drainable) -> None:
    _drainables.discard(drainable)


def is_registered(drainable: object) -> bool:
    return drainable in _drainables


@contextmanager
def flushing_client() -> Iterator[None]:
    """On this thread, a flush the bridge itself started: the client's wrapped ``flush`` runs alone."""
    previous = getattr(_local, "inside", False)
    _local.inside = True
    try:
        yield
    finally:
        _local.inside = previous


def _flush_exporter_path(deadline: float) -> bool:
    """Export what the global provider's ``BatchSpanProcessor`` in front of ``SentrySpanExporter`` still
    holds: ``SentrySpanExporter.export`` hands it to the client."""
    from otel_bridge.exporter import SentrySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return True
    processors = span_processors_of(provider)
    if processors is None:
        return provider.force_flush(_millis_left(deadline))
    done = True
    for processor in processors:
        if (
            isinstance(processor, BatchSpanProcessor)
            and isinstance(getattr(processor, "span_exporter", None), SentrySpanExporter)
            and not is_shut_down(processor)
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

    Wraps the two methods on the client instance, which sentry-sdk's public API has no hook for (a reach
    of ``_compat.sentry_client``); where that does not hold, ``otel_bridge.flush()`` still waits for
    everything.
    """
    if not client.is_active() or getattr(client.flush, _WRAPPED, False) or not holds(CLIENT_FLUSH):
        return
    flush, close = client.flush, client.close
    client.flush = _waiting(flush, client)
    client.close = _waiting(close, client)
