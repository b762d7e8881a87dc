"""sentry-sdk's org-id rule for continuing a Sentry caller's trace (`org_id`, `strict_trace_continuation`):
where sentry-sdk would start a new trace, the OTel trace goes on for every backend and only the caller's
Sentry sampling is not adopted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

import pytest
import sentry_sdk
from opentelemetry import trace
from opentelemetry.context import Context

from otel_bridge.propagation import default_propagator, get_dynamic_sampling_context

TRACE_ID = "771a43a4192642f0b136d5159a501701"
PARENT_ID = "b7ad6b7169203331"
OUR_ORG_DSN = "http://public@o17.ingest.localhost:9/5"


@pytest.fixture
def client() -> Iterator[Any]:
    def start(dsn: str = OUR_ORG_DSN, **options: Any) -> None:
        sentry_sdk.init(dsn=dsn, instrumenter="otel", **options)

    yield start


def incoming(org_id: Optional[str], *, traceparent: bool = True, flag: str = "0") -> Context:
    headers = {"sentry-trace": f"{TRACE_ID}-{PARENT_ID}-{flag}"}
    members = [f"sentry-trace_id={TRACE_ID}", "sentry-sample_rand=0.5", "sentry-sampled=false"]
    if org_id is not None:
        members.append(f"sentry-org_id={org_id}")
    headers["baggage"] = ",".join(members)
    if traceparent:
        headers["traceparent"] = f"00-{TRACE_ID}-{PARENT_ID}-01"
    return default_propagator().extract(headers)


def continued_trace_id(context: Context) -> str:
    return trace.format_trace_id(trace.get_current_span(context).get_span_context().trace_id)


@pytest.mark.parametrize("traceparent", [True, False], ids=["w3c-and-sentry", "sentry-only"])
def test_a_caller_of_the_same_org_is_continued_with_its_sampling(client: Any, traceparent: bool) -> None:
    client()
    context = incoming("17", traceparent=traceparent)
    assert continued_trace_id(context) == TRACE_ID
    dsc = get_dynamic_sampling_context(context)
    assert dsc is not None and dsc["org_id"] == "17" and dsc["sampled"] == "false"


@pytest.mark.parametrize("traceparent", [True, False], ids=["w3c-and-sentry", "sentry-only"])
def test_a_caller_of_another_org_keeps_the_trace_but_not_its_sentry_sampling(
    client: Any, traceparent: bool
) -> None:
    client()
    context = incoming("99", traceparent=traceparent)
    assert continued_trace_id(context) == TRACE_ID, "other backends still see one trace"
    assert get_dynamic_sampling_context(context) is None
    assert trace.get_current_span(context).get_span_context().trace_flags.sampled, (
        "the foreign '-0' is not this service's Sentry decision"
    )


def test_the_org_id_option_names_this_clients_org(client: Any) -> None:
    client(org_id="99")
    assert get_dynamic_sampling_context(incoming("99")) is not None
    assert get_dynamic_sampling_context(incoming("17")) is None


def test_without_strict_continuation_a_caller_without_org_is_continued(client: Any) -> None:
    client()
    assert get_dynamic_sampling_context(incoming(None)) is not None


@pytest.mark.skipif(
    "strict_trace_continuation" not in sentry_sdk.consts.ClientConstructor.__init__.__code__.co_varnames,
    reason="this sentry-sdk has no strict_trace_continuation option",
)
@pytest.mark.parametrize(
    ("dsn", "caller_org"),
    [(OUR_ORG_DSN, None), ("http://public@localhost:9/5", "17")],
    ids=["caller-without-org", "client-without-org"],
)
def test_strict_continuation_needs_both_orgs(client: Any, dsn: str, caller_org: Optional[str]) -> None:
    client(dsn=dsn, strict_trace_continuation=True)
    context = incoming(caller_org)
    assert continued_trace_id(context) == TRACE_ID
    assert get_dynamic_sampling_context(context) is None


def test_strict_continuation_keeps_plain_w3c_callers(client: Any) -> None:
    client(strict_trace_continuation=True)
    context = default_propagator().extract({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert continued_trace_id(context) == TRACE_ID
