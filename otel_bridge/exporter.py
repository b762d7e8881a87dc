"""``SentrySpanExporter``: the zero-code path. A plain ``SpanExporter`` for a ``BatchSpanProcessor``.

    OTEL_TRACES_EXPORTER=otlp,sentry SENTRY_DSN=... opentelemetry-instrument uvicorn app:app

Everything comes from span data: traces are reassembled across batches, request data is rebuilt from the
server span's attributes. What only the middleware can know (tags and user set in views, breadcrumbs,
the live exception object) is not available here.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import sentry_sdk
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_bridge import _setup
from otel_bridge._collect.assembly import TraceAssembler
from otel_bridge._collect.processor import warn_without_client
from otel_bridge._config.options import read_config
from otel_bridge._deliver.capture import send_trace
from otel_bridge._drops import DropCounter
from otel_bridge._tracing import sampling

logger = logging.getLogger("otel_bridge")


class SentrySpanExporter(SpanExporter):
    """Constructible with no arguments: the DSN and options come from ``SENTRY_*``/``OTEL_BRIDGE_*``."""

    def __init__(
        self,
        *,
        max_pending_spans: int = 20_000,
        max_spans_per_trace: int = 1000,
        root_timeout_seconds: float = 60.0,
        **sentry_options: Any,
    ) -> None:
        self._config = read_config(sentry_options, os.environ)
        self._assembler = TraceAssembler(
            max_pending_spans=max_pending_spans,
            max_spans_per_trace=max_spans_per_trace,
            root_timeout_seconds=root_timeout_seconds,
        )
        self._lock = threading.Lock()
        self.drops = DropCounter()
        # The client starts now, not with the first batch: ``sentry_sdk.capture_*`` calls in the app's
        # first requests must already reach Sentry.
        self._start_client()

    def _start_client(self) -> None:
        # once it said it is off (no DSN, OTEL_SDK_DISABLED) it does not say so again at every batch
        self._client_expected = False
        if self._config.disabled:
            logger.warning("otel_bridge's exporter is off: OTEL_SDK_DISABLED=true")
        elif not self._config.dsn and not sentry_sdk.get_client().is_active():
            logger.warning("otel_bridge's exporter is off: no Sentry DSN (set SENTRY_DSN)")
        else:
            self._client_expected = True
            _setup.start_sentry(self._config, Resource.create().attributes)
            sampling.configure(self._config.traces_sample_rate)
            _setup.install_event_processor()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if _setup.active_processor() is not None:
            return SpanExportResult.SUCCESS
        with self._lock:
            if not sentry_sdk.get_client().is_active():
                if self._client_expected:
                    warn_without_client("SentrySpanExporter")
                return SpanExportResult.SUCCESS
            assembled = self._assembler.add(spans)
        if assembled.dropped_spans:
            self.drops.count("buffer_overflow", "span", assembled.dropped_spans)
        for trace in assembled.finished:
            try:
                send_trace(trace, None, None)
            except Exception:
                logger.exception("otel_bridge could not send a trace to Sentry")
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        client = sentry_sdk.get_client()
        if client.is_active():
            client.flush(timeout=timeout_millis / 1000)
        return True

    def shutdown(self) -> None:
        with self._lock:
            dropped = self._assembler.drain()
        if dropped:
            self.drops.count("insufficient_data", "span", dropped)
        self.force_flush(2000)
