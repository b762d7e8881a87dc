"""Counting what is dropped: into sentry-sdk's client reports, and a log line at most once a minute."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Callable, Optional

import sentry_sdk

logger = logging.getLogger("otel_bridge")

REPORT_INTERVAL_SECONDS = 60.0
# Client-report reasons that mean something was lost. The others (``sample_rate``, ``before_send``,
# ``event_processor``...) are decisions the user configured, or duplicates, and are not worth a warning;
# ``ratelimit_backoff`` has a warning of its own (the transport's "Sentry rate-limited ... for N s").
LOSS_REASONS = frozenset(
    {
        "queue_overflow",
        "buffer_overflow",
        "network_error",
        "send_error",
        "internal_sdk_error",
        "insufficient_data",
        "cache_overflow",
        "backpressure",
    }
)


class DropCounter:
    """Thread-safe totals of dropped items by ``(reason, category)``; cheap to call on any thread."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, interval: float = REPORT_INTERVAL_SECONDS
    ):
        self._clock = clock
        self._interval = interval
        self._lock = threading.Lock()
        self._totals: Counter[tuple[str, str]] = Counter()
        self._since_report: Counter[tuple[str, str]] = Counter()
        self._last_report: Optional[float] = None

    def count(self, reason: str, category: str, quantity: int = 1) -> None:
        """Counted in the client's reports, and in the once-a-minute summary of ``lost``."""
        with self._lock:
            self._totals[(reason, category)] += quantity
        transport = sentry_sdk.get_client().transport
        if transport is not None:
            transport.record_lost_event(reason, data_category=category, quantity=quantity)  # type: ignore[arg-type]
        if not getattr(transport, "summarizes_losses", False):
            lost.note(reason, category, quantity)

    def note(self, reason: str, category: str, quantity: int = 1) -> None:
        """Only the summary: for losses sentry-sdk's transport already counted in its reports."""
        if reason not in LOSS_REASONS or quantity <= 0:
            return
        with self._lock:
            self._since_report[(reason, category)] += quantity
        self._maybe_log()

    def totals(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._totals)

    def _maybe_log(self) -> None:
        now = self._clock()
        with self._lock:
            if not self._since_report or (
                self._last_report is not None and now - self._last_report < self._interval
            ):
                return
            self._last_report = now
            summary = ", ".join(
                f"{quantity} {category} ({reason})"
                for (reason, category), quantity in sorted(self._since_report.items())
            )
            self._since_report.clear()
        logger.warning("otel_bridge dropped %s; see Sentry's client reports for totals", summary)


lost = DropCounter()
"""Every loss in this process, summarised in one log line at most once a minute."""


class RateLimitedLogger:
    """Warnings that would repeat on every request are logged at most once per ``interval`` seconds."""

    def __init__(self, logger: logging.Logger, interval: float, clock: Callable[[], float] = time.monotonic):
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: Optional[float] = None
        self._suppressed = 0

    def warning(self, message: str, *, exc_info: bool = False) -> None:
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last < self._interval:
                self._suppressed += 1
                return
            self._last, suppressed, self._suppressed = now, self._suppressed, 0
        suffix = f" ({suppressed} more like it since the last report)" if suppressed else ""
        self._logger.warning("%s%s", message, suffix, exc_info=exc_info)
