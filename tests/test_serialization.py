"""``fast_serialize`` against its oracle, sentry-sdk's own ``serialize``."""

from __future__ import annotations

import enum
import json
import math
import operator
from collections import OrderedDict, namedtuple
from datetime import UTC, date, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, Callable, Iterator, Optional

import pytest
import sentry_sdk
import sentry_sdk.client
import sentry_sdk.serializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sentry_sdk.envelope import Envelope
from sentry_sdk.serializer import serialize
from sentry_sdk.transport import Transport
from sentry_sdk.utils import AnnotatedValue

from otel_bridge._deliver import serializer as serialization
from otel_bridge._deliver.serializer import fast_serialize, install, uninstall

HYPOTHESIS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_same(fast: Any, slow: Any, path: str = "$") -> None:
    """Equal, with equal types all the way down (NaN equal to NaN)."""
    assert type(fast) is type(slow), f"{path}: {type(fast)} != {type(slow)}"
    if isinstance(slow, dict):
        assert list(fast) == list(slow), path
        for k in slow:
            assert_same(fast[k], slow[k], f"{path}.{k}")
    elif isinstance(slow, list):
        assert len(fast) == len(slow), path
        for i, (f, s) in enumerate(zip(fast, slow, strict=False)):
            assert_same(f, s, f"{path}[{i}]")
    elif isinstance(slow, float) and math.isnan(slow):
        assert math.isnan(fast), path
    else:
        assert fast == slow, path


@pytest.fixture(autouse=True)
def _no_global_repr_processors(monkeypatch: pytest.MonkeyPatch) -> None:
    """sentry-sdk integrations set up by earlier tests in this process (Django's, once Django is installed)
    register global repr processors, which rightly send every event to sentry-sdk's own serializer."""
    monkeypatch.setattr(sentry_sdk.serializer, "global_repr_processors", [])


@pytest.fixture
def slow_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Events that ``fast_serialize`` handed to the original ``serialize``."""
    calls: list[dict[str, Any]] = []

    def spy(event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        calls.append(event)
        return serialize(event, **kwargs)

    monkeypatch.setattr(serialization, "_sentry_serialize", spy)
    return calls


# --- odd values -----------------------------------------------------------------------------


class Custom:
    def __repr__(self) -> str:
        return "<Custom>"


class WithSentryRepr:
    def __sentry_repr__(self) -> str:
        return "sentry-repr"


class StrWithSentryRepr(str):
    def __sentry_repr__(self) -> str:
        return "str-sentry-repr"


class DatetimeWithSentryRepr(datetime):
    def __sentry_repr__(self) -> str:
        return "datetime-sentry-repr"


class StrWithStr(str):
    def __str__(self) -> str:
        return "str-override"


class DictWithSentryRepr(dict):  # type: ignore[type-arg]
    def __sentry_repr__(self) -> str:
        return "dict-sentry-repr"


class ListBackwards(list):  # type: ignore[type-arg]
    def __iter__(self) -> Iterator[Any]:
        return reversed(list(super().__iter__()))


class MyInt(int):
    def __str__(self) -> str:
        return "my-int"


class MyFloat(float):
    def __repr__(self) -> str:
        return "my-float"


class Color(enum.IntEnum):
    RED = 1


Pair = namedtuple("Pair", "a b")


def custom_repr(value: Any) -> Optional[str]:
    return f"custom:{type(value).__name__}" if isinstance(value, (Custom, set)) else None


def _cycle_dict(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    d["self"] = d
    return d


def _cycle_list(items: list[Any]) -> list[Any]:
    items = list(items)
    items.append(items)
    return items


TZS = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]

plain_strings = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(exclude_categories=()), max_size=8),  # with lone surrogates
    st.builds(operator.mul, st.characters(), st.integers(0, 12_000)),  # around 10_000 bytes
    st.sampled_from(["", "a" * 5, "a" * 6, "é" * 25, "é" * 26, "😀" * 12, "😀" * 13]),
)
plain_leaves = st.one_of(
    plain_strings,
    st.integers(),
    st.integers(min_value=2**64, max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.datetimes(timezones=st.sampled_from([None, *TZS])),
)
odd_leaves = st.one_of(
    st.floats(),
    st.binary(max_size=8),
    st.builds(bytearray, st.binary(max_size=4)),
    st.builds(Custom),
    st.builds(WithSentryRepr),
    st.builds(StrWithSentryRepr, st.text(max_size=4)),
    st.builds(StrWithStr, st.text(max_size=4)),
    st.builds(MyInt, st.integers()),
    st.builds(MyFloat, st.floats()),
    st.just(Color.RED),
    st.frozensets(st.integers(), max_size=3),
    st.dates(),
    st.datetimes().map(lambda d: DatetimeWithSentryRepr(*d.timetuple()[:6])),
)
str_keys = st.one_of(st.text(max_size=6), st.sampled_from(["extra", "data", "values", "true", "null"]))
odd_keys = st.one_of(
    st.booleans(),
    st.none(),
    st.integers(),
    st.floats(),
    st.just(Color.RED),
    st.builds(StrWithStr, st.text(max_size=3)),
    st.builds(MyInt, st.integers()),
)


def nested(leaves: st.SearchStrategy[Any], keys: st.SearchStrategy[Any], odd: bool) -> st.SearchStrategy[Any]:
    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        plain = [
            st.lists(children, max_size=12),
            st.dictionaries(keys, children, max_size=12),
            st.lists(children, max_size=4).map(tuple),
        ]
        if not odd:
            return st.one_of(*plain)
        return st.one_of(
            *plain,
            st.sets(st.integers(), max_size=12),
            st.dictionaries(keys, children, max_size=4).map(OrderedDict),
            st.dictionaries(keys, children, max_size=4).map(MappingProxyType),
            st.dictionaries(keys, children, max_size=4).map(DictWithSentryRepr),
            st.lists(children, max_size=4).map(ListBackwards),
            st.builds(Pair, children, children),
            st.builds(AnnotatedValue, children, st.just({"rem": [["!config", "x"]]})),
            st.dictionaries(str_keys, children, max_size=3).map(_cycle_dict),
            st.lists(children, max_size=3).map(_cycle_list),
        )

    return st.recursive(leaves, extend, max_leaves=25)


def events(payload: st.SearchStrategy[Any], keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    sections = st.fixed_dictionaries(
        {},
        optional={
            "type": st.just("transaction"),
            "extra": payload,
            "breadcrumbs": st.fixed_dictionaries(
                {}, optional={"values": st.one_of(st.lists(payload, max_size=3), payload), "other": payload}
            ),
            "request": st.one_of(
                st.fixed_dictionaries({}, optional={"data": payload, "headers": payload}), payload
            ),
            "contexts": payload,
            "spans": st.lists(
                st.fixed_dictionaries({}, optional={"data": payload, "description": payload}), max_size=3
            ),
            "tags": payload,
            "user": payload,
        },
    )
    return st.builds(
        lambda top, known: {**top, **known}, st.dictionaries(keys, payload, max_size=3), sections
    )


serialize_kwargs = st.fixed_dictionaries(
    {
        "max_value_length": st.sampled_from([None, 5, 50, 10_000]),
        "max_request_body_size": st.sampled_from(["always", "medium", None]),
        "custom_repr": st.sampled_from([None, custom_repr]),
    },
    optional={"is_vars": st.booleans()},
)


@HYPOTHESIS
@given(events(nested(plain_leaves, str_keys, odd=False), str_keys), serialize_kwargs)
def test_plain_events_match_serialize(event: dict[str, Any], kwargs: dict[str, Any]) -> None:
    assert_same(fast_serialize(event, **kwargs), serialize(event, **kwargs))


@HYPOTHESIS
@given(
    events(nested(st.one_of(plain_leaves, odd_leaves), st.one_of(str_keys, odd_keys), odd=True), str_keys),
    serialize_kwargs,
)
def test_any_events_match_serialize(event: dict[str, Any], kwargs: dict[str, Any]) -> None:
    before = repr(event)
    assert_same(fast_serialize(event, **kwargs), serialize(event, **kwargs))
    assert repr(event) == before


# --- boundaries ---------------------------------------------------------------------------------


def chain(levels: int) -> Any:
    """A leaf ``levels`` mappings below the returned value."""
    return "leaf" if levels == 0 else {"k": chain(levels - 1)}


DATABAGS: list[tuple[str, Callable[[Any], dict[str, Any]], str]] = [
    ("extra", lambda bag: {"extra": bag}, "medium"),
    ("breadcrumb", lambda bag: {"breadcrumbs": {"values": [{"message": "m"}, bag]}}, "medium"),
    ("breadcrumb in dict", lambda bag: {"breadcrumbs": {"values": {"0": bag}}}, "medium"),
    ("request body", lambda bag: {"request": {"data": bag}}, "medium"),
]
NOT_DATABAGS: list[tuple[str, Callable[[Any], dict[str, Any]], str]] = [
    ("request body kept", lambda bag: {"request": {"data": bag}}, "always"),
    ("contexts", lambda bag: {"contexts": bag}, "medium"),
    ("span data", lambda bag: {"spans": [{"data": bag}]}, "medium"),
    ("request headers", lambda bag: {"request": {"headers": bag}}, "medium"),
    ("breadcrumbs other", lambda bag: {"breadcrumbs": {"other": bag}}, "medium"),
    ("top level", lambda bag: {"tags": bag}, "medium"),
]


def _check(
    event: dict[str, Any], body_size: str, trimmed: bool, slow_calls: list[dict[str, Any]], slow: bool
) -> None:
    kwargs = {"max_request_body_size": body_size, "max_value_length": None, "custom_repr": None}
    expected = serialize(event, **kwargs)
    assert_same(fast_serialize(event, **kwargs), expected)
    assert ("_meta" in expected) is trimmed
    assert bool(slow_calls) is slow


@pytest.mark.parametrize(("name", "place", "body_size"), DATABAGS, ids=[d[0] for d in DATABAGS])
@pytest.mark.parametrize("levels", [4, 5, 6])
def test_databag_depth(
    name: str, place: Callable[[Any], dict[str, Any]], body_size: str, levels: int, slow_calls: list[Any]
) -> None:
    # a node past the last level becomes its repr: left to serialize
    _check(place(chain(levels)), body_size, trimmed=levels >= 5, slow_calls=slow_calls, slow=levels >= 5)


@pytest.mark.parametrize(("name", "place", "body_size"), DATABAGS, ids=[d[0] for d in DATABAGS])
@pytest.mark.parametrize("container", ["dict", "list", "tuple", "nested list"])
@pytest.mark.parametrize("size", [10, 11])
def test_databag_breadth(
    name: str,
    place: Callable[[Any], dict[str, Any]],
    body_size: str,
    container: str,
    size: int,
    slow_calls: list[Any],
) -> None:
    bag: Any = {
        "dict": {str(i): i for i in range(size)},
        "list": list(range(size)),
        "tuple": tuple(range(size)),
        "nested list": {"a": {"b": list(range(size))}},
    }[container]
    # cutting to the first ten items is done on the fast path, with the same _meta
    _check(place(bag), body_size, trimmed=size > 10, slow_calls=slow_calls, slow=False)


@pytest.mark.parametrize(("name", "place", "body_size"), NOT_DATABAGS, ids=[d[0] for d in NOT_DATABAGS])
def test_outside_databags_nothing_is_trimmed(
    name: str, place: Callable[[Any], dict[str, Any]], body_size: str, slow_calls: list[Any]
) -> None:
    bag = {"deep": chain(30), "broad": list(range(50))}
    _check(place(bag), body_size, trimmed=False, slow_calls=slow_calls, slow=False)


@pytest.mark.parametrize(
    ("value", "limit", "trimmed"),
    [
        ("a" * 10, 10, False),
        ("a" * 11, 10, True),
        ("é" * 5, 10, False),  # 10 bytes
        ("é" * 6, 10, True),  # 6 characters but 12 bytes
        ("😀" * 2, 8, False),
        ("😀" * 3, 8, True),
        ("", 0, False),
        ("a" * 100_001, None, None),  # older sentry-sdk trims to a default length
    ],
)
def test_string_length_boundaries(
    value: str, limit: Optional[int], trimmed: Optional[bool], slow_calls: list[Any]
) -> None:
    event = {"message": value, "extra": {"v": value}}
    expected = serialize(event, max_value_length=limit)
    assert_same(fast_serialize(event, max_value_length=limit), expected)
    if trimmed is not None:
        assert ("_meta" in expected) is trimmed
        assert bool(slow_calls) is trimmed


def test_unencodable_string_falls_back_but_matches(slow_calls: list[Any]) -> None:
    event = {"message": "\ud800" * 10}
    assert_same(fast_serialize(event, max_value_length=10), serialize(event, max_value_length=10))


def test_span_description_is_never_trimmed() -> None:
    event = {"spans": [{"description": "SELECT " + "x" * 100}]}
    assert_same(fast_serialize(event, max_value_length=20), serialize(event, max_value_length=20))


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        Color.RED,
        MyInt(3),
        StrWithSentryRepr("s"),
        StrWithStr("s"),
        DictWithSentryRepr(a=1),
        ListBackwards([1, 2]),
        OrderedDict(a=1),
        Pair(1, 2),
        b"bytes",
        date(2024, 1, 1),
        DatetimeWithSentryRepr(2024, 1, 1),
        {True: 1},
        {None: 1},
        {1: 1},
        {StrWithStr("k"): 1},
        AnnotatedValue("v", {"rem": [["!config", "x"]]}),
    ],
    ids=repr,
)
def test_values_that_are_not_plain_fall_back(value: Any, slow_calls: list[Any]) -> None:
    event = {"contexts": {"c": value}}
    assert_same(fast_serialize(event), serialize(event))
    assert slow_calls == [event]


def test_cycles_fall_back() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    event = {"contexts": loop, "extra": loop}
    expected = serialize(event)
    assert expected["contexts"]["self"] == "<cyclic>"
    assert_same(fast_serialize(event), expected)


def test_datetimes_are_formatted_like_serialize(slow_calls: list[Any]) -> None:
    naive = datetime(2024, 5, 6, 7, 8, 9, 123456)
    aware = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    event = {"timestamp": aware, "extra": {"when": naive}, "breadcrumbs": {"values": [{"timestamp": aware}]}}
    assert_same(fast_serialize(event), serialize(event))
    assert fast_serialize(event)["timestamp"] == "2024-05-06T05:08:09.000000Z"
    assert not slow_calls


@pytest.mark.parametrize(
    "kwargs",
    [{"is_vars": True}, {"is_databag": True}, {"remaining_depth": 2}],
    ids=repr,
)
def test_other_keywords_go_to_serialize(kwargs: dict[str, Any], slow_calls: list[Any]) -> None:
    event = {"a": {"b": {"c": 1.5, "d": "s"}}}
    assert_same(fast_serialize(event, **kwargs), serialize(event, **kwargs))
    assert slow_calls == [event]


def test_global_repr_processors_fall_back(monkeypatch: pytest.MonkeyPatch, slow_calls: list[Any]) -> None:
    def shout(value: Any, hints: dict[str, Any]) -> Any:
        return value.upper() if isinstance(value, str) else NotImplemented

    monkeypatch.setattr(sentry_sdk.serializer, "global_repr_processors", [shout])
    event = {"extra": {"a": "x"}, "spans": [{"data": {"b": "y"}}]}
    assert_same(fast_serialize(event), serialize(event))
    assert fast_serialize(event)["extra"] == {"a": "X"}
    assert slow_calls


def test_result_is_a_fresh_copy() -> None:
    event = {"tags": {"a": "b"}, "spans": [{"data": {"x": [1, 2]}}], "pair": (1, 2)}
    result = fast_serialize(event)
    result["tags"]["a"] = "changed"
    result["spans"][0]["data"]["x"].append(3)
    assert event == {"tags": {"a": "b"}, "spans": [{"data": {"x": [1, 2]}}], "pair": (1, 2)}
    assert result["pair"] == [1, 2]


# --- a real transaction -------------------------------------------------------------------------


def transaction_event() -> dict[str, Any]:
    start = datetime(2024, 5, 6, 7, 8, 9, 100000, tzinfo=UTC)
    end = start + timedelta(milliseconds=25)
    trace = {
        "trace_id": "ebfee0455ab5a631dd491772e7acc81b",
        "span_id": "97fb2288ef5b4417",
        "op": "http.server",
        "status": "ok",
        "origin": "auto.otel",
        "data": {"http.method": "GET", "http.status_code": 200, "http.url": "http://h/hello?x=1"},
    }
    return {
        "type": "transaction",
        "event_id": "5103d34530e74373933ed4171e6689f5",
        "transaction": "/hello",
        "transaction_info": {"source": "route"},
        "start_timestamp": start,
        "timestamp": end,
        "platform": "python",
        "contexts": {"trace": trace, "response": {"status_code": 200}},
        "spans": [
            {
                "trace_id": trace["trace_id"],
                "span_id": "a1b2c3d4e5f60718",
                "parent_span_id": trace["span_id"],
                "op": "db",
                "description": "SELECT 1",
                "start_timestamp": start,
                "timestamp": end,
                "data": {"db.system": "postgresql", "rows": 1, "ratio": 0.5, "ok": True, "none": None},
            }
        ],
        "breadcrumbs": {
            "values": [
                {
                    "timestamp": start,
                    "category": "http",
                    "type": "http",
                    "data": {"url": "/a", "status": 200},
                },
                {"timestamp": end, "category": "log", "message": "done", "level": "info"},
            ]
        },
        "request": {"method": "GET", "url": "http://h/hello", "headers": {"accept": "*/*"}},
        "tags": {"http.status_code": "200"},
        "extra": {"sys.argv": ["app.py"]},
        "user": {"id": "42", "email": "a@example.com"},
    }


def test_plain_transaction_takes_the_fast_path(slow_calls: list[Any]) -> None:
    event = transaction_event()
    kwargs = {"max_request_body_size": "medium", "max_value_length": None, "custom_repr": None}
    assert_same(fast_serialize(event, **kwargs), serialize(event, **kwargs))
    assert_same(fast_serialize(event, **{**kwargs, "max_value_length": 1024}), serialize(event, **kwargs))
    assert not slow_calls


@pytest.fixture
def installed() -> Iterator[None]:
    # otel_bridge.init() in earlier tests installs it for the rest of the process: start from sentry-sdk's own
    was_installed = sentry_sdk.client.serialize is fast_serialize
    uninstall()
    yield
    uninstall()
    if was_installed:
        install()


def test_install_swaps_client_serialize(installed: None) -> None:
    original = sentry_sdk.client.serialize
    assert original is serialize
    install()
    install()
    assert sentry_sdk.client.serialize is fast_serialize
    uninstall()
    assert sentry_sdk.client.serialize is original
    uninstall()
    assert sentry_sdk.client.serialize is original


class CapturingTransport(Transport):
    def __init__(self, options: Optional[dict[str, Any]] = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)


def _send_events() -> list[Any]:
    """What a client sends for a transaction and an error, as parsed JSON, minus per-run fields."""
    transport = CapturingTransport()
    client = sentry_sdk.Client(
        dsn="https://key@o0.ingest.sentry.io/1",
        transport=transport,
        default_integrations=False,
        release="r1",
        environment="test",
        server_name="host",
    )
    try:
        with sentry_sdk.new_scope() as scope:
            scope.set_client(client)
            scope.set_tag("tenant", "acme")
            scope.set_extra("attempt", 2)
            scope.set_user({"id": "7", "username": "ann"})
            scope.add_breadcrumb({"category": "auth", "message": "login", "timestamp": datetime.now()})
            client.capture_event(transaction_event(), scope=scope)
            error = {"message": "boom", "level": "error", "event_id": "e" * 32, "timestamp": datetime.now()}
            client.capture_event(
                {**error, "contexts": {"trace": transaction_event()["contexts"]["trace"]}}, scope=scope
            )
    finally:
        client.close()
    payloads = []
    for envelope in transport.envelopes:
        headers = {k: v for k, v in envelope.headers.items() if k not in ("sent_at", "trace")}
        items = [json.loads(item.get_bytes()) for item in envelope.items]
        for item in items:
            item.pop("timestamp")
            for crumb in item.get("breadcrumbs", {}).get("values", []):
                assert crumb["timestamp"].endswith("Z")
                if crumb.get("category") == "auth":
                    crumb.pop("timestamp")
        payloads.append((headers, items))
    return payloads


def test_client_sends_the_same_with_and_without_install(
    installed: None, slow_calls: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_paths: list[Any] = []
    copy_event = serialization._copy_event

    def spy(event: Any, *args: Any) -> dict[str, Any]:
        fast_paths.append(event)
        return copy_event(event, *args)

    monkeypatch.setattr(serialization, "_copy_event", spy)
    without = _send_events()
    assert not fast_paths
    install()
    with_fast = _send_events()
    assert len(fast_paths) == 2
    assert not slow_calls
    assert len(without) == 2
    assert with_fast == without
