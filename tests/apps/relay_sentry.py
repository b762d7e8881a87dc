"""The relay service under plain sentry-sdk (its ASGI middleware and httpx integration), no otel_bridge."""

from __future__ import annotations

import os

import sentry_sdk
from sentry_sdk.integrations.asgi import SentryAsgiMiddleware
from sentry_sdk.integrations.httpx import HttpxIntegration

from tests.apps.relay_routes import build_app

sentry_sdk.init(
    dsn=os.environ["SENTRY_DSN"],
    traces_sample_rate=float(os.environ.get("RELAY_TRACES_SAMPLE_RATE", "1.0")),
    auto_enabling_integrations=False,
    integrations=[HttpxIntegration()],
)
app = SentryAsgiMiddleware(build_app())
