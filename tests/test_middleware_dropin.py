"""sentry-sdk's ``SentryAsgiMiddleware`` arguments work on ours: moving is one import line."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pytest
import sentry_sdk
from opentelemetry.sdk.trace import TracerProvider
from sentry_sdk.integrations.asgi import SentryAsgiMiddleware as SentrysMiddleware

from otel_bridge import SentrySpanProcessor
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.test_middleware import Asgi2Hello, call, hello, http_scope


def test_every_argument_of_sentry_sdks_middleware_is_accepted() -> None:
    parameters = inspect.signature(SentrysMiddleware.__init__).parameters
    ours = inspect.signature(SentryAsgiMiddleware.__init__).parameters
    assert set(parameters) - set(ours) == set()


def with_method(method: str) -> dict[str, Any]:
    scope = http_scope("/things")
    scope["method"] = method
    return scope


def test_http_methods_to_capture_decides_which_requests_become_transactions(
    traced: tuple[TracerProvider, SentrySpanProcessor], receiver: EnvelopeReceiver
) -> None:
    provider, processor = traced
    default = SentryAsgiMiddleware(hello, tracer_provider=provider)
    for method in ("GET", "OPTIONS", "HEAD", "POST"):
        asyncio.run(call(default, with_method(method)))
    only_options = SentryAsgiMiddleware(hello, tracer_provider=provider, http_methods_to_capture=("OPTIONS",))
    asyncio.run(call(only_options, with_method("OPTIONS")))
    asyncio.run(call(only_options, with_method("GET")))
    processor.force_flush(5000)
    sentry_sdk.flush(5)
    methods = sorted(transaction["request"]["method"] for transaction in receiver.transactions())
    assert methods == ["GET", "OPTIONS", "POST"]


def test_span_origin_is_the_transactions_origin(
    traced: tuple[TracerProvider, SentrySpanProcessor], receiver: EnvelopeReceiver
) -> None:
    provider, processor = traced
    asyncio.run(
        call(
            SentryAsgiMiddleware(hello, tracer_provider=provider, span_origin="auto.http.shop"), http_scope()
        )
    )
    processor.force_flush(5000)
    [transaction] = receiver.wait_for_transactions(1)
    assert_relay_valid(transaction)
    assert transaction["contexts"]["trace"]["origin"] == "auto.http.shop"


def test_asgi_version_forces_how_the_app_is_called(
    traced: tuple[TracerProvider, SentrySpanProcessor], receiver: EnvelopeReceiver
) -> None:
    provider, _processor = traced
    bare = asyncio.run(call(hello, http_scope()))
    assert (
        asyncio.run(
            call(SentryAsgiMiddleware(Asgi2Hello, tracer_provider=provider, asgi_version=2), http_scope())
        )
        == bare
    )
    assert (
        asyncio.run(call(SentryAsgiMiddleware(hello, tracer_provider=provider, asgi_version=3), http_scope()))
        == bare
    )
    with pytest.raises(ValueError, match="asgi_version=4 is not valid"):
        SentryAsgiMiddleware(hello, asgi_version=4)


def test_unsafe_context_data_is_accepted_and_root_path_in_path_either_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    SentryAsgiMiddleware(hello, unsafe_context_data=True)
    with caplog.at_level(logging.WARNING, logger="otel_bridge"):
        SentryAsgiMiddleware(hello, root_path_in_path="excluded")
        assert not caplog.records
        SentryAsgiMiddleware(hello, root_path_in_path="either")
    assert "root_path_in_path=either) has no effect here" in caplog.text
