"""The shop under otel_bridge: ``otel_bridge.init()`` from the environment, then the middleware."""

from __future__ import annotations

import os

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.apps.shop import build_app

otel_bridge.init()
app = SentryAsgiMiddleware(
    build_app(), transaction_style=os.environ.get("TEST_TRANSACTION_STYLE", "endpoint")
)
