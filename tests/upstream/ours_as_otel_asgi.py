"""``opentelemetry.instrumentation.asgi`` as OpenTelemetry's own tests see it, with our middleware in it.

``OpenTelemetryMiddleware(app, **kwargs)`` builds ``SentryAsgiMiddleware(app, **kwargs)`` with the bridge on
(``otel_bridge.init()`` on the tracer provider the test installed), so the spans those tests check are the
ones our middleware makes while the Sentry side runs too. Every other name is OpenTelemetry's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional

import opentelemetry.instrumentation.asgi as _otel_asgi

from otel_bridge.asgi import SPAN_NAMES, SentryAsgiMiddleware

bridge_on: Optional[Callable[[], None]] = None
"""Set by the suite's conftest: turns the bridge on for the tracer provider the running test installed."""


def OpenTelemetryMiddleware(app: Any, **kwargs: Any) -> SentryAsgiMiddleware:
    """OTel's middleware makes its per-message ``receive``/``send`` spans unless ``exclude_spans`` names
    them; ours makes them when ``internal_spans`` asks. Everything else is passed as it is."""
    if bridge_on is not None:
        bridge_on()
    exclude: Optional[Sequence[str]] = kwargs.pop("exclude_spans", None)
    internal = [name for name in SPAN_NAMES if name not in (exclude or ())]
    return SentryAsgiMiddleware(app, internal_spans=internal, **kwargs)


def __getattr__(name: str) -> Any:
    return getattr(_otel_asgi, name)
