"""One thread that keeps up to ``max_connections`` envelope POSTs in flight over non-blocking sockets.

It takes the place of sentry-sdk's transport worker when envelopes go straight to Sentry (no proxy).
Jobs are either envelopes, prepared and answered through the transport's own hooks (rate limits, client
reports, 413s: sentry-sdk's code), or plain callables run in turn. The queue (``queue.BackgroundQueue``)
is bounded in envelopes and bytes (error events in bytes only); ``flush`` waits for every queued
envelope's answer. The thread waits on its selector: for a socket, the next timeout or retry, or the
queue's wake socket, never on a timer of its own. After ``fork`` the child starts with an empty queue, no
connections and a new thread on its first job.
"""

from __future__ import annotations

import contextlib
import encodings.idna  # noqa: F401  imported now: a lazy import on the sender thread can deadlock a fork
import heapq
import logging
import random
import selectors
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Union

from sentry_sdk.envelope import Envelope
from sentry_sdk.worker import Worker

from otel_bridge._deliver.http1 import Connection, Endpoint, ExchangeFailed, Response, request_bytes
from otel_bridge._deliver.queue import BackgroundQueue, renew_after_fork
from otel_bridge._drops import RateLimitedLogger

if TYPE_CHECKING:
    import io
    import threading

sdk_logger = logging.getLogger("sentry_sdk.errors")
logger = logging.getLogger("otel_bridge")

Job = Callable[[], Any]
# after an unexpected error, before the next round: a bug that repeats cannot spin the thread
PAUSE_AFTER_ERROR_SECONDS = 0.01
# An envelope that failed because Sentry was unreachable, reset the connection or answered 5xx is tried
# again after about 0.5, 1, 2, 4, 8, 16, 30, 30 s (each with +-50 % jitter), then given up and counted.
RETRY_ATTEMPTS = 8
RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 30.0
DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024
_unexpected = RateLimitedLogger(logger, interval=60.0)


class SendHooks(Protocol):
    """The parts of sentry-sdk's HTTP transport that decide what is sent and what an answer means."""

    def _prepare_envelope(
        self, envelope: Envelope
    ) -> Optional[tuple[Envelope, io.BytesIO, dict[str, str]]]: ...

    def _update_headers(self, headers: dict[str, str]) -> None: ...

    def _handle_response(self, response: Any, envelope: Optional[Envelope]) -> None: ...

    def _handle_request_error(
        self, envelope: Optional[Envelope], loss_reason: str = ..., record_reason: str = ...
    ) -> None: ...

    def _flush_client_reports(self, force: bool = False) -> None: ...

    def on_dropped_event(self, reason: str) -> None: ...

    def record_lost_event(self, reason: str, data_category: Any = None, item: Any = None) -> None: ...


class CountedWork(Worker):
    """A sentry-sdk worker over a ``BackgroundQueue`` that counts its unfinished jobs."""

    _queue: BackgroundQueue[Any]

    @property
    def is_alive(self) -> bool:
        return self._queue.is_alive

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        return self._queue.threads

    def full(self) -> bool:
        return self._queue.full()

    def kill(self) -> None:
        """Refuse new jobs; what is queued still goes out, then the threads end."""
        self._queue.close()

    def pending(self) -> int:
        return self._queue.pending()

    def wait_until_idle(self, timeout: float) -> bool:
        """``True`` once every job queued so far, and every job those queued, has finished."""
        return self._queue.wait_until_idle(timeout)

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
    size: int
    retried: bool = False
    attempts: int = 1


def retry_delay(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: exponential from ``RETRY_FIRST_DELAY``, capped, jittered."""
    base = min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * float(2 ** (attempt - 1)))
    return base * random.uniform(0.5, 1.5)


PERMANENT_FAILURES = (ssl.SSLCertVerificationError, UnicodeError)


def _is_permanent(failure: BaseException) -> bool:
    """A failure trying again cannot fix: a certificate nobody vouches for, a DSN host that cannot be
    encoded. (``ExchangeFailed`` keeps the original error as its context.)"""
    return isinstance(failure, PERMANENT_FAILURES) or isinstance(failure.__context__, PERMANENT_FAILURES)


def envelope_size(envelope: Envelope) -> int:
    """The bytes of the envelope's items, as they will be sent before compression (sentry-sdk keeps the
    encoded payload, so sending does not encode it again)."""
    return sum(len(item.get_bytes()) for item in envelope.items)


def _is_envelope(job: Union[Job, Envelope]) -> bool:
    return isinstance(job, Envelope)


def _carries_error(job: Union[Job, Envelope]) -> bool:
    return isinstance(job, Envelope) and any(item.type == "event" for item in job.items)


def _only_transactions(job: Union[Job, Envelope]) -> bool:
    return isinstance(job, Envelope) and all(item.type == "transaction" for item in job.items)


def _queued_size(job: Union[Job, Envelope]) -> int:
    return envelope_size(job) if isinstance(job, Envelope) else 0


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
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
    ) -> None:
        self._hooks = hooks
        self.endpoint = endpoint
        self._path = path
        self.queue_size = max(1, queue_size)
        self.max_queue_bytes = max(1, max_queue_bytes)
        self.max_connections = max(1, max_connections)
        self._timeout = timeout
        self._queue: BackgroundQueue[Union[Job, Envelope]] = BackgroundQueue(
            self._run,
            name=name,
            max_items=self.queue_size,
            max_bytes=self.max_queue_bytes,
            bytes_bound_only=_carries_error,
        )
        self._reset()
        renew_after_fork(self)

    def _reset(self) -> None:
        # Touched only by the sender thread. Envelopes waiting to be tried again count against the queue's
        # bound (``BackgroundQueue.parked``).
        self._selector: Optional[selectors.BaseSelector] = None
        self._busy: dict[Connection, _Exchange] = {}
        self._idle: list[Connection] = []
        self._retries: list[tuple[float, int, _Exchange]] = []
        self._retry_order = 0

    def after_fork_in_child(self) -> None:
        # the inherited sockets and thread belong to the parent (the queue renews itself)
        self._reset()

    @property
    def queued_bytes(self) -> int:
        """Bytes of the envelopes queued, in flight or waiting to be tried again."""
        return self._queue.queued_bytes

    def submit(self, callback: Job) -> bool:
        return self._queue.put(callback)

    def submit_envelope(self, envelope: Envelope) -> bool:
        """Queue ``envelope``; ``False`` when there is no room. Error events are held to the byte bound only,
        not to ``queue_size``, and where even the bytes are used up an error finds room by taking out the
        newest queued envelopes of transactions (counted as ``queue_overflow``): under a burst the errors
        go, the transactions of the same moment are what is lost."""
        size = envelope_size(envelope)
        if self._queue.put(envelope, size):
            return True
        if not _carries_error(envelope):
            return False
        queued, displaced = self._queue.put_displacing(envelope, size, _only_transactions, _queued_size)
        for other in displaced:
            if isinstance(other, Envelope):
                self._overflowed(other)
        return queued

    def _overflowed(self, envelope: Envelope) -> None:
        """Counted as the transport counts an envelope its full queue refuses."""
        try:
            self._hooks.on_dropped_event("full_queue")
            for item in envelope.items:
                self._hooks.record_lost_event("queue_overflow", item=item)
        except Exception:
            _unexpected.warning("otel_bridge could not count a dropped envelope", exc_info=True)

    def _run(self) -> None:
        self._begin()
        while True:
            try:
                if not self._run_once():
                    return
            except Exception:
                # Never die: whatever this was cost at most the exchanges it touched (counted by them).
                _unexpected.warning("otel_bridge's sender hit an unexpected error and goes on", exc_info=True)
                time.sleep(PAUSE_AFTER_ERROR_SECONDS)

    def _begin(self) -> None:
        if self._selector is not None:
            # the previous thread died: its connections and selector go with it, its exchanges are retried
            self._discard_dead_thread()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._queue.wake_socket(), selectors.EVENT_READ, None)

    def _run_once(self) -> bool:
        selector = self._selector
        assert selector is not None
        for exchange in self._due_retries():
            self._send(exchange)
        for job in self._queue.take(self.max_connections - len(self._busy), _is_envelope):
            if isinstance(job, Envelope):
                self._start(job)
            else:
                self._queue.run_job(job)
        if self._queue.closed and self._queue.empty() and not self._busy and not self._retries:
            self._close_all()
            return False
        if len(self._busy) < self.max_connections and not self._queue.rest_until_put():
            wait: Optional[float] = 0.0  # jobs wait and a connection is free
        else:
            # With every connection busy, the next answer frees one: a put need not wake the thread.
            wait = self._wait_seconds()
        ready = selector.select(wait)
        self._queue.stop_resting()
        for key, _ in ready:
            if key.data is None:
                self._queue.drain_wake_socket()
            else:
                self._progress(key.data)
        self._expire()
        return True

    def _due_retries(self) -> list[_Exchange]:
        now = time.monotonic()
        due = []
        room = self.max_connections - len(self._busy)
        while self._retries and self._retries[0][0] <= now and room > 0:
            due.append(heapq.heappop(self._retries)[2])
            room -= 1
        self._queue.parked = len(self._retries)
        return due

    def _wait_seconds(self) -> Optional[float]:
        """Until the next exchange times out or a retry falls due; ``None`` (no timeout) when neither."""
        moments = []
        if self._retries and len(self._busy) < self.max_connections:
            # a retry falling due with every connection busy waits for an answer, like a new envelope
            moments.append(self._retries[0][0])
        if self._busy:
            moments.append(min(exchange.deadline for exchange in self._busy.values()))
        if not moments:
            return None
        return max(0.0, min(moments) - time.monotonic())

    def _start(self, envelope: Envelope) -> None:
        size = envelope_size(envelope)  # the encoded items are kept: no second encoding
        try:
            prepared = self._hooks._prepare_envelope(envelope)
            if prepared is None:
                self._queue.done(size)
                return
            prepared_envelope, body, headers = prepared
            self._hooks._update_headers(headers)
            request = request_bytes(self.endpoint, self._path, headers, body.getvalue())
        except Exception:
            _unexpected.warning("otel_bridge could not prepare an envelope for Sentry", exc_info=True)
            self._lost(envelope, size, "internal_sdk_error", "internal_sdk_error")
            return
        self._send(_Exchange(prepared_envelope, request, time.monotonic() + self._timeout, size))

    def _send(self, exchange: _Exchange) -> None:
        exchange.deadline = time.monotonic() + self._timeout
        if self._idle:
            connection = self._idle.pop()
            connection.start(exchange.request)
            self._busy[connection] = exchange
            self._progress(connection)
            return
        try:
            connection = Connection(self.endpoint)
        except Exception as failure:
            # OSError for an unreachable host; a DSN host that cannot be encoded raises UnicodeError
            self._failed(exchange, permanent=_is_permanent(failure))
            return
        connection.start(exchange.request)
        self._register(connection)
        self._busy[connection] = exchange

    def _progress(self, connection: Connection) -> None:
        try:
            response = connection.progress()
        except Exception as failure:
            exchange = self._busy.pop(connection, None)
            self._forget(connection)
            if exchange is None:
                return
            retryable = isinstance(failure, ExchangeFailed) and failure.retryable
            if retryable and not exchange.retried:
                # a kept-alive connection the other side had closed: at once, on a new one
                exchange.retried = True
                self._send(exchange)
            else:
                self._failed(exchange, permanent=_is_permanent(failure))
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
        if response.status >= 500 and self._retry_later(exchange):
            return
        try:
            self._hooks._handle_response(response=response, envelope=exchange.envelope)
            self._hooks._flush_client_reports()
        except Exception:
            _unexpected.warning("otel_bridge could not handle Sentry's answer", exc_info=True)
        finally:
            self._queue.done(exchange.size)

    def _failed(self, exchange: _Exchange, permanent: bool = False) -> None:
        if not permanent and self._retry_later(exchange):
            return
        self._lost(exchange.envelope, exchange.size, "network", "network_error")

    def _retry_later(self, exchange: _Exchange) -> bool:
        """Sentry unreachable or failing for a moment: the envelope waits and is tried again (Sentry drops
        a second copy of an event id it already has). ``False`` once its attempts are used up."""
        if exchange.attempts >= RETRY_ATTEMPTS or self._queue.closed:
            return False
        delay = retry_delay(exchange.attempts)
        exchange.attempts += 1
        exchange.retried = False
        self._push_retry(exchange, time.monotonic() + delay)
        return True

    def _push_retry(self, exchange: _Exchange, due: float) -> None:
        """``exchange`` is sent again at ``due`` (ties in the order they came)."""
        self._retry_order += 1
        heapq.heappush(self._retries, (due, self._retry_order, exchange))
        self._queue.parked = len(self._retries)

    def _lost(self, envelope: Envelope, size: int, loss_reason: str, record_reason: str) -> None:
        try:
            self._hooks._handle_request_error(
                envelope=envelope, loss_reason=loss_reason, record_reason=record_reason
            )
        except Exception:
            _unexpected.warning("otel_bridge could not count a lost envelope", exc_info=True)
        finally:
            self._queue.done(size)

    def _expire(self) -> None:
        now = time.monotonic()
        for connection, exchange in list(self._busy.items()):
            if exchange.deadline <= now:
                # no answer within the timeout: Sentry is stuck rather than away; waiting longer would
                # hold the queue for minutes
                del self._busy[connection]
                self._forget(connection)
                self._failed(exchange, permanent=True)

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

    def _discard_dead_thread(self) -> None:
        for connection in [*self._idle, *self._busy]:
            with contextlib.suppress(Exception):
                connection.close()
        self._idle = []
        waiting = list(self._busy.values())
        self._busy = {}
        for exchange in waiting:
            self._push_retry(exchange, time.monotonic())
        if self._selector is not None:
            with contextlib.suppress(Exception):
                self._selector.close()
            self._selector = None

    def _close_all(self) -> None:
        for connection in [*self._idle, *self._busy]:
            self._forget(connection)
        if self._selector is not None:
            self._selector.close()
            self._selector = None
