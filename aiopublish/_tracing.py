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

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

try:  # the otel extra: aiopublish[otel]
    from opentelemetry import propagate, trace
    from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - depends on the environment
    _API = False
else:
    _API = True

__all__ = ["NO_SPAN", "PublishSpan", "active", "enabled", "set_tracer_provider", "start_publish"]

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

    def finish(self, exc: BaseException | None, outcome: str = "failed") -> None:
        """End the span: with `exc`, as that failure; else with `outcome` (confirmed / sent)."""
        span = self._span
        if span is None:
            return
        if exc is None:
            self.set_outcome(outcome)
        else:
            reason = getattr(exc, "reason", None)
            self.set_outcome(reason if reason in ("returned", "nacked") else "failed")
            self._fail(exc)
        span.end()

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


#: The span of a publish that is not traced: every method does nothing.
NO_SPAN = PublishSpan()


def start_publish(exchange: str, routing_key: str) -> PublishSpan:
    """Start the PRODUCER span of one publish (NO_SPAN when tracing is inactive); end it with finish()."""
    if not _API or not active():
        return NO_SPAN
    destination = exchange or DEFAULT_EXCHANGE
    attributes: dict[str, str] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": destination,
    }
    if routing_key:
        attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
    span = _get_tracer().start_span(
        f"{destination} publish",
        kind=SpanKind.PRODUCER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    )
    return PublishSpan(span, trace.set_span_in_context(span))
