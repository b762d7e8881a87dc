"""conftest.py for OpenTelemetry contrib's ``tests/test_asgi_middleware.py``, run against otel_bridge.

Copied as ``conftest.py`` next to the extracted file by ``tests/test_upstream_suites.py``; written for this
project. The file's ``otel_asgi`` is ``tests/upstream/ours_as_otel_asgi.py``: its
``OpenTelemetryMiddleware(app, **kwargs)`` is ``SentryAsgiMiddleware(app, **kwargs)``, built after
``otel_bridge.init()`` has put the bridge's processor on the tracer provider the test installed (OTel's
``TestBase`` installs a new one per test). What the bridge sends goes to a loopback receiver
(``tests/receiver.py``); the summary counts it and runs each event and transaction through Relay's
normalizer.

An upstream test that cannot pass because of a documented difference is in ``DEVIATIONS``, marked
``xfail(strict=True)``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

import pytest

REPO = os.environ["OTEL_BRIDGE_REPO"]
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from opentelemetry import trace  # noqa: E402

import otel_bridge  # noqa: E402
from tests.receiver import EnvelopeReceiver  # noqa: E402
from tests.relay import relay_normalize  # noqa: E402
from tests.upstream import ours_as_otel_asgi  # noqa: E402
from tests.upstream.bridge_state import bridge_on, processor_off, sentry_off  # noqa: E402

pytest_plugins = ["tests.upstream.outcomes"]

# Where the bridge deliberately differs (the README's "Differences"), one sentence each.
DIFFERENCES: dict[str, str] = {}

# Upstream test id ("Class::test") -> key of DIFFERENCES.
DEVIATIONS: dict[str, str] = {}

_receiver = EnvelopeReceiver()
_bridged: Optional[Any] = None


def _test_id(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        key = DEVIATIONS.get(_test_id(item))
        if key is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"{key}: {DIFFERENCES[key]}"))
    stale = sorted(set(DEVIATIONS) - {_test_id(item) for item in items})
    if stale and not (config.option.keyword or config.option.markexpr):
        raise pytest.UsageError(f"DEVIATIONS names tests this file does not have: {stale}")


def _bridge_on_test_provider() -> None:
    """The bridge on the tracer provider the running test installed; the previous test's processor off."""
    global _bridged
    provider = trace.get_tracer_provider()
    if provider is _bridged:
        return
    processor_off()
    bridge_on(_receiver.dsn)
    _bridged = provider


def pytest_configure(config: pytest.Config) -> None:
    _receiver.start()
    ours_as_otel_asgi.bridge_on = _bridge_on_test_provider


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.upstream import outcomes  # imported as a plugin first, so that pytest can rewrite it

    otel_bridge.flush(10)
    processor_off()
    sentry_off()
    items: dict[str, int] = {}
    rejections: list[str] = []
    for envelope in _receiver.envelopes:
        for item in envelope.items:
            items[item.type or "?"] = items.get(item.type or "?", 0) + 1
            payload = item.json()
            if item.type in ("event", "transaction") and isinstance(payload, dict):
                try:
                    relay_normalize(payload)
                except Exception as exc:
                    rejections.append(f"{item.type} {payload.get('transaction')}: {exc}")
    outcomes.extra["items"] = items
    outcomes.extra["relay_rejections"] = rejections
    outcomes.extra["receiver_errors"] = _receiver.server_errors


def pytest_unconfigure(config: pytest.Config) -> None:
    _receiver.stop()
