"""Every example in ``examples/`` under every server: the same answers as without the bridge, and the
transactions and error events a Sentry user expects.

Each (framework, server) cell starts two real server processes, once: the bare framework app
(``tests.apps.bare_example``, the bridge stubbed out) and the example as users run it, reporting to a
loopback receiver. Both get the same requests; every test of the cell then reads the recorded results.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.sync.client import connect

from tests.receiver import EnvelopeReceiver, _Handler
from tests.relay import assert_relay_valid
from tests.servers import SERVERS, ServerName, run_app

pytestmark = pytest.mark.timeout(120)

FRAMEWORKS = ("asgi2", "asgi3", "starlette", "fastapi", "quart", "litestar", "django", "sanic")
WITH_BACKGROUND = frozenset({"starlette", "fastapi", "quart", "litestar", "sanic"})
WITH_WEBSOCKET = frozenset({"asgi2", "asgi3", "starlette", "fastapi", "quart", "litestar", "sanic"})
APP_DIR = "examples"


def module_of(framework: str) -> str:
    """The example's module name, as the servers import it (``--app-dir examples``/PYTHONPATH)."""
    return f"{framework}_app"


# The transaction of ``GET /items/42``: (name, transaction_info.source).
EXPECTED_NAMES: dict[str, tuple[str, str]] = {
    "asgi2": ("/items/42", "url"),
    "asgi3": ("/items/42", "url"),
    "starlette": (f"{module_of('starlette')}.get_item", "component"),
    "fastapi": (f"{module_of('fastapi')}.get_item", "component"),
    "quart": ("get_item", "component"),
    "litestar": (f"{module_of('litestar')}.get_item", "component"),
    "django": (f"{module_of('django')}.get_item", "component"),
    "sanic": ("get_item", "component"),
}
EXPECTED_STATUS = {"/items/42": "ok", "/nowhere": "not_found", "/boom": "internal_error"}
# What the examples answer (checked on the bare apps, so a broken example is not blamed on the bridge).
EXAMPLE_STATUS_CODES = {"/items/42": 200, "/nowhere": 404, "/boom": 500, "/background": 200}
WEBSOCKET_TEXT = "x"
# Waiting for what should arrive; a cell that is missing something costs this much.
ARRIVAL_TIMEOUT = 8.0
# After the expected count arrived: how long nothing more may arrive before the server is stopped.
QUIET_PERIOD = 0.5
# A connection per request: after an unhandled exception some servers close the connection.
NO_KEEPALIVE = httpx.Limits(max_keepalive_connections=0)

Event = dict[str, Any]


def paths_of(framework: str) -> list[str]:
    paths = ["/items/42", "/nowhere", "/boom"]
    if framework in WITH_BACKGROUND:
        paths.append("/background")
    return paths


def expected_error_count(framework: str) -> int:
    return 2 if framework in WITH_BACKGROUND else 1


def expected_transaction_count(framework: str) -> int:
    return len(paths_of(framework)) + (1 if framework in WITH_WEBSOCKET else 0)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass
class Run:
    """What one server process answered, and what the receiver got from it."""

    answers: dict[str, Answer]
    echo: Optional[str]
    output: str
    transactions: list[Event] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"{len(self.transactions)} transaction(s):"]
        lines += [
            f"  {path_of(t)!r} name={t.get('transaction')!r} "
            f"source={t.get('transaction_info', {}).get('source')!r} op={trace_of(t).get('op')!r} "
            f"status={trace_of(t).get('status')!r} tags={t.get('tags')} user={t.get('user')}"
            for t in self.transactions
        ]
        lines.append(f"{len(self.events)} error event(s):")
        lines += [
            f"  {exception_types(e)} transaction={e.get('transaction')!r} tags={e.get('tags')}"
            for e in self.events
        ]
        tail = self.output[-3000:]
        return "\n".join([*lines, "server output (tail):", tail])

    def only(self, path: str) -> Event:
        matching = [t for t in self.transactions if path_of(t) == path]
        assert len(matching) == 1, (
            f"expected one transaction for {path}, got {len(matching)}\n{self.describe()}"
        )
        return matching[0]


def trace_of(event: Event) -> dict[str, Any]:
    context = event.get("contexts", {}).get("trace", {})
    return context if isinstance(context, dict) else {}


def path_of(transaction: Event) -> str:
    """The request path of a transaction (from its request URL, else its span attributes)."""
    url = str(transaction.get("request", {}).get("url") or "")
    if url:
        return urlsplit(url).path
    data = trace_of(transaction).get("data", {})
    return str(data.get("url.path") or data.get("http.target") or "?").split("?")[0]


def exception_types(event: Event) -> list[str]:
    return [value.get("type", "?") for value in event.get("exception", {}).get("values", [])]


def exception_value(event: Event, type_name: str) -> Optional[dict[str, Any]]:
    """The exception of type ``type_name`` in the event's chain (innermost last), if any."""
    values = [v for v in event.get("exception", {}).get("values", []) if v.get("type") == type_name]
    return values[-1] if values else None


def last_in_app_function(value: dict[str, Any]) -> Optional[str]:
    frames = value.get("stacktrace", {}).get("frames", [])
    in_app = [frame for frame in frames if frame.get("in_app") is True]
    return in_app[-1].get("function") if in_app else None


def errors_of_type(run: Run, type_name: str) -> list[Event]:
    return [event for event in run.events if exception_value(event, type_name) is not None]


def send_requests(framework: str, base_url: str, port: int) -> tuple[dict[str, Answer], Optional[str]]:
    answers: dict[str, Answer] = {}
    with httpx.Client(base_url=base_url, timeout=10, limits=NO_KEEPALIVE) as client:
        for path in paths_of(framework):
            response = client.get(path)
            headers = tuple(
                (name.decode("latin-1").lower(), value.decode("latin-1"))
                for name, value in response.headers.raw
            )
            answers[path] = Answer(response.status_code, headers, response.content)
    echo = None
    if framework in WITH_WEBSOCKET:
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10, close_timeout=5) as websocket:
            websocket.send(WEBSOCKET_TEXT)
            received = websocket.recv(timeout=10)
            echo = received if isinstance(received, str) else received.decode()
    return answers, echo


def settle(receiver: EnvelopeReceiver, transactions: int, events: int) -> None:
    """Wait for the expected counts (not failing: the tests judge), then for a quiet period."""

    def counts(r: EnvelopeReceiver) -> tuple[int, int]:
        return len(r.transactions()), len(r.events())

    receiver.wait_for(
        lambda r: counts(r)[0] >= transactions and counts(r)[1] >= events, timeout=ARRIVAL_TIMEOUT
    )
    seen = counts(receiver)
    while True:
        time.sleep(QUIET_PERIOD)
        now = counts(receiver)
        if now == seen:
            return
        seen = now


def serve_and_ask(
    target: str, framework: str, server: ServerName, env: dict[str, str], receiver: Optional[EnvelopeReceiver]
) -> Run:
    with run_app(target, env=env, server=server, app_dir=APP_DIR) as running:
        answers, echo = send_requests(framework, running.url, running.port)
        if receiver is not None:
            settle(receiver, expected_transaction_count(framework), expected_error_count(framework))
        # A graceful stop lets the bridge flush anything still queued: extras would show up now.
        running.stop()
    run = Run(answers=answers, echo=echo, output=running.output())
    if receiver is not None:
        run.transactions = receiver.transactions()
        run.events = receiver.events()
    return run


class Runs:
    """One bare and one bridged server run per cell, made on first use and kept for the module."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str, ServerName], Run | BaseException] = {}

    def _get(self, kind: str, framework: str, server: ServerName) -> Run:
        key = (kind, framework, server)
        if key not in self._runs:
            try:
                self._runs[key] = self._make(kind, framework, server)
            except Exception as exc:  # remembered, so the cell's other tests fail fast the same way
                self._runs[key] = exc
        result = self._runs[key]
        if isinstance(result, BaseException):
            raise AssertionError(f"the {kind} {framework} run under {server} failed: {result}") from result
        return result

    def _make(self, kind: str, framework: str, server: ServerName) -> Run:
        env = {"EXAMPLE": module_of(framework)}
        if kind == "bare":
            return serve_and_ask("tests.apps.bare_example:app", framework, server, env, None)
        with EnvelopeReceiver() as receiver:
            env["SENTRY_DSN"] = receiver.dsn
            return serve_and_ask(f"{module_of(framework)}:app", framework, server, env, receiver)

    def bare(self, framework: str, server: ServerName) -> Run:
        return self._get("bare", framework, server)

    def bridged(self, framework: str, server: ServerName) -> Run:
        return self._get("bridged", framework, server)


@pytest.fixture(scope="module")
def runs() -> Iterator[Runs]:
    # The receiver answers promptly (see tests/test_processes.py, ``prompt_receiver``).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_Handler, "disable_nagle_algorithm", True)
        yield Runs()


def cells(frameworks: Collection[str] = FRAMEWORKS) -> list[Any]:
    return [
        pytest.param(framework, server, id=f"{framework}-{server}")
        for framework in FRAMEWORKS
        if framework in frameworks
        for server in SERVERS
    ]


# --- answers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("framework", "server"), cells())
def test_examples_answer_as_documented(runs: Runs, framework: str, server: ServerName) -> None:
    bare = runs.bare(framework, server)
    statuses = {path: answer.status for path, answer in bare.answers.items()}
    assert statuses == {path: EXAMPLE_STATUS_CODES[path] for path in paths_of(framework)}, bare.output
    assert b"42" in bare.answers["/items/42"].body
    if framework in WITH_WEBSOCKET:
        assert bare.echo == f"echo: {WEBSOCKET_TEXT}"


def _comparable(answer: Answer) -> Answer:
    # ``date`` is the only header that differs between two runs of the same app; no framework here adds
    # per-request random headers.
    headers = tuple((name, value) for name, value in answer.headers if name != "date")
    return Answer(answer.status, headers, answer.body)


@pytest.mark.parametrize(("framework", "server"), cells())
def test_answers_match_the_bare_app(runs: Runs, framework: str, server: ServerName) -> None:
    bare, bridged = runs.bare(framework, server), runs.bridged(framework, server)
    for path in paths_of(framework):
        expected, got = _comparable(bare.answers[path]), _comparable(bridged.answers[path])
        if path == "/boom":  # status and body only
            assert (got.status, got.body) == (expected.status, expected.body), path
        else:
            assert got == expected, path
    assert bridged.echo == bare.echo


# --- transactions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("framework", "server"), cells())
def test_one_transaction_per_request(runs: Runs, framework: str, server: ServerName) -> None:
    run = runs.bridged(framework, server)
    expected = Counter(paths_of(framework))
    if framework in WITH_WEBSOCKET:
        expected["/ws"] += 1
    assert Counter(path_of(t) for t in run.transactions) == expected, run.describe()


@pytest.mark.parametrize(("framework", "server"), cells())
def test_transactions_are_named_by_route_with_status(runs: Runs, framework: str, server: ServerName) -> None:
    run = runs.bridged(framework, server)
    item, missing, boom = run.only("/items/42"), run.only("/nowhere"), run.only("/boom")
    name, source = EXPECTED_NAMES[framework]
    assert (item["transaction"], item["transaction_info"]["source"]) == (name, source), run.describe()
    assert (missing["transaction"], missing["transaction_info"]["source"]) == ("/nowhere", "url")
    for path, transaction in (("/items/42", item), ("/nowhere", missing), ("/boom", boom)):
        trace = trace_of(transaction)
        assert (trace.get("op"), trace.get("status")) == ("http.server", EXPECTED_STATUS[path]), (
            f"{path}\n{run.describe()}"
        )


@pytest.mark.parametrize(("framework", "server"), cells())
def test_relay_accepts_every_event(runs: Runs, framework: str, server: ServerName) -> None:
    run = runs.bridged(framework, server)
    assert run.transactions, run.describe()
    for event in run.transactions + run.events:
        assert_relay_valid(event)


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("framework", "server"), cells())
def test_boom_is_one_error_linked_to_its_transaction(runs: Runs, framework: str, server: ServerName) -> None:
    run = runs.bridged(framework, server)
    errors = errors_of_type(run, "ZeroDivisionError")
    assert len(errors) == 1, run.describe()
    [error] = errors
    assert exception_types(error)[-1] == "ZeroDivisionError", run.describe()
    value = exception_value(error, "ZeroDivisionError")
    assert value is not None
    assert last_in_app_function(value) == "compute_total", value.get("stacktrace")
    boom = run.only("/boom")
    assert trace_of(error).get("trace_id") == trace_of(boom)["trace_id"], run.describe()
    assert error.get("transaction") == boom["transaction"], run.describe()


@pytest.mark.parametrize(("framework", "server"), cells(WITH_BACKGROUND))
def test_background_task_failure_is_one_error(runs: Runs, framework: str, server: ServerName) -> None:
    run = runs.bridged(framework, server)
    errors = errors_of_type(run, "RuntimeError")
    assert len(errors) == 1, run.describe()
    value = exception_value(errors[0], "RuntimeError")
    assert value is not None
    assert value.get("value") == "receipt printer on fire"
    assert last_in_app_function(value) == "send_receipt", value.get("stacktrace")


@pytest.mark.parametrize(("framework", "server"), cells())
def test_no_other_error_events(runs: Runs, framework: str, server: ServerName) -> None:
    run = runs.bridged(framework, server)
    assert len(run.events) == expected_error_count(framework), run.describe()


# --- scope ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("framework", "server"), cells())
def test_tag_and_user_stay_on_their_request(runs: Runs, framework: str, server: ServerName) -> None:
    run = runs.bridged(framework, server)
    item = run.only("/items/42")
    assert item.get("tags", {}).get("item") == "42", run.describe()
    # The id itself is sent as "[Filtered]": send_default_pii is off.
    assert "id" in item.get("user", {}), run.describe()
    others = [t for t in run.transactions if t is not item] + run.events
    leaked = [event for event in others if "item" in event.get("tags", {}) or "id" in event.get("user", {})]
    assert not leaked, run.describe()


# --- websockets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("framework", "server"), cells(WITH_WEBSOCKET))
def test_websocket_echo_is_one_transaction(runs: Runs, framework: str, server: ServerName) -> None:
    run = runs.bridged(framework, server)
    assert run.echo == f"echo: {WEBSOCKET_TEXT}", run.output
    websocket = [t for t in run.transactions if trace_of(t).get("op") == "websocket.server"]
    assert len(websocket) == 1, run.describe()
    assert path_of(websocket[0]) == "/ws"


# --- init order and lifespan (one server run each) -----------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_init_after_the_middleware_gives_the_same_events(
    runs: Runs, receiver: EnvelopeReceiver, framework: str
) -> None:
    env = {"EXAMPLE": module_of(framework), "SENTRY_DSN": receiver.dsn}
    paths = ["/items/42", "/nowhere", "/boom"]
    with run_app("tests.apps.init_last_example:app", env=env, app_dir=APP_DIR) as running:
        with httpx.Client(base_url=running.url, timeout=10, limits=NO_KEEPALIVE) as client:
            statuses = [client.get(path).status_code for path in paths]
        assert statuses == [200, 404, 500]
        settle(receiver, transactions=len(paths), events=1)
        running.stop()
    last = Run(answers={}, echo=None, output=running.output())
    last.transactions, last.events = receiver.transactions(), receiver.events()
    for event in last.transactions + last.events:
        assert_relay_valid(event)

    assert Counter(path_of(t) for t in last.transactions) == Counter(paths), last.describe()
    name, source = EXPECTED_NAMES[framework]
    item = last.only("/items/42")
    assert (item["transaction"], item["transaction_info"]["source"]) == (name, source), last.describe()
    [error] = last.events
    value = exception_value(error, "ZeroDivisionError")
    assert value is not None, last.describe()
    assert last_in_app_function(value) == "compute_total"
    assert error.get("transaction") == last.only("/boom")["transaction"]

    first = runs.bridged(framework, "uvicorn")
    assert {p: first.only(p)["transaction"] for p in paths} == {p: last.only(p)["transaction"] for p in paths}
    [first_error] = errors_of_type(first, "ZeroDivisionError")

    def frames(event: Event) -> list[tuple[Any, ...]]:
        value = exception_value(event, "ZeroDivisionError") or {}
        return [
            (frame.get("function"), frame.get("module"), frame.get("in_app"))
            for frame in value.get("stacktrace", {}).get("frames", [])
        ]

    assert (exception_types(error), frames(error)) == (exception_types(first_error), frames(first_error))


@pytest.mark.parametrize(("framework", "server"), cells())
def test_lifespan_is_quiet(receiver: EnvelopeReceiver, framework: str, server: ServerName) -> None:
    """Startup and shutdown with no request: no error event and no traceback in the server's log (Django,
    which does not speak lifespan, has the middleware answer it)."""
    env = {"SENTRY_DSN": receiver.dsn}
    with run_app(f"{module_of(framework)}:app", env=env, server=server, app_dir=APP_DIR) as running:
        running.stop()
    # Nothing is expected; give anything sent late a moment to arrive.
    time.sleep(QUIET_PERIOD)
    assert receiver.events() == [], receiver.summary() + "\n" + running.output()
    assert receiver.transactions() == [], receiver.summary()
    assert "Traceback" not in running.output(), running.output()
