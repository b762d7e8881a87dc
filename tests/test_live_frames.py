"""The bridge's ``serialize_frame`` and ``get_source_context`` (``_collect/live_frames.py``) make the same
error event as sentry-sdk's own, once the bridge's event processor has cleaned it, for less work: the local
variables of plumbing frames are never walked, and a file's source lines are read once while it is unchanged.

"Without" below is sentry-sdk's own functions (``live_frames.uninstall()``), "with" the bridge's.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import logging
import os
import sys
import threading
import types
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import pytest
import sentry_sdk
import sentry_sdk.serializer
import sentry_sdk.utils
from hypothesis import given, settings
from hypothesis import strategies as st
from sentry_sdk.consts import ClientConstructor
from sentry_sdk.scrubber import DEFAULT_DENYLIST

from otel_bridge import _compat
from otel_bridge._collect import live_frames
from otel_bridge._compat.sentry_frames import FRAME_SERIALIZER
from otel_bridge._convert.in_app import is_plumbing, rule_of
from otel_bridge._convert.privacy import clean_frames
from otel_bridge._setup import install_event_processor
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.conftest import StartTraced
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid
from tests.test_compat import broken_warnings
from tests.test_middleware import call, http_scope

HAS_DATA_COLLECTION = "data_collection" in inspect.signature(ClientConstructor.__init__).parameters

PLUMBING = ("uvicorn.protocols.http.probe", "opentelemetry.instrumentation.asgi.probe", "otel_bridge.probe")
APP = ("myapp.views", "myapp.services.payments")

# Each frame of a chain is a call of ``step`` in one of the modules above; the last raises.
STEP = """
def step(chain, index, values, ending):
    here = values[index]
    if index + 1 < len(chain):
        try:
            return chain[index + 1](chain, index + 1, values, ending)
        except Exception as error:
            if index == 0 and ending == "from":
                raise RuntimeError("handling failed") from error
            if index == 0 and ending == "context":
                raise RuntimeError("while handling")
            raise
    if ending == "group":
        members = []
        for number in range(2):
            try:
                raise ValueError(number)
            except ValueError as member:
                members.append(member)
        raise ExceptionGroup("several", members)
    raise LookupError(f"nothing at {index}")
"""

ENDINGS = ("plain", "from", "context", "group")


# --- modules, exceptions and events ---------------------------------------------------------------------


def file_module(directory: Path, name: str, source: str) -> types.ModuleType:
    """A module loaded from a file by a ``SourceFileLoader``, under ``name`` (e.g. ``uvicorn.x``)."""
    path = directory / f"{name.replace('.', '_')}.py"
    path.write_text(f"# {name}\n{source}")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exec_module(name: str, source: str) -> types.ModuleType:
    """A module without a file or loader (its frames have no source context)."""
    module = types.ModuleType(name)
    exec(compile(source, f"<generated {name}>", "exec"), module.__dict__)
    return module


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Callable[..., Any]]:
    directory = tmp_path_factory.mktemp("live_frames")
    found = {}
    for name in (*PLUMBING, *APP):
        found[f"{name} (file)"] = file_module(directory, name, STEP).step
        found[f"{name} (exec)"] = exec_module(name, STEP).step
    return found


def raised(chain: list[Callable[..., Any]], values: list[Any], ending: str) -> BaseException:
    try:
        chain[0](chain, 0, values, ending)
    except Exception as error:
        return error
    raise AssertionError("the chain did not raise")


@contextmanager
def replaced(on: bool) -> Iterator[None]:
    """The bridge's functions installed (``on``) or sentry-sdk's own, then as before."""
    was = live_frames.installed()
    live_frames.install() if on else live_frames.uninstall()
    assert live_frames.installed() is on
    try:
        yield
    finally:
        live_frames.install() if was else live_frames.uninstall()


@contextmanager
def client(**options: Any) -> Iterator[sentry_sdk.Client]:
    """A client (sending nowhere) with ``options``, current while the block runs."""
    made = sentry_sdk.Client(default_integrations=False, **options)
    with sentry_sdk.new_scope() as scope:
        scope.set_client(made)
        yield made


def built(error: BaseException, options: dict[str, Any]) -> dict[str, Any]:
    """The event sentry-sdk builds for ``error``, as the bridge's event processor cleans it, serialized as
    sentry-sdk's client serializes it."""
    event, _ = sentry_sdk.utils.event_from_exception(error, client_options=options)
    clean_frames(event, send_default_pii=False, denylist=DEFAULT_DENYLIST, in_app=rule_of(options))
    serialized: dict[str, Any] = sentry_sdk.serializer.serialize(event)
    return serialized


def both(error: BaseException, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    with replaced(False):
        without = built(error, options)
    with replaced(True):
        with_ = built(error, options)
    return without, with_


def frames(event: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        frame
        for value in event["exception"]["values"]
        for frame in (value.get("stacktrace") or {}).get("frames") or ()
    ]


# --- the same events ------------------------------------------------------------------------------------

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=10), inner, max_size=4)
        | st.tuples(inner, inner)
    ),
    max_leaves=12,
)

DATA_COLLECTION = [
    None,
    {"stack_frame_variables": False},
    {"stack_frame_variables": {"mode": "denylist", "terms": ["values"]}},
    {"stack_frame_variables": {"mode": "allowlist", "terms": ["here"]}},
    {"frame_context_lines": 1},
    {"frame_context_lines": 0, "stack_frame_variables": True},
]

OPTIONS = st.fixed_dictionaries(
    {
        "include_local_variables": st.booleans(),
        "include_source_context": st.booleans(),
        "max_value_length": st.sampled_from([None, 12, 1024]),
        **({"data_collection": st.sampled_from(DATA_COLLECTION)} if HAS_DATA_COLLECTION else {}),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(st.sampled_from(sorted((*PLUMBING, *APP))), min_size=1, max_size=6),
    from_files=st.lists(st.booleans(), min_size=6, max_size=6),
    values=st.lists(VALUES, min_size=6, max_size=6),
    ending=st.sampled_from(ENDINGS),
    options=OPTIONS,
)
def test_an_event_is_the_same_with_the_bridges_frame_functions(
    steps: dict[str, Callable[..., Any]],
    names: list[str],
    from_files: list[bool],
    values: list[Any],
    ending: str,
    options: dict[str, Any],
) -> None:
    chain = [
        steps[f"{name} ({'file' if from_file else 'exec'})"]
        for name, from_file in zip(names, from_files, strict=False)
    ]
    error = raised(chain, values, ending)
    if options.get("data_collection") is None:
        options.pop("data_collection", None)
    with client(**options) as current:
        without, with_ = both(error, current.options)
    assert with_ == without
    # and again, the source lines now remembered
    with client(**options) as current, replaced(True):
        assert built(error, current.options) == without


def test_every_kind_of_frame_and_exception_is_in_the_probe(steps: dict[str, Callable[..., Any]]) -> None:
    """What the generated cases above cover, at least once: frames of plumbing and of the app with local
    variables and source lines, chained exceptions and groups."""
    chain = [steps[f"{name} (file)"] for name in (*PLUMBING, *APP)]
    for ending in ENDINGS:
        error = raised(chain, [{"n": n, "secret": "s3cret"} for n in range(len(chain))], ending)
        with client(max_value_length=1024) as current:
            without, with_ = both(error, current.options)
        assert with_ == without
        exceptions = {"plain": 1, "from": 2, "context": 2, "group": 3}[ending]
        assert len(without["exception"]["values"]) == exceptions
        found = frames(without)
        assert {frame["module"] for frame in found} >= {*PLUMBING, *APP}
        for frame in found:
            assert frame["context_line"]
            assert ("vars" in frame) is not is_plumbing(frame["module"]), frame


def test_the_event_built_in_another_thread_is_the_same(steps: dict[str, Callable[..., Any]]) -> None:
    chain = [steps[f"{PLUMBING[0]} (file)"], steps[f"{APP[0]} (file)"]]
    error = raised(chain, [1, 2], "from")
    with client() as current:
        without, _ = both(error, current.options)
    found: list[dict[str, Any]] = []
    options = current.options

    def build() -> None:
        found.append(built(error, options))

    with replaced(True):
        worker = threading.Thread(target=build)
        worker.start()
        worker.join()
    assert found == [without]


def test_a_captured_event_is_the_same_with_the_bridges_frame_functions(
    start_traced: StartTraced, receiver: EnvelopeReceiver, steps: dict[str, Callable[..., Any]]
) -> None:
    """Through sentry-sdk's client and the bridge's event processor, as an app's ``capture_exception``."""
    start_traced()
    install_event_processor()
    chain = [steps[f"{PLUMBING[0]} (file)"], steps[f"{APP[0]} (file)"], steps[f"{PLUMBING[1]} (file)"]]
    for on in (False, True):
        with replaced(on):
            sentry_sdk.capture_exception(raised(chain, [{"token": "t"}, "app", ["x"]], "from"))
    sentry_sdk.flush(timeout=5)
    without, with_ = receiver.wait_for_events(2)
    for event in (without, with_):
        assert_relay_valid(event)
        for key in ("event_id", "timestamp"):
            event.pop(key)
    assert with_ == without


# --- only the frames clean_frames cleans ----------------------------------------------------------------


class CountedRepr:
    calls: ClassVar[int] = 0

    def __repr__(self) -> str:
        type(self).calls += 1
        return "CountedRepr()"


class InPlumbing(CountedRepr):
    calls = 0


class InApp(CountedRepr):
    calls = 0


# each frame makes its own object: only that frame's local variables hold it
COUNTED = """
def step(chain, kinds):
    mine = kinds[0]()
    if len(chain) > 1:
        return chain[1](chain[1:], kinds[1:])
    raise LookupError("counted")
"""


@pytest.mark.parametrize("on", [False, True])
def test_the_local_variables_of_plumbing_frames_are_never_serialized(tmp_path: Path, on: bool) -> None:
    plumbing = file_module(tmp_path, "uvicorn.protocols.counted", COUNTED).step
    app = file_module(tmp_path, "myapp.counted", COUNTED).step
    InPlumbing.calls = InApp.calls = 0
    with pytest.raises(LookupError) as caught:
        plumbing([plumbing, app], [InPlumbing, InApp])
    with client() as current, replaced(on):
        built(caught.value, current.options)
    assert InApp.calls == 1
    assert InPlumbing.calls == (0 if on else 1)


def test_a_threads_stack_trace_keeps_the_local_variables_of_plumbing_frames(tmp_path: Path) -> None:
    """``attach_stacktrace`` serializes the current stack outside of any exception: ``clean_frames`` does not
    clean it, so neither does the bridge's ``serialize_frame``."""
    source = "def step(stack):\n    kept = 'plumbing variable'\n    return stack()\n"
    plumbing = file_module(tmp_path, "uvicorn.protocols.stack", source).step
    with client() as current, replaced(True):
        stack = plumbing(
            lambda: sentry_sdk.utils.current_stacktrace(
                include_local_variables=True, max_value_length=current.options["max_value_length"]
            )
        )
    [frame] = [frame for frame in stack["frames"] if frame["module"] == "uvicorn.protocols.stack"]
    assert frame["vars"]["kept"] == "'plumbing variable'"


# --- source lines remembered per unchanged file ---------------------------------------------------------

RAISES = """
def fail():
    first = 1
    raise ValueError("raised")  # VERSION
"""


def source(error: BaseException, *, on: bool, **options: Any) -> tuple[Any, ...]:
    """The lines around the line of ``fail`` that raised ``error``, as the event carries them."""
    with client(**options) as current, replaced(on):
        event = built(error, current.options)
    [frame] = [frame for frame in frames(event) if frame["function"] == "fail"]
    return frame.get("pre_context"), frame.get("context_line"), frame.get("post_context")


def context_line(error: BaseException, *, on: bool, **options: Any) -> Optional[str]:
    line: Optional[str] = source(error, on=on, **options)[1]
    return line


def remembered() -> Any:
    found: Any = sentry_sdk.utils.get_source_context._otel_bridge_remembered  # type: ignore[attr-defined]
    return found


def fail_in(module: types.ModuleType) -> BaseException:
    with pytest.raises(ValueError) as caught:
        module.fail()
    return caught.value


@pytest.mark.parametrize("same_size", [False, True])
def test_a_file_edited_between_two_events_shows_its_new_line(tmp_path: Path, same_size: bool) -> None:
    module = file_module(tmp_path, "myapp.edited", RAISES.replace("VERSION", "first"))
    path = Path(module.__file__ or "")
    edited = "fresh" if same_size else "second version"
    with replaced(True):  # one installation: one memory of lines
        for _ in range(2):
            assert context_line(fail_in(module), on=True) == '    raise ValueError("raised")  # first'
        assert [key for key in remembered() if key[1] == "myapp.edited"]
        before = path.stat()
        path.write_text(path.read_text().replace("# first", f"# {edited}"))
        if same_size:  # a file system's timestamps may be too coarse to tell the two writes apart
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        error = fail_in(module)  # the code of the first version, the file of the second
        with_ = context_line(error, on=True)
    assert with_ == context_line(error, on=False) == f'    raise ValueError("raised")  # {edited}'


def test_lines_are_remembered_only_from_an_unchanged_file_a_source_file_loader_reads(tmp_path: Path) -> None:
    module = file_module(tmp_path, "myapp.remembered", RAISES.replace("VERSION", "kept"))
    error = fail_in(module)
    cut = context_line(error, on=False, max_value_length=10)
    assert cut is not None and cut.endswith("...")
    with replaced(True):
        context_line(error, on=True)
        # a line cut to max_value_length is an AnnotatedValue, which later steps may change: not remembered
        assert context_line(error, on=True, max_value_length=10) == cut
        [key] = [key for key in remembered() if key[1] == "myapp.remembered"]
        assert key[3] != 10  # max_value_length
        # a file gone: sentry-sdk's own function, every time
        Path(module.__file__ or "").unlink()
        gone = source(error, on=True)
    assert gone == source(error, on=False)


@pytest.mark.skipif(not HAS_DATA_COLLECTION, reason=f"sentry-sdk {sentry_sdk.VERSION} has no data_collection")
def test_lines_remembered_for_one_number_of_context_lines_are_not_given_for_another(tmp_path: Path) -> None:
    module = file_module(tmp_path, "myapp.context_lines", "\n" * 8 + RAISES.replace("VERSION", "lines"))
    error = fail_in(module)
    settings: list[dict[str, Any]] = [{}, {"data_collection": {"frame_context_lines": 1}}]
    settings += [{"data_collection": {"frame_context_lines": 3}}, {"include_source_context": True}]
    expected = [source(error, on=False, **options) for options in settings]
    assert len({len(lines[0]) for lines in expected}) == 3
    with replaced(True):
        for _ in range(2):
            assert [source(error, on=True, **options) for options in settings] == expected


class Generated:
    """A loader whose source is not a file: it changes between calls."""

    def __init__(self) -> None:
        self.version = "one"

    def get_source(self, fullname: str) -> str:
        return RAISES.replace("VERSION", self.version)


def test_a_loader_whose_source_is_not_the_file_is_asked_every_time() -> None:
    loader = Generated()
    module = types.ModuleType("myapp.generated")
    module.__loader__ = loader
    exec(compile(loader.get_source("myapp.generated"), "/nowhere/generated.py", "exec"), module.__dict__)
    error = fail_in(module)
    assert context_line(error, on=True) == '    raise ValueError("raised")  # one'
    loader.version = "two"
    assert context_line(error, on=True) == '    raise ValueError("raised")  # two'
    assert context_line(error, on=False) == '    raise ValueError("raised")  # two'
    assert not [key for key in remembered() if key[1] == "myapp.generated"]


def test_a_module_imported_from_a_zip_file_is_read_as_sentry_sdk_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "zipped.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("zipped_probe_module.py", RAISES.replace("VERSION", "zipped"))
    monkeypatch.syspath_prepend(str(archive))
    module = importlib.import_module("zipped_probe_module")
    try:
        error = fail_in(module)
        assert context_line(error, on=True) == '    raise ValueError("raised")  # zipped'
        assert context_line(error, on=False) == '    raise ValueError("raised")  # zipped'
        assert not [key for key in remembered() if key[1] == "zipped_probe_module"]
    finally:
        sys.modules.pop("zipped_probe_module", None)


def test_the_remembered_lines_are_bounded_and_given_out_as_fresh_lists(tmp_path: Path) -> None:
    source = "def fail(line):\n" + "".join(
        f"    if line == {n}:\n        raise ValueError({n})\n" for n in range(4)
    )
    module = file_module(tmp_path, "myapp.bounded", source)
    original = live_frames.original_of(sentry_sdk.utils.get_source_context)
    bounded = live_frames.source_context(original, size=2)
    contexts = []
    for line in range(4):
        with pytest.raises(ValueError) as caught:
            module.fail(line)
        traceback = caught.value.__traceback__
        while traceback is not None and traceback.tb_frame.f_code.co_name != "fail":
            traceback = traceback.tb_next
        assert traceback is not None
        expected = original(traceback.tb_frame, traceback.tb_lineno, None)
        first = bounded(traceback.tb_frame, traceback.tb_lineno, None)
        again = bounded(traceback.tb_frame, traceback.tb_lineno, None)
        assert again == first == expected
        again[0].append("changed by a later step")
        first[2].clear()
        assert bounded(traceback.tb_frame, traceback.tb_lineno, None) == expected
        contexts.append(expected)
    assert len(bounded._otel_bridge_remembered) == 2  # type: ignore[attr-defined]
    assert len({context[1] for context in contexts}) == 4


# --- the reach -------------------------------------------------------------------------------------------


def test_the_reach_holds_and_the_functions_are_installed_after_init_sets_up_the_event_processor() -> None:
    install_event_processor()
    assert _compat.holds(FRAME_SERIALIZER)
    assert live_frames.installed()
    # a check run again after installation looks through the bridge's own functions
    assert FRAME_SERIALIZER not in _compat.verify()
    install_event_processor()
    live_frames.install()
    for name in ("serialize_frame", "get_source_context"):
        installed = getattr(sentry_sdk.utils, name)
        original = live_frames.original_of(installed)
        assert original is not installed and live_frames.original_of(original) is original
        assert inspect.signature(installed) == inspect.signature(original)


async def fails(scope: Any, receive: Any, send: Any) -> None:
    order = {"id": 3}
    raise LookupError(f"no order {order['id']}")


def serve_failing(start_traced: StartTraced, receiver: EnvelopeReceiver) -> dict[str, Any]:
    provider, processor = start_traced()
    install_event_processor()
    with pytest.raises(LookupError):
        asyncio.run(call(SentryAsgiMiddleware(fails, tracer_provider=provider), http_scope("/orders/3")))
    assert processor.force_flush(5000)
    [event] = receiver.wait_for_events(1)
    assert_relay_valid(event)
    return event


def assert_complete(event: dict[str, Any]) -> None:
    [value] = event["exception"]["values"]
    assert value["type"] == "LookupError" and value["mechanism"]["handled"] is False
    found = frames(event)
    [app] = [frame for frame in found if frame["function"] == "fails"]
    assert app["vars"]["order"] == {"id": "3"}
    assert app["context_line"].strip() == "raise LookupError(f\"no order {order['id']}\")"
    plumbing = [frame for frame in found if is_plumbing(frame.get("module"))]
    assert plumbing and all("vars" not in frame and frame.get("context_line") for frame in plumbing)


@contextmanager
def sentry_utils(name: str, value: Any) -> Iterator[None]:
    """``sentry_sdk.utils.<name>`` replaced as a new release could, then as before (the bridge's own
    functions included)."""
    before = getattr(sentry_sdk.utils, name)
    setattr(sentry_sdk.utils, name, value)
    try:
        yield
    finally:
        setattr(sentry_sdk.utils, name, before)


def changed_signature() -> Callable[..., Any]:
    original = live_frames.original_of(sentry_sdk.utils.serialize_frame)

    def serialize_frame(frame: Any, tb_lineno: Any = None, *, options: Any = None, **kwargs: Any) -> Any:
        return original(frame, tb_lineno, **kwargs)

    return serialize_frame


def reads_more_of_the_frame() -> Callable[..., Any]:
    original = live_frames.original_of(sentry_sdk.utils.serialize_frame)

    def serialize_frame(
        frame: Any,
        tb_lineno: Any = None,
        include_local_variables: bool = True,
        include_source_context: bool = True,
        max_value_length: Any = None,
        custom_repr: Any = None,
    ) -> Any:
        rv: dict[str, Any] = original(
            frame, tb_lineno, include_local_variables, include_source_context, max_value_length, custom_repr
        )
        rv["instruction_addr"] = hex(frame.f_lasti)
        return rv

    return serialize_frame


@pytest.mark.parametrize("change", [changed_signature, reads_more_of_the_frame])
def test_a_changed_frame_serializer_is_named_once_and_left_alone(
    fresh_reaches: None,
    caplog: pytest.LogCaptureFixture,
    start_traced: StartTraced,
    receiver: EnvelopeReceiver,
    change: Callable[[], Callable[..., Any]],
) -> None:
    caplog.set_level(logging.WARNING, "otel_bridge")
    changed = change()
    with sentry_utils("serialize_frame", changed):
        assert _compat.holds(FRAME_SERIALIZER) is False
        assert FRAME_SERIALIZER in _compat.verify()
        live_frames.install()
        assert sentry_sdk.utils.serialize_frame is changed
        [warning] = broken_warnings(caplog, FRAME_SERIALIZER)
        assert "sentry-sdk's own frame serializer" in warning
        assert_complete(serve_failing(start_traced, receiver))


def test_with_the_reach_the_event_of_a_failing_request_is_complete(
    start_traced: StartTraced, receiver: EnvelopeReceiver
) -> None:
    event = serve_failing(start_traced, receiver)
    assert live_frames.installed()
    assert_complete(event)


def test_the_probe_is_the_bridges_own_kind_of_event() -> None:
    """The check's throw-away exception goes through a frame of plumbing and one of the app."""
    from otel_bridge._compat import sentry_frames

    event, _ = sentry_sdk.utils.event_from_exception(sentry_frames._probe_error())
    modules = [frame["module"] for frame in frames(event)]
    assert any(is_plumbing(module) for module in modules)
    assert not all(is_plumbing(module) for module in modules)
