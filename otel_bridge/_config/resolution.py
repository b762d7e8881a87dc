"""What ``otel_bridge.init()`` will do, worked out from its arguments, the environment and the process.

One step, no side effects: ``init()`` acts on its result and ``otel-bridge doctor`` prints it, so the two
cannot disagree. Every value it cannot use raises :class:`~otel_bridge.ConfigError`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Optional

from otel_bridge._config.options import (
    BridgeConfig,
    ConfigError,
    parse_rate,
    read_config,
    validate_otel_environment,
)

EXPORTER_GROUP = "opentelemetry_traces_exporter"
PROPAGATOR_GROUP = "opentelemetry_propagator"
OTLP_ENTRY_POINTS = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
OTLP_PACKAGES = {
    "grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "http/protobuf": "opentelemetry-exporter-otlp-proto-http",
}
DEFAULT_PROPAGATORS = ("tracecontext", "baggage")
DEFAULT_SAMPLER = "parentbased_always_on"
BRIDGE_VARIABLES = (
    "OTEL_BRIDGE_TRACES_SAMPLE_RATE",
    "OTEL_BRIDGE_MAX_SPANS_PER_TRACE",
    "OTEL_BRIDGE_MAX_OPEN_TRACES",
    "OTEL_BRIDGE_MAX_QUEUED_TRACES",
    "OTEL_BRIDGE_MAX_QUEUED_BYTES",
)
# Families of variables read by instrumentations and exporters that may not be installed here.
_OPEN_ENDED_PREFIXES = ("OTEL_PYTHON_", "OTEL_INSTRUMENTATION_", "OTEL_EXPORTER_", "OTEL_SEMCONV_")
NO_DSN = (
    "no Sentry DSN (set SENTRY_DSN or pass dsn=..., or spotlight=True / SENTRY_SPOTLIGHT for Sentry's local "
    "Spotlight UI)"
)

# sentry-sdk's own integrations for the frameworks the middleware serves: each would open a second request
# scope inside ours, report the same exceptions on its own and attach request bodies, which this bridge
# never sends. The middleware learns routes and errors from these frameworks itself (``frameworks``).
OVERLAPPING_INTEGRATIONS = (
    ("sentry_sdk.integrations.starlette", "StarletteIntegration"),
    ("sentry_sdk.integrations.fastapi", "FastApiIntegration"),
    ("sentry_sdk.integrations.quart", "QuartIntegration"),
    ("sentry_sdk.integrations.litestar", "LitestarIntegration"),
    ("sentry_sdk.integrations.starlite", "StarliteIntegration"),
    ("sentry_sdk.integrations.django", "DjangoIntegration"),
    ("sentry_sdk.integrations.sanic", "SanicIntegration"),
)


@dataclass(frozen=True)
class Exporter:
    """A backend named in ``OTEL_TRACES_EXPORTER``, besides Sentry; loaded only when ``init()`` creates
    the ``TracerProvider``."""

    name: str
    entry_point: EntryPoint


@dataclass(frozen=True)
class Resolved:
    config: BridgeConfig
    # why init() does nothing; None when it turns the bridge on
    off_reason: Optional[str]
    adopts_client: bool
    spotlight: bool
    dsn_host: Optional[str]
    dsn_project: Optional[str]
    exporters: tuple[Exporter, ...]
    sentry_exporter: bool
    propagators: tuple[str, ...]
    propagators_from_env: bool
    sampler: str
    sampler_arg: Optional[str]
    sample_rate: float
    sample_rate_origin: str
    send_default_pii: bool
    pii_origin: str
    data_collection: Optional[str]
    excluded_urls: Optional[str]
    excluded_urls_variable: Optional[str]
    # settings that work but contradict each other or look mistyped; init() logs each, doctor prints them
    warnings: tuple[str, ...]
    # sentry-sdk's own framework integrations the adopted client runs next to the middleware: tested to
    # still give one transaction per request and one event per exception, so only doctor mentions them
    adopted_integrations: tuple[str, ...]


def _names(raw: str) -> list[str]:
    return [name.strip().lower() for name in raw.split(",") if name.strip()]


def _installed(group: str) -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=group)}


def otlp_entry_point(env: Mapping[str, str]) -> tuple[str, str]:
    """``otlp`` means the exporter for ``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`` (default grpc), as in the
    OTel SDK: the entry point's name and the protocol."""
    variable = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    protocol = env.get(variable, "").strip()
    if not protocol:
        variable = "OTEL_EXPORTER_OTLP_PROTOCOL"
        protocol = env.get(variable, "").strip() or "grpc"
    if protocol not in OTLP_ENTRY_POINTS:
        raise ConfigError(
            f"{variable}={protocol!r} is not valid: accepted values are {', '.join(OTLP_ENTRY_POINTS)}"
        )
    return OTLP_ENTRY_POINTS[protocol], protocol


def exporters(env: Mapping[str, str]) -> tuple[tuple[Exporter, ...], bool]:
    """The backends ``OTEL_TRACES_EXPORTER`` names besides Sentry, and whether it names ``sentry``."""
    names = _names(env.get("OTEL_TRACES_EXPORTER", ""))
    available = _installed(EXPORTER_GROUP)
    accepted = ", ".join(sorted({"none", "otlp", "sentry", *available}))
    chosen: list[Exporter] = []
    for name in names:
        if name in ("none", "sentry"):
            continue
        if name == "otlp":
            entry_name, protocol = otlp_entry_point(env)
            entry = available.get(entry_name)
            if entry is None:
                other = " or ".join(choice for choice in OTLP_ENTRY_POINTS if choice != protocol)
                raise ConfigError(
                    f"OTEL_TRACES_EXPORTER names 'otlp', which for protocol {protocol} needs "
                    f"{OTLP_PACKAGES[protocol]}, not installed: install it, or set "
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={other}"
                )
        else:
            entry = available.get(name)
            if entry is None:
                raise ConfigError(
                    f"OTEL_TRACES_EXPORTER names {name!r}, which is not installed: "
                    f"accepted values are {accepted}"
                )
        chosen.append(Exporter(name, entry))
    return tuple(chosen), "sentry" in names


def propagator_names(env: Mapping[str, str]) -> tuple[str, ...]:
    """The names in ``OTEL_PROPAGATORS`` (OpenTelemetry's default when unset); raises for one OpenTelemetry
    could not load: it accepts ``none`` and the installed ``opentelemetry_propagator`` entry points."""
    names = _names(env.get("OTEL_PROPAGATORS", ""))
    if not names:
        return DEFAULT_PROPAGATORS
    installed = _installed(PROPAGATOR_GROUP)
    for name in names:
        if name != "none" and name not in installed:
            accepted = ", ".join(sorted({"none", *installed}))
            raise ConfigError(
                f"OTEL_PROPAGATORS names {name!r}, which is not installed: accepted values are {accepted}"
            )
    return tuple(names)


@contextmanager
def _without(variable: str) -> Iterator[None]:
    saved = os.environ.pop(variable, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[variable] = saved


def _usable(variable: str) -> bool:
    try:
        if variable == "OTEL_PROPAGATORS":
            propagator_names(os.environ)
        else:
            validate_otel_environment({variable: os.environ.get(variable, "")})
    except ConfigError:
        return False
    return True


# OpenTelemetry modules that read a variable when first imported and raise there for a value they cannot
# use (opentelemetry-api/sdk 1.28 and 1.45): every OTel instrumentation imports the first, the SDK the second.
_READ_AT_IMPORT = (
    ("opentelemetry.propagate", "OTEL_PROPAGATORS"),
    ("opentelemetry.sdk.trace", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"),
)


def import_otel_safely() -> None:
    """Import the OpenTelemetry modules of ``_READ_AT_IMPORT`` so that they cannot fail because of the
    environment: with an unusable value hidden while they load, they start with OpenTelemetry's defaults,
    and ``init()`` raises the :class:`ConfigError` naming the variable instead."""
    for module, variable in _READ_AT_IMPORT:
        if module in sys.modules:
            continue
        if not _usable(variable):
            with _without(variable):
                importlib.import_module(module)
            continue
        try:
            importlib.import_module(module)
        except Exception:
            # an installed propagator that fails to load; OpenTelemetry has logged why
            with _without(variable):
                importlib.import_module(module)


def _known_otel_variables() -> frozenset[str]:
    import opentelemetry.environment_variables as api_variables
    import opentelemetry.sdk.environment_variables as sdk_variables

    names = {
        name for module in (api_variables, sdk_variables) for name in dir(module) if name.startswith("OTEL_")
    }
    return frozenset({*names, *BRIDGE_VARIABLES, "OTEL_SDK_DISABLED"})


def mistyped_variables(env: Mapping[str, str]) -> list[str]:
    """``OTEL_*`` variables nothing reads that are close to one that is read (``OTEL_TRACE_EXPORTER``);
    other unknown names may belong to tools not installed here (or to scripts: ``OTEL_BRIDGE_REPO``)."""
    known = _known_otel_variables()
    found = []
    for name in sorted(env):
        if not name.startswith("OTEL_") or name in known or name.startswith(_OPEN_ENDED_PREFIXES):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            found.append(
                f"{name} is not a variable OpenTelemetry or otel_bridge reads: did you mean {close[0]}?"
            )
    return found


def overlapping_integrations() -> list[Any]:
    """The classes of ``OVERLAPPING_INTEGRATIONS`` this sentry-sdk has; a module that cannot be imported
    (its framework is not installed) has nothing to disable."""
    found: list[Any] = []
    for module, name in OVERLAPPING_INTEGRATIONS:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except Exception:
            continue
    return found


def _active_overlapping(client: Any) -> list[str]:
    """Names of sentry-sdk's framework integrations the (adopted) client runs next to our middleware.
    ``Client.integrations`` maps identifiers to instances on sentry-sdk 2.57 and 2.75."""
    integrations = getattr(client, "integrations", None)
    if not isinstance(integrations, Mapping):
        return []
    classes = tuple(overlapping_integrations())
    return sorted(
        {
            type(integration).__name__
            for integration in integrations.values()
            if isinstance(integration, classes)
        }
    )


def _doubled_senders() -> Optional[str]:
    """Whether the global ``TracerProvider`` already sends to Sentry without ``init()``: a live
    ``SentrySpanProcessor`` added by hand, next to the one ``init()`` adds or to ``SentrySpanExporter``."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from otel_bridge import _setup
    from otel_bridge._collect.processor import SentrySpanProcessor
    from otel_bridge._compat.otel_sdk import span_processors_of
    from otel_bridge._deliver import flush_hooks
    from otel_bridge.exporter import SentrySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return None
    processors = span_processors_of(provider) or ()
    own = _setup.active_processor()
    by_hand = [
        processor
        for processor in processors
        if isinstance(processor, SentrySpanProcessor)
        and processor is not own
        and flush_hooks.is_registered(processor)
    ]
    if not by_hand:
        return None
    if any(
        isinstance(getattr(processor, "span_exporter", None), SentrySpanExporter) for processor in processors
    ):
        also = "SentrySpanExporter ('sentry' in OTEL_TRACES_EXPORTER) on the same TracerProvider"
    elif own is None:
        also = "the SentrySpanProcessor otel_bridge.init() adds"
    else:
        also = "the SentrySpanProcessor otel_bridge.init() added"
    return (
        f"a SentrySpanProcessor was added to the TracerProvider by hand, next to {also}: every trace "
        "reaches Sentry twice; keep only otel_bridge.init()"
    )


def _sentry_option_names() -> frozenset[str]:
    from sentry_sdk.consts import ClientConstructor

    parameters = inspect.signature(ClientConstructor.__init__).parameters
    return frozenset(name for name in parameters if name not in ("self", "dsn"))


def check_sentry_options(options: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - _sentry_option_names())
    if unknown:
        raise ConfigError(
            f"otel_bridge.init() got unknown option(s) {', '.join(unknown)}: accepted are this bridge's "
            "options (traces_sample_rate, max_spans_per_trace, max_open_traces, max_queued_traces, "
            "max_queued_bytes, root_timeout_seconds) and sentry_sdk.init's options"
        )


def spotlight_requested(options: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    """Whether sentry-sdk will send to Spotlight: ``spotlight=True`` or a URL, else ``SENTRY_SPOTLIGHT``
    true or a URL, unless ``spotlight=False``. Spotlight works without a DSN, as in sentry-sdk."""
    from sentry_sdk.utils import env_to_bool

    chosen = options.get("spotlight")
    if chosen is not None:
        return chosen is True or (isinstance(chosen, str) and bool(chosen.strip()))
    raw = env.get("SENTRY_SPOTLIGHT", "").strip()
    return bool(raw) and env_to_bool(raw, strict=True) is not False


def check_spotlight_variable(env: Mapping[str, str]) -> None:
    """sentry-sdk takes any ``SENTRY_SPOTLIGHT`` that is not a yes/no word for the sidecar's URL."""
    from sentry_sdk.utils import env_to_bool

    raw = env.get("SENTRY_SPOTLIGHT", "").strip()
    if raw and env_to_bool(raw, strict=True) is None and not raw.lower().startswith(("http://", "https://")):
        raise ConfigError(
            f"SENTRY_SPOTLIGHT={raw!r} is not valid: accepted values are true or false (also 1/0, yes/no, "
            "on/off) or the URL of Spotlight's sidecar, such as http://localhost:8969/stream"
        )


def _described_dsn(dsn: str) -> tuple[str, str]:
    from sentry_sdk.utils import Dsn

    try:
        parsed = Dsn(dsn)
    except Exception as exc:
        raise ConfigError(f"SENTRY_DSN is not a valid Sentry DSN ({exc})") from None
    return f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}", str(parsed.project_id)


def _sample_rate(
    config: BridgeConfig, client: Any, adopts: bool, env: Mapping[str, str]
) -> tuple[float, str]:
    """The bridge's rate when given; else the ``traces_sample_rate`` of a client the user initialised
    with ``sentry_sdk.init``; else 1.0 (the OTel sampler alone decides)."""
    if config.traces_sample_rate_given:
        origin = (
            "OTEL_BRIDGE_TRACES_SAMPLE_RATE"
            if env.get("OTEL_BRIDGE_TRACES_SAMPLE_RATE", "").strip()
            else "init()"
        )
        return config.traces_sample_rate, origin
    adopted = client.options.get("traces_sample_rate") if adopts else None
    if adopted is None:
        return config.traces_sample_rate, "default: the OTel sampler alone decides"
    return parse_rate("traces_sample_rate", adopted), "sentry_sdk.init"


def _privacy(config: BridgeConfig, client: Any, adopts: bool) -> tuple[bool, str, Optional[str]]:
    options = client.options if adopts else config.sentry_options
    origin = "sentry_sdk.init" if adopts else "init() / SENTRY_SEND_DEFAULT_PII"
    pii = options.get("send_default_pii")
    collection = options.get("data_collection")
    described = None
    if collection is not None and (
        not adopts or (isinstance(collection, Mapping) and collection.get("provided_by_user"))
    ):
        described = "given: it decides what request data is collected, over send_default_pii"
    if pii is None:
        return False, "default", described
    return bool(pii), origin, described


def _excluded_urls(env: Mapping[str, str]) -> tuple[Optional[str], Optional[str]]:
    """As ``opentelemetry.util.http.get_excluded_urls("ASGI")``, which the middleware uses."""
    for variable in ("OTEL_PYTHON_ASGI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"):
        if variable in env:
            value = env[variable].strip()
            return (value or None), variable
    return None, None


def _sampler(env: Mapping[str, str]) -> tuple[str, Optional[str]]:
    from otel_bridge._config.options import RATIO_SAMPLERS

    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or DEFAULT_SAMPLER
    arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip() or None
    return sampler, (arg or "1.0") if sampler in RATIO_SAMPLERS else None


def resolve(options: Mapping[str, Any], env: Optional[Mapping[str, str]] = None) -> Resolved:
    """Everything ``init(**options)`` decides, for this environment and this process's sentry-sdk client;
    raises :class:`ConfigError` for the first value it cannot use."""
    import sentry_sdk

    env = os.environ if env is None else env
    config = read_config(options, env)
    client = sentry_sdk.get_client()
    adopts = client.is_active()
    if not adopts:
        check_sentry_options(config.sentry_options)
    dsn_host = dsn_project = None
    if config.dsn:
        dsn_host, dsn_project = _described_dsn(config.dsn)
    chosen, sentry_exporter = exporters(env)
    propagators = propagator_names(env)
    if config.sentry_options.get("spotlight") is None:
        check_spotlight_variable(env)
    spotlight = spotlight_requested(config.sentry_options, env)

    off_reason = None
    if config.disabled:
        off_reason = "OTEL_SDK_DISABLED=true"
    elif not config.dsn and not spotlight and not adopts:
        off_reason = NO_DSN

    rate, rate_origin = _sample_rate(config, client, adopts, env)
    pii, pii_origin, collection = _privacy(config, client, adopts)
    excluded, excluded_variable = _excluded_urls(env)
    sampler, sampler_arg = _sampler(env)

    warnings = list(mistyped_variables(env))
    doubled = _doubled_senders()
    if doubled:
        warnings.append(doubled)
    return Resolved(
        config=config,
        off_reason=off_reason,
        adopts_client=adopts,
        spotlight=spotlight,
        dsn_host=dsn_host,
        dsn_project=dsn_project,
        exporters=chosen,
        sentry_exporter=sentry_exporter,
        propagators=propagators,
        propagators_from_env=bool(env.get("OTEL_PROPAGATORS", "").strip()),
        sampler=sampler,
        sampler_arg=sampler_arg,
        sample_rate=rate,
        sample_rate_origin=rate_origin,
        send_default_pii=pii,
        pii_origin=pii_origin,
        data_collection=collection,
        excluded_urls=excluded,
        excluded_urls_variable=excluded_variable,
        warnings=tuple(warnings),
        adopted_integrations=tuple(_active_overlapping(client)) if adopts else (),
    )
