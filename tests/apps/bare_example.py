"""The example named by ``EXAMPLE`` (e.g. ``fastapi_app``) without the bridge: the framework app alone.

``otel_bridge.init`` becomes a no-op and ``SentryAsgiMiddleware`` the identity before the example is
imported, so ``app`` here answers exactly as the user's app would without otel_bridge.

An ASGI 2 app (a class: ``App(scope)`` then ``await instance(receive, send)``) is given the ASGI 3 form,
as uvicorn does by itself: hypercorn and granian only call ASGI 3 apps (the bridge's middleware adapts
ASGI 2 apps the same way, which is why the bridged example runs under all three).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any

import otel_bridge
import otel_bridge.asgi

EXAMPLES_DIR = str(Path(__file__).resolve().parents[2] / "examples")
if EXAMPLES_DIR not in sys.path:
    sys.path.insert(0, EXAMPLES_DIR)


def _no_init(**options: Any) -> None:
    return None


def _identity(app: Any, **options: Any) -> Any:
    return app


otel_bridge.init = _no_init
otel_bridge.asgi.SentryAsgiMiddleware = _identity  # type: ignore[assignment,misc]


def _asgi3(asgi2_app: Any) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asgi2_app(scope)(receive, send)

    return app


_example_app = importlib.import_module(os.environ["EXAMPLE"]).app
app = _asgi3(_example_app) if inspect.isclass(_example_app) else _example_app
