"""otel_bridge switched on against a receiver and off again, once per upstream test.

``otel_bridge.init()`` wires itself once per process; the upstream suites call it once per test, so the
state it keeps (its processor, the global tracer provider, frozen sampling contexts, the sentry-sdk client
and scopes) is undone after each, as the tests in ``tests/`` undo it.
"""

from __future__ import annotations

from typing import Any, Optional

import sentry_sdk
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.test.globals_test import reset_trace_globals

import otel_bridge
from otel_bridge import SentrySpanProcessor
from otel_bridge import _setup as bootstrap
from otel_bridge._tracing.sampling import frozen_contexts
from otel_bridge.transport import ConcurrentHttpTransport

# One connection: envelopes reach the receiver in the order they were handed to the transport, which is the
# order sentry-sdk's tests read them in (message, error, transaction).
IN_ORDER_TRANSPORT = ConcurrentHttpTransport.with_max_connections(1)
CLOSE_TIMEOUT_SECONDS = 5.0


def bridge_on(dsn: str, **options: Any) -> None:
    """``otel_bridge.init(dsn=dsn, **options)`` on the global tracer provider (created if there is none);
    a sentry-sdk client already active is adopted."""
    if not sentry_sdk.get_client().is_active():
        options.setdefault("transport", IN_ORDER_TRANSPORT)
    otel_bridge.init(dsn=dsn, **options)


def _forget_processor() -> Optional[SentrySpanProcessor]:
    processor = bootstrap.active_processor()
    bootstrap._processor = None
    frozen_contexts.clear()
    return processor


def processor_off() -> None:
    """The bridge's processor stopped and forgotten, so that the next ``init()`` wires a new one (its
    tracer provider, not ours, stays up)."""
    processor = _forget_processor()
    if processor is not None:
        processor.shutdown()


def sentry_off() -> None:
    """The sentry-sdk client closed (what it holds is sent first) and the scopes emptied."""
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=CLOSE_TIMEOUT_SECONDS)
    sentry_sdk.get_global_scope().set_client(None)
    for scope in (
        sentry_sdk.get_current_scope(),
        sentry_sdk.get_isolation_scope(),
        sentry_sdk.get_global_scope(),
    ):
        scope.clear()


def bridge_off() -> None:
    """Everything ``bridge_on`` set up undone: the global tracer provider it created shut down (its
    processors with it, the bridge's included) and unset, the client closed."""
    _forget_processor()
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
    sentry_off()
    reset_trace_globals()
