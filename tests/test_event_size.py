"""Events larger than Sentry accepts arrive trimmed to fit, noted the way Relay notes trimming."""

from __future__ import annotations

import copy
import json
from typing import Any, Iterator

import pytest
import sentry_sdk
import sentry_sdk.client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from sentry_sdk.utils import json_dumps

from otel_bridge import SentrySpanProcessor
from otel_bridge._deliver.fitting import (
    DEFAULT_MAX_BYTES,
    LAST_RESORT_CUT_LENGTH,
    MAX_ITEM_BYTES,
    MIN_CUT_LENGTH,
    encoded_size,
    fit_event,
)
from otel_bridge._deliver.serializer import fast_serialize, install, uninstall
from tests.receiver import EnvelopeReceiver, Item
from tests.relay import assert_relay_valid

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT_SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
def fitting_installed() -> Iterator[None]:
    """``serializer.install()``, as ``otel_bridge.init()`` does; the previous state after."""
    was_installed = sentry_sdk.client.serialize is fast_serialize  # type: ignore[attr-defined]
    uninstall()
    install()
    yield
    uninstall()
    if was_installed:
        install()


def discarded(receiver: EnvelopeReceiver) -> list[dict[str, Any]]:
    return [entry for report in receiver.client_reports() for entry in report.get("discarded_events", [])]


def cut_note(kept: int, length: int) -> dict[str, Any]:
    """Relay's own note on a string it trimmed (``trim_string`` in relay-event-normalization): the kept
    characters, then ``...`` substituted by rule ``!limit``; the original length in characters."""
    return {"": {"rem": [["!limit", "s", kept, kept + 3]], "len": length}}


def assert_cut(note: dict[str, Any], value: str, length: int) -> None:
    """``value`` is a cut of a ``length``-character string, noted as Relay notes it. sentry-sdk before
    2.7x already cut strings at 100 000 characters itself (its rule ``x``); ours says ``s``, as Relay's."""
    [[rule, kind, start, end]] = note[""]["rem"]
    assert (rule, start, end) == ("!limit", len(value) - 3, len(value))
    assert kind in ("s", "x")
    assert note[""]["len"] == length


def only_item(receiver: EnvelopeReceiver, type: str) -> Item:
    items = receiver.items(type)
    assert len(items) == 1, receiver.summary()
    return items[0]


# --- through sentry-sdk's client to the loopback receiver --------------------------------------------


def test_a_five_megabyte_exception_message_arrives_cut_to_fit(
    receiver: EnvelopeReceiver, fitting_installed: None
) -> None:
    sentry_sdk.init(dsn=receiver.dsn)
    message = "Import of batch 42 failed: " + "row data " * 555_556  # 5 MB, also a local variable below
    try:
        raise ValueError(message)
    except ValueError:
        sentry_sdk.capture_exception()
    receiver.wait_for_events(1)

    item = only_item(receiver, "event")
    assert len(item.payload) <= MAX_ITEM_BYTES
    event = item.json()
    assert_relay_valid(event)
    [exception] = event["exception"]["values"]
    assert exception["type"] == "ValueError"
    value = exception["value"]
    assert value.startswith("Import of batch 42 failed: row data row data")
    assert value.endswith("...")
    assert message.startswith(value[:-3])
    assert_cut(event["_meta"]["exception"]["values"]["0"]["value"], value, len(message))
    # The frame still says where it was raised; its local copy of the message was cut the same way.
    frame = exception["stacktrace"]["frames"][-1]
    assert frame["function"] == "test_a_five_megabyte_exception_message_arrives_cut_to_fit"
    local = frame["vars"]["message"]
    assert local.endswith("...")
    frames_meta = event["_meta"]["exception"]["values"]["0"].get("stacktrace")
    if frames_meta is not None:  # sentry-sdk before 2.7x cut frame variables itself, without a note
        last = str(len(exception["stacktrace"]["frames"]) - 1)
        assert_cut(frames_meta["frames"][last]["vars"]["message"], local, len(message) + 2)


def test_a_ten_megabyte_span_attribute_arrives_cut_to_fit(
    traced: tuple[TracerProvider, SentrySpanProcessor], receiver: EnvelopeReceiver, fitting_installed: None
) -> None:
    provider, processor = traced
    tracer = provider.get_tracer("t")
    payload = "{'id': 1, 'blob': '" + "0123456789abcdef" * 625_000 + "'}"  # 10 MB
    attributes: dict[str, Any] = {"upload.body": payload, "upload.rows": 3}
    with tracer.start_as_current_span("upload", kind=SpanKind.SERVER) as root:  # noqa: SIM117 (Python 3.9)
        with tracer.start_as_current_span("parse body", attributes=attributes):
            pass
    assert processor.force_flush(5000)
    receiver.wait_for_transactions(1)

    item = only_item(receiver, "transaction")
    assert len(item.payload) <= MAX_ITEM_BYTES
    transaction = item.json()
    assert_relay_valid(transaction)
    assert transaction["transaction"] == "upload"
    assert transaction["contexts"]["trace"]["span_id"] == format(root.get_span_context().span_id, "016x")
    [span] = transaction["spans"]
    assert span["description"] == "parse body"
    assert span["data"]["upload.rows"] == 3
    body = span["data"]["upload.body"]
    assert body.startswith("{'id': 1, 'blob': '0123456789abcdef")
    assert payload.startswith(body[:-3])
    # as much of it as fits, not a token prefix (sentry-sdk before 2.7x cut it to 100 000 itself)
    assert len(body) > 500_000 or len(body) == 100_000
    assert_cut(transaction["_meta"]["spans"]["0"]["data"]["upload.body"], body, len(payload))


def test_a_transaction_of_900_spans_keeps_the_spans_that_fit_and_reports_the_rest(
    traced: tuple[TracerProvider, SentrySpanProcessor], receiver: EnvelopeReceiver, fitting_installed: None
) -> None:
    provider, processor = traced
    tracer = provider.get_tracer("t")
    statement = (
        "SELECT id, name, email, created_at FROM users WHERE tenant_id = %s AND id IN (" + "%s, " * 200
    )
    with tracer.start_as_current_span("nightly sync") as root:
        for index in range(900):
            attributes = {"db.system": "postgresql", "db.statement": f"{statement}{index})"}
            attributes.update({f"sync.batch.{key}": f"{key}={index} " * 90 for key in ("a", "b", "c")})
            with tracer.start_as_current_span(f"query {index}", attributes=attributes):
                pass
    assert processor.force_flush(10000)
    receiver.wait_for_transactions(1)

    item = only_item(receiver, "transaction")
    assert len(item.payload) <= MAX_ITEM_BYTES
    transaction = item.json()
    assert_relay_valid(transaction)
    assert transaction["transaction"] == "nightly sync"
    assert transaction["contexts"]["trace"]["span_id"] == format(root.get_span_context().span_id, "016x")
    spans = transaction["spans"]
    kept = len(spans)
    assert 200 < kept < 900
    # The first spans, whole (no string of theirs was long enough to cut), and as many as fit.
    assert [span["data"]["db.statement"] for span in spans] == [f"{statement}{i})" for i in range(kept)]
    largest = max(len(json_dumps(span)) for span in spans)
    assert len(item.payload) + largest > DEFAULT_MAX_BYTES
    assert transaction["_meta"]["spans"] == {"": {"len": 900}}

    sentry_sdk.get_client().flush(timeout=5)
    assert receiver.wait_for(lambda r: any(e["category"] == "span" for e in discarded(r)), timeout=5)
    assert {"reason": "buffer_overflow", "category": "span", "quantity": 900 - kept} in discarded(receiver)


def test_a_sentry_sdk_whose_client_is_not_the_one_known_is_left_alone_and_said_so(
    fitting_installed: None,
    fresh_reaches: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uninstall()

    def _prepare_event(self: Any, event: Any, hint: Any, scope: Any, options: Any = None) -> Any:
        return event

    monkeypatch.setattr(sentry_sdk.client._Client, "_prepare_event", _prepare_event)
    install()
    install()
    assert sentry_sdk.client._Client._prepare_event is _prepare_event
    assert sentry_sdk.client.serialize is fast_serialize  # type: ignore[attr-defined]
    warnings = [
        record.getMessage()
        for record in caplog.records
        if "client _prepare_event relies on" in record.getMessage()
        and "not trimmed to Sentry's size limit" in record.getMessage()
    ]
    assert len(warnings) == 1


# --- fitting.py directly -----------------------------------------------------------------------------


def transaction_event(spans: int = 3, data: str = "v") -> dict[str, Any]:
    return {
        "event_id": "a" * 32,
        "type": "transaction",
        "transaction": "GET /items/{id}",
        "transaction_info": {"source": "route"},
        "platform": "python",
        "start_timestamp": 1_700_000_000.0,
        "timestamp": 1_700_000_001.5,
        "contexts": {
            "trace": {"trace_id": TRACE_ID, "span_id": ROOT_SPAN_ID, "op": "http.server", "status": "ok"}
        },
        "spans": [
            {
                "trace_id": TRACE_ID,
                "span_id": f"{index + 1:016x}",
                "parent_span_id": ROOT_SPAN_ID,
                "op": "db",
                "description": f"SELECT {index}",
                "start_timestamp": 1_700_000_000.1,
                "timestamp": 1_700_000_000.2,
                "data": {"db.system": "postgresql", "payload": data},
            }
            for index in range(spans)
        ],
        "tags": {"http.status_code": "200"},
        "request": {"method": "GET", "url": "http://h/items/1", "headers": {"accept": "*/*"}},
    }


def error_event(frames: int = 5, value: str = "boom", vars_size: int = 10) -> dict[str, Any]:
    return {
        "event_id": "b" * 32,
        "level": "error",
        "platform": "python",
        "timestamp": 1_700_000_001.5,
        "contexts": {"trace": {"trace_id": TRACE_ID, "span_id": ROOT_SPAN_ID}},
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": value,
                    "mechanism": {"type": "generic", "handled": False},
                    "stacktrace": {
                        "frames": [
                            {
                                "function": f"f{index}",
                                "filename": "app.py",
                                "lineno": index + 1,
                                "context_line": f"    f{index + 1}()",
                                "vars": {"n": str(index), "blob": "z" * vars_size},
                            }
                            for index in range(frames)
                        ]
                    },
                }
            ]
        },
        "breadcrumbs": {
            "values": [
                {"timestamp": 1_700_000_000.0 + index, "category": "log", "message": f"step {index} " * 40}
                for index in range(30)
            ]
        },
    }


def test_an_event_within_the_budget_is_returned_itself() -> None:
    event = transaction_event()
    before = copy.deepcopy(event)
    result = fit_event(event)
    assert result.event is event
    assert event == before
    assert result.fits
    assert not result.trimmed
    assert result.size == result.original_size == len(json_dumps(event))
    assert (result.strings_cut, result.spans_dropped, result.breadcrumbs_dropped) == (0, 0, 0)


def test_the_size_is_what_sentry_sdk_sends() -> None:
    event = transaction_event(data='é\n"\\\x00😀 ')
    assert encoded_size(event) == len(json_dumps(event))


def test_the_longest_strings_are_cut_to_one_length_and_noted_as_relay_notes_them() -> None:
    event = transaction_event(spans=2)
    event["spans"][0]["data"]["payload"] = "p" * 300_000
    event["spans"][1]["data"]["payload"] = "q" * 200_000
    event["spans"][1]["description"] = "short enough"
    event["extra"] = {"small": "s" * 5_000}
    before = copy.deepcopy(event)

    result = fit_event(event, max_bytes=120_000)

    assert event == before  # the input is left alone
    fitted = result.event
    assert result.fits and result.trimmed
    assert result.size == len(json_dumps(fitted)) <= 120_000
    assert result.size > 120_000 - 200  # cut no more than needed
    assert result.strings_cut == 2
    first, second = (span["data"]["payload"] for span in fitted["spans"])
    assert len(first) == len(second)
    assert first == "p" * (len(first) - 3) + "..."
    assert second == "q" * (len(second) - 3) + "..."
    assert fitted["extra"] == {"small": "s" * 5_000}
    assert fitted["_meta"] == {
        "spans": {
            "0": {"data": {"payload": cut_note(len(first) - 3, 300_000)}},
            "1": {"data": {"payload": cut_note(len(second) - 3, 200_000)}},
        }
    }
    normalized = assert_relay_valid(fitted)
    assert normalized["_meta"]["spans"]["0"]["data"]["payload"] == cut_note(len(first) - 3, 300_000)


def test_strings_are_not_cut_below_the_floor_before_spans_go() -> None:
    event = transaction_event(spans=200, data="d" * (MIN_CUT_LENGTH + 500))
    result = fit_event(event, max_bytes=100_000)
    assert result.fits
    assert result.strings_cut == 200  # all cut first, then spans dropped
    assert all(len(span["data"]["payload"]) == MIN_CUT_LENGTH for span in result.event["spans"])
    assert result.spans_dropped == 200 - len(result.event["spans"]) > 0


def test_spans_go_from_the_end_and_their_count_is_kept() -> None:
    event = transaction_event(spans=400, data="d" * 500)
    event["_meta"] = {
        "spans": {
            "": {"len": 410},
            "3": {"data": {"x": {"": {"len": 20}}}},
            "399": {"data": {"": {"len": 12}}},
        }
    }
    result = fit_event(event, max_bytes=50_000)
    fitted = result.event
    kept = len(fitted["spans"])
    assert result.fits and 0 < kept < 400
    assert result.spans_dropped == 400 - kept
    assert fitted["spans"] == event["spans"][:kept]
    assert fitted["contexts"] == event["contexts"]
    assert len(json_dumps(fitted)) + len(json_dumps(event["spans"][kept])) > 50_000
    # sentry-sdk's count of spans its recorder dropped stays the original total; gone spans' notes go.
    assert fitted["_meta"] == {"spans": {"": {"len": 410}, "3": {"data": {"x": {"": {"len": 20}}}}}}
    assert_relay_valid(fitted)


def test_breadcrumbs_go_oldest_first_and_their_notes_follow_them() -> None:
    event = error_event()
    event["_meta"] = {"breadcrumbs": {"values": {"0": {"message": {"": {"len": 9}}}, "29": {"": {"len": 3}}}}}
    size = encoded_size(event)
    result = fit_event(event, max_bytes=size - 2_000)
    fitted = result.event
    crumbs = fitted["breadcrumbs"]["values"]
    gone = 30 - len(crumbs)
    assert result.fits and result.breadcrumbs_dropped == gone > 0
    assert crumbs == event["breadcrumbs"]["values"][gone:]
    assert fitted["exception"] == event["exception"]
    assert fitted["_meta"]["breadcrumbs"] == {"": {"len": 30}, "values": {str(29 - gone): {"": {"len": 3}}}}
    assert_relay_valid(fitted)


def test_frame_variables_go_from_the_outermost_frame_first() -> None:
    event = error_event(frames=10, vars_size=900)
    del event["breadcrumbs"]
    size = encoded_size(event)
    result = fit_event(event, max_bytes=size - 2_500)
    fitted = result.event
    frames = fitted["exception"]["values"][0]["stacktrace"]["frames"]
    stripped = [index for index, frame in enumerate(frames) if frame["vars"] is None]
    assert result.fits
    assert stripped == list(range(len(stripped))) and 0 < len(stripped) < 10
    assert result.frames_without_vars == len(stripped)
    assert frames[-1]["vars"] == {"n": "9", "blob": "z" * 900}
    frame_meta = fitted["_meta"]["exception"]["values"]["0"]["stacktrace"]["frames"]
    assert frame_meta == {str(index): {"vars": {"": {"rem": [["!limit", "x"]]}}} for index in stripped}
    assert_relay_valid(fitted)


def test_the_last_resort_keeps_what_identifies_the_event() -> None:
    event = error_event(frames=250, value="v" * 900)
    event["tags"] = {f"tag{index}": "t" * 200 for index in range(2_000)}
    event["contexts"]["runtime"] = {"name": "CPython", "build": "b" * 900}
    result = fit_event(event, max_bytes=20_000)
    fitted = result.event
    assert result.fits and result.entries_removed > 0
    assert len(json_dumps(fitted)) <= 20_000
    assert fitted["event_id"] == event["event_id"]
    assert fitted["contexts"]["trace"] == event["contexts"]["trace"]
    [exception] = fitted["exception"]["values"]
    assert exception["type"] == "ValueError"
    assert exception["value"].startswith("vvv")
    frames = exception["stacktrace"]["frames"]
    assert frames[-1]["function"] == "f249"  # the oldest frames went first
    assert_relay_valid(fitted)


# --- any big event ------------------------------------------------------------------------------------

_PIECES = ["a", "word ", "é", "\n", '"', "\\", "\x01", "😀", "\ud83d\ude00", "日本"]
_texts = st.lists(st.tuples(st.sampled_from(_PIECES), st.integers(1, 2_500)), max_size=3).map(
    lambda parts: "".join(piece * count for piece, count in parts)
)
_small_dicts = st.dictionaries(st.text("abcxyz._", min_size=1, max_size=12), _texts, max_size=5)


@st.composite
def big_events(draw: st.DrawFn) -> dict[str, Any]:
    is_transaction = draw(st.booleans())
    event: dict[str, Any] = {
        "event_id": "c" * 32,
        "platform": "python",
        "timestamp": 1_700_000_001.5,
        "contexts": {"trace": {"trace_id": TRACE_ID, "span_id": ROOT_SPAN_ID, "data": draw(_small_dicts)}},
        "tags": draw(  # Relay's limits for tags: non-empty, at most 200 characters
            st.dictionaries(st.text("abc", min_size=1, max_size=8), st.text("xyz", min_size=1), max_size=20)
        ),
        "extra": draw(_small_dicts),
        "request": {
            "url": "http://h/",
            "method": "POST",
            "data": draw(_texts),
            "headers": draw(_small_dicts),
        },
        "breadcrumbs": {
            "values": [
                {"timestamp": 1_700_000_000.0, "message": text, "data": data}
                for text, data in draw(st.lists(st.tuples(_texts, _small_dicts), max_size=15))
            ]
        },
    }
    if is_transaction:
        event.update(type="transaction", transaction=draw(_texts) or "t", start_timestamp=1_700_000_000.0)
        event["spans"] = [
            {
                "trace_id": TRACE_ID,
                "span_id": f"{index + 1:016x}",
                "parent_span_id": ROOT_SPAN_ID,
                "start_timestamp": 1_700_000_000.0,
                "timestamp": 1_700_000_000.5,
                "description": description,
                "data": data,
            }
            for index, (description, data) in enumerate(
                draw(st.lists(st.tuples(_texts, _small_dicts), max_size=40))
            )
        ]
        if draw(st.booleans()):
            event["_meta"] = {"spans": {"": {"len": len(event["spans"]) + 7}}}
    else:
        event["level"] = "error"
        event["exception"] = {
            "values": [
                {
                    "type": "ValueError",
                    "value": value,
                    "stacktrace": {
                        "frames": [
                            {"function": "f", "lineno": 1, "context_line": line, "vars": variables}
                            for line, variables in frames
                        ]
                    },
                }
                for value, frames in draw(
                    st.lists(
                        st.tuples(_texts, st.lists(st.tuples(_texts, _small_dicts), min_size=1, max_size=20)),
                        min_size=1,
                        max_size=3,
                    )
                )
            ]
        }
    return event


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(event=big_events(), budget=st.integers(8_000, 80_000))
def test_any_event_comes_out_within_the_budget_and_valid_for_relay(
    event: dict[str, Any], budget: int
) -> None:
    assert_relay_valid(event)  # valid in, valid out
    before = json.dumps(event)
    result = fit_event(event, max_bytes=budget)
    assert json.dumps(event) == before
    fitted = result.event
    assert result.fits
    assert result.size == len(json_dumps(fitted)) <= budget
    if result.original_size <= budget:
        assert fitted is event
        return
    assert_relay_valid(fitted)
    assert fitted["event_id"] == event["event_id"]
    assert fitted.get("type") == event.get("type")
    trace = fitted["contexts"]["trace"]
    assert (trace["trace_id"], trace["span_id"]) == (TRACE_ID, ROOT_SPAN_ID)
    if "exception" in event:
        last = fitted["exception"]["values"][-1]
        assert last["type"] == "ValueError"
        original = event["exception"]["values"][-1]["value"]
        assert last["value"] == original or (
            last["value"].endswith("...") and len(last["value"]) >= LAST_RESORT_CUT_LENGTH - 1
        )
    spans = fitted.get("spans", [])
    assert [span["span_id"] for span in spans] == [span["span_id"] for span in event.get("spans", [])][
        : len(spans)
    ]
    assert fit_event(fitted, max_bytes=budget).event is fitted
