"""The relay service under otel_bridge: its httpx calls carry `traceparent`, `sentry-trace`, `baggage`."""

from __future__ import annotations

from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.apps.relay_routes import build_app

otel_bridge.init()
HTTPXClientInstrumentor().instrument()
app = SentryAsgiMiddleware(build_app())
