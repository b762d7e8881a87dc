"""The relay service under OpenTelemetry alone (default W3C propagators), no Sentry: a W3C-only caller."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from tests.apps.relay_routes import build_app

trace.set_tracer_provider(TracerProvider())
HTTPXClientInstrumentor().instrument()
app = OpenTelemetryMiddleware(build_app())
