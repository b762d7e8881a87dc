"""The example named by ``EXAMPLE`` in the variant named by ``VARIANT``:

* ``url``: ``SentryAsgiMiddleware(app, transaction_style="url")``;
* ``adopted``: the user called ``sentry_sdk.init()`` with its defaults first (so sentry-sdk's own framework
  integrations are active), and ``otel_bridge.init()`` adopts that client.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from pathlib import Path

import sentry_sdk

import otel_bridge.asgi

EXAMPLES_DIR = str(Path(__file__).resolve().parents[2] / "examples")
if EXAMPLES_DIR not in sys.path:
    sys.path.insert(0, EXAMPLES_DIR)

variant = os.environ["VARIANT"]
if variant == "url":
    otel_bridge.asgi.SentryAsgiMiddleware = functools.partial(  # type: ignore[misc]
        otel_bridge.asgi.SentryAsgiMiddleware, transaction_style="url"
    )
elif variant == "adopted":
    sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], traces_sample_rate=1.0)
else:
    raise SystemExit(f"VARIANT={variant!r} is not valid: accepted values are url, adopted")

app = importlib.import_module(os.environ["EXAMPLE"]).app
