"""What the bridge adds to a sentry-sdk client, whether it created the client or adopted it."""

from __future__ import annotations

from typing import Any

from otel_bridge._collect.reported import no_repeated_reports
from otel_bridge._compat.sentry_logging import filter_event_records
from otel_bridge._deliver import flush_hooks


def hook_client(client: Any) -> None:
    """``flush``/``close`` wait for the bridge's queues; the logging integration builds no event for a log
    record of an exception already reported. Idempotent and cheap: called again for every finished trace,
    as the app may initialise a client after the bridge."""
    flush_hooks.wait_for_bridge(client)
    filter_event_records(client, no_repeated_reports)
