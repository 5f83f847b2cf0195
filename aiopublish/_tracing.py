"""OpenTelemetry for publishes: whether it is on, the public switch, and the record that does nothing.

On (`enabled`) when the OpenTelemetry SDK is installed (the `aiopublish[otel]`
extra) and neither `OTEL_SDK_DISABLED=true` nor `aiopublish` in
`OTEL_PYTHON_DISABLED_INSTRUMENTATIONS` turns it off, or after `instrument()`;
off after `uninstrument()`. With the API alone (FastAPI installs it) it stays off.
When off the publisher checks `enabled` once per publish and uses NO_SPAN, whose
methods do nothing: nothing of OpenTelemetry is imported or called.

When on, each publish / publish_many gets a record (_otel_record) that makes the
PRODUCER span, injects its context into the headers, and feeds the two metrics.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._link import LinkLike
    from ._options import Options
    from ._otel_record import Instruments
    from ._result import PublishResult
    from .retry import RetryState

__all__ = ["NO_SPAN", "NoRecord", "enabled", "instrument", "start_batch", "start_publish", "uninstrument"]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing or half-installed
        return False


_API = _importable("opentelemetry.trace") and _importable("opentelemetry.metrics")
_SDK = _API and _importable("opentelemetry.sdk")


def auto_enabled(environ: Mapping[str, str] = os.environ, *, sdk: bool = _SDK) -> bool:
    """Whether tracing is on without instrument(): the SDK is installed and no variable turns it off."""
    if not sdk:
        return False
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    disabled = {name.strip() for name in environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    return "aiopublish" not in disabled


#: Read once per publish: False means no span, no metric, no trace header, no OpenTelemetry call.
enabled: bool = auto_enabled()

_providers: tuple[Any, Any] = (None, None)  # (tracer provider, meter provider); None: the global one
_instruments: Instruments | None = None  # built at the first traced publish (the package must be imported)


def instrument(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Turn aiopublish's OpenTelemetry spans and metrics on, optionally with providers of your own.

    `tracer_provider` / `meter_provider` default to the global ones (followed even when
    they are set later). Needed only to choose providers, or when the SDK is not
    installed but another provider is; calling it again replaces the providers.
    Raises RuntimeError without opentelemetry-api, TypeError for an object that is
    not a provider.
    """
    global enabled, _providers, _instruments
    if not _API:
        raise RuntimeError("OpenTelemetry is not installed: pip install 'aiopublish[otel]'")
    if tracer_provider is not None and not callable(getattr(tracer_provider, "get_tracer", None)):
        raise TypeError(f"tracer_provider must be an OpenTelemetry TracerProvider, not {tracer_provider!r}")
    if meter_provider is not None and not callable(getattr(meter_provider, "get_meter", None)):
        raise TypeError(f"meter_provider must be an OpenTelemetry MeterProvider, not {meter_provider!r}")
    _providers = (tracer_provider, meter_provider)
    _instruments = None
    enabled = True


def uninstrument() -> None:
    """Turn aiopublish's spans and metrics off (no trace headers either) until instrument() is called."""
    global enabled, _providers, _instruments
    enabled = False
    _providers = (None, None)
    _instruments = None


def _get_instruments() -> Instruments:
    global _instruments
    if _instruments is None:
        from . import __version__
        from ._otel_record import Instruments

        _instruments = Instruments(*_providers, version=__version__)
    return _instruments


class NoRecord:
    """The OpenTelemetry record of a publish or batch while tracing is off: every method does nothing."""

    __slots__ = ()

    def headers(self) -> dict[str, str]:
        """The trace context to carry in the message headers."""
        return {}

    def set_message(self, message_id: str, body_size: int) -> None:
        """Record the message id and the size of its body as sent."""

    def sent(self, link: LinkLike, channel: object) -> None:
        """Note that the message was written on `channel` (delivery tag, node, socket peer)."""

    def written(self, todo: Sequence[int], count: int) -> None:
        """Note that the first `count` messages of `todo` (indexes in the batch) were written."""

    def retried(self, state: RetryState, error: str) -> None:
        """Record a failed attempt that will be retried; `error` is its message, secrets masked."""

    def finish(self, exc: BaseException | None, status: str = "failed") -> None:
        """End with `exc`, or with `status` (confirmed / sent) when it is None."""

    def finish_batch(self, results: Sequence[PublishResult]) -> None:
        """End a batch's record with its messages' outcomes."""


#: The record of a publish that is not traced.
NO_SPAN = NoRecord()


def start_publish(options: Options, link: LinkLike) -> NoRecord:
    """Start the record of one publish under `options` (call only when `enabled`)."""
    return _get_instruments().start_publish(options, link)


def start_batch(options: Options, link: LinkLike, count: int, routing_keys: Sequence[str] | None) -> NoRecord:
    """Start the record of a batch of `count` messages (call only when `enabled`)."""
    return _get_instruments().start_batch(options, link, count, routing_keys)
