"""The shop where the user initialised sentry-sdk first (all its auto integrations, its own tracing on)."""

from __future__ import annotations

import os

import sentry_sdk

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.apps.shop import build_app

sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], traces_sample_rate=1.0)
otel_bridge.init()
app = SentryAsgiMiddleware(build_app())
