"""Sentry transactions and error events from OpenTelemetry spans.

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware

otel_bridge.init()
app = SentryAsgiMiddleware(app)
"""

from otel_bridge._config.resolution import import_otel_safely

import_otel_safely()

from otel_bridge._collect.processor import SentrySpanProcessor  # noqa: E402
from otel_bridge._config.options import ConfigError  # noqa: E402
from otel_bridge._setup import flush, init  # noqa: E402
from otel_bridge.exporter import SentrySpanExporter  # noqa: E402
from otel_bridge.propagation import SentryPropagator  # noqa: E402

__all__ = ["ConfigError", "SentryPropagator", "SentrySpanExporter", "SentrySpanProcessor", "flush", "init"]
__version__ = "0.1.0"
