"""A Starlette app that handles secrets everywhere a request can carry them (see tests/test_secrets.py)."""

from __future__ import annotations

import os

import sentry_sdk
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware

tracer = trace.get_tracer("tests.apps.secrets_app")


class LoginFailed(Exception):
    pass


def check(password: str) -> None:
    raise LoginFailed("wrong credentials")


async def login(request: Request) -> Response:
    password = request.query_params.get("password", "")
    token_value = request.query_params.get("token", "")
    sentry_sdk.set_user({"id": request.cookies.get("uid"), "email": request.cookies.get("email")})
    with tracer.start_as_current_span("verify") as span:
        span.set_attribute("db.password", password)
        span.set_attribute("auth.api_key", request.query_params.get("api_key", ""))
        span.set_attribute("session_token", token_value)
        span.set_attribute("enduser.id", request.cookies.get("uid", ""))
    if request.path_params["outcome"] == "fail":
        check(password)
    return PlainTextResponse("welcome")


otel_bridge.init(send_default_pii=os.environ.get("TEST_PII") == "true")
app = SentryAsgiMiddleware(Starlette(routes=[Route("/login/{outcome}", login)]))
