"""The seed example's ASGI 2 app under sentry-sdk's own ASGI middleware, for comparison."""

from __future__ import annotations

import os

import sentry_sdk
from sentry_sdk.integrations.asgi import SentryAsgiMiddleware

sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], traces_sample_rate=1.0, auto_enabling_integrations=False)

from seed_app import SeedApp  # noqa: E402

app = SentryAsgiMiddleware(SeedApp)
