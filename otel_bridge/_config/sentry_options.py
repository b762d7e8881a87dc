"""What each ``sentry_sdk.init`` option does for what the bridge sends, and the one warning for those that
do nothing here.

``OPTIONS`` covers every option of sentry-sdk 2.75; the README's option table is generated from it
(``otel-bridge options``). ``init()`` names, in one warning, each option the user set to a
non-default value that has no effect here, and each option this sentry-sdk has that the table does not know.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

from sentry_sdk.consts import ClientConstructor

logger = logging.getLogger("otel_bridge")

SDK = "sentry-sdk"
BRIDGE = "bridge"
DIFFERS = "differs"
NONE = "no effect"


@dataclass(frozen=True)
class Effect:
    """``acted_by``: who makes the option act (``sentry-sdk`` on every event the bridge hands it, the
    ``bridge`` itself), or that it ``differs`` from sentry-sdk's meaning, or has ``no effect`` here."""

    acted_by: str
    here: str
    inert_when: Optional[Callable[[Any], bool]] = None

    def inert(self, value: Any, default: Any) -> bool:
        if self.inert_when is not None:
            return self.inert_when(value)
        return self.acted_by == NONE and value != default


OPTIONS: dict[str, Effect] = {
    "dsn": Effect(SDK, "Where events go; also `SENTRY_DSN`."),
    "release": Effect(BRIDGE, "`SENTRY_RELEASE`, else the OTel resource's `service.version`."),
    "environment": Effect(
        BRIDGE, "`SENTRY_ENVIRONMENT`, else the resource's `deployment.environment(.name)`."
    ),
    "server_name": Effect(BRIDGE, "Else the resource's `host.name`."),
    "dist": Effect(SDK, "On every event."),
    "send_default_pii": Effect(
        BRIDGE, "Request data, span data and user; `SENTRY_SEND_DEFAULT_PII`. See *Privacy*."
    ),
    "data_collection": Effect(
        BRIDGE, "Decides request data, span data and client address, over `send_default_pii`."
    ),
    "event_scrubber": Effect(BRIDGE, "Its deny-list also filters span data, query strings and URLs."),
    "before_send": Effect(SDK, "On every error and message event, converted ones included."),
    "before_send_transaction": Effect(SDK, "On every transaction."),
    "before_breadcrumb": Effect(SDK, "As in sentry-sdk."),
    "max_breadcrumbs": Effect(SDK, "As in sentry-sdk."),
    "sample_rate": Effect(SDK, "Thins error events, converted ones included."),
    "error_sampler": Effect(SDK, "Called for every error event; `hint` has `exc_info` for live captures."),
    "ignore_errors": Effect(
        BRIDGE,
        "Live captures by class; exceptions known only from span events by type name "
        "(a class entry matches its own qualified name, not subclasses).",
    ),
    "traces_sample_rate": Effect(
        DIFFERS,
        "A Sentry-only rate (default 1.0): the OTel sampler decides first, other backends are not "
        "thinned; also `OTEL_BRIDGE_TRACES_SAMPLE_RATE`.",
    ),
    "traces_sampler": Effect(
        BRIDGE,
        "Called once per local root as it starts, with sentry-sdk's sampling context; replaces the rate. "
        "Not on the exporter path, where spans arrive already ended.",
    ),
    "enable_tracing": Effect(DIFFERS, "Deprecated in sentry-sdk; `False` sets the Sentry-only rate to 0."),
    "trace_lifecycle": Effect(BRIDGE, '`"stream"` sends spans as span items instead of transactions.'),
    "before_send_span": Effect(BRIDGE, "Span streaming: called on every span."),
    "ignore_spans": Effect(BRIDGE, "Span streaming: matching spans are not sent."),
    "trace_ignore_status_codes": Effect(
        BRIDGE, "Transactions whose HTTP status code matches are not sent (errors still are)."
    ),
    "org_id": Effect(
        BRIDGE,
        "Over the DSN's: in the dynamic sampling context, and a caller of another org's Sentry "
        "sampling is not adopted.",
    ),
    "instrumenter": Effect(
        DIFFERS,
        'Always `"otel"`: OpenTelemetry spans are the source; sentry-sdk\'s own spans are off.',
        inert_when=lambda value: value not in (None, "otel", "sentry"),
    ),
    "auto_session_tracking": Effect(
        BRIDGE, "Request-mode sessions from the middleware (sent only with a `release`, as in sentry-sdk)."
    ),
    "in_app_include": Effect(BRIDGE, "Also on frames parsed from recorded exceptions."),
    "in_app_exclude": Effect(BRIDGE, "Also on frames parsed from recorded exceptions."),
    "project_root": Effect(BRIDGE, "Also on frames parsed from recorded exceptions."),
    "include_source_context": Effect(BRIDGE, "Also on frames parsed from recorded exceptions."),
    "include_local_variables": Effect(
        SDK, "Live captures; exceptions known only from span events have no local variables."
    ),
    "max_stack_frames": Effect(SDK, "Live captures."),
    "add_full_stack": Effect(SDK, "Live captures."),
    "attach_stacktrace": Effect(SDK, "Message events."),
    "max_value_length": Effect(SDK, "Serializer."),
    "custom_repr": Effect(SDK, "Serializer."),
    "shutdown_timeout": Effect(BRIDGE, "Bounds the flush at exit and at the ASGI lifespan shutdown."),
    "transport": Effect(SDK, "Default: the bridge's `ConcurrentHttpTransport`."),
    "transport_queue_size": Effect(SDK, "Default raised to 1000."),
    "http_proxy": Effect(SDK, "Transport."),
    "https_proxy": Effect(SDK, "Transport."),
    "proxy_headers": Effect(SDK, "Transport."),
    "ca_certs": Effect(SDK, "Transport."),
    "cert_file": Effect(SDK, "Transport."),
    "key_file": Effect(SDK, "Transport."),
    "socket_options": Effect(SDK, "Transport; TCP_NODELAY is added."),
    "keep_alive": Effect(SDK, "Transport."),
    "send_client_reports": Effect(SDK, "The bridge's own drops are counted in them too."),
    "debug": Effect(SDK, "sentry-sdk's debug log."),
    "integrations": Effect(SDK, "As in sentry-sdk."),
    "default_integrations": Effect(SDK, "As in sentry-sdk."),
    "auto_enabling_integrations": Effect(SDK, "As in sentry-sdk."),
    "disabled_integrations": Effect(
        SDK, "The bridge adds sentry-sdk's integrations for the frameworks its middleware serves."
    ),
    "enable_logs": Effect(SDK, "Logs are sent by sentry-sdk, linked to the current OTel span's trace."),
    "before_send_log": Effect(SDK, "As in sentry-sdk."),
    "enable_metrics": Effect(SDK, "Metrics are sent by sentry-sdk, linked to the current OTel span's trace."),
    "before_send_metric": Effect(SDK, "As in sentry-sdk."),
    "spotlight": Effect(
        SDK,
        "Everything the client sends also goes to Spotlight; also `SENTRY_SPOTLIGHT`, with no DSN needed.",
    ),
    "_experiments": Effect(SDK, "Passed to sentry-sdk; the bridge reads none."),
    "max_request_body_size": Effect(NONE, "Request bodies are never read or sent."),
    "propagate_traces": Effect(NONE, "OTel's propagators decide what outgoing requests carry."),
    "trace_propagation_targets": Effect(
        NONE, "OTel instrumentations inject headers into every outgoing request they trace."
    ),
    "strict_trace_continuation": Effect(
        DIFFERS,
        "Where sentry-sdk would start a new trace, the OTel trace goes on for every backend; only the "
        "caller's Sentry sampling is not adopted.",
    ),
    "functions_to_trace": Effect(NONE, "It makes sentry-sdk spans; use OTel spans."),
    "enable_backpressure_handling": Effect(
        NONE, "The bridge bounds its queues and counts every drop instead of downsampling."
    ),
    "enable_db_query_source": Effect(NONE, "Only sentry-sdk's own database spans have it."),
    "db_query_source_threshold_ms": Effect(NONE, "Only sentry-sdk's own database spans have it."),
    "enable_http_request_source": Effect(NONE, "Only sentry-sdk's own HTTP client spans have it."),
    "http_request_source_threshold_ms": Effect(NONE, "Only sentry-sdk's own HTTP client spans have it."),
    "stream_gen_ai_spans": Effect(NONE, "Only sentry-sdk's own AI spans have it."),
    "profiles_sample_rate": Effect(NONE, "Transaction profiles need sentry-sdk's own transactions."),
    "profiles_sampler": Effect(NONE, "Transaction profiles need sentry-sdk's own transactions."),
    "profiler_mode": Effect(SDK, "Continuous profiler (manual lifecycle)."),
    "profile_session_sample_rate": Effect(SDK, "Continuous profiler (manual lifecycle)."),
    "profile_lifecycle": Effect(
        SDK,
        '`"manual"` acts; `"trace"` has no sentry-sdk transactions to follow and does nothing.',
        inert_when=lambda value: value == "trace",
    ),
}


def _defaults() -> dict[str, Any]:
    parameters = inspect.signature(ClientConstructor.__init__).parameters
    return {name: parameter.default for name, parameter in parameters.items() if name != "self"}


def problems(options: Mapping[str, Any]) -> list[str]:
    """One phrase per option of ``options`` that does nothing here, or that this table does not know."""
    defaults = _defaults()
    found: list[str] = []
    for name in sorted(options):
        value = options[name]
        effect = OPTIONS.get(name)
        if effect is None:
            if name in defaults and value != defaults[name]:
                found.append(f"{name} (not known to this otel_bridge; passed to sentry-sdk unchanged)")
            continue
        if effect.inert(value, defaults.get(name)):
            found.append(f"{name} ({effect.here.rstrip('.')})")
    return found


def warn_about(options: Mapping[str, Any]) -> list[str]:
    """The one ``init()`` warning: every option set here that has no effect, named."""
    found = problems(options)
    if found:
        logger.warning("otel_bridge: these sentry-sdk options have no effect here: %s", "; ".join(found))
    return found


def markdown_table() -> str:
    """The README's option table."""
    rows = ["| option | acts through | here |", "|---|---|---|"]
    for name in sorted(OPTIONS, key=lambda option: (OPTIONS[option].acted_by, option.lstrip("_"))):
        effect = OPTIONS[name]
        rows.append(f"| `{name}` | {effect.acted_by} | {effect.here.replace('|', '/')} |")
    return "\n".join(rows)
