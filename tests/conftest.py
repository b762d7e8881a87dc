from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import sentry_sdk  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

from otel_bridge import SentrySpanProcessor  # noqa: E402
from otel_bridge._tracing.sampling import frozen_contexts  # noqa: E402
from tests.receiver import EnvelopeReceiver  # noqa: E402
from tests.versions import header_lines  # noqa: E402


def pytest_terminal_summary(terminalreporter: Any) -> None:
    # a summary line, not a header: `make test` runs pytest with -q, which hides the header
    for line in header_lines():
        terminalreporter.write_line(line)


@pytest.fixture
def receiver() -> Iterator[EnvelopeReceiver]:
    """A started loopback Sentry endpoint; ``receiver.dsn`` points at it."""
    with EnvelopeReceiver() as started:
        yield started


StartTraced = Callable[..., tuple[TracerProvider, SentrySpanProcessor]]


@pytest.fixture
def start_traced(receiver: EnvelopeReceiver) -> Iterator[StartTraced]:
    """``start(**sentry_options)``: a sentry-sdk client sending to ``receiver`` and a private
    ``TracerProvider`` with the processor; every provider started is shut down after the test."""
    providers: list[TracerProvider] = []

    def start(**options: Any) -> tuple[TracerProvider, SentrySpanProcessor]:
        sentry_sdk.init(dsn=receiver.dsn, instrumenter="otel", **options)
        provider = TracerProvider()
        processor = SentrySpanProcessor()
        provider.add_span_processor(processor)
        providers.append(provider)
        return provider, processor

    yield start
    for provider in providers:
        provider.shutdown()


@pytest.fixture
def traced(start_traced: StartTraced) -> tuple[TracerProvider, SentrySpanProcessor]:
    """A sentry-sdk client sending to ``receiver`` and a private ``TracerProvider`` with the processor."""
    return start_traced()


@pytest.fixture
def fresh_reaches() -> Iterator[None]:
    """Every private reach checked anew in the test (which changes sentry-sdk or OTel under the bridge),
    and again after it."""
    from otel_bridge import _compat

    _compat.reset()
    yield
    _compat.reset()


@pytest.fixture(autouse=True)
def _no_frozen_sampling_contexts() -> Iterator[None]:
    """Tests reuse trace ids; a DSC frozen by one must not be the next one's."""
    frozen_contexts.clear()
    yield
    frozen_contexts.clear()


@pytest.fixture(autouse=True)
def _no_leftover_sentry_client() -> Iterator[None]:
    """Close a global sentry-sdk client a test left initialised, so it cannot leak into the next test."""
    yield
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=2)
        sentry_sdk.get_global_scope().set_client(None)
