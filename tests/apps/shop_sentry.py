"""The shop under sentry-sdk's own ASGI middleware: the reference for what a Sentry user sees."""

from __future__ import annotations

import os

import sentry_sdk
from sentry_sdk.integrations.asgi import SentryAsgiMiddleware

from tests.apps.shop import build_app

sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], traces_sample_rate=1.0, auto_enabling_integrations=False)
app = SentryAsgiMiddleware(build_app())
