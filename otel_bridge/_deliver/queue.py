"""The queue behind every background thread of the bridge: the trace worker, the socket sender and the
proxy path's sending threads.

- Bounded: in items, and optionally in bytes. A put that does not fit is refused and the caller counts the
  drop (each caller counts it where sentry-sdk's client reports and the bridge's summary expect it).
- Woken, not polled: a consumer sleeps until a put, its own deadline or ``close()``. A put wakes a consumer
  only when one is asleep, so a busy consumer costs its producers nothing. A consumer that waits on a
  selector (the socket sender) is woken through ``wake_socket()``, which it registers with its selector.
- Fork-aware: one ``os.register_at_fork`` handler for the whole package (``renew_after_fork``). In a child
  the queue starts empty with no threads; the next put starts them again. The parent keeps what it had.
- Its threads run with OpenTelemetry instrumentation suppressed: what they do (urllib3 POSTs through a
  proxy, an app's ``before_send``) is the bridge's own work, not the app's, and must not become spans.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
import weakref
from collections import deque
from typing import Callable, Generic, Optional, Protocol, TypeVar

from opentelemetry.instrumentation.utils import suppress_instrumentation

logger = logging.getLogger("otel_bridge")
_sdk_logger = logging.getLogger("sentry_sdk.errors")

T = TypeVar("T")


class ForkAware(Protocol):
    def after_fork_in_child(self) -> None:
        """Drop the parent's threads, sockets and queued work (the parent still has them)."""


class _ForkRegistry:
    """Objects told, in a child process after ``fork``, to drop what belongs to the parent; in the order
    they were registered, so a queue is renewed before the object that uses it."""

    def __init__(self) -> None:
        self._members: weakref.WeakValueDictionary[int, ForkAware] = weakref.WeakValueDictionary()
        self._order = itertools.count()

    def add(self, member: ForkAware) -> None:
        self._members[next(self._order)] = member

    def after_fork_in_child(self) -> None:
        for member in list(self._members.values()):
            try:
                member.after_fork_in_child()
            except Exception:
                logger.warning("otel_bridge could not renew %r after fork", member, exc_info=True)


_after_fork = _ForkRegistry()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork.after_fork_in_child)


def renew_after_fork(member: ForkAware) -> None:
    """Call ``member.after_fork_in_child()`` in every child forked from now on (held weakly)."""
    _after_fork.add(member)


class BackgroundQueue(Generic[T]):
    """Items for up to ``max_threads`` daemon threads that each run ``consume``.

    ``consume`` takes items with ``get`` (waiting on the queue) or with ``take`` (a consumer that waits on
    a selector, ``max_threads`` 1), calls ``done`` for each item it finished, and returns when it is to
    end (``get`` answers ``None`` once the queue is closed and empty). A thread is started by a put that
    finds none, or none idle while fewer than ``max_threads`` run; a thread that ended is replaced by the
    next put.
    """

    def __init__(
        self,
        consume: Callable[[], None],
        *,
        name: str,
        max_items: int,
        max_bytes: Optional[int] = None,
        max_threads: int = 1,
        bytes_bound_only: Optional[Callable[[T], bool]] = None,
    ) -> None:
        self._consume = consume
        self.name = name
        self.max_items = max(1, max_items)
        # items held to max_bytes only: they neither use nor need room of max_items
        self._bytes_bound_only = bytes_bound_only
        self.max_bytes = max_bytes
        self.max_threads = max(1, max_threads)
        self._closed = False
        self.parked = 0
        """Items a consumer took but holds to try again later: they count against ``max_items``."""
        self._wake_pair: Optional[tuple[socket.socket, socket.socket]] = None
        self._reset()
        renew_after_fork(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._all_done = threading.Condition(self._lock)
        self._items: deque[T] = deque()
        self._outside_items = 0
        self._unfinished = 0
        self._bytes = 0
        self.parked = 0
        self._threads: list[threading.Thread] = []
        self._started = 0
        self._waiting = 0
        self._resting = False
        pair, self._wake_pair = self._wake_pair, None
        if pair is not None:
            for end in pair:
                end.close()

    def after_fork_in_child(self) -> None:
        # the inherited lock may be held by a thread that does not exist here; the items are the parent's
        self._reset()

    # producers

    def put(self, item: T, size: int = 0) -> bool:
        """Queue ``item`` (of ``size`` bytes); ``False`` when it does not fit or the queue is closed."""
        with self._lock:
            if self._closed or not self._room_for(size, counted=not self._is_outside(item)):
                return False
            self._append(item, size)
            return True

    def _is_outside(self, item: T) -> bool:
        return self._bytes_bound_only is not None and self._bytes_bound_only(item)

    def _removed(self, item: T) -> T:
        if self._is_outside(item):
            self._outside_items -= 1
        return item

    def put_displacing(
        self, item: T, size: int, displaceable: Callable[[T], bool], size_of: Callable[[T], int]
    ) -> tuple[bool, list[T]]:
        """Queue ``item`` (of ``size`` bytes), taking out as many of the newest ``displaceable`` items queued
        as it takes to make room; ``(False, [])`` when even that would not. The caller finishes what was
        taken out (it counts as dropped)."""
        with self._lock:
            if self._closed:
                return False, []
            counted = not self._is_outside(item)
            if self._room_for(size, counted=counted):
                self._append(item, size)
                return True, []
            chosen: list[int] = []
            freed_items = freed_bytes = 0
            for index in range(len(self._items) - 1, -1, -1):
                if not displaceable(self._items[index]):
                    continue
                chosen.append(index)
                freed_items += 1
                freed_bytes += size_of(self._items[index])
                if self._room_for(size, freed_items, freed_bytes, counted=counted):
                    break
            else:
                return False, []
            taken = [self._removed(self._items[index]) for index in chosen]
            for index in chosen:  # from the back: the earlier indexes stay valid
                del self._items[index]
            self._unfinished -= freed_items
            self._bytes = max(0, self._bytes - freed_bytes)
            self._append(item, size)
            return True, taken

    def _room_for(self, size: int, freed_items: int = 0, freed_bytes: int = 0, counted: bool = True) -> bool:
        if size and self.max_bytes is not None and self._bytes - freed_bytes + size > self.max_bytes:
            return False
        held = len(self._items) - self._outside_items - freed_items + self.parked
        return not counted or held < self.max_items

    def put_unbounded(self, item: T) -> None:
        """Queue a control item (a flush marker) whatever the bound."""
        with self._lock:
            self._append(item, 0)

    def _append(self, item: T, size: int) -> None:
        if self._is_outside(item):
            self._outside_items += 1
        self._items.append(item)
        self._unfinished += 1
        self._bytes += size
        if not self._threads or (self._waiting < len(self._items) and len(self._threads) < self.max_threads):
            self._start_thread()
        else:
            self._wake_one()

    def _wake_one(self) -> None:
        if self._resting:
            # one byte per sleep, not per item: the consumer takes everything queued when it wakes
            self._resting = False
            self._write_wake_byte()
        elif self._waiting:
            self._has_work.notify()

    def _write_wake_byte(self) -> None:
        if self._wake_pair is not None:
            with contextlib.suppress(OSError):
                self._wake_pair[1].send(b"\0")

    def ensure_consumer(self) -> None:
        """Start a thread now if none runs (and the queue is open)."""
        with self._lock:
            if not self._threads and not self._closed:
                self._start_thread()

    def close(self) -> None:
        """Refuse further puts; the threads finish what is queued, then end."""
        with self._lock:
            self._closed = True
            self._has_work.notify_all()
            self._write_wake_byte()

    @property
    def closed(self) -> bool:
        return self._closed

    # threads

    def _start_thread(self) -> None:
        self._started += 1
        name = self.name if self.max_threads == 1 else f"{self.name}-{self._started}"
        thread = threading.Thread(target=self._thread_main, name=name, daemon=True)
        try:
            thread.start()
        except RuntimeError:
            # the interpreter is shutting down: a running thread, if any, takes the item
            self._started -= 1
            self._has_work.notify()
            return
        self._threads.append(thread)

    def _thread_main(self) -> None:
        try:
            with suppress_instrumentation():
                self._consume()
        finally:
            with self._lock:
                current = threading.current_thread()
                if current in self._threads:
                    self._threads.remove(current)
                if self._closed and not self._threads:
                    pair, self._wake_pair = self._wake_pair, None
                    if pair is not None:
                        for end in pair:
                            end.close()

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The threads running ``consume`` (in a forked child, none until the next put)."""
        return tuple(self._threads)

    @property
    def is_alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    # state

    def pending(self) -> int:
        """Items queued or taken and not yet ``done``."""
        with self._lock:
            return self._unfinished

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) - self._outside_items + self.parked >= self.max_items

    @property
    def queued_bytes(self) -> int:
        """Bytes of the items not yet ``done``."""
        return self._bytes

    def wait_until_idle(self, timeout: float) -> bool:
        """``True`` once every item queued so far, and every item those queued, is ``done``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._unfinished:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._all_done.wait(remaining)
            return True

    # consumers

    def get(self, timeout: Optional[float] = None) -> Optional[T]:
        """The next item, waiting up to ``timeout`` seconds (``None``: until one comes); ``None`` when the
        time ran out or the queue is closed and empty."""
        with self._lock:
            if not self._items and not self._closed and (timeout is None or timeout > 0):
                deadline = None if timeout is None else time.monotonic() + timeout
                self._waiting += 1
                try:
                    while not self._items and not self._closed:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            break
                        self._has_work.wait(remaining)
                finally:
                    self._waiting -= 1
            return self._removed(self._items.popleft()) if self._items else None

    def take(self, room: int, uses_room: Callable[[T], bool]) -> list[T]:
        """Without waiting, the items at the head of the queue while ``room`` lasts: each item for which
        ``uses_room`` is true uses one."""
        with self._lock:
            taken = []
            while self._items and (room > 0 or not uses_room(self._items[0])):
                item = self._removed(self._items.popleft())
                if uses_room(item):
                    room -= 1
                taken.append(item)
            return taken

    def done(self, size: int = 0) -> None:
        """One item (of ``size`` bytes) is finished: sent, answered, or dropped and counted."""
        with self._lock:
            self._bytes = max(0, self._bytes - size)
            self._unfinished -= 1
            if self._unfinished <= 0:
                self._unfinished = 0
                self._all_done.notify_all()

    def run_job(self, job: Callable[[], object]) -> None:
        """Run one job taken from the queue and mark it done; a job that fails is logged as sentry-sdk's
        worker logs it, and the thread goes on."""
        try:
            job()
        except Exception:
            _sdk_logger.error("Failed processing job", exc_info=True)
        finally:
            self.done()

    def wake_socket(self) -> socket.socket:
        """For a consumer that waits on a selector: readable once a put found it resting, or on close."""
        with self._lock:
            if self._wake_pair is None:
                pair = socket.socketpair()
                for end in pair:
                    end.setblocking(False)
                self._wake_pair = pair
            return self._wake_pair[0]

    def rest_until_put(self) -> bool:
        """Before a selector consumer waits: ``True`` when nothing is queued, and the next put will make
        ``wake_socket()`` readable; ``False`` when an item is already there to take."""
        with self._lock:
            if self._items:
                return False
            self._resting = True
            return True

    def stop_resting(self) -> None:
        """After the selector consumer's wait: puts need not wake it until it rests again."""
        self._resting = False

    def drain_wake_socket(self) -> None:
        pair = self._wake_pair
        if pair is None:
            return
        with contextlib.suppress(OSError):
            while pair[0].recv(4096):
                pass
