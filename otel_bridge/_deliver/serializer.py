"""A faster drop-in for ``sentry_sdk.serializer.serialize`` on outgoing events.

``Client._prepare_event`` runs every event through sentry-sdk's ``serialize``, a general walk that checks
every value against many cases and is among the largest costs of a transaction. For an event of plain JSON
data it only copies the containers and formats datetimes; ``fast_serialize`` does that in one tighter walk
(cheaper than a ``json`` round trip) when it can prove the result identical, i.e. the event holds only:

* exactly ``dict`` with ``str`` keys, ``list`` and ``tuple`` (subclasses may define
  ``__sentry_repr__``, ``__str__`` or ``__iter__``, and other keys are written as ``str(key)``);
* exactly ``str``, ``int``, ``bool``, ``None``, finite ``float`` (NaN and infinities become
  reprs) and ``datetime`` (becomes ``format_timestamp``, as in ``serialize``);
* databags (``extra``, each breadcrumb, ``request.data`` unless ``max_request_body_size`` is
  ``"always"``) within ``MAX_DATABAG_DEPTH``; containers in them beyond ``MAX_DATABAG_BREADTH`` are
  cut and noted in ``_meta`` the way ``serialize`` does (sentry-sdk's own ``extra["sys.argv"]`` has more
  than ten items under most servers' command lines);
* no string that ``strip_string`` would trim to ``max_value_length`` (checking span descriptions too,
  which ``serialize`` never trims);
* no nesting beyond ``_MAX_NESTING`` (so cycles, which ``serialize`` marks, fall back).

Otherwise, and for ``is_vars`` (frame locals), unknown keywords, registered global repr
processors, or any exception on the way, the call goes to the original ``serialize``.

``install`` also makes every sentry-sdk client fit each event it prepares into Sentry's item size limit
(``otel_bridge._deliver.fitting``) before the event is queued: ``Client._prepare_event`` (serialization, then
``before_send`` / ``before_send_transaction``) is wrapped, so the fitted event is the one that is sent and
the client whose transport counts what was dropped is known. ``fast_serialize`` itself stays an exact
equivalent of ``serialize``. Verified against sentry-sdk 2.75; where ``_prepare_event`` does not have the
expected signature, events are sent unfitted and that is logged once.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Any, Callable, Dict, Optional

import sentry_sdk.client
import sentry_sdk.consts
import sentry_sdk.serializer
from sentry_sdk.utils import disable_capture_event, format_timestamp, strip_string

from otel_bridge._compat import holds
from otel_bridge._compat.sentry_client import CLIENT_PREPARE_EVENT, CLIENT_SERIALIZER, client_class
from otel_bridge._deliver import fitting
from otel_bridge._drops import REPORT_INTERVAL_SECONDS, RateLimitedLogger

__all__ = ["fast_serialize", "fit_prepared_event", "install", "uninstall"]

logger = logging.getLogger("otel_bridge")
_trim_log = RateLimitedLogger(logger, REPORT_INTERVAL_SECONDS)

Serialize = Callable[..., Dict[str, Any]]
Path = tuple[str, ...]
Meta = Dict[str, Any]

_sentry_serialize: Serialize = sentry_sdk.serializer.serialize
_client: Any = sentry_sdk.client  # its `serialize` is an undeclared (to mypy) re-export
_replaced: Optional[Serialize] = None
PrepareEvent = Callable[[Any, Dict[str, Any], Any, Any], Optional[Dict[str, Any]]]
_client_class: Any = client_class
_replaced_prepare: Optional[PrepareEvent] = None
_installed_prepare: Optional[PrepareEvent] = None

_KNOWN_KWARGS = frozenset({"max_request_body_size", "max_value_length", "custom_repr", "is_vars"})
# Outside databags nothing is trimmed; this only bounds the walk, so cycles fall back.
_MAX_NESTING = 100


def _default_max_value_length() -> Optional[int]:
    """The limit ``strip_string`` applies when ``max_value_length`` is None (older sentry-sdk)."""
    limit = getattr(sentry_sdk.consts, "DEFAULT_MAX_VALUE_LENGTH", None)
    probe = "x" * (limit + 1 if isinstance(limit, int) else 1_000_000)
    if strip_string(probe, max_length=None) is probe:
        return None
    return limit if isinstance(limit, int) else 0


_NONE_MAX_VALUE_LENGTH = _default_max_value_length()


class _Fallback(Exception):
    """``serialize`` might return something other than a plain copy."""


def _copy(obj: Any, depth: int, max_len: Optional[int]) -> Any:
    """A copy of ``obj`` outside databags, as ``serialize`` returns it; ``depth`` only bounds the walk."""
    if depth <= 0:
        raise _Fallback
    t = type(obj)
    if t is str:
        _check_length(obj, max_len)
        return obj
    if t is dict:
        out = {}
        for k, v in obj.items():
            if type(k) is not str:
                raise _Fallback
            out[k] = _copy(v, depth - 1, max_len)
        return out
    if t is list or t is tuple:
        return [_copy(v, depth - 1, max_len) for v in obj]
    return _copy_scalar(obj, t)


def _copy_bag(obj: Any, depth: int, breadth: int, max_len: Optional[int], path: Path, meta: Meta) -> Any:
    """A copy of ``obj`` inside a databag with ``depth`` levels left. Containers beyond ``breadth`` items
    keep their first ``breadth`` and note their length in ``meta``, as ``serialize`` does; a node past the
    last level (replaced by its repr) falls back."""
    if depth <= 0:
        raise _Fallback
    t = type(obj)
    if t is str:
        _check_length(obj, max_len)
        return obj
    if t is dict:
        out = {}
        for i, (k, v) in enumerate(obj.items()):
            if i >= breadth:
                _annotate(meta, path, len(obj))
                break
            if type(k) is not str:
                raise _Fallback
            out[k] = _copy_bag(v, depth - 1, breadth, max_len, (*path, k), meta)
        return out
    if t is list or t is tuple:
        copied = [
            _copy_bag(v, depth - 1, breadth, max_len, (*path, str(i)), meta)
            for i, v in enumerate(obj[:breadth])
        ]
        # after the items, as serialize notes a container's length: the order of _meta's keys is kept
        if len(obj) > breadth:
            _annotate(meta, path, len(obj))
        return copied
    return _copy_scalar(obj, t)


def _copy_scalar(obj: Any, t: type) -> Any:
    if t is int or t is bool or obj is None:
        return obj
    if t is float:
        if obj - obj != 0.0:  # nan, inf
            raise _Fallback
        return obj
    if t is datetime:
        return format_timestamp(obj)
    raise _Fallback


def _check_length(text: str, max_len: Optional[int]) -> None:
    # strip_string trims beyond max_len UTF-8 bytes (characters if unencodable); <= 4 bytes a character.
    if (
        max_len is not None
        and text
        and len(text) * 4 > max_len
        and len(text.encode("utf-8", "surrogatepass")) > max_len
    ):
        raise _Fallback


def _annotate(meta: Meta, path: Path, length: int) -> None:
    node = meta
    for segment in path:
        node = node.setdefault(segment, {})
    node.setdefault("", {})["len"] = length


def _copy_event(event: Any, keep_request_bodies: bool, max_len: Optional[int]) -> Dict[str, Any]:
    """``_copy`` of a whole event, with databags where ``_Serializer._is_databag`` finds them."""
    if type(event) is not dict:
        raise _Fallback
    depth = sentry_sdk.serializer.MAX_DATABAG_DEPTH
    breadth = sentry_sdk.serializer.MAX_DATABAG_BREADTH
    meta: Meta = {}
    out: Dict[str, Any] = {}
    for key, section in event.items():
        if type(key) is not str:
            raise _Fallback
        if key == "extra":
            out[key] = _copy_bag(section, depth, breadth, max_len, (key,), meta)
        elif (key == "request" or key == "breadcrumbs") and type(section) is dict:
            out[key] = inner = {}
            for k, v in section.items():
                if type(k) is not str:
                    raise _Fallback
                if key == "request" and k == "data" and not keep_request_bodies:
                    inner[k] = _copy_bag(v, depth, breadth, max_len, (key, k), meta)
                elif key == "breadcrumbs" and k == "values" and (type(v) is list or type(v) is tuple):
                    inner[k] = [
                        _copy_bag(crumb, depth, breadth, max_len, (key, k, str(i)), meta)
                        for i, crumb in enumerate(v)
                    ]
                elif key == "breadcrumbs" and k == "values" and type(v) is dict:
                    if any(type(i) is not str for i in v):
                        raise _Fallback
                    inner[k] = {
                        i: _copy_bag(crumb, depth, breadth, max_len, (key, k, i), meta)
                        for i, crumb in v.items()
                    }
                else:
                    inner[k] = _copy(v, _MAX_NESTING, max_len)
        else:
            out[key] = _copy(section, _MAX_NESTING, max_len)
    if meta:
        out["_meta"] = meta
    return out


def fast_serialize(event: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
    """``sentry_sdk.serializer.serialize(event, **kwargs)``; just a copy when that is provably the same."""
    if (
        kwargs.get("is_vars")
        or not _KNOWN_KWARGS.issuperset(kwargs)
        or sentry_sdk.serializer.global_repr_processors
    ):
        return _sentry_serialize(event, **kwargs)
    max_len = kwargs.get("max_value_length")
    if max_len is None:
        max_len = _NONE_MAX_VALUE_LENGTH
    # serialize() sets this for its duration and clears it after; a datetime's tzinfo is user code.
    disable_capture_event.set(True)
    try:
        return _copy_event(event, kwargs.get("max_request_body_size") == "always", max_len)
    except Exception:
        pass
    finally:
        disable_capture_event.set(False)
    return _sentry_serialize(event, **kwargs)


def fit_prepared_event(client: Any, event: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """``event``, as ``client`` prepared it for sending, trimmed to Sentry's size limit; spans dropped for
    size are counted in ``client``'s reports (``buffer_overflow``, as sentry-sdk counts spans its span
    recorder drops). An event that cannot be made to fit is dropped and counted (``send_error``, what
    sentry-sdk counts when Sentry answers 413) rather than sent to be refused."""
    if event is None:
        return None
    try:
        result = fitting.fit_event(event)
    except Exception:  # not JSON data: sentry-sdk's own encoding of the envelope fails the same way
        return event
    if not result.trimmed:
        return event
    transport = getattr(client, "transport", None)
    is_transaction = event.get("type") == "transaction"
    kind = "a transaction" if is_transaction else "an error event"
    if not result.fits:
        if transport is not None:
            transport.record_lost_event(
                "send_error", data_category="transaction" if is_transaction else "error"
            )
            if is_transaction:
                spans = event.get("spans")
                quantity = (len(spans) if isinstance(spans, list) else 0) + 1
                transport.record_lost_event("send_error", data_category="span", quantity=quantity)
        _trim_log.warning(
            f"otel_bridge dropped {kind} of {result.original_size} bytes: it cannot be trimmed to Sentry's "
            f"limit of {result.max_bytes} bytes"
        )
        return None
    if result.spans_dropped and transport is not None:
        transport.record_lost_event("buffer_overflow", data_category="span", quantity=result.spans_dropped)
    removed = [
        f"{count} {what if count == 1 else plural} {how}"
        for count, what, plural, how in (
            (result.strings_cut, "string", "strings", "cut"),
            (result.spans_dropped, "span", "spans", "dropped"),
            (result.breadcrumbs_dropped, "breadcrumb", "breadcrumbs", "dropped"),
            (result.frames_without_vars, "frame's", "frames'", "local variables removed"),
            (result.entries_removed, "other entry", "other entries", "removed"),
        )
        if count
    ]
    _trim_log.warning(
        f"otel_bridge trimmed {kind} from {result.original_size} to {result.size} bytes to fit Sentry's "
        f"limit: {', '.join(removed)}"
    )
    return result.event


def _fitting(prepare: PrepareEvent) -> PrepareEvent:
    """``Client._prepare_event`` that fits what ``prepare`` returns; the method a client calls."""

    @functools.wraps(prepare)
    def _prepare_event(client: Any, event: Dict[str, Any], hint: Any, scope: Any) -> Optional[Dict[str, Any]]:
        return fit_prepared_event(client, prepare(client, event, hint, scope))

    return _prepare_event


def install() -> None:
    """Make sentry-sdk's clients serialize events with ``fast_serialize`` and fit every event they prepare
    into Sentry's size limit, each where the reach it needs holds; idempotent."""
    global _replaced, _replaced_prepare, _installed_prepare
    if _client.serialize is not fast_serialize and holds(CLIENT_SERIALIZER):
        _replaced = _client.serialize
        _client.serialize = fast_serialize
    if _installed_prepare is not None and _client_class.__dict__.get("_prepare_event") is _installed_prepare:
        return
    if not holds(CLIENT_PREPARE_EVENT):
        return
    _replaced_prepare = _client_class._prepare_event
    _installed_prepare = _fitting(_client_class._prepare_event)
    _client_class._prepare_event = _installed_prepare


def uninstall() -> None:
    """Undo ``install``."""
    global _replaced, _replaced_prepare, _installed_prepare
    if _replaced is not None and _client.serialize is fast_serialize:
        _client.serialize = _replaced
    _replaced = None
    if _installed_prepare is not None and _client_class.__dict__.get("_prepare_event") is _installed_prepare:
        _client_class._prepare_event = _replaced_prepare
    _replaced_prepare = _installed_prepare = None
