"""``parse_exception`` against sentry-sdk's frames for the live exception, and against Relay for any text.

The exceptions below are raised by helpers in this file, so their source files exist, recorded on a real OTel
span (``span.record_exception``), parsed back, and compared field by field with what sentry-sdk's
``exceptions_from_error_tuple`` builds from the live traceback. The only differences allowed are these:

* ``IN_APP_UNSET``: sentry-sdk leaves ``in_app`` unset on frames that are neither in site-packages nor under
  ``project_root`` (the standard library, files elsewhere); ``parse_exception`` says ``False`` there.
* ``NEWEST_FRAMES``: at most ``MAX_FRAMES`` frames per exception, the newest; sentry-sdk sends up to 2000.
* ``FROZEN_PATH``: a frozen module's ``abs_path`` stays ``<frozen module>``, and its frames are not in-app;
  sentry-sdk makes that path absolute against the current directory, so it may fall under ``project_root``.
* ``MEMBER_HANDLED``: sentry-sdk copies the caller's mechanism, ``handled`` included, onto every member of an
  exception group; ``parse_exception`` leaves ``handled`` to its caller.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import sysconfig
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from sentry_sdk.utils import exceptions_from_error_tuple, handle_in_app

from otel_bridge._convert.frames import MAX_EXCEPTIONS, MAX_FRAMES, parse_exception, read_source_lines
from tests.relay import assert_relay_valid

PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
THIS_FILE = str(Path(__file__).resolve())
STDLIB = sysconfig.get_paths()["stdlib"]
_SDK_OPTIONS = {"include_local_variables": False, "include_source_context": True, "max_value_length": None}
_PROVIDER = TracerProvider()
FRAME_FIELDS = (
    "function",
    "lineno",
    "abs_path",
    "filename",
    "module",
    "context_line",
    "pre_context",
    "post_context",
)
needs_groups = pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are Python 3.11+")
needs_notes = pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are Python 3.11+")


# --- exceptions to parse --------------------------------------------------------------------------------


class PaymentDeclined(Exception):
    pass


class Outer:
    class Inner(LookupError):
        pass


def divide(a: float, b: float) -> float:
    return a / b


def simple() -> None:
    divide(1, 0)


def with_cause() -> None:
    try:
        simple()
    except ZeroDivisionError as error:
        raise PaymentDeclined("card declined") from error


def with_context() -> None:
    try:
        {}["missing"]
    except KeyError:
        simple()


def from_none() -> None:
    try:
        {}["missing"]
    except KeyError:
        raise Outer.Inner("no such thing") from None


def in_stdlib() -> None:
    json.loads("{")


def recurse(depth: int) -> int:
    return recurse(depth + 1) + 1


def local_class() -> None:
    class LocalError(Exception):
        pass

    raise LocalError("defined in a function")


def multi_line_with_notes() -> None:
    try:
        raise ValueError("first line\nsecond line")
    except ValueError as error:
        error.add_note("a note on the cause")
        failure = RuntimeError("")
        failure.add_note("a note on the raised one")
        raise failure from error


def syntax_error_wrapped() -> None:
    try:
        compile("a b", "<generated>", "exec")
    except SyntaxError as error:
        raise ValueError("could not compile") from error


def catch(function: Callable[..., Any], *args: Any) -> BaseException:
    try:
        function(*args)
    except BaseException as error:
        return error
    raise AssertionError(f"{function.__name__} did not raise")


def recorded(error: BaseException) -> tuple[str, str, str]:
    """``exception.type``, ``exception.message`` and ``exception.stacktrace`` as OTel records them."""
    span = _PROVIDER.get_tracer(__name__).start_span("recorded")
    span.record_exception(error)
    span.end()
    attributes = span.events[0].attributes or {}
    return (
        str(attributes["exception.type"]),
        str(attributes["exception.message"]),
        str(attributes["exception.stacktrace"]),
    )


def live(error: BaseException) -> list[dict[str, Any]]:
    """sentry-sdk's values for the live exception, ``in_app`` set as its client sets it."""
    values = exceptions_from_error_tuple((type(error), error, error.__traceback__), _SDK_OPTIONS)
    handle_in_app({"exception": {"values": values}}, [], [], project_root=PROJECT_ROOT)
    return values


def parsed(error: BaseException, **options: Any) -> list[dict[str, Any]]:
    values = parse_exception(*recorded(error), project_root=PROJECT_ROOT, **options)
    check(values)
    return values


def event(values: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "level": "error",
        "platform": "python",
        "exception": {"values": values},
        "timestamp": 1700000000.0,
    }


def check(values: Any) -> None:
    assert isinstance(values, list)
    assert 1 <= len(values) <= MAX_EXCEPTIONS
    for value in values:
        assert value.get("type") or value.get("value")
        assert len(frames_of(value)) <= MAX_FRAMES
    json.dumps(values)
    assert_relay_valid(event(values))


def frames_of(value: dict[str, Any]) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = (value.get("stacktrace") or {}).get("frames") or []
    return frames


def assert_like_sentry(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    assert [v["type"] for v in ours] == [v["type"] for v in theirs]
    for mine, sdk in zip(ours, theirs, strict=False):
        assert (mine["type"], mine.get("module"), mine["value"]) == (sdk["type"], sdk["module"], sdk["value"])
        sdk_frames = frames_of(sdk)[-MAX_FRAMES:]  # NEWEST_FRAMES
        assert len(frames_of(mine)) == len(sdk_frames)
        for ours_frame, sdk_frame in zip(frames_of(mine), sdk_frames, strict=False):
            expected = {name: sdk_frame.get(name) or None for name in FRAME_FIELDS}
            expected["in_app"] = sdk_frame.get("in_app") or False  # IN_APP_UNSET
            frozen = expected["abs_path"].find("<frozen ")
            if frozen > 0:  # FROZEN_PATH
                expected["abs_path"], expected["in_app"] = expected["abs_path"][frozen:], False
            actual = {name: ours_frame.get(name) or None for name in FRAME_FIELDS}
            actual["in_app"] = ours_frame.get("in_app")
            assert actual == expected
        if "mechanism" in sdk and "exception_id" in sdk["mechanism"]:
            # MEMBER_HANDLED
            assert mine["mechanism"] == {k: v for k, v in sdk["mechanism"].items() if k != "handled"}
        else:
            assert "mechanism" not in mine


# --- real tracebacks, compared with sentry-sdk ------------------------------------------------------------


def test_simple_error_matches_sentry_sdk() -> None:
    error = catch(simple)
    ours = parsed(error)
    assert_like_sentry(ours, live(error))
    [value] = ours
    assert (value["type"], value.get("module"), value["value"]) == (
        "ZeroDivisionError",
        None,
        "division by zero",
    )
    last = frames_of(value)[-1]
    assert (last["function"], last["context_line"].strip()) == ("divide", "return a / b")
    assert last["module"] == "tests.test_frames"
    assert last["filename"] == os.path.join("tests", "test_frames.py")
    assert last["in_app"] is True
    assert len(last["pre_context"]) == 5
    assert len(last["post_context"]) == 5


def test_direct_cause_comes_first_like_sentry_sdk() -> None:
    error = catch(with_cause)
    ours = parsed(error)
    assert_like_sentry(ours, live(error))
    assert [(v["type"], v.get("module")) for v in ours] == [
        ("ZeroDivisionError", None),
        ("PaymentDeclined", "tests.test_frames"),
    ]
    assert [f["function"] for f in frames_of(ours[0])][-2:] == ["simple", "divide"]


def test_error_during_handling_keeps_the_context_like_sentry_sdk() -> None:
    error = catch(with_context)
    ours = parsed(error)
    assert_like_sentry(ours, live(error))
    assert [v["type"] for v in ours] == ["KeyError", "ZeroDivisionError"]
    assert ours[0]["value"] == "'missing'"


def test_from_none_drops_the_context_and_splits_a_nested_class() -> None:
    error = catch(from_none)
    ours = parsed(error)
    assert_like_sentry(ours, live(error))
    [value] = ours
    assert (value["type"], value["module"]) == ("Outer.Inner", "tests.test_frames")


def test_class_defined_in_a_function() -> None:
    error = catch(local_class)
    ours = parsed(error)
    assert_like_sentry(ours, live(error))
    assert (ours[0]["type"], ours[0]["module"]) == ("local_class.<locals>.LocalError", "tests.test_frames")


def test_stdlib_frames_are_not_in_app() -> None:
    error = catch(in_stdlib)
    ours = parsed(error)
    assert_like_sentry(ours, live(error))
    [value] = ours
    assert (value["type"], value["module"]) == ("JSONDecodeError", "json.decoder")
    frames = frames_of(value)
    stdlib = [f for f in frames if f["abs_path"].startswith(STDLIB)]
    assert stdlib
    assert {f["module"].split(".")[0] for f in stdlib} == {"json"}
    assert all(f["in_app"] is False for f in stdlib)
    assert all(f["in_app"] is True for f in frames if f not in stdlib)


def test_recursion_keeps_the_newest_frames() -> None:
    error = catch(recurse, 0)
    assert isinstance(error, RecursionError)
    assert "Previous line repeated" in recorded(error)[2]
    ours = parsed(error)
    theirs = live(error)
    assert len(frames_of(theirs[0])) > MAX_FRAMES
    assert_like_sentry(ours, theirs)
    assert len(frames_of(ours[0])) == MAX_FRAMES
    assert {f["function"] for f in frames_of(ours[0])} == {"recurse"}


@needs_notes
def test_multi_line_messages_and_notes_like_sentry_sdk() -> None:
    error = catch(multi_line_with_notes)
    ours = parsed(error)
    assert_like_sentry(ours, live(error))
    assert ours[0]["value"] == "first line\nsecond line\na note on the cause"
    assert ours[1]["value"] == "\na note on the raised one"


def test_chained_syntax_error_like_sentry_sdk() -> None:
    error = catch(syntax_error_wrapped)
    ours = parsed(error)
    assert_like_sentry(ours, live(error))
    assert ours[0]["value"].endswith("(<generated>, line 1)")


def test_module_level_frames_of_an_imported_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "boom_at_import.py").write_text("import json\n\nx = 1\njson.loads('[')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    error = catch(importlib.import_module, "boom_at_import")
    ours = parsed(error)
    assert_like_sentry(ours, live(error))
    frozen = [f for f in frames_of(ours[0]) if f["abs_path"].startswith("<frozen ")]
    assert frozen
    assert all(f["module"].startswith("importlib._bootstrap") and f["in_app"] is False for f in frozen)
    module_frame = next(f for f in frames_of(ours[0]) if f["function"] == "<module>")
    assert module_frame["module"] == "boom_at_import"
    assert module_frame["context_line"] == "json.loads('[')"
    assert module_frame["pre_context"] == ["import json", "", "x = 1"]
    assert module_frame["in_app"] is False  # outside project_root


@needs_groups
def test_exception_group_like_sentry_sdk() -> None:
    def group() -> None:
        members = [catch(simple), catch(in_stdlib), catch(with_cause)]
        nested = ExceptionGroup("inner", [ValueError("v"), catch(from_none)])
        raise ExceptionGroup("several", [*members, nested])

    error = catch(group)
    ours = parsed(error)
    assert_like_sentry(ours, live(error)[-MAX_EXCEPTIONS:])
    assert ours[-1]["type"] == "ExceptionGroup"
    assert ours[-1]["value"] == "several"
    assert ours[-1]["mechanism"] == {"type": "generic", "exception_id": 0, "is_exception_group": True}


@needs_groups
def test_exception_groups_in_a_chain() -> None:
    def regroup() -> None:
        try:
            raise ExceptionGroup("eg", [catch(simple), TypeError("t")]) from KeyError("k")
        except BaseException as group:
            failure = ExceptionGroup("", [RuntimeError("handled badly"), ValueError("v")])
            failure.add_note("a note")
            raise failure from group

    error = catch(regroup)
    ours = parsed(error)
    assert_like_sentry(ours, live(error))
    root = ours[-1]
    assert (root["type"], root["value"]) == ("ExceptionGroup", " (2 sub-exceptions)\na note")


# --- context lines through read_lines --------------------------------------------------------------------

SHOP = "/srv/app/shop/cart.py"
SHOP_SOURCE = [f"line {n}\n" for n in range(1, 21)]
SHOP_TRACEBACK = textwrap.dedent(
    f"""\
    Traceback (most recent call last):
      File "{SHOP}", line 3, in checkout
        line 3
      File "{SHOP}", line 12, in charge
        line 12
        ^^^^^^^
      File "/srv/gone.py", line 7, in vanished
        print(total)
    shop.errors.Declined: no funds
    """
)


def test_context_lines_come_from_read_lines() -> None:
    calls: list[str] = []

    def read_lines(path: str) -> Optional[list[str]]:
        calls.append(path)
        return SHOP_SOURCE if path == SHOP else None

    [value] = parse_exception(
        "shop.errors.Declined", "no funds", SHOP_TRACEBACK, read_lines=read_lines, search_paths=["/srv/app"]
    )
    check([value])
    assert (value["type"], value["module"]) == ("Declined", "shop.errors")
    first, second, gone = frames_of(value)
    assert first == {
        "filename": "shop/cart.py",
        "abs_path": SHOP,
        "function": "checkout",
        "module": "shop.cart",
        "lineno": 3,
        "pre_context": ["line 1", "line 2"],
        "context_line": "line 3",
        "post_context": [f"line {n}" for n in range(4, 9)],
        "in_app": True,
    }
    assert second["pre_context"] == [f"line {n}" for n in range(7, 12)]
    assert second["post_context"] == [f"line {n}" for n in range(13, 18)]
    assert gone == {
        "filename": "/srv/gone.py",
        "abs_path": "/srv/gone.py",
        "function": "vanished",
        "lineno": 7,
        "context_line": "print(total)",
        "in_app": True,
    }
    assert sorted(calls) == [SHOP, "/srv/gone.py"]


@pytest.mark.parametrize(
    "read_lines",
    [
        pytest.param(lambda path: [f"changed {n}\n" for n in range(20)], id="file changed since"),
        pytest.param(lambda path: ["line 1\n"], id="file shorter now"),
        pytest.param(lambda path: 1 / 0, id="reader raises"),
        pytest.param(lambda path: [b"bytes\n"] * 20, id="reader returns garbage"),
        pytest.param(lambda path: None, id="no file"),
    ],
)
def test_printed_line_when_the_file_cannot_be_trusted(read_lines: Callable[[str], Any]) -> None:
    [value] = parse_exception("shop.errors.Declined", "no funds", SHOP_TRACEBACK, read_lines=read_lines)
    check([value])
    frames = frames_of(value)
    assert [f.get("context_line") for f in frames] == ["line 3", "line 12", "print(total)"]
    assert not any("pre_context" in f or "post_context" in f for f in frames)


def test_default_reader_reads_only_python_sources() -> None:
    text = (
        "Traceback (most recent call last):\n"
        f'  File "{THIS_FILE}", line 1, in <module>\n'
        '  File "/etc/passwd", line 1, in <module>\n'
        '  File "<frozen importlib._bootstrap>", line 1, in <module>\n'
        "E: m\n"
    )
    [value] = parse_exception("E", "m", text)
    check([value])
    this, passwd, frozen = frames_of(value)
    assert this["context_line"] == (read_source_lines(THIS_FILE) or [""])[0].rstrip("\n")
    assert "context_line" not in passwd
    assert "context_line" not in frozen
    assert frozen["in_app"] is False


# --- in_app, module and filename rules ---------------------------------------------------------------------

RULES_TRACEBACK = "".join(
    f'  File "{path}", line 1, in f\n'
    for path in (
        "/srv/app/shop/cart.py",
        "/srv/app/shop/vendor/pay.py",
        "/srv/venv/lib/python3.11/site-packages/starlette/routing.py",
        "/usr/lib/python3/dist-packages/yaml/__init__.py",
        os.path.join(STDLIB, "asyncio", "runners.py"),
        "/opt/python/lib/python3.12/json/decoder.py",
        "<frozen runpy>",
        "/srv/other/tool.py",
        "<string>",
    )
)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, [True, True, False, False, False, False, False, True, True]),
        ({"project_root": "/srv/app"}, [True, True, False, False, False, False, False, False, False]),
        ({"in_app_exclude": ["shop.vendor"]}, [True, False, False, False, False, False, False, True, True]),
        ({"in_app_include": ["starlette"]}, [True, True, True, False, False, False, False, True, True]),
    ],
)
def test_in_app_rules(options: dict[str, Any], expected: list[bool]) -> None:
    text = f"Traceback (most recent call last):\n{RULES_TRACEBACK}E: m\n"
    search = ["/srv/app", "/srv/venv/lib/python3.11/site-packages", "/srv", STDLIB, "relative"]
    [value] = parse_exception("E", "m", text, search_paths=search, read_lines=lambda path: None, **options)
    check([value])
    assert [f["in_app"] for f in frames_of(value)] == expected


def test_modules_and_filenames_from_search_paths() -> None:
    text = f"Traceback (most recent call last):\n{RULES_TRACEBACK}E: m\n"
    search = ["/srv/app", "/srv/venv/lib/python3.11/site-packages", "/srv", "/srv/venv", "/"]
    [value] = parse_exception("E", "m", text, search_paths=search, read_lines=lambda path: None)
    found = [(f.get("module"), f.get("filename")) for f in frames_of(value)]
    assert found[:4] == [
        ("shop.cart", "shop/cart.py"),
        ("shop.vendor.pay", "shop/vendor/pay.py"),
        ("starlette.routing", "starlette/routing.py"),
        (None, "/usr/lib/python3/dist-packages/yaml/__init__.py"),
    ]
    assert found[-2:] == [("other.tool", "other/tool.py"), (None, "<string>")]


def test_sentry_sdk_frames_are_hidden_as_sentry_sdk_hides_them() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "/venv/site-packages/sentry_sdk/integrations/asgi.py", line 1, in _run_app\n'
        '  File "/srv/app/main.py", line 2, in app\n'
        "E: m\n"
    )
    [value] = parse_exception("E", "m", text, search_paths=["/venv/site-packages", "/srv/app"])
    assert [f["function"] for f in frames_of(value)] == ["app"]


@pytest.mark.parametrize(
    ("type_name", "expected"),
    [
        ("ZeroDivisionError", ("ZeroDivisionError", None)),
        ("myapp.errors.PaymentDeclined", ("PaymentDeclined", "myapp.errors")),
        ("json.decoder.JSONDecodeError", ("JSONDecodeError", "json.decoder")),
        ("tests.test_frames.Outer.Inner", ("Outer.Inner", "tests.test_frames")),
        ("app.views.handler.<locals>.Oops", ("handler.<locals>.Oops", "app.views")),
        ("__main__.Boom", ("Boom", "__main__")),
        ("java.lang.IllegalStateException", ("IllegalStateException", "java.lang")),
        ("*errors.errorString", ("*errors.errorString", None)),
        ("a.", ("a.", None)),
        ("", ("Error", None)),
    ],
)
def test_type_and_module_from_exception_type(type_name: str, expected: tuple[str, Optional[str]]) -> None:
    [value] = parse_exception(type_name, "m", None)
    check([value])
    assert (value["type"], value.get("module")) == expected
    assert value["value"] == "m"
    assert "stacktrace" not in value


# --- odd input ---------------------------------------------------------------------------------------------

JAVA = """\
java.lang.IllegalStateException: boom
\tat com.example.Shop.checkout(Shop.java:42)
\tat com.example.Main.main(Main.java:7)
Caused by: java.io.IOException: disk
\tat com.example.Disk.write(Disk.java:9)
"""
NODE = """\
TypeError: Cannot read properties of undefined (reading 'id')
    at checkout (/srv/app/cart.js:12:7)
    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)
"""


@pytest.mark.parametrize(
    ("type_name", "message", "text"),
    [
        (None, None, None),
        ("", "", ""),
        (None, None, "\n\n\n"),
        ("ValueError", None, None),
        (None, "only a message", None),
        ("java.lang.IllegalStateException", "boom", JAVA),
        ("TypeError", "Cannot read properties of undefined (reading 'id')", NODE),
        ("E", "m", "garbage \x00\ud800 \u202e text"),
        ("E", "m", "Traceback (most recent call last):\n" + "  File " * 1000),
        ("E", "m", '  File "x", line 1, in f\n' * 5),
        ("E", "m", "...\n  ...\nE: m\n"),
        ("E", "m", "  + Exception Group Traceback (most recent call last):\n  | E: m\n  +-+--- 1 ---\n"),
        ("E", "m", "    +-+---------------- 1 ----------------\n" * 50),
        ("E", "m", "The above exception was the direct cause of the following exception:\n" * 100),
        ("E", "m", '  File "/x.py", line 99999999999999999999999, in f\nE: m\n'),
        (
            "E",
            "m",
            '  File "/x.py", line 1, in f\n  [Previous line repeated 99999999999999 more times]\nE: m\n',
        ),
    ],
)
def test_odd_input_gives_one_valid_entry_at_least(
    type_name: Optional[str], message: Optional[str], text: Optional[str]
) -> None:
    values = parse_exception(type_name, message, text)
    check(values)
    assert values[-1]["type"] == (type_name or "Error").rpartition(".")[2]


def test_non_python_traces_give_one_frameless_entry() -> None:
    for type_name, message, text in (
        ("java.lang.IllegalStateException", "boom", JAVA),
        ("TypeError", "Cannot read", NODE),
    ):
        [value] = parse_exception(type_name, message, text)
        assert value["value"] == message
        assert "stacktrace" not in value


def test_chained_traceback_cut_anywhere() -> None:
    error = catch(with_cause)
    type_name, message, text = recorded(error)
    full = parse_exception(type_name, message, text)
    known_frames = {_frame_key(f) for value in full for f in frames_of(value)}
    for cut in [*range(0, len(text), 7), len(text) - 1]:
        values = parse_exception(type_name, message, text[:cut])
        check(values)
        assert (values[-1]["type"], values[-1]["module"]) == ("PaymentDeclined", "tests.test_frames")
        assert values[-1]["value"] == "card declined"
        assert {_frame_key(f) for value in values for f in frames_of(value)} <= known_frames, cut


def test_cut_before_the_raised_section_keeps_the_cause_apart() -> None:
    type_name, message, text = recorded(catch(with_cause))
    cut = text.index("ZeroDivisionError: division by zero\n") + len("ZeroDivisionError: division by zero\n")
    cause, raised = parse_exception(type_name, message, text[:cut])
    assert cause["type"] == "ZeroDivisionError"
    assert frames_of(cause)[-1]["function"] == "divide"
    assert (raised["type"], raised["value"]) == ("PaymentDeclined", "card declined")
    assert "stacktrace" not in raised


def test_cut_inside_the_only_section_keeps_its_frames() -> None:
    type_name, message, text = recorded(catch(simple))
    cut = text.index("    return a / b")
    [value] = parse_exception(type_name, message, text[:cut])
    assert [f["function"] for f in frames_of(value)][-2:] == ["simple", "divide"]
    assert (value["type"], value["value"]) == ("ZeroDivisionError", "division by zero")


def test_long_chains_keep_the_newest_exceptions() -> None:
    error: Optional[BaseException] = None
    for number in range(15):
        try:
            raise ValueError(str(number)) from error
        except ValueError as raised:
            error = raised
    assert error is not None
    values = parsed(error)
    assert [v["value"] for v in values] == [str(n) for n in range(5, 15)]


def test_many_frames_keep_the_newest() -> None:
    text = "Traceback (most recent call last):\n"
    text += "".join(f'  File "/srv/f.py", line {n}, in f{n}\n    call()\n' for n in range(1, 1001))
    [value] = parse_exception("E", "m", text + "E: m\n", read_lines=lambda path: None)
    assert [f["lineno"] for f in frames_of(value)] == list(range(751, 1001))


def test_huge_and_hostile_text_is_quick() -> None:
    hostile = [
        '  File "' + '", line 1, in ' * 400 + "\n",
        "x" * 3_000_000,
        ('  File "/srv/f.py", line 1, in f\n' + "    |\n" * 3 + "  | " * 100 + "\n") * 2000,
        "  " * 50_000 + "| deep\n",
        "".join("  " * depth + "+-+---------------- 1 ----------------\n" for depth in range(2000)),
        '  File "/srv/f.py", line 1, in f\n    ' + "~ " * 500_000 + "x\n",
        "Traceback (most recent call last):\r\n" + '  File "/srv/f.py", line 1, in f\r\n' * 100_000,
    ]
    for text in hostile:
        started = time.perf_counter()
        values = parse_exception("E", "m", text, read_lines=lambda path: None)
        assert time.perf_counter() - started < 2.0
        check(values)


# --- properties ------------------------------------------------------------------------------------------

FRAGMENTS = [
    "Traceback (most recent call last):\n",
    f'  File "{THIS_FILE}", line 75, in divide\n',
    f'  File "{THIS_FILE}", line 0, in <module>\n',
    f'  File "{THIS_FILE}", line 100000, in gone\n',
    '  File "/srv/app/shop/cart.py", line 12, in charge\n',
    '  File "<frozen importlib._bootstrap>", line 1, in _call_with_frames_removed\n',
    '  File "<string>", line 1\n',
    '  File "x", line None, in f\n',
    "    return a / b\n",
    "           ~~^~~\n",
    "    ^^^^^^^^^^^^\n",
    "  [Previous line repeated 996 more times]\n",
    "ValueError: boom\n",
    "pkg.mod.Error\n",
    "tests.test_frames.PaymentDeclined: card declined\n",
    "second line of a message\n",
    "\n",
    "...\n",
    "\nThe above exception was the direct cause of the following exception:\n\n",
    "\nDuring handling of the above exception, another exception occurred:\n\n",
    "  + Exception Group Traceback (most recent call last):\n",
    "  | ExceptionGroup: eg (2 sub-exceptions)\n",
    '  |   File "/srv/app/shop/cart.py", line 3, in checkout\n',
    "  +-+---------------- 1 ----------------\n",
    "    | Traceback (most recent call last):\n",
    '    |   File "/srv/app/shop/cart.py", line 4, in pay\n',
    "    | ValueError: 1\n",
    "    | \n",
    "    | The above exception was the direct cause of the following exception:\n",
    "    +---------------- 2 ----------------\n",
    "    +---------------- ... ----------------\n",
    "    | and 3 more exceptions\n",
    "    +-+---------------- 1 ----------------\n",
    "      | TypeError: t\n",
    "      +------------------------------------\n",
    "    +------------------------------------\n",
    "\tat com.example.Shop.checkout(Shop.java:42)\n",
]
TYPES = st.one_of(
    st.none(), st.text(max_size=40), st.sampled_from(["ValueError", "pkg.mod.Error", "ExceptionGroup"])
)
TRACEBACK_LIKE = st.tuples(st.lists(st.sampled_from(FRAGMENTS), max_size=80), st.integers(min_value=0)).map(
    lambda drawn: "".join(drawn[0])[: drawn[1] or None]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()))
def test_any_text_never_raises(type_name: Optional[str], message: Optional[str], text: Optional[str]) -> None:
    check(parse_exception(type_name, message, text))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TYPES, st.one_of(st.none(), st.text(max_size=40)), TRACEBACK_LIKE)
def test_traceback_like_text_never_raises(
    type_name: Optional[str], message: Optional[str], text: str
) -> None:
    values = parse_exception(type_name, message, text, project_root=PROJECT_ROOT)
    check(values)
    if message:
        assert values[-1]["value"].startswith(message.partition(" (")[0])


def _frame_key(frame: dict[str, Any]) -> tuple[Any, ...]:
    return frame["function"], frame.get("lineno"), frame.get("abs_path")


def test_traceback_module_output_is_what_is_parsed() -> None:
    # guards the premise: OTel records exactly traceback.format_exception's text
    error = catch(with_context)
    assert recorded(error)[2] == "".join(traceback.format_exception(type(error), error, error.__traceback__))
