"""A small Django app (no database) under the bridge.

Run it: ``otel-bridge demo --example django`` (events shown in the terminal, no Sentry account
needed), or ``SENTRY_DSN=... uvicorn django_app:app --app-dir examples``.

Its settings are in ``django_settings.py`` (``DJANGO_SETTINGS_MODULE``, set below unless you set it), as a
Django project's ``settings.py`` would be. Django's ASGI handler does not speak the lifespan protocol:
the middleware answers it for Django, and sends what is queued for Sentry at shutdown.
"""

from __future__ import annotations

import os

import sentry_sdk
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

import otel_bridge
from otel_bridge.asgi import SentryAsgiMiddleware

otel_bridge.init()

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_settings")


def compute_total(total: float, count: int) -> float:
    return total / count


def get_item(request: HttpRequest, item_id: int) -> HttpResponse:
    sentry_sdk.set_tag("item", str(item_id))
    sentry_sdk.set_user({"id": f"user-{item_id}"})
    return JsonResponse({"item_id": item_id})


def boom(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"total: {compute_total(100, 0)}", content_type="text/plain")


urlpatterns = [
    path("items/<int:item_id>", get_item),
    path("boom", boom),
]

app = SentryAsgiMiddleware(get_asgi_application())
