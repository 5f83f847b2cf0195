"""OpenTelemetry tracing of publishes (the `aiopublish[otel]` extra).

When `opentelemetry-api` imports, every `Publisher.publish()` runs inside a
PRODUCER span named "{destination} publish" with the messaging semantic
conventions' attributes, and the span's W3C trace context (`traceparent`,
`tracestate` when there is one, and baggage if the global propagator sends it)
travels in the message headers, so a consumer can continue the trace. Spans go
to the global tracer provider unless `set_tracer_provider()` names another.

Without the extra `enabled` is False and the publisher never enters this module's
code path: tracing then costs one attribute check per publish.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.trace import (
        NoOpTracerProvider,
        ProxyTracerProvider,
        Span,
        SpanKind,
        Status,
        StatusCode,
        Tracer,
        TracerProvider,
    )


def _installed() -> bool:
    # Only looked up here; imported by _load() at the first publish (about 10 ms off `import aiopublish`).
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except ImportError:  # pragma: no cover - depends on the environment
        return False


_API = _installed()
_loaded = False


def _load() -> bool:
    """Import the otel extra (once); False, and tracing off, if it does not import."""
    global _API, _loaded, enabled, otel_context, propagate, trace
    global NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode
    _loaded = True
    try:
        from opentelemetry import context as otel_context
        from opentelemetry import propagate, trace
        from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode
    except ImportError:  # pragma: no cover - a broken install: found but not importable
        _API = enabled = False
    return _API


__all__ = ["PublishSpan", "active", "enabled", "publish_span", "set_tracer_provider"]

#: True when opentelemetry-api is installed; the publisher takes the traced path only then.
enabled: bool = _API

#: Instrumentation scope of aiopublish's spans.
TRACER_NAME = "aiopublish"
#: Destination name used for the default exchange (whose real name is the empty string).
DEFAULT_EXCHANGE = "amq.default"
#: Outcomes that mark the span as an error.
ERROR_OUTCOMES = frozenset({"returned", "nacked", "failed"})

_provider: TracerProvider | None = None
_tracer: Tracer | None = None


def set_tracer_provider(provider: TracerProvider | None) -> None:
    """Make aiopublish's spans go to `provider` rather than the global one; None goes back to the global.

    OpenTelemetry's global provider can be set once per process; this lets tests and
    applications with several providers choose one for aiopublish alone.
    """
    global _provider, _tracer
    _provider = provider
    _tracer = None


def _no_sdk() -> bool:
    """Whether no real tracer provider is installed globally (the API alone makes non-recording spans)."""
    return isinstance(trace.get_tracer_provider(), (ProxyTracerProvider, NoOpTracerProvider))


def active() -> bool:
    """Whether a publish now would make a span or carry a trace context (False: skip tracing altogether).

    False when opentelemetry is missing, or when no SDK is installed (the API alone only
    makes non-recording spans) and no trace is current: a span would record nothing and
    there would be no context to pass on.
    """
    if not _API:  # pragma: no cover - depends on the environment
        return False
    if not _loaded and not _load():  # pragma: no cover - a broken install
        return False
    return _provider is not None or not _no_sdk() or trace.get_current_span().get_span_context().is_valid


def _get_tracer() -> Tracer:
    global _tracer
    if _tracer is None:
        from . import __version__  # not at import time: the package imports this module first

        # With the global provider not yet set this is a proxy that follows it once it is.
        _tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider=_provider)
    return _tracer


class PublishSpan:
    """The span of one publish: the trace context for the headers, then the message and outcome."""

    __slots__ = ("_context", "_error_type", "_span")

    def __init__(self, span: Span | None = None, context: Context | None = None) -> None:
        self._span = span
        self._context = context
        self._error_type: str | None = None

    def headers(self) -> dict[str, str]:
        """The trace context to put in the message headers (`traceparent`, `tracestate` if any)."""
        if self._span is None:
            return {}
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=self._context)
        return carrier

    def set_message(self, message_id: str, body_size: int) -> None:
        """Record the message id and the size of the body as sent (after compression)."""
        if self._span is not None and self._span.is_recording():
            self._span.set_attributes(
                {
                    "messaging.message.id": message_id,
                    "messaging.message.body.size": body_size,
                }
            )

    def set_outcome(self, outcome: str) -> None:
        """Record confirmed / sent / returned / nacked / failed; the last three mark the span an error."""
        span = self._span
        if span is None:
            return
        span.set_attribute("aiopublish.outcome", outcome)
        if outcome in ERROR_OUTCOMES:
            if outcome != "failed":
                self._set_error_type(outcome)
            span.set_status(Status(StatusCode.ERROR, outcome))

    def _set_error_type(self, error_type: str) -> None:
        if self._span is not None and self._error_type is None:
            self._error_type = error_type
            self._span.set_attribute("error.type", error_type)

    def _fail(self, exc: BaseException) -> None:
        span = self._span
        if span is None or not span.is_recording():
            return
        if isinstance(exc, Exception):
            span.record_exception(exc)
        self._set_error_type(type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


_NOOP = PublishSpan()


@contextmanager
def publish_span(exchange: str, routing_key: str) -> Iterator[PublishSpan]:
    """A PRODUCER span around one publish, current while the body runs; an exception marks it an error."""
    if not _API:  # pragma: no cover - only without the otel extra, where the publisher does not call this
        yield PublishSpan()
        return
    if not active():
        yield _NOOP
        return
    destination = exchange or DEFAULT_EXCHANGE
    attributes: dict[str, str] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": destination,
    }
    if routing_key:
        attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
    with _get_tracer().start_as_current_span(
        f"{destination} publish",
        kind=SpanKind.PRODUCER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        publish = PublishSpan(span, otel_context.get_current())
        try:
            yield publish
        except BaseException as exc:
            publish._fail(exc)
            raise
