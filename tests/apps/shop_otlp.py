"""The stock app under otel_bridge, with another OTel backend from ``OTEL_TRACES_EXPORTER`` (the multi-backend
set-up): ``otel_bridge.init()`` creates the provider and its exporters, then the middleware."""

from __future__ import annotations

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.apps.stock import build_app

otel_bridge.init()
app = SentryAsgiMiddleware(build_app(), transaction_style="url")
