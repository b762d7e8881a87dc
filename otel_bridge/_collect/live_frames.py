"""Cheaper frames for the error events sentry-sdk builds from a live exception, each event the same as it
would be without this module once the bridge's event processor has cleaned it.

Two functions of ``sentry_sdk.utils`` are replaced process-wide (the names
``single_exception_from_error_tuple`` and ``serialize_frame`` look up when they run), where the reach
``sentry_frames.FRAME_SERIALIZER`` holds:

* ``serialize_frame``: a frame of an exception whose module is plumbing (``in_app.is_plumbing``: ASGI
  servers, middlewares, OpenTelemetry, sentry-sdk, the bridge) is serialized without its local variables.
  ``privacy.clean_frames``, which the bridge's global event processor runs on every error event, removes
  exactly those frames' ``vars``, so walking and repr-ing them (the request's scope, the middlewares'
  state) was work thrown away. Frames serialized for other purposes (a thread's stack trace with
  ``attach_stacktrace``, which ``clean_frames`` does not touch) are left as they are.
* ``get_source_context``: a file's lines around a line, which sentry-sdk reads by loading and splitting the
  whole source file for every frame of every event, are remembered for a file that a plain
  ``SourceFileLoader`` loaded, as long as the file is unchanged (its ``os.stat`` is the same).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from importlib.machinery import SourceFileLoader
from types import CodeType, MappingProxyType
from typing import Any, Callable, Optional

import sentry_sdk
import sentry_sdk.utils as sentry_utils

from otel_bridge._compat import holds
from otel_bridge._compat.sentry_frames import FRAME_SERIALIZER
from otel_bridge._convert.in_app import is_plumbing

SourceContext = tuple[list[Any], Any, list[Any]]
AnyFunction = Callable[..., Any]

ORIGINAL = "_otel_bridge_original"
"""The attribute of each replacement that holds the function it replaced."""

SOURCE_CONTEXTS_REMEMBERED = 4096
"""Frames' source contexts remembered (least recently used forgotten first): a few lines each."""

_REMEMBERED_MODULES = 4096
_install_lock = threading.Lock()


def original_of(function: AnyFunction) -> AnyFunction:
    """The function a replacement of this module replaced; any other function itself."""
    original: Optional[AnyFunction] = getattr(function, ORIGINAL, None)
    return original if original is not None else function


# --- frames of plumbing without their local variables -----------------------------------------------------


class _WithoutLocals:
    """A frame as ``serialize_frame`` and ``get_source_context`` read it, without local variables."""

    __slots__ = ("f_code", "f_globals", "f_lineno")

    f_locals: Mapping[str, Any] = MappingProxyType({})

    def __init__(self, frame: Any) -> None:
        self.f_code = frame.f_code
        self.f_globals = frame.f_globals
        self.f_lineno = frame.f_lineno


_plumbing: dict[str, bool] = {}


def _is_plumbing(module: str) -> bool:
    answer = _plumbing.get(module)
    if answer is None:
        answer = is_plumbing(module)
        if len(_plumbing) >= _REMEMBERED_MODULES:
            _plumbing.clear()
        _plumbing[module] = answer
    return answer


def code_objects(function: AnyFunction) -> tuple[CodeType, ...]:
    """``function``'s code and the code nested in it (a comprehension is a code object of its own before
    Python 3.12): whichever of them calls ``serialize_frame``."""
    found: list[CodeType] = []
    pending = [original_of(function).__code__]
    while pending:
        code = pending.pop()
        found.append(code)
        pending.extend(const for const in code.co_consts if isinstance(const, CodeType))
    return tuple(found)


def frame_serializer(original: AnyFunction, exception_callers: Iterable[CodeType]) -> AnyFunction:
    """``serialize_frame`` that gives a frame of plumbing no local variables when one of
    ``exception_callers`` (the code of ``single_exception_from_error_tuple``) calls it."""
    callers = tuple(exception_callers)  # held, so that their ids stay theirs
    caller_ids = frozenset(id(code) for code in callers)

    @functools.wraps(original)
    def serialize_frame(frame: Any, *args: Any, **kwargs: Any) -> Any:
        # compared by identity: hashing a code object hashes its whole body
        if id(sys._getframe(1).f_code) in caller_ids:
            try:
                module = frame.f_globals["__name__"]
            except Exception:
                module = None
            if isinstance(module, str) and _is_plumbing(module):
                frame = _WithoutLocals(frame)
        return original(frame, *args, **kwargs)

    setattr(serialize_frame, ORIGINAL, original)
    serialize_frame._otel_bridge_callers = callers  # type: ignore[attr-defined]
    return serialize_frame


# --- source context remembered per unchanged file ---------------------------------------------------------


def _file_state(path: str) -> Optional[tuple[int, int, int, int]]:
    try:
        state = os.stat(path)
    except (OSError, ValueError):
        return None
    return state.st_mtime_ns, state.st_size, state.st_ino, state.st_dev


def _context_lines_key() -> Any:
    """What of the client's options decides how many lines around a frame's line sentry-sdk reads
    (``data_collection``'s ``frame_context_lines``, sentry-sdk 2.75)."""
    options = sentry_sdk.get_client().options
    collection = options.get("data_collection") if options else None
    if collection is None:
        return None
    return collection.get("provided_by_user"), collection.get("frame_context_lines")


def _source_key(frame: Any, tb_lineno: Any, max_value_length: Any) -> Optional[tuple[Any, ...]]:
    """The key of the frame's source context, or ``None`` where it is not remembered: a file whose source
    the module's loader does not read straight from that file (zip imports, other loaders, code without a
    module), or a file that cannot be ``stat``-ed."""
    path = frame.f_code.co_filename
    names = frame.f_globals
    module = names.get("__name__")
    loader = names.get("__loader__")
    if (
        type(loader) is not SourceFileLoader
        or not isinstance(module, str)
        or loader.name != module
        or loader.path != path
        or type(tb_lineno) is not int
    ):
        return None
    state = _file_state(path)
    if state is None:
        return None
    return (path, module, tb_lineno, max_value_length, _context_lines_key(), state)


def _plain(lines: Any) -> bool:
    return isinstance(lines, list) and all(type(line) is str for line in lines)


def source_context(original: AnyFunction, size: int = SOURCE_CONTEXTS_REMEMBERED) -> AnyFunction:
    """``get_source_context`` remembering up to ``size`` results: each for a file unchanged since it was
    read, and only results of plain strings (a line cut to ``max_value_length`` is an ``AnnotatedValue``,
    which later steps may change)."""
    remembered: OrderedDict[tuple[Any, ...], tuple[tuple[str, ...], Optional[str], tuple[str, ...]]]
    remembered = OrderedDict()
    lock = threading.Lock()

    @functools.wraps(original)
    def get_source_context(frame: Any, tb_lineno: Any, max_value_length: Any = None) -> SourceContext:
        try:
            key = _source_key(frame, tb_lineno, max_value_length)
            if key is not None:
                hash(key)
        except Exception:
            key = None
        if key is None:
            result: SourceContext = original(frame, tb_lineno, max_value_length)
            return result
        with lock:
            found = remembered.get(key)
            if found is not None:
                remembered.move_to_end(key)
        if found is not None:
            # fresh lists: the event they go into is changed by later steps
            return list(found[0]), found[1], list(found[2])
        result = original(frame, tb_lineno, max_value_length)
        if not (isinstance(result, tuple) and len(result) == 3):
            return result
        before, line, after = result
        if (
            _plain(before)
            and _plain(after)
            and (line is None or type(line) is str)
            # read from the file as it was stat-ed
            and _file_state(key[0]) == key[-1]
        ):
            with lock:
                remembered[key] = (tuple(before), line, tuple(after))
                if len(remembered) > size:
                    remembered.popitem(last=False)
        return result

    setattr(get_source_context, ORIGINAL, original)
    get_source_context._otel_bridge_remembered = remembered  # type: ignore[attr-defined]
    return get_source_context


# --- process-wide ------------------------------------------------------------------------------------------


def replacements(namespace: Mapping[str, Any]) -> dict[str, AnyFunction]:
    """The bridge's ``serialize_frame`` and ``get_source_context`` around the original ones in
    ``namespace`` (``sentry_sdk.utils``'s or a copy of it)."""
    return {
        "serialize_frame": frame_serializer(
            original_of(namespace["serialize_frame"]),
            code_objects(namespace["single_exception_from_error_tuple"]),
        ),
        "get_source_context": source_context(original_of(namespace["get_source_context"])),
    }


def installed() -> bool:
    return all(
        getattr(getattr(sentry_utils, name, None), ORIGINAL, None) is not None
        for name in ("serialize_frame", "get_source_context")
    )


def install() -> None:
    """Replace sentry-sdk's ``serialize_frame`` and ``get_source_context`` (idempotent), where the reach
    holds. Only together with the bridge's event processor, whose ``clean_frames`` makes the events equal."""
    with _install_lock:
        if installed() or not holds(FRAME_SERIALIZER):
            return
        namespace = vars(sentry_utils)
        for name, replacement in replacements(namespace).items():
            if getattr(namespace[name], ORIGINAL, None) is None:
                setattr(sentry_utils, name, replacement)


def uninstall() -> None:
    """Put sentry-sdk's own functions back."""
    with _install_lock:
        for name in ("serialize_frame", "get_source_context"):
            current = getattr(sentry_utils, name)
            original = getattr(current, ORIGINAL, None)
            if original is not None:
                setattr(sentry_utils, name, original)
