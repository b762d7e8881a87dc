"""One thread that keeps up to ``max_connections`` envelope POSTs in flight over non-blocking sockets.

It takes the place of sentry-sdk's transport worker when envelopes go straight to Sentry (no proxy).
Jobs are either envelopes, prepared and answered through the transport's own hooks (rate limits, client
reports, 413s: sentry-sdk's code), or plain callables run in turn. The queue is bounded; ``flush`` waits
for every queued envelope's answer. After ``fork`` the child starts with an empty queue, no connections
and a new thread on its first job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Union

from sentry_sdk.envelope import Envelope
from sentry_sdk.worker import Worker

from otel_bridge.http1 import Connection, Endpoint, ExchangeFailed, Response, request_bytes

if TYPE_CHECKING:
    import io

sdk_logger = logging.getLogger("sentry_sdk.errors")

Job = Callable[[], Any]
IDLE_POLL_SECONDS = 1.0
BUSY_POLL_SECONDS = 0.002


class SendHooks(Protocol):
    """The parts of sentry-sdk's HTTP transport that decide what is sent and what an answer means."""

    def _prepare_envelope(
        self, envelope: Envelope
    ) -> Optional[tuple[Envelope, io.BytesIO, dict[str, str]]]: ...

    def _update_headers(self, headers: dict[str, str]) -> None: ...

    def _handle_response(self, response: Any, envelope: Optional[Envelope]) -> None: ...

    def _handle_request_error(self, envelope: Optional[Envelope], loss_reason: str = ...) -> None: ...

    def _flush_client_reports(self, force: bool = False) -> None: ...


class CountedWork(Worker):
    """A worker that counts its unfinished jobs under ``_lock`` and notifies ``_all_done`` at zero."""

    _lock: threading.Lock
    _all_done: threading.Condition
    _unfinished: int

    def pending(self) -> int:
        with self._lock:
            return self._unfinished

    def wait_until_idle(self, timeout: float) -> bool:
        """``True`` once every job queued so far, and every job those queued, has finished."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._unfinished:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._all_done.wait(remaining)
            return True

    def flush(self, timeout: float, callback: Optional[Callable[[int, float], Any]] = None) -> None:
        """As sentry-sdk's ``BackgroundWorker``: still busy after 0.1 s, ``callback(pending, timeout)``."""
        if timeout <= 0:
            return
        initial = min(0.1, timeout)
        if self.wait_until_idle(initial):
            return
        if callback is not None:
            callback(self.pending(), timeout)
        if not self.wait_until_idle(timeout - initial):
            sdk_logger.error("flush timed out, dropped %s events", self.pending())


@dataclass
class _Exchange:
    envelope: Envelope
    request: bytes
    deadline: float
    retried: bool = False


class SocketSender(CountedWork):
    def __init__(
        self,
        hooks: SendHooks,
        endpoint: Endpoint,
        path: str,
        queue_size: int,
        max_connections: int,
        timeout: float,
        name: str = "otel_bridge.sender",
    ) -> None:
        self._hooks = hooks
        self.endpoint = endpoint
        self._path = path
        self.queue_size = max(1, queue_size)
        self.max_connections = max(1, max_connections)
        self._timeout = timeout
        self._name = name
        self._killed = False
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._all_done = threading.Condition(self._lock)
        self._jobs: deque[Union[Job, Envelope]] = deque()
        self._unfinished = 0
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        self._selector: Optional[selectors.BaseSelector] = None
        self._waker: Optional[tuple[socket.socket, socket.socket]] = None
        self._sleeping = False
        self._busy: dict[Connection, _Exchange] = {}
        self._idle: list[Connection] = []

    def after_fork_in_child(self) -> None:
        # the inherited sockets and thread belong to the parent
        self._reset()

    @property
    def is_alive(self) -> bool:
        thread = self._thread
        return self._pid == os.getpid() and thread is not None and thread.is_alive()

    def full(self) -> bool:
        return len(self._jobs) >= self.queue_size

    def submit(self, callback: Job) -> bool:
        return self._queue(callback)

    def submit_envelope(self, envelope: Envelope) -> bool:
        return self._queue(envelope)

    def _queue(self, job: Union[Job, Envelope]) -> bool:
        with self._lock:
            if self._killed or len(self._jobs) >= self.queue_size:
                return False
            self._jobs.append(job)
            self._unfinished += 1
            if self._thread is None:
                self._start_thread()
            elif self._sleeping and not self._busy:
                # with POSTs in flight the thread looks at the queue within BUSY_POLL_SECONDS anyway: a
                # wake-up per envelope would cost the caller a system call and a thread switch
                self._sleeping = False
                self._wake()
            return True

    def _start_thread(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._waker = socket.socketpair()
        for end in self._waker:
            end.setblocking(False)
        self._selector.register(self._waker[0], selectors.EVENT_READ, None)
        thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread = thread
        try:
            thread.start()
        except RuntimeError:
            # the interpreter is shutting down
            self._thread = None

    def _wake(self) -> None:
        if self._waker is not None:
            with contextlib.suppress(OSError):
                self._waker[1].send(b"\0")

    def kill(self) -> None:
        with self._lock:
            self._killed = True
            self._wake()

    def _run(self) -> None:
        selector = self._selector
        assert selector is not None
        while True:
            for job in self._take_jobs():
                if isinstance(job, Envelope):
                    self._start(job)
                else:
                    self._run_job(job)
            with self._lock:
                if self._killed and not self._jobs and not self._busy:
                    self._close_all()
                    return
                self._sleeping = not (self._jobs and len(self._busy) < self.max_connections)
                wait = self._wait_seconds() if self._sleeping else 0.0
            ready = selector.select(wait)
            self._sleeping = False
            for key, _ in ready:
                if key.data is None:
                    self._drain_waker()
                else:
                    self._progress(key.data)
            self._expire()

    def _take_jobs(self) -> list[Union[Job, Envelope]]:
        with self._lock:
            room = self.max_connections - len(self._busy)
            taken = []
            while self._jobs and (room > 0 or not isinstance(self._jobs[0], Envelope)):
                job = self._jobs.popleft()
                if isinstance(job, Envelope):
                    room -= 1
                taken.append(job)
            return taken

    def _wait_seconds(self) -> float:
        if not self._busy:
            return IDLE_POLL_SECONDS
        if self._jobs:
            # every connection is busy: the next answer frees one
            soonest = min(exchange.deadline for exchange in self._busy.values())
            return max(0.0, min(IDLE_POLL_SECONDS, soonest - time.monotonic()))
        return BUSY_POLL_SECONDS

    def _drain_waker(self) -> None:
        assert self._waker is not None
        try:
            while self._waker[0].recv(4096):
                pass
        except OSError:
            pass

    def _run_job(self, job: Job) -> None:
        try:
            job()
        except Exception:
            sdk_logger.error("Failed processing job", exc_info=True)
        finally:
            self._finished()

    def _start(self, envelope: Envelope) -> None:
        try:
            prepared = self._hooks._prepare_envelope(envelope)
            if prepared is None:
                self._finished()
                return
            envelope, body, headers = prepared
            self._hooks._update_headers(headers)
            request = request_bytes(self.endpoint, self._path, headers, body.getvalue())
        except Exception:
            sdk_logger.error("Failed preparing an envelope", exc_info=True)
            self._finished()
            return
        self._send(_Exchange(envelope, request, time.monotonic() + self._timeout))

    def _send(self, exchange: _Exchange) -> None:
        if self._idle:
            connection = self._idle.pop()
            connection.start(exchange.request)
            self._busy[connection] = exchange
            self._progress(connection)
            return
        try:
            connection = Connection(self.endpoint)
        except (OSError, ExchangeFailed):
            self._failed(exchange)
            return
        connection.start(exchange.request)
        self._register(connection)
        self._busy[connection] = exchange

    def _progress(self, connection: Connection) -> None:
        try:
            response = connection.progress()
        except ExchangeFailed as failure:
            exchange = self._busy.pop(connection, None)
            self._forget(connection)
            if exchange is None:
                return
            if failure.retryable and not exchange.retried:
                exchange.retried = True
                self._send(exchange)
            else:
                self._failed(exchange)
            return
        if connection.closed:
            self._forget(connection)
        else:
            self._modify(connection)
        if response is None:
            return
        exchange = self._busy.pop(connection)
        if connection.idle:
            self._idle.append(connection)
        self._answered(exchange, response)

    def _answered(self, exchange: _Exchange, response: Response) -> None:
        try:
            self._hooks._handle_response(response=response, envelope=exchange.envelope)
            self._hooks._flush_client_reports()
        except Exception:
            sdk_logger.error("Failed handling an answer", exc_info=True)
        finally:
            self._finished()

    def _failed(self, exchange: _Exchange) -> None:
        try:
            self._hooks._handle_request_error(envelope=exchange.envelope, loss_reason="network")
        except Exception:
            sdk_logger.error("Failed recording a lost envelope", exc_info=True)
        finally:
            self._finished()

    def _expire(self) -> None:
        now = time.monotonic()
        for connection, exchange in list(self._busy.items()):
            if exchange.deadline <= now:
                del self._busy[connection]
                self._forget(connection)
                self._failed(exchange)

    def _finished(self) -> None:
        with self._lock:
            self._unfinished -= 1
            if self._unfinished <= 0:
                self._unfinished = 0
                self._all_done.notify_all()

    def _register(self, connection: Connection) -> None:
        assert self._selector is not None
        self._selector.register(connection, connection.wanted, connection)

    def _modify(self, connection: Connection) -> None:
        assert self._selector is not None
        if self._selector.get_key(connection).events != connection.wanted:
            self._selector.modify(connection, connection.wanted, connection)

    def _forget(self, connection: Connection) -> None:
        assert self._selector is not None
        if connection in self._idle:
            self._idle.remove(connection)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(connection)
        connection.close()

    def _close_all(self) -> None:
        for connection in [*self._idle, *self._busy]:
            self._forget(connection)
        if self._selector is not None:
            self._selector.close()
        if self._waker is not None:
            for end in self._waker:
                end.close()
