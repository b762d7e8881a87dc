"""``SentryPropagator``: sentry-trace and baggage in and out, against sentry-sdk's own headers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Optional

import pytest
import sentry_sdk
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sentry_sdk.tracing import Transaction

from otel_bridge._tracing.sampling import sample_rand_of
from otel_bridge.propagation import (
    SENTRY_BAGGAGE_KEY,
    SentryPropagator,
    default_propagator,
    get_dynamic_sampling_context,
)

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACE_HEX = f"{TRACE_ID:032x}"
SPAN_HEX = f"{SPAN_ID:016x}"
DSN = "http://key@127.0.0.1:9/1"

PROPAGATOR = SentryPropagator()


def span_context_of(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


def context_with_span(
    trace_id: int = TRACE_ID, span_id: int = SPAN_ID, sampled: bool = True, remote: bool = False
) -> Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    span = NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=remote, trace_flags=flags))
    return trace.set_span_in_context(span, Context())


def baggage_members(value: str) -> list[str]:
    return [member.strip() for member in value.split(",") if member.strip()]


def sentry_entries(value: str) -> dict[str, str]:
    return dict(m.split("=", 1) for m in baggage_members(value) if m.startswith("sentry-"))


@contextmanager
def sentry_client(**options: Any) -> Iterator[sentry_sdk.Client]:
    """A client active only inside this block's isolation scope; no global client is left behind."""
    client = sentry_sdk.Client(dsn=DSN, traces_sample_rate=1.0, **options)
    try:
        with sentry_sdk.isolation_scope() as scope:
            scope.set_client(client)
            yield client
    finally:
        client.close(timeout=0)
    assert not sentry_sdk.get_client().is_active()


class ListGetter(Getter[Mapping[str, Any]]):
    """Returns whatever the carrier holds, untouched: lists, bytes, None, as odd carriers do."""

    def get(self, carrier: Mapping[str, Any], key: str) -> Optional[list[str]]:
        return carrier.get(key)

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


class ListSetter(Setter[list[tuple[str, str]]]):
    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key, value))


def test_fields_and_no_argument_construction() -> None:
    assert SentryPropagator().fields == {"sentry-trace", "baggage"}
    assert {"traceparent", "tracestate", "baggage", "sentry-trace"} <= default_propagator().fields


_LOAD_FROM_ENV = """
from opentelemetry import propagate
names = [f"{type(p).__module__}.{type(p).__name__}" for p in propagate.get_global_textmap()._propagators]
print(",".join(names))
"""
_OURS = "otel_bridge.propagation.SentryPropagator"


def _propagators_loaded_by_otel(extra_path: str = "") -> list[str]:
    """What ``opentelemetry.propagate`` builds from ``OTEL_PROPAGATORS=tracecontext,baggage,sentry``."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "OTEL_PROPAGATORS": "tracecontext,baggage,sentry",
        "PYTHONPATH": os.pathsep.join(p for p in (extra_path, root, os.environ.get("PYTHONPATH", "")) if p),
    }
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_FROM_ENV], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(",")


def test_entry_point_mechanism_constructs_it(tmp_path: Path) -> None:
    """The SDK instantiates entry-point propagators with no arguments; a dist-info found first proves it."""
    dist_info = tmp_path / "otel_bridge_entry_point-0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: otel-bridge-entry-point\nVersion: 0\n")
    (dist_info / "entry_points.txt").write_text(
        "[opentelemetry_propagator]\nsentry = otel_bridge.propagation:SentryPropagator\n"
    )
    assert _propagators_loaded_by_otel(str(tmp_path))[-1] == _OURS


def test_installed_sentry_entry_point_resolves_to_ours() -> None:
    registered = [ep.value for ep in entry_points(group="opentelemetry_propagator", name="sentry")]
    if "otel_bridge.propagation:SentryPropagator" not in registered:
        pytest.skip(f"otel_bridge's 'sentry' propagator entry point is not installed, only {registered}")
    loaded = _propagators_loaded_by_otel()[-1]
    if loaded != _OURS:
        # sentry-sdk registers its deprecated propagator under the same name; the SDK takes the first
        # distribution found, which depends on directory listing order.
        pytest.xfail(f"OTEL_PROPAGATORS 'sentry' loads {loaded} (sentry-sdk registers the same name)")


@pytest.mark.parametrize(
    ("flag", "sampled"),
    [("-1", True), ("-0", False), ("", True)],
    ids=["sampled", "not-sampled", "deferred"],
)
def test_extract_sampled_flag(flag: str, sampled: bool) -> None:
    context = PROPAGATOR.extract({"sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}{flag}"}, Context())
    extracted = span_context_of(context)
    assert extracted.is_valid and extracted.is_remote
    assert (extracted.trace_id, extracted.span_id) == (TRACE_ID, SPAN_ID)
    assert extracted.trace_flags.sampled is sampled
    # A Sentry caller that sent no Sentry baggage: its (empty) DSC is frozen, as sentry-sdk does.
    assert get_dynamic_sampling_context(context) == {}


def test_extract_uppercase_hex_and_whitespace() -> None:
    context = PROPAGATOR.extract({"sentry-trace": f" \t{TRACE_HEX.upper()}-{SPAN_HEX.upper()}-1 "}, Context())
    assert (span_context_of(context).trace_id, span_context_of(context).span_id) == (TRACE_ID, SPAN_ID)


def test_extract_reads_sentry_baggage_only() -> None:
    carrier = {
        "sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}-1",
        "baggage": (
            f"userid=42, sentry-trace_id={TRACE_HEX},sentry-public_key=key ,"
            "sentry-transaction=GET%20%2Fcaf%C3%A9;prop=1,sentry-sample_rate=0.5,other=x"
        ),
    }
    context = PROPAGATOR.extract(carrier, Context())
    assert get_dynamic_sampling_context(context) == {
        "trace_id": TRACE_HEX,
        "public_key": "key",
        "transaction": "GET /café",
        "sample_rate": "0.5",
    }
    assert context.get(SENTRY_BAGGAGE_KEY) == get_dynamic_sampling_context(context)


def test_dsc_naming_another_trace_is_not_taken() -> None:
    carrier = {"sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}-1", "baggage": f"sentry-trace_id={'1' * 32}"}
    assert get_dynamic_sampling_context(PROPAGATOR.extract(carrier, Context())) == {}


def test_get_dynamic_sampling_context_reads_current_context() -> None:
    from opentelemetry.context import attach, detach

    assert get_dynamic_sampling_context() is None
    context = PROPAGATOR.extract(
        {"sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}", "baggage": "sentry-release=r1"}, Context()
    )
    token = attach(context)
    try:
        assert get_dynamic_sampling_context() == {"release": "r1"}
    finally:
        detach(token)


def test_round_trip_inject_extract_without_client() -> None:
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context_with_span(sampled=False))
    assert carrier == {"sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}-0"}
    extracted = span_context_of(PROPAGATOR.extract(carrier, Context()))
    assert (extracted.trace_id, extracted.span_id, extracted.trace_flags.sampled) == (
        TRACE_ID,
        SPAN_ID,
        False,
    )


def test_round_trip_builds_fresh_dsc_from_client() -> None:
    carrier: dict[str, str] = {}
    with sentry_client(environment="staging", release="shop@1.2 beta"):
        PROPAGATOR.inject(carrier, context_with_span())
    assert carrier["sentry-trace"] == f"{TRACE_HEX}-{SPAN_HEX}-1"
    context = PROPAGATOR.extract(carrier, Context())
    assert (span_context_of(context).trace_id, span_context_of(context).span_id) == (TRACE_ID, SPAN_ID)
    assert get_dynamic_sampling_context(context) == {
        "trace_id": TRACE_HEX,
        "public_key": "key",
        "sample_rate": "1.0",
        "sample_rand": f"{sample_rand_of(TRACE_ID):.6f}",
        "sampled": "true",
        "environment": "staging",
        "release": "shop@1.2 beta",
    }


def test_continued_trace_forwards_callers_dsc_frozen() -> None:
    incoming = {
        "sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}-1",
        "baggage": f"sentry-trace_id={TRACE_HEX},sentry-public_key=upstream,sentry-release=up%201",
    }
    context = PROPAGATOR.extract(incoming, Context())
    child = NonRecordingSpan(SpanContext(TRACE_ID, 0xABC, is_remote=False, trace_flags=TraceFlags(1)))
    context = trace.set_span_in_context(child, context)
    outgoing: dict[str, str] = {}
    with sentry_client(release="ours"):
        PROPAGATOR.inject(outgoing, context)
    assert outgoing["sentry-trace"] == f"{TRACE_HEX}-{0xABC:016x}-1"
    assert sentry_entries(outgoing["baggage"]) == {
        "sentry-trace_id": TRACE_HEX,
        "sentry-public_key": "upstream",
        "sentry-release": "up%201",
    }


def test_stale_dsc_of_another_trace_is_not_injected() -> None:
    context = PROPAGATOR.extract(
        {"sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}-1", "baggage": "sentry-public_key=upstream"}, Context()
    )
    other = NonRecordingSpan(SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1)))
    context = trace.set_span_in_context(other, context)
    assert get_dynamic_sampling_context(context) is None
    carrier: dict[str, str] = {}
    with sentry_client():
        PROPAGATOR.inject(carrier, context)
    assert sentry_entries(carrier["baggage"])["sentry-public_key"] == "key"
    assert sentry_entries(carrier["baggage"])["sentry-trace_id"] == f"{0x1234:032x}"


def test_inject_without_valid_span_writes_nothing() -> None:
    carrier: dict[str, str] = {"baggage": "userid=42"}
    with sentry_client():
        PROPAGATOR.inject(carrier, Context())
    assert carrier == {"baggage": "userid=42"}


def test_headers_from_sentry_sdk_itself() -> None:
    with sentry_client(environment="prod", release="r1"):  # noqa: SIM117
        with sentry_sdk.start_transaction(name="/café items", op="http.server", source="route") as tx:
            sentry_trace = sentry_sdk.get_traceparent()
            sentry_baggage = sentry_sdk.get_baggage()
            assert isinstance(tx, Transaction)
            expected_dsc = tx.get_baggage().dynamic_sampling_context()
            trace_id, span_id = tx.trace_id, tx.span_id
    assert sentry_trace is not None and sentry_baggage is not None

    context = PROPAGATOR.extract({"sentry-trace": sentry_trace, "baggage": sentry_baggage}, Context())
    extracted = span_context_of(context)
    assert extracted.is_remote and extracted.trace_flags.sampled
    assert trace.format_trace_id(extracted.trace_id) == trace_id
    assert trace.format_span_id(extracted.span_id) == span_id
    dsc = get_dynamic_sampling_context(context)
    assert dsc == expected_dsc
    assert dsc is not None and dsc["transaction"] == "/café items" and dsc["public_key"] == "key"


def test_w3c_and_sentry_agreeing_keeps_w3c_context_and_takes_dsc() -> None:
    carrier = {
        "traceparent": f"00-{TRACE_HEX}-{'1' * 16}-01",
        "tracestate": "vendor=value",
        "sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}-0",
        "baggage": f"userid=42,sentry-trace_id={TRACE_HEX},sentry-public_key=upstream",
    }
    context = default_propagator().extract(carrier, Context())
    extracted = span_context_of(context)
    assert (extracted.trace_id, extracted.span_id) == (TRACE_ID, int("1" * 16, 16))
    assert extracted.trace_flags.sampled and extracted.trace_state == TraceState([("vendor", "value")])
    assert get_dynamic_sampling_context(context) == {"trace_id": TRACE_HEX, "public_key": "upstream"}
    assert baggage.get_baggage("userid", context) == "42"


def test_w3c_and_sentry_disagreeing_w3c_wins_without_sentry_dsc() -> None:
    other = "b" * 32
    carrier = {
        "traceparent": f"00-{other}-{'1' * 16}-01",
        "sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}-1",
        "baggage": f"sentry-trace_id={TRACE_HEX},sentry-public_key=upstream",
    }
    context = default_propagator().extract(carrier, Context())
    assert trace.format_trace_id(span_context_of(context).trace_id) == other
    assert get_dynamic_sampling_context(context) is None
    w3c_only = TraceContextTextMapPropagator().extract(carrier, Context())
    assert PROPAGATOR.extract(carrier, w3c_only) is w3c_only


@pytest.mark.parametrize(
    ("named_trace", "expected"),
    [(TRACE_HEX, {"trace_id": TRACE_HEX, "public_key": "upstream"}), ("c" * 32, None)],
    ids=["same-trace", "other-trace"],
)
def test_w3c_with_sentry_baggage_only(named_trace: str, expected: Optional[dict[str, str]]) -> None:
    carrier = {
        "traceparent": f"00-{TRACE_HEX}-{SPAN_HEX}-01",
        "baggage": f"sentry-trace_id={named_trace},sentry-public_key=upstream",
    }
    assert get_dynamic_sampling_context(default_propagator().extract(carrier, Context())) == expected


def test_user_baggage_survives_inject_alongside_sentry_entries() -> None:
    context = baggage.set_baggage("userid", "42", context_with_span())
    context = baggage.set_baggage("color", "blue", context)
    carrier: dict[str, str] = {}
    with sentry_client():
        default_propagator().inject(carrier, context)
    members = baggage_members(carrier["baggage"])
    assert members[:2] == ["userid=42", "color=blue"]
    assert sentry_entries(carrier["baggage"])["sentry-trace_id"] == TRACE_HEX
    assert len(members) == len(set(members))
    assert carrier["traceparent"] == f"00-{TRACE_HEX}-{SPAN_HEX}-01"


def test_inject_replaces_stale_sentry_members_and_other_cased_key() -> None:
    carrier: dict[str, Any] = {"Baggage": f"sentry-public_key=stale, userid=42,sentry-trace_id={'1' * 32}"}
    with sentry_client():
        PROPAGATOR.inject(carrier, context_with_span())
    assert set(carrier) == {"sentry-trace", "baggage"}
    members = baggage_members(carrier["baggage"])
    assert members[0] == "userid=42"
    assert [m for m in members if m.startswith(("sentry-public_key=", "sentry-trace_id="))] == [
        f"sentry-trace_id={TRACE_HEX}",
        "sentry-public_key=key",
    ]


def test_inject_drops_our_entries_rather_than_users_when_too_big() -> None:
    user = ",".join(f"k{i}={'v' * 80}" for i in range(95))
    assert len(user) < 8192
    carrier = {"baggage": user}
    with sentry_client():
        PROPAGATOR.inject(carrier, context_with_span())
    assert carrier["baggage"] == user
    many = ",".join(f"k{i}=v" for i in range(179))
    carrier = {"baggage": many}
    with sentry_client():
        PROPAGATOR.inject(carrier, context_with_span())
    assert carrier["baggage"] == many


def test_inject_leaves_unmergeable_baggage_alone_and_sets_on_other_carriers() -> None:
    odd: dict[str, Any] = {"baggage": 42}
    with sentry_client():
        PROPAGATOR.inject(odd, context_with_span())
        assert odd["baggage"] == 42 and "sentry-trace" in odd
        pairs: list[tuple[str, str]] = []
        PROPAGATOR.inject(pairs, context_with_span(), setter=ListSetter())
    assert [key for key, _ in pairs] == ["sentry-trace", "baggage"]


def test_asgi_style_list_values() -> None:
    carrier = {
        "sentry-trace": [f"{TRACE_HEX}-{SPAN_HEX}-1", f"{'1' * 32}-{SPAN_HEX}-1"],
        "baggage": ["userid=42", "sentry-release=r1"],
    }
    context = PROPAGATOR.extract(carrier, Context(), getter=ListGetter())
    assert span_context_of(context).trace_id == TRACE_ID
    assert get_dynamic_sampling_context(context) == {"release": "r1"}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        f"{TRACE_HEX}",
        f"{TRACE_HEX}-",
        f"{TRACE_HEX[:-1]}-{SPAN_HEX}-1",
        f"{TRACE_HEX}0-{SPAN_HEX}-1",
        f"{TRACE_HEX}-{SPAN_HEX[:-1]}-1",
        f"{TRACE_HEX}-{SPAN_HEX}0-1",
        f"{TRACE_HEX}-{SPAN_HEX}-2",
        f"{TRACE_HEX}-{SPAN_HEX}-10",
        f"{TRACE_HEX}-{SPAN_HEX}-1\n",
        f"-{SPAN_HEX}-1",
        f"{'0' * 32}-{SPAN_HEX}-1",
        f"{TRACE_HEX}-{'0' * 16}-1",
        f"{'g' * 32}-{SPAN_HEX}-1",
        f"{TRACE_HEX[:-1]}é-{SPAN_HEX}-1",
        f"{TRACE_HEX[:-1]}\uff11-{SPAN_HEX}-1",
        f"{TRACE_HEX[:-1]}\u0661-{SPAN_HEX}-1",
        f"00-{TRACE_HEX}-{SPAN_HEX}-01",
        f"{TRACE_HEX}-{SPAN_HEX}-1" + " " * 1_000_000,
        "x" * 1_000_000,
        f"{TRACE_HEX}-{SPAN_HEX}-1".encode(),
        bytearray(f"{TRACE_HEX}-{SPAN_HEX}-1".encode()),
        memoryview(f"{TRACE_HEX}-{SPAN_HEX}-1".encode()),
        [f"{TRACE_HEX}-{SPAN_HEX}-1".encode()],
        [None, 3],
        [],
        None,
        42,
    ],
)
def test_hostile_sentry_trace_leaves_context_unchanged(value: object) -> None:
    context = Context()
    carrier = {"sentry-trace": value, "baggage": f"sentry-trace_id={TRACE_HEX}"}
    assert PROPAGATOR.extract(carrier, context, getter=ListGetter()) is context


@pytest.mark.parametrize(
    "value",
    [
        ",".join(f"sentry-k{i}=v" for i in range(10_000)),
        "sentry-release=" + "a" * 1_000_000,
        "sentry-release=r1," + ",".join(f"k{i}=v" for i in range(180)),
        "sentry-release=r1," + "a" * 8200,
        "sentry-release=r1,k=" + "é" * 4090,
        ["sentry-release=r1", "x=" + "a" * 8190],
        [b"sentry-release=r1"],
        b"sentry-release=r1",
    ],
    ids=[
        "10k-entries",
        "1MB",
        "181-members",
        "8k-chars",
        "8k-utf8-bytes",
        "8k-over-list",
        "bytes-list",
        "bytes",
    ],
)
def test_hostile_baggage_is_ignored_quickly(value: object) -> None:
    carrier = {"sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}-1", "baggage": value}
    elapsed = []
    for _ in range(3):
        start = time.perf_counter()
        context = PROPAGATOR.extract(carrier, Context(), getter=ListGetter())
        elapsed.append(time.perf_counter() - start)
    assert min(elapsed) < 0.05
    assert span_context_of(context).trace_id == TRACE_ID
    assert get_dynamic_sampling_context(context) == {}


def test_baggage_at_the_limits_is_taken() -> None:
    value = "sentry-release=r1," + ",".join(f"k{i}=v" for i in range(179))
    context = PROPAGATOR.extract({"sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}", "baggage": value}, Context())
    assert get_dynamic_sampling_context(context) == {"release": "r1"}


def test_hostile_sentry_trace_is_rejected_quickly() -> None:
    carrier = {"sentry-trace": "a" * 32 + "-" * 1_000_000, "baggage": "x" * 1_000_000}
    start = time.perf_counter()
    context = Context()
    assert PROPAGATOR.extract(carrier, context) is context
    assert time.perf_counter() - start < 0.05


_HEXISH = st.text(alphabet="0123456789abcdefABCDEFg- \t,é\n", max_size=70)
_NEAR_VALID = st.builds(
    lambda t, s, f, pad: f"{pad}{t}-{s}{f}{pad}",
    st.text(alphabet="0123456789abcdefABCDEF", min_size=31, max_size=33),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=15, max_size=17),
    st.sampled_from(["", "-0", "-1", "-2", "-"]),
    st.sampled_from(["", " ", "\t", "\n"]),
)


@settings(max_examples=300, deadline=None)
@given(
    sentry_trace=st.one_of(st.text(), _HEXISH, _NEAR_VALID),
    baggage_value=st.one_of(st.text(), st.text(alphabet="sentry-=,;% abc\t", max_size=40)),
)
def test_any_text_yields_valid_remote_context_or_unchanged(sentry_trace: str, baggage_value: str) -> None:
    context = Context()
    result = PROPAGATOR.extract({"sentry-trace": sentry_trace, "baggage": baggage_value}, context)
    if result is context:
        return
    extracted = span_context_of(result)
    assert extracted.is_valid and extracted.is_remote
    lowered = sentry_trace.lower()
    assert trace.format_trace_id(extracted.trace_id) in lowered
    assert f"{trace.format_trace_id(extracted.trace_id)}-{trace.format_span_id(extracted.span_id)}" in lowered
    dsc = get_dynamic_sampling_context(result)
    assert dsc is not None and all(isinstance(k, str) and isinstance(v, str) for k, v in dsc.items())


@settings(max_examples=100, deadline=None)
@given(trace_id=st.integers(1, 2**128 - 1), span_id=st.integers(1, 2**64 - 1), sampled=st.booleans())
def test_round_trip_property(trace_id: int, span_id: int, sampled: bool) -> None:
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context_with_span(trace_id, span_id, sampled))
    extracted = span_context_of(PROPAGATOR.extract(carrier, Context()))
    assert (extracted.trace_id, extracted.span_id, extracted.trace_flags.sampled) == (
        trace_id,
        span_id,
        sampled,
    )


@settings(max_examples=100, deadline=None)
@given(
    user=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
        st.text(min_size=1, max_size=20).filter(lambda v: v == v.strip()),
    )
)
def test_user_baggage_property(user: dict[str, str]) -> None:
    context = context_with_span()
    for key, value in user.items():
        context = baggage.set_baggage(key, value, context)
    carrier: dict[str, str] = {}
    with sentry_client():
        default_propagator().inject(carrier, context)
    extracted = default_propagator().extract(carrier, Context())
    assert {k: v for k, v in baggage.get_all(extracted).items() if not k.startswith("sentry-")} == user
    dsc = get_dynamic_sampling_context(extracted)
    assert dsc is not None and dsc["trace_id"] == TRACE_HEX


def test_comma_joined_sentry_trace_uses_first_non_empty_value() -> None:
    header = f" , {TRACE_HEX}-{SPAN_HEX}-0, {'1' * 32}-{'2' * 16}-1"
    extracted = span_context_of(PROPAGATOR.extract({"sentry-trace": header}, Context()))
    assert (extracted.trace_id, extracted.span_id, extracted.trace_flags.sampled) == (
        TRACE_ID,
        SPAN_ID,
        False,
    )


def test_inject_into_httpx_headers_merges_repeated_baggage() -> None:
    httpx = pytest.importorskip("httpx")
    headers = httpx.Headers([("Baggage", "userid=42"), ("baggage", "color=blue,sentry-release=old")])
    with sentry_client(release="new"):
        PROPAGATOR.inject(headers, context_with_span())
    assert headers.get_list("baggage") == [headers["baggage"]]
    members = baggage_members(headers["baggage"])
    assert members[:2] == ["userid=42", "color=blue"]
    assert "sentry-release=new" in members and "sentry-release=old" not in members
