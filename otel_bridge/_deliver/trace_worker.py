"""One background thread that turns finished traces into events and hands them to sentry-sdk's client.

The request path only enqueues; conversion, scope application, serialization and sending happen here.
The queue is bounded; after ``fork`` the child starts a fresh thread and queue on first use.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from otel_bridge._drops import DropCounter, RateLimitedLogger

logger = logging.getLogger("otel_bridge")
_failures = RateLimitedLogger(logger, interval=60.0)


@dataclass
class _FlushMarker:
    done: threading.Event


_STOP = object()
BUSY_POLL_SECONDS = 0.002
BUSY_POLLS = 25
Job = Callable[[], Any]


class BackgroundWorker:
    def __init__(
        self,
        max_queued: int,
        drops: DropCounter,
        tick: Optional[Callable[[], None]] = None,
        tick_interval: float = 1.0,
        name: str = "otel_bridge.worker",
    ) -> None:
        self._max_queued = max_queued
        self._drops = drops
        self._tick = tick
        self._tick_interval = tick_interval
        self._name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Union[Job, _FlushMarker, object]] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._stopped = False
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._queue = queue.SimpleQueue()
        self._thread = None

    def start(self) -> None:
        if self._thread is None:
            self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def submit(self, job: Job, category: str = "transaction") -> bool:
        """Queue ``job``; ``False`` (and counted as dropped) when the queue is full or the worker stopped.
        A thread that died is started again here."""
        if self._stopped or self._queue.qsize() >= self._max_queued:
            self._drops.count("queue_overflow", category)
            return False
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._ensure_thread()
        self._queue.put(job)
        return True

    def flush(self, timeout: float) -> bool:
        """``True`` once everything queued before this call has been handed to the client (or dropped and
        counted); ``False`` when ``timeout`` ran out first. Once stopped, nothing is left to hand over."""
        if self._stopped:
            return True
        thread = self._thread
        if thread is None or not thread.is_alive():
            if self._queue.empty():
                return True
            self._ensure_thread()
        marker = _FlushMarker(threading.Event())
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def stop(self, timeout: float) -> None:
        """Hand over what is queued (within ``timeout``) and end the thread; a second call does nothing."""
        if self._stopped:
            return
        self.flush(timeout)
        self._stopped = True
        self._queue.put(_STOP)

    def _run(self) -> None:
        next_tick = time.monotonic() + self._tick_interval
        polls_left = 0
        while True:
            try:
                item = self._queue.get_nowait()
                polls_left = BUSY_POLLS
            except queue.Empty:
                item = None
                if polls_left:
                    # while requests keep coming, look again shortly instead of waiting on the queue:
                    # a waiting thread costs each request a wake-up (a system call on the request path)
                    polls_left -= 1
                    time.sleep(BUSY_POLL_SECONDS)
                else:
                    try:
                        item = self._queue.get(timeout=self._tick_interval)
                        polls_left = BUSY_POLLS
                    except queue.Empty:
                        pass
            if item is _STOP:
                return
            if isinstance(item, _FlushMarker):
                item.done.set()
            elif item is not None:
                try:
                    item()  # type: ignore[operator]
                except Exception:
                    # a bug that repeats for every trace: counted each time, logged once a minute
                    self._drops.count("internal_sdk_error", "transaction")
                    _failures.warning("otel_bridge could not turn a trace into Sentry events", exc_info=True)
            if self._tick is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self._tick_interval
                try:
                    self._tick()
                except Exception:
                    _failures.warning("otel_bridge housekeeping failed", exc_info=True)
