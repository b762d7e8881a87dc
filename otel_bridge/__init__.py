"""Sentry transactions and error events from OpenTelemetry spans.

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware

otel_bridge.init()
app = SentryAsgiMiddleware(app)
"""

from otel_bridge.bootstrap import flush, init
from otel_bridge.config import ConfigError
from otel_bridge.exporter import SentrySpanExporter
from otel_bridge.processor import SentrySpanProcessor
from otel_bridge.propagation import SentryPropagator

__all__ = ["ConfigError", "SentryPropagator", "SentrySpanExporter", "SentrySpanProcessor", "flush", "init"]
__version__ = "0.1.0"
