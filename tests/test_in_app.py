"""One ``in_app`` rule (``_convert.in_app``) for frames of exceptions sent live and for frames parsed from the
text OpenTelemetry recorded: for the same exception and options both mark every frame alike.

The cases are those where the two used to disagree: the bridge's own frames in a checkout under the project
root (parsed: in the app; live: not), plumbing named in ``in_app_include`` (parsed: in the app; live: not,
as the bridge marked it before sentry-sdk's client could), frozen modules (live: under the project root,
as sentry-sdk makes their path absolute against the current directory) and the standard library (live:
left unmarked)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from opentelemetry.util._once import Once
from sentry_sdk.utils import exceptions_from_error_tuple, handle_in_app

from otel_bridge._convert.frames import parse_exception
from otel_bridge._convert.in_app import InApp, in_app_rule
from otel_bridge._convert.privacy import clean_frames
from tests.test_frames import PROJECT_ROOT, catch, in_stdlib, recorded

_SDK_OPTIONS = {"include_local_variables": False, "include_source_context": False, "max_value_length": None}


class _Unreadable(dict):  # type: ignore[type-arg]
    def get(self, *args: Any) -> Any:
        raise LookupError("unreadable frame")


def through_the_bridge() -> None:
    """A frame of otel_bridge (under the project root in a checkout) between two of the app's."""
    in_app_rule().mark([_Unreadable()])


def through_opentelemetry() -> None:
    """A frame of opentelemetry (in site-packages) between two of the app's."""

    def fail() -> None:
        raise RuntimeError("failed once")

    Once().do_once(fail)


def at_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], Any]:
    """Frames of frozen importlib modules, and of a module outside the project root."""
    (tmp_path / "fails_at_import.py").write_text("raise ImportError('at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return lambda: importlib.import_module("fails_at_import")


def live_marks(error: BaseException, rule: InApp) -> list[tuple[str, Optional[bool]]]:
    """The frames sentry-sdk builds for the live exception, through the bridge's event processor and then
    sentry-sdk's client, as an event captured live goes."""
    values = exceptions_from_error_tuple((type(error), error, error.__traceback__), _SDK_OPTIONS)
    event: dict[str, Any] = {"exception": {"values": values}}
    clean_frames(event, send_default_pii=False, denylist=(), in_app=rule)
    handle_in_app(event, list(rule.exclude), list(rule.include), rule.project_root)
    return [(frame["function"], frame.get("in_app")) for frame in values[-1]["stacktrace"]["frames"]]


def parsed_marks(error: BaseException, rule: InApp) -> list[tuple[str, Optional[bool]]]:
    [*_, value] = parse_exception(
        *recorded(error),
        in_app_include=rule.include,
        in_app_exclude=rule.exclude,
        project_root=rule.project_root,
        source_context=False,
    )
    return [(frame["function"], frame.get("in_app")) for frame in value["stacktrace"]["frames"]]


def test_the_bridges_own_frames_are_not_the_apps_on_either_path() -> None:
    rule = in_app_rule(project_root=PROJECT_ROOT)
    error = catch(through_the_bridge)
    assert live_marks(error, rule) == parsed_marks(error, rule)
    marks = dict(parsed_marks(error, rule))
    assert (marks["through_the_bridge"], marks["mark"], marks["get"]) == (True, False, True)


def test_plumbing_named_in_in_app_include_is_the_apps_on_either_path() -> None:
    error = catch(through_opentelemetry)
    included = in_app_rule(include=("opentelemetry",), project_root=PROJECT_ROOT)
    assert live_marks(error, included) == parsed_marks(error, included)
    assert dict(parsed_marks(error, included))["do_once"] is True
    default = in_app_rule(project_root=PROJECT_ROOT)
    assert live_marks(error, default) == parsed_marks(error, default)
    assert dict(parsed_marks(error, default))["do_once"] is False


def test_frozen_and_outside_frames_alike_on_either_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    error = catch(at_import(tmp_path, monkeypatch))
    rule = in_app_rule(project_root=PROJECT_ROOT)
    live = live_marks(error, rule)
    assert live == parsed_marks(error, rule)
    assert ("_call_with_frames_removed", False) in live  # importlib._bootstrap, frozen
    assert live[-1] == ("<module>", False)  # fails_at_import.py, outside the project root
    assert live[0] == ("catch", True)


def test_stdlib_frames_are_marked_alike_on_either_path() -> None:
    error = catch(in_stdlib)
    rule = in_app_rule(project_root=PROJECT_ROOT)
    live = live_marks(error, rule)
    assert live == parsed_marks(error, rule)
    assert [mark for _function, mark in live] == [True, True, False, False, False]


@pytest.mark.parametrize(
    ("module", "path", "rule", "expected"),
    [
        ("shop.cart", "/srv/app/shop/cart.py", InApp(project_root="/srv/app"), True),
        ("shop.cart", "/srv/app2/shop/cart.py", InApp(project_root="/srv/app"), False),
        ("shop.cart", "/srv/app/shop/cart.py", InApp(exclude=("shop",), project_root="/srv/app"), False),
        (
            "requests.api",
            "/v/lib/python3.11/site-packages/requests/api.py",
            InApp(include=("requests",)),
            True,
        ),
        ("requests.api", "/v/lib/python3.11/site-packages/requests/api.py", InApp(), False),
        ("uvicorn.main", "/srv/app/uvicorn/main.py", InApp(project_root="/srv/app"), False),
        ("uvicorn.main", "/srv/app/uvicorn/main.py", InApp(include=("uvicorn",)), True),
        (
            "uvicorn.main",
            "/srv/app/uvicorn/main.py",
            InApp(include=("uvicorn.main",), exclude=("uvicorn",)),
            True,
        ),
        ("otel_bridge_extras", "/srv/app/otel_bridge_extras.py", InApp(project_root="/srv/app"), True),
        ("runpy", "/srv/app/<frozen runpy>", InApp(project_root="/srv/app"), False),
        ("tool", "/srv/other/tool.py", InApp(), True),
        ("anyio._backends", None, InApp(), False),
        ("shop.cart", None, InApp(project_root="/srv/app"), None),
        (None, "<string>", InApp(project_root="/srv/app"), False),
    ],
)
def test_the_rule(module: Optional[str], path: Optional[str], rule: InApp, expected: Optional[bool]) -> None:
    """sentry-sdk's order (include, exclude, no path, site-packages, project root), then the bridge's."""
    assert rule(module, path) is expected


def test_a_frame_already_marked_keeps_its_mark() -> None:
    frames = [{"module": "uvicorn.main", "abs_path": "/srv/app/uvicorn/main.py", "in_app": True}]
    InApp().mark(frames)
    assert frames[0]["in_app"] is True


def test_without_the_clients_rule_only_plumbing_is_marked() -> None:
    frames = [
        {
            "module": "uvicorn.protocols.http",
            "abs_path": "/srv/app/uvicorn/protocols/http.py",
            "vars": {"a": 1},
        },
        {"module": "shop.cart", "abs_path": "/srv/app/shop/cart.py", "vars": {"a": 1}},
    ]
    clean_frames(
        {"exception": {"values": [{"stacktrace": {"frames": frames}}]}}, send_default_pii=False, denylist=()
    )
    assert frames[0]["in_app"] is False and "vars" not in frames[0]
    assert "in_app" not in frames[1] and frames[1]["vars"] == {"a": 1}
