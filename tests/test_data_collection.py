"""sentry-sdk's ``data_collection`` option decides what of a request reaches Sentry, over
``send_default_pii``: the query string, the headers, the client's address and the user, in the request data
of every event and in the span data of the transaction, on the middleware path and on the exporter path. The
bridge's deny-list of secrets still applies under every setting."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Iterator
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import httpx
import pytest
import sentry_sdk
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from sentry_sdk.consts import ClientConstructor

from otel_bridge import SentrySpanExporter, SentrySpanProcessor
from otel_bridge._convert.collection import SENSITIVE_TERMS, data_collection_from_options
from otel_bridge._setup import install_event_processor
from otel_bridge.asgi import SentryAsgiMiddleware
from tests.receiver import EnvelopeReceiver
from tests.relay import assert_relay_valid

HAS_DATA_COLLECTION = "data_collection" in inspect.signature(ClientConstructor.__init__).parameters
needs_data_collection = pytest.mark.skipif(
    not HAS_DATA_COLLECTION, reason=f"sentry-sdk {sentry_sdk.VERSION} has no data_collection option"
)

FILTERED = "[Filtered]"
ENCODED_FILTERED = "%5BFiltered%5D"
SECRET = {
    name: f"{name}{uuid.uuid4().hex[:12]}" for name in ("token", "session", "password", "cookie", "auth")
}
FORWARDED_FOR = "198.51.100.101, 198.51.100.102"
REAL_IP = "198.51.100.103"
PEER = "203.0.113.9"
ADDRESSES = ("198.51.100.101", "198.51.100.102", REAL_IP, PEER)
USER_ID = f"user-{uuid.uuid4().hex[:8]}"

QUERY = (
    f"token={SECRET['token']}&theme=dark&lang=en&session={SECRET['session']}&password={SECRET['password']}"
)
ONWARD_URL = "http://api.test/lookup"
ONWARD_QUERY = f"token={SECRET['token']}&q=shoes"
HEADERS = {
    "user-agent": "dc-tests/1.0",
    "cookie": f"theme=dark; sessionid={SECRET['cookie']}",
    "authorization": f"Bearer {SECRET['auth']}",
    "x-forwarded-for": FORWARDED_FOR,
    "x-real-ip": REAL_IP,
    "x-custom": "custom-value",
    "accept-language": "en-GB",
}
CAPTURED = [*HEADERS, "host"]


def header_attribute(name: str) -> str:
    return "http.request.header." + name.replace("-", "_")


def shop(provider: TracerProvider) -> Callable[..., Any]:
    """Calls an API onward with a secret in the URL, names the user, reports a message, then fails."""
    tracer = provider.get_tracer("tests.data_collection")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with tracer.start_as_current_span("GET api", kind=SpanKind.CLIENT) as onward:
            onward.set_attribute("http.request.method", "GET")
            onward.set_attribute("url.full", f"{ONWARD_URL}?{ONWARD_QUERY}")
            onward.set_attribute("url.query", ONWARD_QUERY)
        sentry_sdk.set_user({"id": USER_ID})
        sentry_sdk.capture_message("searched")
        # unique, so that no earlier test's report of the same exception makes this one a duplicate
        raise LookupError(f"nothing found ({uuid.uuid4().hex[:8]})")

    return app


def serve(app: Any) -> None:
    async def request() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(PEER, 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            response = await client.get(f"/search?{QUERY}", headers=HEADERS)
            assert response.status_code == 500

    asyncio.run(request())


@pytest.fixture
def through_middleware(receiver: EnvelopeReceiver) -> Iterator[Callable[..., Sent]]:
    providers: list[TracerProvider] = []

    def run(**options: Any) -> Sent:
        sentry_sdk.init(dsn=receiver.dsn, instrumenter="otel", **options)
        install_event_processor()
        provider = TracerProvider()
        provider.add_span_processor(SentrySpanProcessor())
        providers.append(provider)
        serve(
            SentryAsgiMiddleware(
                shop(provider), tracer_provider=provider, http_capture_headers_server_request=CAPTURED
            )
        )
        provider.force_flush(5000)
        return Sent.collect(receiver, expected_events=2)

    yield run
    for provider in providers:
        provider.shutdown()


@pytest.fixture
def through_exporter(receiver: EnvelopeReceiver) -> Iterator[Callable[..., Sent]]:
    providers: list[TracerProvider] = []

    def run(**options: Any) -> Sent:
        provider = TracerProvider()
        providers.append(provider)
        provider.add_span_processor(SimpleSpanProcessor(SentrySpanExporter(dsn=receiver.dsn, **options)))
        serve(
            OpenTelemetryMiddleware(
                shop(provider), tracer_provider=provider, http_capture_headers_server_request=CAPTURED
            )
        )
        provider.force_flush()
        # The exporter path knows the request from span data only; the message, captured outside any
        # middleware, carries no request, so only the error and the transaction are checked here.
        return Sent.collect(receiver, expected_events=2)

    yield run
    for provider in providers:
        provider.shutdown()


class Sent:
    """What reached the loopback Sentry for the one request: its events, its transaction, every byte."""

    def __init__(self, events: list[dict[str, Any]], transaction: dict[str, Any], raw: bytes) -> None:
        self.events = events
        self.transaction = transaction
        self.raw = raw
        for event in [*events, transaction]:
            assert_relay_valid(event)

    @classmethod
    def collect(cls, receiver: EnvelopeReceiver, expected_events: int) -> Sent:
        events = receiver.wait_for_events(expected_events)
        [transaction] = receiver.wait_for_transactions(1)
        return cls(events, transaction, b"".join(request.raw_body for request in receiver.requests))

    @property
    def with_request(self) -> list[dict[str, Any]]:
        """Every event that describes the request (on the exporter path the message cannot)."""
        return [event for event in [*self.events, self.transaction] if "request" in event]

    @property
    def error(self) -> dict[str, Any]:
        [error] = [event for event in self.events if "exception" in event]
        return error

    @property
    def root_data(self) -> dict[str, Any]:
        data: dict[str, Any] = self.transaction["contexts"]["trace"]["data"]
        return data

    @property
    def onward_data(self) -> dict[str, Any]:
        [onward] = [span for span in self.transaction["spans"] if span["description"].startswith("GET http")]
        data: dict[str, Any] = onward["data"]
        return data

    def assert_no_secret(self) -> None:
        for name, value in SECRET.items():
            at = self.raw.find(value.encode())
            assert at < 0, f"the planted {name} reached Sentry: {self.raw[max(0, at - 300) : at + 60]!r}"

    def assert_no_address(self) -> None:
        for address in ADDRESSES:
            at = self.raw.find(address.encode())
            assert at < 0, f"{address} reached Sentry: {self.raw[max(0, at - 300) : at + 60]!r}"


def filtered_query(*kept: str) -> str:
    """The query string of the request as sentry-sdk writes it under data_collection, ``kept`` unfiltered."""
    values = {"token": SECRET["token"], "theme": "dark", "lang": "en", "session": "x", "password": "x"}
    return "&".join(f"{key}={values[key] if key in kept else ENCODED_FILTERED}" for key in values)


QUERY_CASES = [
    pytest.param(
        {"data_collection": {}},
        filtered_query("theme", "lang"),
        f"token={ENCODED_FILTERED}&q=shoes",
        id="denylist-default",
    ),
    pytest.param(
        {"data_collection": {"url_query_params": {"mode": "denylist", "terms": ["theme"]}}},
        filtered_query("lang"),
        f"token={ENCODED_FILTERED}&q=shoes",
        id="denylist-terms",
    ),
    pytest.param(
        {"data_collection": {"url_query_params": {"mode": "allowlist", "terms": ["theme", "q"]}}},
        filtered_query("theme"),
        f"token={ENCODED_FILTERED}&q=shoes",
        id="allowlist",
    ),
    pytest.param(
        {"data_collection": {"url_query_params": {"mode": "allowlist", "terms": ["token", "session"]}}},
        filtered_query(),
        f"token={ENCODED_FILTERED}&q={ENCODED_FILTERED}",
        id="allowlist-cannot-allow-a-secret",
    ),
    pytest.param({"data_collection": {"url_query_params": {"mode": "off"}}}, None, None, id="off"),
    pytest.param(
        {"send_default_pii": True, "data_collection": {"url_query_params": {"mode": "off"}}},
        None,
        None,
        id="off-wins-over-send_default_pii",
    ),
    pytest.param(
        {"send_default_pii": True},
        "token=[Filtered]&theme=dark&lang=en&session=[Filtered]&password=[Filtered]",
        "token=[Filtered]&q=shoes",
        id="not-given-send_default_pii",
    ),
]


@needs_data_collection
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(("options", "query", "onward_query"), QUERY_CASES)
def test_the_query_string_follows_url_query_params(
    through_middleware: Callable[..., Sent],
    options: dict[str, Any],
    query: Optional[str],
    onward_query: Optional[str],
) -> None:
    sent = through_middleware(**options)

    sent.assert_no_secret()
    assert len(sent.with_request) == 3
    for event in sent.with_request:
        if query is None:
            assert "query_string" not in event["request"]
        else:
            assert event["request"]["query_string"] == query
        assert event["request"]["url"] == "http://shop.test/search"
    # OTel's ASGI middleware puts the query in http.url; a client span in url.full and url.query
    assert urlsplit(sent.root_data["http.url"]).query == (query or "")
    assert sent.root_data["http.target"] == "/search"
    if onward_query is None:
        assert sent.onward_data["url.full"] == ONWARD_URL
        assert "url.query" not in sent.onward_data
    else:
        assert sent.onward_data["url.full"] == f"{ONWARD_URL}?{onward_query}"
        assert sent.onward_data["url.query"] == onward_query


KEEP, FILTER = "keep", "filter"
HEADER_CASES = [
    pytest.param(
        {},
        {"host": KEEP, "user-agent": KEEP, "x-custom": KEEP, "accept-language": KEEP, "x-real-ip": KEEP},
        id="denylist-default",
    ),
    pytest.param(
        {"mode": "denylist", "terms": ["custom", "LANGUAGE"]},
        {"host": KEEP, "user-agent": KEEP, "x-custom": FILTER, "accept-language": FILTER, "x-real-ip": KEEP},
        id="denylist-terms",
    ),
    pytest.param(
        {"mode": "allowlist", "terms": ["custom"]},
        {
            "host": FILTER,
            "user-agent": FILTER,
            "x-custom": KEEP,
            "accept-language": FILTER,
            "x-real-ip": FILTER,
        },
        id="allowlist",
    ),
    pytest.param(
        {"mode": "allowlist", "terms": []},
        {
            "host": FILTER,
            "user-agent": FILTER,
            "x-custom": FILTER,
            "accept-language": FILTER,
            "x-real-ip": FILTER,
        },
        id="allowlist-no-terms",
    ),
    pytest.param(
        {"mode": "allowlist", "terms": ["cookie", "authorization", "forwarded", "custom"]},
        {
            "host": FILTER,
            "user-agent": FILTER,
            "x-custom": KEEP,
            "accept-language": FILTER,
            "x-real-ip": FILTER,
        },
        id="allowlist-cannot-allow-a-secret",
    ),
    pytest.param({"mode": "off"}, {}, id="off"),
]


@needs_data_collection
@pytest.mark.parametrize(("rule", "expected"), HEADER_CASES)
def test_the_headers_follow_http_headers_request(
    through_middleware: Callable[..., Sent], rule: dict[str, Any], expected: dict[str, str]
) -> None:
    options: dict[str, Any] = {"http_headers": {"request": rule}} if rule else {}
    sent = through_middleware(data_collection=options)

    sent.assert_no_secret()
    values = {**HEADERS, "host": "shop.test"}
    for event in sent.with_request:
        headers = event["request"]["headers"]
        if rule.get("mode") == "off":
            assert headers == {}
            continue
        for name, outcome in expected.items():
            assert headers[name] == (values[name] if outcome == KEEP else FILTERED), name
        # secrets, and the header sentry-sdk's deny-list names for the client's address, whatever the rule
        for name in ("cookie", "authorization", "x-forwarded-for"):
            assert headers[name] == FILTERED, name
        # the URL keeps its host when the Host header is filtered
        assert event["request"]["url"] == "http://shop.test/search"
    data = sent.root_data
    if rule.get("mode") == "off":
        assert not [key for key in data if key.startswith("http.request.header.")]
        assert "http.user_agent" not in data
        return
    for name, outcome in expected.items():
        assert data[header_attribute(name)] == ([values[name]] if outcome == KEEP else FILTERED), name
    assert data["http.user_agent"] == (HEADERS["user-agent"] if expected["user-agent"] == KEEP else FILTERED)
    for name in ("cookie", "authorization", "x-forwarded-for"):
        assert data[header_attribute(name)] == FILTERED, name


@needs_data_collection
@pytest.mark.parametrize(
    "cookies",
    [{"mode": "off"}, {"mode": "denylist"}, {"mode": "allowlist", "terms": ["theme", "sessionid"]}],
    ids=["off", "denylist", "allowlist"],
)
def test_cookie_values_are_never_sent(
    through_middleware: Callable[..., Sent], cookies: dict[str, Any]
) -> None:
    sent = through_middleware(
        data_collection={
            "cookies": cookies,
            "http_headers": {"request": {"mode": "allowlist", "terms": ["cookie"]}},
        }
    )

    sent.assert_no_secret()
    for event in sent.with_request:
        assert event["request"]["headers"]["cookie"] == FILTERED
        assert "cookies" not in event["request"]
    assert sent.root_data[header_attribute("cookie")] == FILTERED


USER_INFO_CASES = [
    pytest.param({"data_collection": {"user_info": False}}, False, id="user_info-false"),
    pytest.param(
        {"send_default_pii": True, "data_collection": {"user_info": False}}, False, id="false-wins-over-pii"
    ),
    pytest.param({"data_collection": {}}, True, id="user_info-default"),
    pytest.param({"send_default_pii": False, "data_collection": {"user_info": True}}, True, id="true-wins"),
    pytest.param({}, False, id="not-given"),
    pytest.param({"send_default_pii": True}, True, id="not-given-send_default_pii"),
]


@needs_data_collection
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(("options", "personal"), USER_INFO_CASES)
def test_user_info_decides_the_clients_address_and_the_user(
    through_middleware: Callable[..., Sent], options: dict[str, Any], personal: bool
) -> None:
    sent = through_middleware(**options)

    sent.assert_no_secret()
    for event in sent.with_request:
        headers = event["request"]["headers"]
        # sentry-sdk's deny-list of secrets names x_forwarded_for: filtered in every case
        assert headers["x-forwarded-for"] == FILTERED
        if personal:
            assert event["request"]["env"] == {"REMOTE_ADDR": "198.51.100.101"}
            assert headers["x-real-ip"] == REAL_IP
        else:
            assert "env" not in event["request"]
            assert headers["x-real-ip"] == FILTERED
    for event in sent.events:
        assert event["user"]["id"] == (USER_ID if personal else FILTERED)
    if personal:
        assert sent.root_data["net.peer.ip"] == PEER
    else:
        assert "net.peer.ip" not in sent.root_data
        sent.assert_no_address()
        assert USER_ID.encode() not in sent.raw


EXPORTER_CASES = [
    pytest.param(
        {},
        filtered_query("theme", "lang"),
        {"X-Custom": "custom-value", "User-Agent": HEADERS["user-agent"], "X-Real-Ip": REAL_IP},
        True,
        id="defaults",
    ),
    pytest.param(
        {
            "user_info": False,
            "url_query_params": {"mode": "allowlist", "terms": ["theme"]},
            "http_headers": {"request": {"mode": "allowlist", "terms": ["custom", "real"]}},
        },
        filtered_query("theme"),
        {"X-Custom": "custom-value", "User-Agent": FILTERED, "X-Real-Ip": FILTERED},
        False,
        id="allowlists-without-user_info",
    ),
    pytest.param(
        {"url_query_params": {"mode": "off"}, "http_headers": {"request": {"mode": "off"}}},
        None,
        None,
        True,
        id="off",
    ),
]


@needs_data_collection
@pytest.mark.parametrize(("data_collection", "query", "headers", "personal"), EXPORTER_CASES)
def test_the_exporter_path_follows_data_collection(
    through_exporter: Callable[..., Sent],
    data_collection: dict[str, Any],
    query: Optional[str],
    headers: Optional[dict[str, str]],
    personal: bool,
) -> None:
    sent = through_exporter(data_collection=data_collection)

    sent.assert_no_secret()
    events = [sent.error, sent.transaction]
    for event in events:
        request = event["request"]
        assert request["url"] == "http://shop.test/search"
        if query is None:
            assert "query_string" not in request
        else:
            assert request["query_string"] == query
        if headers is None:
            assert "headers" not in request
        else:
            for name, value in headers.items():
                assert request["headers"][name] == value, name
            assert request["headers"]["Cookie"] == FILTERED
            assert request["headers"]["Authorization"] == FILTERED
        if personal:
            assert request["env"] == {"REMOTE_ADDR": PEER}
        else:
            assert "env" not in request
    assert urlsplit(sent.root_data["http.url"]).query == (query or "")
    if not personal:
        sent.assert_no_address()


@needs_data_collection
def test_sensitive_terms_are_sentry_sdks() -> None:
    """The terms data collection always filters are written here from Sentry's spec; this catches a
    sentry-sdk release that changes its list."""
    from sentry_sdk import data_collection

    assert tuple(data_collection._SENSITIVE_DENYLIST) == SENSITIVE_TERMS


def test_without_data_collection_the_bridges_own_rules_apply(receiver: EnvelopeReceiver) -> None:
    """sentry-sdk before data_collection (2.57) and clients where the user did not give it."""
    sentry_sdk.init(dsn=receiver.dsn, send_default_pii=True)
    assert data_collection_from_options(sentry_sdk.get_client().options) is None
    assert data_collection_from_options({}) is None
    assert (
        data_collection_from_options({"data_collection": {"provided_by_user": False, "user_info": True}})
        is None
    )


def test_span_data_rules_for_what_no_request_test_plants() -> None:
    """Response headers and user agents follow the request headers' rule; user info leaves URLs; the query
    attribute sentry-sdk itself writes (``http.query``) is filtered like ``url.query``."""
    from otel_bridge._convert.collection import Collection, DataCollection, KeyRule

    attributes = {
        "http.response.header.x_shop": ("v1",),
        "http.response.header.set_cookie": ("sid=1",),
        "user_agent.original": "agent/1",
        "url.full": "https://name:pw@api.test/a?theme=dark&token=t#access_token=x",
        "http.query": "theme=dark&token=t",
        "client.address": "198.51.100.7",
    }
    denylist = ("token", "cookie")
    off = Collection(
        denylist=denylist, data_collection=DataCollection(user_info=False, headers=KeyRule("off"))
    )
    assert off.attributes(attributes) == {
        "url.full": "https://api.test/a?theme=dark&token=%5BFiltered%5D#access_token=[Filtered]",
        "http.query": "theme=dark&token=%5BFiltered%5D",
    }
    allow = Collection(
        denylist=denylist,
        data_collection=DataCollection(
            headers=KeyRule("allowlist", ("shop", "cookie")), query=KeyRule("off")
        ),
    )
    assert allow.attributes(attributes) == {
        "http.response.header.x_shop": ["v1"],
        "http.response.header.set_cookie": "[Filtered]",
        "user_agent.original": "[Filtered]",
        "url.full": "https://api.test/a#access_token=[Filtered]",
        "client.address": "198.51.100.7",
    }
    legacy = Collection(send_default_pii=False, denylist=denylist)
    assert legacy.attributes(attributes) == {
        "http.response.header.x_shop": ["v1"],
        "http.response.header.set_cookie": "[Filtered]",
        "user_agent.original": "agent/1",
        "url.full": "https://api.test/a?theme=dark&token=[Filtered]#access_token=[Filtered]",
        "http.query": "theme=dark&token=[Filtered]",
    }
