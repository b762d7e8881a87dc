"""sentry-sdk's frame serializer for the exceptions it builds into events, which the bridge replaces with one
that skips the work its own event processor throws away (``_collect/live_frames.py``)."""

from __future__ import annotations

import inspect
from types import FunctionType
from typing import Any, Callable

import sentry_sdk.utils

from otel_bridge._compat import reach

FRAME_SERIALIZER = "exception frame serializer"

_SERIALIZE_FRAME = [
    "frame",
    "tb_lineno",
    "include_local_variables",
    "include_source_context",
    "max_value_length",
    "custom_repr",
]
_GET_SOURCE_CONTEXT = ["frame", "tb_lineno", "max_value_length"]


@reach(
    FRAME_SERIALIZER,
    target="sentry_sdk.utils.serialize_frame and sentry_sdk.utils.get_source_context, replaced in the module "
    "(single_exception_from_error_tuple and serialize_frame look them up when they run)",
    verified="sentry-sdk 2.57, 2.75",
    fallback="error events are built by sentry-sdk's own frame serializer (slower)",
)
def _frames_replaceable() -> bool:
    """The functions have the parameters the replacements pass on, and an exception raised through a frame
    of plumbing and a frame of the app makes the same event, once cleaned as the bridge's event processor
    cleans it, with the replacements as with sentry-sdk's own functions: each built by a private copy of
    ``sentry_sdk.utils``'s functions, so that events other threads build meanwhile are left alone."""
    from otel_bridge._collect.live_frames import original_of, replacements

    names = vars(sentry_sdk.utils)
    for name, parameters in (
        ("serialize_frame", _SERIALIZE_FRAME),
        ("get_source_context", _GET_SOURCE_CONTEXT),
    ):
        function = names.get(name)
        if not callable(function) or list(inspect.signature(original_of(function)).parameters) != parameters:
            return False
    if not isinstance(names.get("single_exception_from_error_tuple"), FunctionType):
        return False

    own = _utils_copy()
    replaced = _utils_copy()
    replaced.update(replacements(replaced))
    error = _probe_error()
    expected = _event(own, error, clean=False)
    built = _event(replaced, error, clean=False)
    # (a client's ``data_collection`` may keep every frame's local variables home)
    if _plumbing_frame(expected).get("vars") and _plumbing_frame(built).get("vars"):
        return False  # the replacement is not the function sentry-sdk calls
    return (
        _cleaned(built) == _cleaned(expected)
        # the second time from remembered source lines
        and _event(replaced, error, clean=True) == _cleaned(expected)
    )


def _utils_copy() -> dict[str, Any]:
    """``sentry_sdk.utils``'s names, its functions (sentry-sdk's own, not the bridge's replacements) copied
    to look names up in the copy."""
    from otel_bridge._collect.live_frames import original_of

    real = vars(sentry_sdk.utils)
    namespace = dict(real)
    for name, value in real.items():
        value = original_of(value) if callable(value) else value
        if isinstance(value, FunctionType) and value.__globals__ is real:
            copy = FunctionType(
                value.__code__, namespace, value.__name__, value.__defaults__, value.__closure__
            )
            copy.__kwdefaults__ = value.__kwdefaults__
            namespace[name] = copy
    return namespace


_PROBE_APP = """
def view(request_id):
    order = {"id": request_id, "items": ["probe"]}
    raise KeyError(order["items"][0])
"""


def _probe_error() -> BaseException:
    app: dict[str, Any] = {"__name__": "otel_bridge_probe_app"}
    exec(compile(_PROBE_APP, "<otel_bridge probe>", "exec"), app)
    try:
        _plumbing_call(app["view"])
    except RuntimeError as error:
        return error
    raise AssertionError("the probe did not raise")


def _plumbing_call(view: Callable[[int], Any]) -> None:
    """A frame of plumbing (this module): local variables the event processor removes."""
    scope = {"type": "http", "headers": [(b"x-probe", b"1")]}
    try:
        view(len(scope))
    except KeyError as error:
        raise RuntimeError("otel_bridge probe") from error


def _event(namespace: dict[str, Any], error: BaseException, *, clean: bool) -> dict[str, Any]:
    event: dict[str, Any] = namespace["event_from_exception"](error)[0]
    return _cleaned(event) if clean else event


def _cleaned(event: dict[str, Any]) -> dict[str, Any]:
    import copy

    from otel_bridge._convert.privacy import clean_frames

    cleaned = copy.deepcopy(event)
    clean_frames(cleaned, send_default_pii=False, denylist=())
    return cleaned


def _plumbing_frame(event: dict[str, Any]) -> dict[str, Any]:
    for value in event["exception"]["values"]:
        for frame in value["stacktrace"]["frames"]:
            if frame.get("function") == _plumbing_call.__name__:
                found: dict[str, Any] = frame
                return found
    return {}
