"""One background thread that turns finished traces into events and hands them to sentry-sdk's client.

The request path only enqueues; conversion, scope application, serialization and sending happen here.
The queue is bounded: ``max_queued`` traces (one that does not fit is counted as ``queue_overflow``) and,
apart from them, as many errands (error events to build: work that is run on the caller's thread rather
than lost when there is no room). After ``fork`` the child starts a fresh thread and queue on first use.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from otel_bridge._deliver.queue import BackgroundQueue, renew_after_fork
from otel_bridge._drops import DropCounter, RateLimitedLogger

logger = logging.getLogger("otel_bridge")
_failures = RateLimitedLogger(logger, interval=60.0)


@dataclass
class _FlushMarker:
    done: threading.Event


Job = Callable[[], Any]

# A job queued less than this long ago waits for the rest of it before it runs: the request that queued
# it is still sending its response, and the worker taking the GIL from it now would lengthen that
# request's path. Under load jobs wait in the queue longer than this anyway.
HEAD_START_SECONDS = 0.002


@dataclass
class _Queued:
    job: Job
    at: float
    errand: bool


class TraceWorker:
    """Runs the jobs of a ``SentrySpanProcessor`` in turn, and ``tick`` about every ``tick_interval``."""

    def __init__(
        self,
        max_queued: int,
        drops: DropCounter,
        tick: Optional[Callable[[], None]] = None,
        tick_interval: float = 1.0,
        name: str = "otel_bridge.worker",
    ) -> None:
        self._drops = drops
        self._tick = tick
        self._tick_interval = tick_interval
        self._max_queued = max(1, max_queued)
        self._queue: BackgroundQueue[Union[_Queued, _FlushMarker]] = BackgroundQueue(
            self._run, name=name, max_items=2 * self._max_queued
        )
        self._stopped = False
        self._count_lock = threading.Lock()
        # queued traces (False) and errands (True), each up to max_queued
        self._queued = {False: 0, True: 0}
        renew_after_fork(self)

    def after_fork_in_child(self) -> None:
        # the queue starts empty in the child
        self._count_lock = threading.Lock()
        self._queued = {False: 0, True: 0}

    def _put(self, job: Job, errand: bool) -> bool:
        with self._count_lock:
            if self._stopped or self._queued[errand] >= self._max_queued:
                return False
            self._queued[errand] += 1
        if self._queue.put(_Queued(job, time.monotonic(), errand)):
            return True
        self._taken(errand)
        return False

    def _taken(self, errand: bool) -> None:
        with self._count_lock:
            self._queued[errand] = max(0, self._queued[errand] - 1)

    def on_own_thread(self) -> bool:
        """Whether the caller runs on this worker's thread (where waiting for the worker would deadlock)."""
        return threading.current_thread() in self._queue.threads

    def start(self) -> None:
        self._queue.ensure_consumer()

    def submit(self, job: Job, category: str = "transaction") -> bool:
        """Queue ``job``; ``False`` (and counted as dropped) when the queue is full or the worker stopped.
        A thread that died is started again here."""
        if not self._put(job, errand=False):
            self._drops.count("queue_overflow", category)
            return False
        return True

    def run_soon(self, job: Job) -> None:
        """Queue the errand ``job`` (room for it is kept apart from the traces'), or run it at once on the
        caller's thread when there is no room: work that must not be lost (an error event)."""
        if not self._put(job, errand=True):
            job()

    def flush(self, timeout: float) -> bool:
        """``True`` once everything queued before this call has been handed to the client (or dropped and
        counted); ``False`` when ``timeout`` ran out first. Once stopped, nothing is left to hand over."""
        if self._stopped:
            return True
        if not self._queue.threads and self._queue.empty():
            return True
        marker = _FlushMarker(threading.Event())
        self._queue.put_unbounded(marker)
        return marker.done.wait(timeout)

    def stop(self, timeout: float) -> None:
        """Hand over what is queued (within ``timeout``) and end the thread; a second call does nothing."""
        if self._stopped:
            return
        self.flush(timeout)
        self._stopped = True
        self._queue.close()

    def _run(self) -> None:
        next_tick = time.monotonic() + self._tick_interval
        while True:
            wait = max(0.0, next_tick - time.monotonic()) if self._tick is not None else None
            item = self._queue.get(wait)
            if item is None and self._queue.closed:
                return
            if isinstance(item, _FlushMarker):
                item.done.set()
            elif item is not None:
                self._taken(item.errand)
                wait = item.at + HEAD_START_SECONDS - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    item.job()
                except Exception:
                    # a bug that repeats for every trace: counted each time, logged once a minute
                    self._drops.count("internal_sdk_error", "error" if item.errand else "transaction")
                    _failures.warning("otel_bridge could not turn a trace into Sentry events", exc_info=True)
            if item is not None:
                self._queue.done()
            if self._tick is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self._tick_interval
                try:
                    self._tick()
                except Exception:
                    _failures.warning("otel_bridge housekeeping failed", exc_info=True)
