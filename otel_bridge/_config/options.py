"""Options from keyword arguments and the environment, validated once, with errors that name the setting."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

TRANSACTION_STYLES = ("endpoint", "url")
KNOWN_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
SEMCONV_OPT_INS = ("http", "http/dup")


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the setting and what it accepts."""


@dataclass(frozen=True)
class BridgeConfig:
    """What ``otel_bridge.init()`` acts on. ``sentry_options`` go to ``sentry_sdk.init`` unchanged."""

    dsn: Optional[str]
    disabled: bool
    environment: Optional[str] = None
    release: Optional[str] = None
    traces_sample_rate: float = 1.0
    traces_sample_rate_given: bool = False
    max_spans_per_trace: int = 1000
    max_open_traces: int = 10_000
    max_queued_traces: int = 1000
    max_queued_bytes: int = 64 * 1024 * 1024
    root_timeout_seconds: float = 300.0
    sentry_options: Mapping[str, Any] = field(default_factory=dict)


def parse_bool(name: str, raw: Optional[str], default: bool = False) -> bool:
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    raise ConfigError(f"{name}={raw!r} is not valid: accepted values are 'true' or 'false' (any case)")


def parse_rate(name: str, raw: object) -> float:
    try:
        rate = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name}={raw!r} is not valid: accepted values are numbers from 0.0 to 1.0"
        ) from None
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"{name}={raw!r} is not valid: accepted values are numbers from 0.0 to 1.0")
    return rate


def parse_positive_int(name: str, raw: object) -> int:
    try:
        number: int = int(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={raw!r} is not valid: accepted values are whole numbers above 0") from None
    if number <= 0:
        raise ConfigError(f"{name}={raw!r} is not valid: accepted values are whole numbers above 0")
    return number


def parse_choice(name: str, raw: str, accepted: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in accepted:
        raise ConfigError(f"{name}={raw!r} is not valid: accepted values are {', '.join(accepted)}")
    return value


# The OTel SDK's batch span processor: whole numbers above 0 (milliseconds for the delay), a timeout of 0 or
# more; and its span limits: whole numbers of 0 or more, or empty for no limit. A value it cannot parse is
# only logged (batch processor) or a ValueError from deep inside the SDK (limits).
BSP_POSITIVE = ("OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
BSP_DEFAULTS = {"OTEL_BSP_MAX_QUEUE_SIZE": 2048, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": 512}
SPAN_LIMITS = (
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
)


def _whole_number(name: str, raw: str, minimum: int, accepted: str) -> int:
    try:
        number = int(raw.strip())
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ConfigError(f"{name}={raw!r} is not valid: accepted values are {accepted}")
    return number


def _validate_otel_numbers(env: Mapping[str, str]) -> None:
    sizes = dict(BSP_DEFAULTS)
    for name in BSP_POSITIVE:
        if env.get(name, "").strip():
            sizes[name] = _whole_number(name, env[name], 1, "whole numbers above 0")
    if env.get("OTEL_BSP_EXPORT_TIMEOUT", "").strip():
        _whole_number(
            "OTEL_BSP_EXPORT_TIMEOUT", env["OTEL_BSP_EXPORT_TIMEOUT"], 0, "whole numbers of 0 or more"
        )
    batch, queue = sizes["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"], sizes["OTEL_BSP_MAX_QUEUE_SIZE"]
    if batch > queue:
        raise ConfigError(
            f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={batch} is not valid: accepted values are whole numbers up to "
            f"OTEL_BSP_MAX_QUEUE_SIZE ({queue})"
        )
    for name in SPAN_LIMITS:
        if env.get(name, "").strip():
            _whole_number(name, env[name], 0, "whole numbers of 0 or more, or empty for no limit")


def validate_otel_environment(env: Mapping[str, str]) -> None:
    """Check the ``OTEL_*`` values whose misspelling the OTel SDK would only log, silently ignore, or
    raise about from deep inside."""
    _validate_otel_numbers(env)
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip()
    if sampler:
        chosen = parse_choice("OTEL_TRACES_SAMPLER", sampler, KNOWN_SAMPLERS)
        sampler_arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        if chosen in RATIO_SAMPLERS and sampler_arg:
            parse_rate("OTEL_TRACES_SAMPLER_ARG", sampler_arg)
    opt_in = env.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").strip()
    if opt_in:
        for part in opt_in.split(","):
            if part.strip().startswith("http"):
                parse_choice("OTEL_SEMCONV_STABILITY_OPT_IN", part, SEMCONV_OPT_INS)


_BRIDGE_OPTIONS = {
    "traces_sample_rate": ("OTEL_BRIDGE_TRACES_SAMPLE_RATE", parse_rate),
    "max_spans_per_trace": ("OTEL_BRIDGE_MAX_SPANS_PER_TRACE", parse_positive_int),
    "max_open_traces": ("OTEL_BRIDGE_MAX_OPEN_TRACES", parse_positive_int),
    "max_queued_traces": ("OTEL_BRIDGE_MAX_QUEUED_TRACES", parse_positive_int),
    "max_queued_bytes": ("OTEL_BRIDGE_MAX_QUEUED_BYTES", parse_positive_int),
}


def read_config(options: Mapping[str, Any], env: Optional[Mapping[str, str]] = None) -> BridgeConfig:
    """Combine ``init(**options)`` with the environment; keyword arguments win over variables."""
    env = os.environ if env is None else env
    remaining = dict(options)

    disabled = parse_bool("OTEL_SDK_DISABLED", env.get("OTEL_SDK_DISABLED"))
    validate_otel_environment(env)

    if "send_default_pii" not in remaining and env.get("SENTRY_SEND_DEFAULT_PII", "").strip():
        remaining["send_default_pii"] = parse_bool("SENTRY_SEND_DEFAULT_PII", env["SENTRY_SEND_DEFAULT_PII"])
    dsn = remaining.pop("dsn", None) or env.get("SENTRY_DSN") or None
    environment = remaining.pop("environment", None) or env.get("SENTRY_ENVIRONMENT") or None
    release = remaining.pop("release", None) or env.get("SENTRY_RELEASE") or None

    bridge_values: dict[str, Any] = {}
    for option, (variable, parse) in _BRIDGE_OPTIONS.items():
        if option in remaining:
            bridge_values[option] = parse(option, remaining.pop(option))
        elif env.get(variable, "").strip():
            bridge_values[option] = parse(variable, env[variable])

    if "traces_sample_rate" not in bridge_values and remaining.get("enable_tracing") is False:
        bridge_values["traces_sample_rate"] = 0.0

    if "root_timeout_seconds" in remaining:
        timeout = remaining.pop("root_timeout_seconds")
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(
                f"root_timeout_seconds={timeout!r} is not valid: accepted values are seconds above 0"
            )
        bridge_values["root_timeout_seconds"] = float(timeout)

    bridge_values["traces_sample_rate_given"] = "traces_sample_rate" in bridge_values
    return BridgeConfig(
        dsn=dsn,
        disabled=disabled,
        environment=environment,
        release=release,
        sentry_options=remaining,
        **bridge_values,
    )
