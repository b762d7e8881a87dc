"""sentry-sdk's logging integration: the handler that turns a log record into an error event, which takes
``logging`` filters like any handler but is kept in a private attribute."""

from __future__ import annotations

import inspect
import logging
from typing import Any

from sentry_sdk.integrations.logging import LoggingIntegration

from otel_bridge._compat import holds, reach

LOGGING_EVENT_HANDLER = "logging integration event handler"


class _Seen(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def handle(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return True


@reach(
    LOGGING_EVENT_HANDLER,
    target="LoggingIntegration._handler, the logging.Handler whose handle() _handle_record calls for "
    "a record at the event level",
    verified="sentry-sdk 2.57, 2.75",
    fallback="a server's log record of an exception already reported is built into an event before it is "
    "dropped",
)
def _event_handler_reachable() -> bool:
    probe = LoggingIntegration(level=None, event_level=logging.ERROR)
    if not isinstance(getattr(probe, "_handler", None), logging.Handler):
        return False
    if list(inspect.signature(LoggingIntegration._handle_record).parameters) != ["self", "record"]:
        return False
    seen = _Seen()
    probe._handler = seen  # type: ignore[assignment]
    record = logging.LogRecord("otel_bridge.probe", logging.ERROR, __file__, 1, "probe", None, None)
    probe._handle_record(record)
    return seen.records == [record]


def filter_event_records(client: Any, record_filter: logging.Filter) -> None:
    """Make ``client``'s logging integration build no error event for a record ``record_filter`` refuses
    (idempotent); nothing where the reach does not hold or the integration is off."""
    if not holds(LOGGING_EVENT_HANDLER):
        return
    integration = client.get_integration(LoggingIntegration)
    handler = getattr(integration, "_handler", None)
    if isinstance(handler, logging.Handler) and record_filter not in handler.filters:
        handler.addFilter(record_filter)
