"""A sentry-sdk transport that sends envelopes concurrently over kept-alive connections.

sentry-sdk's ``HttpTransport`` sends one envelope at a time from one thread: at 20 ms per answer it delivers
at most 50 envelopes a second and drops the rest once its queue is full. ``ConcurrentHttpTransport`` keeps
everything of ``HttpTransport`` that decides what is sent and what an answer means (auth header,
serialization and compression, rate limits, client reports, 413 handling, TLS options) and replaces how
envelopes travel. Straight to Sentry, one thread (``sender.SocketSender``) keeps up to ``max_connections``
POSTs in flight over non-blocking kept-alive sockets, which costs a fraction of the CPU urllib3 and
``http.client`` spend per POST, and none of the GIL hand-offs of many sending threads. Through a proxy,
urllib3's ``ProxyManager`` keeps doing the work, from up to ``max_connections`` threads. The queue stays
bounded (``transport_queue_size``); what does not fit is counted as ``queue_overflow``. Rate limits only
grow when answers arrive out of order, and a client report that fails to go out is counted again.

All of this overrides private methods of sentry-sdk's transport (``_compat.sentry_transport`` checks them).
When they no longer hold, ``ConcurrentHttpTransport(options)`` gives sentry-sdk's own ``HttpTransport``
instead, and ``default_transport_class()`` names it. Requires sentry-sdk 2.57 or later
(``HttpTransportCore._create_worker``).
"""

from __future__ import annotations

import io
import json
import logging
import ssl
import threading
import time
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

import urllib3
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import HttpTransport
from sentry_sdk.worker import Worker

from otel_bridge._compat.sentry_transport import parse_rate_limits, transport_reaches_hold
from otel_bridge._deliver.http1 import Endpoint, with_nodelay
from otel_bridge._deliver.queue import BackgroundQueue, renew_after_fork
from otel_bridge._deliver.sender import DEFAULT_MAX_QUEUE_BYTES, CountedWork, SocketSender
from otel_bridge._drops import RateLimitedLogger, lost

if TYPE_CHECKING:
    from sentry_sdk._types import EventDataCategory
    from sentry_sdk.envelope import Item

logger = logging.getLogger("otel_bridge")

DEFAULT_MAX_CONNECTIONS = 32
RATE_LIMIT_WARNING_INTERVAL = 60.0

Job = Callable[[], Any]


def gzip_compress(data: bytes, level: int) -> bytes:
    """``data`` as one gzip member, byte for byte what zlib writes with its full window, set up cheaper.

    Setting up zlib's 32 KiB window costs more than compressing a typical envelope of a few KiB. Deflate
    never looks further back than its window less 262 bytes, so with a window at least that much longer
    than ``data`` (and the same hash tables) every choice it makes, and so the output, is the same.
    """
    window_bits = min(15, max(9, (len(data) + _DEFLATE_LOOKAHEAD - 1).bit_length()))
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + window_bits)
    return compressor.compress(data) + compressor.flush()


# zlib's MIN_LOOKAHEAD: the farthest match deflate takes is its window size less this
_DEFLATE_LOOKAHEAD = 262


class ConcurrentWorker(CountedWork):
    """A bounded queue of jobs run by up to ``max_threads`` daemon threads.

    A thread is added when a job is queued and no idle thread is left to take it, so an idle process keeps
    one thread. ``kill()`` lets the threads finish what is queued, then they end; later ``submit`` calls are
    refused. In a child process after ``fork`` the queue starts empty and threads are started again on the
    next ``submit`` (the parent still sends what it had queued).
    """

    def __init__(self, queue_size: int, max_threads: int = DEFAULT_MAX_CONNECTIONS, name: str = "") -> None:
        self.queue_size = max(1, queue_size)
        self.max_threads = max(1, max_threads)
        self._queue: BackgroundQueue[Job] = BackgroundQueue(
            self._run,
            name=name or "otel_bridge.transport",
            max_items=self.queue_size,
            max_threads=self.max_threads,
        )

    @property
    def thread_count(self) -> int:
        return len(self._queue.threads)

    def submit(self, callback: Job) -> bool:
        return self._queue.put(callback)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._queue.run_job(job)


def default_transport_class(max_queue_bytes: Optional[int] = None) -> type[HttpTransport]:
    """The transport ``otel_bridge.init()`` gives a client it creates: ``ConcurrentHttpTransport`` (a variant
    whose queue holds at most ``max_queue_bytes``, when that differs from the default), or sentry-sdk's own
    ``HttpTransport`` when the installed sentry-sdk no longer has what ``ConcurrentHttpTransport`` needs."""
    if not transport_reaches_hold():
        return HttpTransport
    if max_queue_bytes is None or max_queue_bytes == ConcurrentHttpTransport.max_queue_bytes:
        return ConcurrentHttpTransport
    return ConcurrentHttpTransport.with_max_queue_bytes(max_queue_bytes)


class ConcurrentHttpTransport(HttpTransport):
    """sentry-sdk's ``HttpTransport`` with concurrent sending; pass the class as ``transport=``.

    ``max_connections`` (default 32) bounds the POSTs in flight and the kept-alive connections; the queue
    holds ``transport_queue_size`` envelopes. ``ConcurrentHttpTransport.with_max_connections(n)`` makes a
    variant.
    """

    max_connections: ClassVar[int] = DEFAULT_MAX_CONNECTIONS
    max_queue_bytes: ClassVar[int] = DEFAULT_MAX_QUEUE_BYTES
    summarizes_losses: ClassVar[bool] = True

    def __new__(cls, options: dict[str, Any]) -> ConcurrentHttpTransport:
        if transport_reaches_hold():
            return super().__new__(cls)
        # The private methods this class overrides no longer hold (a warning named them): sentry-sdk's own
        # transport, whole. Not an instance of ``cls``, so Python does not run our ``__init__`` on it.
        return HttpTransport(options)  # type: ignore[return-value]

    @classmethod
    def with_max_connections(cls, max_connections: int) -> type[ConcurrentHttpTransport]:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        return cls._variant(max_connections=max_connections)

    @classmethod
    def with_max_queue_bytes(cls, max_queue_bytes: int) -> type[ConcurrentHttpTransport]:
        """A variant whose queue holds at most ``max_queue_bytes`` of envelopes (uncompressed)."""
        if max_queue_bytes < 1:
            raise ValueError(f"max_queue_bytes must be at least 1, got {max_queue_bytes}")
        return cls._variant(max_queue_bytes=max_queue_bytes)

    @classmethod
    def _variant(cls, **settings: int) -> type[ConcurrentHttpTransport]:
        variant: type[ConcurrentHttpTransport] = type(
            cls.__name__, (cls,), {**settings, "__module__": cls.__module__}
        )
        return variant

    def __init__(self, options: dict[str, Any]) -> None:
        self._reports_lock = threading.RLock()
        self._limits_lock = threading.Lock()
        self._limit_warnings = RateLimitedLogger(logger, RATE_LIMIT_WARNING_INTERVAL)
        super().__init__(options)
        if type(self._pool) is urllib3.PoolManager:
            self._worker = self._socket_sender(options)
        renew_after_fork(self)

    def _create_worker(self, options: dict[str, Any]) -> Worker:
        return ConcurrentWorker(options["transport_queue_size"], self.max_connections)

    def _socket_sender(self, options: dict[str, Any]) -> SocketSender:
        assert self.parsed_dsn is not None
        pool_options = self._get_pool_options()
        tls: Optional[ssl.SSLContext] = None
        if self.parsed_dsn.scheme == "https":
            tls = ssl.create_default_context(cafile=pool_options["ca_certs"])
            if pool_options.get("cert_file"):
                tls.load_cert_chain(pool_options["cert_file"], pool_options.get("key_file"))
        endpoint = Endpoint(
            host=self.parsed_dsn.host,
            port=int(self.parsed_dsn.port),
            tls=tls,
            socket_options=tuple(pool_options["socket_options"]),
        )
        url = self._auth.get_api_url()
        path = url[url.index("/", url.index("//") + 2) :]
        return SocketSender(
            self,
            endpoint,
            path,
            options["transport_queue_size"],
            self.max_connections,
            self.TIMEOUT,
            max_queue_bytes=self.max_queue_bytes,
        )

    def capture_envelope(self, envelope: Envelope) -> None:
        if not isinstance(self._worker, SocketSender):
            super().capture_envelope(envelope)
        elif not self._worker.submit_envelope(envelope):
            self.on_dropped_event("full_queue")
            for item in envelope.items:
                self.record_lost_event("queue_overflow", item=item)

    def _get_pool_options(self) -> dict[str, Any]:
        options = super()._get_pool_options()
        options["maxsize"] = self.max_connections
        # sentry-sdk's socket options (``socket_options``, ``keep_alive``) replace urllib3's, TCP_NODELAY
        # with them; both the proxy path and the socket sender take theirs from here
        options["socket_options"] = with_nodelay(options.get("socket_options"))
        return options

    def _request(self, method: str, endpoint_type: Any, body: Any, headers: Mapping[str, str]) -> Any:
        """Once more on another connection when a kept-alive one turned out to be closed by the other side
        (urllib3 retries connecting, but not a POST whose connection dropped). Sentry drops a duplicate of
        an event id it already has, should the first attempt have arrived after all."""
        try:
            return super()._request(method, endpoint_type, body, headers)
        except urllib3.exceptions.ProtocolError:
            return super()._request(method, endpoint_type, body, headers)

    def _serialize_envelope(self, envelope: Envelope) -> tuple[Optional[str], io.BytesIO]:
        """gzip in one call. sentry-sdk streams into a ``GzipFile``: a zlib call per envelope part, each
        releasing and taking back the GIL, and with many sending threads each of those costs the app's
        own thread a switch."""
        if self._compression_algo != "gzip" or not self._compression_level:
            return super()._serialize_envelope(envelope)
        return "gzip", io.BytesIO(gzip_compress(envelope.serialize(), self._compression_level))

    def after_fork_in_child(self) -> None:
        self._reports_lock = threading.RLock()
        self._limits_lock = threading.Lock()
        # the inherited sockets belong to the parent's connections (the worker renews itself)
        self._pool = self._make_pool()

    def pending(self) -> int:
        """Envelopes (and jobs) queued, in flight or waiting to be tried again."""
        worker = self._worker
        return worker.pending() if isinstance(worker, CountedWork) else 0

    def flush(self, timeout: float, callback: Optional[Callable[[int, float], None]] = None) -> None:
        """Wait for everything queued, then send the client report (drops counted meanwhile included).

        sentry-sdk queues the report first, which fails when the queue is full, exactly when there are
        drops to report.
        """
        if timeout <= 0:
            return
        deadline = time.monotonic() + timeout
        self._worker.flush(timeout, callback)
        self._worker.submit(lambda: self._flush_client_reports(force=True))
        self._worker.flush(deadline - time.monotonic())

    def record_lost_event(
        self,
        reason: str,
        data_category: Optional[EventDataCategory] = None,
        item: Optional[Item] = None,
        *,
        quantity: int = 1,
    ) -> None:
        with self._reports_lock:
            super().record_lost_event(reason, data_category, item, quantity=quantity)
        category = data_category or (item.data_category if item is not None else None)
        if category is not None:
            lost.note(reason, str(category), quantity)

    def _fetch_pending_client_report(self, force: bool = False, interval: int = 60) -> Optional[Item]:
        with self._reports_lock:
            return super()._fetch_pending_client_report(force=force, interval=interval)

    def _handle_request_error(
        self,
        envelope: Optional[Envelope],
        loss_reason: str = "network",
        record_reason: str = "network_error",
    ) -> None:
        """A client report that could not be sent is counted again, for the next one, instead of lost."""
        if envelope is not None:
            envelope = self._reports_counted_again(envelope)
        super()._handle_request_error(envelope, loss_reason, record_reason)

    def _reports_counted_again(self, envelope: Envelope) -> Envelope:
        """``envelope`` without its client reports, whose counts go back into the next report."""
        reports = [item for item in envelope.items if item.type == "client_report"]
        if not reports:
            return envelope
        self._count_again(reports)
        return Envelope(
            headers=envelope.headers, items=[item for item in envelope.items if item.type != "client_report"]
        )

    def _count_again(self, reports: list[Item]) -> None:
        with self._reports_lock:
            for report in reports:
                try:
                    entries = json.loads(report.get_bytes()).get("discarded_events") or ()
                    for entry in entries:
                        key = (entry["category"], entry["reason"])
                        self._discarded_events[key] += int(entry["quantity"])
                except (ValueError, TypeError, KeyError, AttributeError):
                    continue

    def _prepare_envelope(self, envelope: Envelope) -> Any:
        """A client report is not thrown away by a rate limit (its counts would be lost with it): it is
        counted again for the next report, which goes out once the limit is over."""
        with self._limits_lock:
            reports_limited = super()._check_disabled("internal")
        if reports_limited:
            envelope = self._reports_counted_again(envelope)
        return super()._prepare_envelope(envelope)

    def _handle_response(self, response: Any, envelope: Optional[Envelope]) -> None:
        """A 429 without a limit Relay would have written (a proxy's, or one we cannot read) was not
        counted by Relay: its envelope is counted here as ``ratelimit_backoff``."""
        super()._handle_response(response, envelope)
        if response.status == 429 and envelope is not None and not self._has_readable_limits(response):
            for item in envelope.items:
                self.record_lost_event("ratelimit_backoff", item=item)

    def _has_readable_limits(self, response: Any) -> bool:
        header = self._get_header_value(response, "x-sentry-rate-limits")
        if not header:
            return False
        return any(True for _ in parse_rate_limits(header))

    def _update_rate_limits(self, response: Any) -> None:
        # Answers arrive out of order: a limit only ever gets longer here, never shorter.
        now = datetime.now(UTC)
        with self._limits_lock:
            before = dict(self._disabled_until)
            super()._update_rate_limits(response)
            if response.status == 429 and not self._has_readable_limits(response):
                # sentry-sdk reads a present X-Sentry-Rate-Limits header and nothing else, so a header
                # it cannot parse meant no back-off at all; as the SDK spec says for a 429 without usable
                # limits: everything waits Retry-After, or 60 s.
                retry_after = self._get_header_value(response, "Retry-After")
                seconds = (self._retry.parse_retry_after(retry_after) if retry_after else None) or 60
                until = now + timedelta(seconds=seconds)
                self._disabled_until[None] = max(until, self._disabled_until.get(None, until))
            limits = self._disabled_until
            for category, until in before.items():
                current = limits.get(category)
                if current is None or until > current:
                    limits[category] = until
            started = {
                category: until
                for category, until in limits.items()
                if until > now and not (category in before and before[category] > now)
            }
        if started:
            self._warn_rate_limited(started, now)

    def _is_rate_limited(self) -> bool:
        # iterates the limits, which a sender may be adding to
        with self._limits_lock:
            return super()._is_rate_limited()

    def _warn_rate_limited(self, started: Mapping[Any, datetime], now: datetime) -> None:
        categories = ", ".join(sorted(str(category or "all categories") for category in started))
        seconds = round((max(started.values()) - now).total_seconds())
        self._limit_warnings.warning(
            f"otel_bridge: Sentry rate-limited {categories} for {seconds} s; dropped meanwhile, counted in "
            "client reports (this warning at most once a minute)"
        )
