"""``otel_bridge.init()``: sentry-sdk client, OTel ``TracerProvider`` and span processor, wired once."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, Optional

import sentry_sdk
from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from sentry_sdk.scope import add_global_event_processor, register_external_propagation_context

from otel_bridge import _compat
from otel_bridge._collect import live_frames
from otel_bridge._collect.client_hooks import hook_client
from otel_bridge._collect.live_errors import prepare_event
from otel_bridge._collect.processor import SentrySpanProcessor
from otel_bridge._collect.reported import link_recorded_exceptions
from otel_bridge._compat.sentry_client import CLIENT_INSTRUMENTER
from otel_bridge._config import sentry_options
from otel_bridge._config.options import BridgeConfig, ConfigError
from otel_bridge._config.resolution import (
    OVERLAPPING_INTEGRATIONS,
    PROPAGATOR_GROUP,
    Resolved,
    overlapping_integrations,
    resolve,
    spotlight_requested,
)
from otel_bridge._deliver import serializer
from otel_bridge._deliver.capture import flush_client, pending_envelopes
from otel_bridge._tracing import sampling
from otel_bridge.propagation import SentryPropagator, current_otel_ids, default_propagator
from otel_bridge.transport import default_transport_class

logger = logging.getLogger("otel_bridge")

# sentry-sdk's default of 100 drops most transactions at a few hundred requests a second; 1000 envelopes
# of a few KiB each stay well bounded.
TRANSPORT_QUEUE_SIZE = 1000

_lock = threading.Lock()
_processor: Optional[SentrySpanProcessor] = None
_event_processor_added = False


__all__ = ["OVERLAPPING_INTEGRATIONS", "flush", "init", "spotlight_requested"]


def _load_exporters(resolved: Resolved) -> list[SpanExporter]:
    return [exporter.entry_point.load()() for exporter in resolved.exporters]


def _tracer_provider(resolved: Resolved) -> tuple[Optional[TracerProvider], bool]:
    """The global SDK provider, created from the ``OTEL_*`` variables when there is none yet."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current, False
    if not isinstance(current, trace.ProxyTracerProvider):
        logger.warning(
            "otel_bridge: the global TracerProvider is %s, not the OpenTelemetry SDK's; spans cannot reach "
            "Sentry. Add otel_bridge.SentrySpanProcessor to your SDK TracerProvider instead.",
            type(current).__name__,
        )
        return None, False
    exporters = _load_exporters(resolved)
    provider = TracerProvider()
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider, True


def _resource_defaults(attributes: Mapping[str, Any]) -> dict[str, str]:
    """environment, release and server_name the OTel resource says, for options the user left unset."""
    found: dict[str, str] = {}
    for option, names in (
        ("environment", ("deployment.environment.name", "deployment.environment")),
        ("release", ("service.version",)),
        ("server_name", ("host.name",)),
    ):
        for name in names:
            value = attributes.get(name)
            if value:
                found[option] = str(value)
                break
    return found


def start_sentry(config: BridgeConfig, resource: Mapping[str, Any]) -> None:
    """Adopt the active sentry-sdk client (its own tracing switched off) or create one for the bridge.

    Either way, sentry-sdk's clients then serialize events with ``serializer.fast_serialize``.
    """
    serializer.install()
    client = sentry_sdk.get_client()
    if client.is_active():
        if _compat.holds(CLIENT_INSTRUMENTER):
            client.options["instrumenter"] = "otel"
        hook_client(client)
        sentry_options.warn_about(client.options)
        if config.sentry_options:
            logger.warning(
                "otel_bridge adopted the sentry-sdk client already initialised; these options were not "
                "applied: %s (pass them to sentry_sdk.init instead)",
                ", ".join(sorted(config.sentry_options)),
            )
        return
    sentry_options.warn_about(config.sentry_options)
    options: dict[str, Any] = {**_resource_defaults(resource), **config.sentry_options}
    options["disabled_integrations"] = [
        *(options.get("disabled_integrations") or ()),
        *overlapping_integrations(),
    ]
    if config.environment:
        options["environment"] = config.environment
    if config.release:
        options["release"] = config.release
    options["instrumenter"] = "otel"
    options.setdefault("transport_queue_size", TRANSPORT_QUEUE_SIZE)
    if options.get("transport") is None:
        options["transport"] = default_transport_class(config.max_queued_bytes)
    try:
        sentry_sdk.init(dsn=config.dsn, **options)
    except (TypeError, ValueError) as exc:
        # sentry-sdk checks some options itself (data_collection, ...); its message names the values
        raise ConfigError(f"sentry_sdk.init rejected an option otel_bridge.init() passed on: {exc}") from None
    hook_client(sentry_sdk.get_client())


def install_propagators(resolved: Resolved) -> None:
    """W3C trace context, W3C baggage and Sentry's headers, unless ``OTEL_PROPAGATORS`` chose.

    sentry-sdk registers its own (deprecated) propagator under the same entry-point name ``sentry``, and
    OpenTelemetry may have loaded that one: where ``OTEL_PROPAGATORS`` names ``sentry``, the global
    propagator is built again from the chosen names, as OpenTelemetry builds it, with ours for ``sentry``.
    """
    from opentelemetry import propagate
    from opentelemetry.propagators.composite import CompositePropagator

    names = resolved.propagators
    if not resolved.propagators_from_env:
        propagate.set_global_textmap(default_propagator())
    elif "sentry" in names and "none" not in names:
        propagate.set_global_textmap(CompositePropagator([_load_propagator(name) for name in names]))


def _load_propagator(name: str) -> TextMapPropagator:
    if name in ("sentry", "otel_bridge"):
        return SentryPropagator()
    entry_point = next(iter(entry_points(group=PROPAGATOR_GROUP, name=name)))
    propagator: TextMapPropagator = entry_point.load()()
    return propagator


def install_event_processor() -> None:
    global _event_processor_added
    if not _event_processor_added:
        add_global_event_processor(prepare_event)
        # its frames are equal to sentry-sdk's only once prepare_event has cleaned them
        live_frames.install()
        register_external_propagation_context(current_otel_ids)
        link_recorded_exceptions()
        _event_processor_added = True


def active_processor() -> Optional[SentrySpanProcessor]:
    return _processor


def init(**options: Any) -> Optional[SentrySpanProcessor]:
    """Make every OTel span and exception reach Sentry; see the README. Returns the processor, or ``None``.

    Keyword arguments override ``SENTRY_*``/``OTEL_BRIDGE_*`` variables; any ``sentry_sdk.init`` option is
    passed through. A second call returns the processor of the first.
    """
    global _processor
    env = os.environ
    resolved = resolve(options, env)
    config = resolved.config
    with _lock:
        if _processor is not None:
            return _processor
        if resolved.off_reason is not None:
            logger.warning("otel_bridge is off: %s", resolved.off_reason)
            return None
        for warning in resolved.warnings:
            logger.warning("otel_bridge: %s", warning)
        _compat.verify()
        provider, created = _tracer_provider(resolved)
        start_sentry(config, provider.resource.attributes if provider is not None else {})
        install_event_processor()
        install_propagators(resolved)

        sampling.configure(resolved.sample_rate)
        processor = SentrySpanProcessor(
            max_spans_per_trace=config.max_spans_per_trace,
            max_open_traces=config.max_open_traces,
            max_queued_traces=config.max_queued_traces,
            root_timeout_seconds=config.root_timeout_seconds,
        )
        if provider is not None:
            provider.add_span_processor(processor)
        _processor = processor
        atexit.register(flush_before_exit)
        logger.debug("otel_bridge on (TracerProvider %s)", "created" if created else "adopted")
        return processor


def flush(timeout: float = 2.0) -> bool:
    """Send everything finished so far. ``True`` only when everything finished before the call was sent,
    or dropped and counted in client reports, within ``timeout`` seconds; ``False`` when time ran out
    (what is left keeps being sent in the background)."""
    processor = _processor
    if processor is None:
        return flush_client(timeout)
    return processor.force_flush(int(timeout * 1000))


def flush_before_exit() -> None:
    """Bounded by sentry-sdk's ``shutdown_timeout`` (2 s by default); what could not be sent in that time
    is said in one log line."""
    client = sentry_sdk.get_client()
    if not client.is_active():
        return
    timeout = float(client.options.get("shutdown_timeout") or 2)
    if not flush(timeout=timeout):
        left = pending_envelopes(client)
        logger.warning(
            "otel_bridge could not send %s to Sentry before shutting down (shutdown_timeout=%s s)",
            f"{left} envelope(s)" if left else "everything",
            timeout,
        )
