"""Whether an exception already reached Sentry: decided here, and only here.

An exception can reach Sentry by several paths: live, with its object (the middleware's capture, a
framework's hook, ``sentry_sdk.capture_exception``, sentry-sdk's logging integration, all of which pass
through ``live_errors.prepare_event``), and as text, from the ``exception`` events of the spans it was
recorded on. One exception must be one Sentry event, and two exceptions two events, even when their type
and message are the same.

* Live exceptions are told apart by identity: each one reported or recorded carries a ticket in its own
  ``__dict__``, so that it lives and dies with the object (an ``id()`` could be another object's later)
  and nothing holds on to exceptions, their tracebacks and frames.
* Every ``record_exception`` on an SDK span links the span event it adds to the exception's ticket (a weak
  map keyed by the event object, see ``otel_bridge._compat.otel_span``). An exception recorded on spans is
  then skipped exactly when the same object was reported live, and the events of one exception on
  nested spans are one error.
* Only a span event with no link (recorded while the wrap was not there, or written with ``add_event``)
  is matched by text: its type, message and the file and line it was raised at, against the exceptions
  reported live in the last minutes.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Optional, Protocol

from opentelemetry.sdk.trace import Event
from opentelemetry.sdk.trace import Span as SdkSpan

from otel_bridge._compat.otel_span import wrap_record_exception

ExceptionKey = tuple[str, str]
RaiseSite = tuple[str, int]

_TICKET = "__otel_bridge_exception__"

RESERVED_FOR_THIS_EVENT = "otel_bridge_reserved_report"
"""A hint key: the event is the report its exception was noted for ahead of time (built off the request
path after the exception was noted reported)."""


class _Ticket(int):
    """One live exception: whether it was reported, and whether it was recorded on a sampled span.

    It is a number unique in the process, so that what ``vars(exc)`` shows stays a plain value for code that
    logs or serializes an exception's attributes (as JSON, say).
    """

    reported: bool
    on_sampled_span: bool

    def __reduce__(self) -> tuple[type[int], tuple[int]]:
        # an exception pickled to another process (and reported there again) is a new report
        return int, (int(self),)


_numbers = itertools.count(1)


def _new_ticket() -> _Ticket:
    ticket = _Ticket(next(_numbers))
    ticket.reported = False
    ticket.on_sampled_span = False
    return ticket


_lock = threading.Lock()
_by_event: weakref.WeakKeyDictionary[Event, _Ticket] = weakref.WeakKeyDictionary()


def _ticket(exc: BaseException, create: bool) -> Optional[_Ticket]:
    # BaseException gives every instance a __dict__; written directly, as frozen dataclass exceptions refuse
    # setattr
    namespace = getattr(exc, "__dict__", None)
    if not isinstance(namespace, dict):
        return None
    found = namespace.get(_TICKET)
    if isinstance(found, _Ticket) or not create:
        return found if isinstance(found, _Ticket) else None
    if found is None:
        # setdefault: of two threads noting the same exception at once, both get the first ticket
        found = namespace.setdefault(_TICKET, _new_ticket())
    if not isinstance(found, _Ticket):  # a plain number: unpickled from another process
        found = namespace[_TICKET] = _new_ticket()
    return found


def was_reported(exc: BaseException) -> bool:
    ticket = _ticket(exc, create=False)
    return ticket is not None and ticket.reported


def note_reported(exc: BaseException) -> bool:
    """Note that ``exc`` reached Sentry; ``False`` when it already had (the caller's event is a duplicate)."""
    ticket = _ticket(exc, create=True)
    if ticket is not None:
        with _lock:
            if ticket.reported:
                return False
            ticket.reported = True
    _recent_texts.add(exc)
    return True


def first_report(hint: Optional[Mapping[str, Any]]) -> bool:
    """Whether the error event sentry-sdk is about to send, with ``hint``, is the first report of its
    exception (and note it). Not for: an exception already reported; a log record ``repeats_a_report``."""
    if not hint or hint.get(RESERVED_FOR_THIS_EVENT):
        return True
    record = hint.get("log_record")
    if record is not None and repeats_a_report(record):
        return False
    exc_info = hint.get("exc_info")
    exc = exc_info[1] if exc_info else None
    if not isinstance(exc, BaseException):
        return True
    return note_reported(exc)


def repeats_a_report(record: Any) -> bool:
    """Whether an error event made of the log record ``record`` would repeat a report: of an exception
    already reported, of one a sampled span recorded (the span's trace reports it, linked to its request),
    or a server's plain-text line saying the app raised (see ``SERVER_ECHOES``)."""
    if _is_server_echo(record):
        return True
    exc_info = getattr(record, "exc_info", None)
    exc = exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) == 3 else None
    if not isinstance(exc, BaseException):
        return False
    ticket = _ticket(exc, create=False)
    return ticket is not None and (ticket.reported or ticket.on_sampled_span)


class NoRepeatedReports(logging.Filter):
    """On sentry-sdk's logging handler: no error event is built for a record that ``repeats_a_report``
    (the server's "Exception in ASGI application" line of an exception the middleware reported)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not repeats_a_report(record)


no_repeated_reports = NoRepeatedReports()


# Log records in which a server repeats, as text without the exception object, that the app raised: the
# middleware reports every exception escaping the app, so these would be a second event for the same one.
SERVER_ECHOES = (("_granian", "Application callable raised an exception"),)


def _is_server_echo(record: Any) -> bool:
    name = getattr(record, "name", None)
    message = str(getattr(record, "msg", ""))
    return isinstance(name, str) and any(
        (name == logger or name.startswith(f"{logger}.")) and message.startswith(text)
        for logger, text in SERVER_ECHOES
    )


def _recorded(span: SdkSpan, exc: BaseException, event: Event) -> None:
    ticket = _ticket(exc, create=True)
    if ticket is None:
        return
    _by_event[event] = ticket
    context = span.get_span_context()
    if context is not None and context.trace_flags.sampled:
        ticket.on_sampled_span = True


def link_recorded_exceptions() -> bool:
    """Link every exception recorded on an SDK span from now on to its span event (idempotent); ``False``
    when the OTel SDK cannot be wrapped, and span events are then matched by text."""
    return wrap_record_exception(_recorded)


def exception_key(exc: BaseException) -> ExceptionKey:
    """``(exception.type, exception.message)`` exactly as OTel's ``record_exception`` writes them."""
    module = type(exc).__module__
    qualname = type(exc).__qualname__
    type_name = f"{module}.{qualname}" if module and module != "builtins" else qualname
    return type_name, str(exc)


def raise_site(exc: BaseException) -> Optional[RaiseSite]:
    """File and line where ``exc`` was raised: the last entry of its traceback."""
    tb = exc.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename, tb.tb_lineno


class _RecentTexts:
    """Exceptions reported live lately, as text: type, message and raise site (bounded, thread-safe)."""

    def __init__(self, size: int = 1024, seconds: float = 300.0) -> None:
        self._size = size
        self._seconds = seconds
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[str, str, RaiseSite], float] = OrderedDict()

    def add(self, exc: BaseException) -> None:
        site = raise_site(exc)
        if site is None:
            return
        key = (*exception_key(exc), site)
        with self._lock:
            self._seen[key] = time.monotonic()
            self._seen.move_to_end(key)
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)

    def __contains__(self, key: tuple[str, str, RaiseSite]) -> bool:
        with self._lock:
            seen = self._seen.get(key)
        return seen is not None and time.monotonic() - seen < self._seconds

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


_recent_texts = _RecentTexts()


class RecordedException(Protocol):
    """An ``exception`` span event as conversion reads it."""

    @property
    def event(self) -> Optional[object]:
        """The span event object (``None`` when conversion was given none)."""

    @property
    def key(self) -> ExceptionKey:
        """``(exception.type, exception.message)`` of the event."""

    def raise_site(self) -> Optional[RaiseSite]:
        """File and line of the last frame in the recorded traceback text."""


class RecordedMatcher:
    """Conversion's two questions about the exceptions recorded on a trace's spans.

    ``live=True`` (the span processor and exporter): exceptions reported live are skipped. ``live=False``
    (conversion on its own, as in tests): nothing counts as reported.
    """

    def __init__(self, *, live: bool) -> None:
        self._live = live

    def reported(self, recorded: RecordedException) -> bool:
        """Whether the exception of this span event already reached Sentry with its live object."""
        if not self._live:
            return False
        ticket = _linked(recorded)
        if ticket is not None:
            return ticket.reported
        site = recorded.raise_site()
        return site is not None and (*recorded.key, site) in _recent_texts

    def same(self, first: RecordedException, second: RecordedException) -> bool:
        """Whether two span events record one exception (as it propagates through nested spans)."""
        first_ticket, second_ticket = _linked(first), _linked(second)
        if first_ticket is not None and second_ticket is not None:
            return first_ticket is second_ticket
        return first.key == second.key


def _linked(recorded: RecordedException) -> Optional[_Ticket]:
    event = recorded.event
    return _by_event.get(event) if isinstance(event, Event) else None


LIVE = RecordedMatcher(live=True)
UNREPORTED = RecordedMatcher(live=False)
