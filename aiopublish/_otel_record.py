"""The OpenTelemetry record of one publish or one publish_many batch: its PRODUCER span and its metrics.

Imported only once tracing is on (see _tracing). The span's attributes follow
semantic-conventions v1.44.0 (see _otel_semconv); the attributes samplers need
(system, operation, destination, server) are given at span start. Metrics are
recorded whether or not the span is sampled: they come from the meter provider.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import _internal as _metrics_internal
from opentelemetry.trace import ProxyTracerProvider, SpanKind, Status, StatusCode

from . import _otel_semconv as semconv
from ._tracing import NO_SPAN, NoRecord

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter as OtelCounter
    from opentelemetry.metrics import Histogram
    from opentelemetry.trace import Span, Tracer

    from ._link import LinkLike
    from ._options import Options
    from ._result import PublishResult
    from .retry import RetryState

__all__ = ["BatchRecord", "Instruments", "PublishRecord"]

SCOPE = "aiopublish"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{semconv.SEMCONV_VERSION}"
DURATION = "messaging.client.operation.duration"
SENT = "messaging.client.sent.messages"
#: Span event of a failed attempt that is retried.
RETRY_EVENT = "aiopublish.retry"
OUTCOMES = ("confirmed", "sent", "returned", "nacked", "failed")

Attributes = dict[str, Any]


class Instruments:
    """aiopublish's tracer and its two metric instruments, from the chosen (or global) providers."""

    def __init__(self, tracer_provider: Any, meter_provider: Any, *, version: str) -> None:
        self.tracer: Tracer = trace.get_tracer(SCOPE, version, tracer_provider, schema_url=SCHEMA_URL)
        meter = metrics.get_meter(SCOPE, version, meter_provider, schema_url=SCHEMA_URL)
        self.duration: Histogram = meter.create_histogram(
            DURATION,
            unit="s",
            description="Duration of messaging operation initiated by a producer or consumer client.",
            explicit_bucket_boundaries_advisory=list(semconv.DURATION_BUCKETS),
        )
        self.sent: OtelCounter = meter.create_counter(
            SENT, unit="{message}", description="Number of messages producer attempted to send to the broker."
        )
        # Read when the instruments are built (at instrument(), or the first traced publish).
        self.duplicates = semconv.wants_duplicates(os.environ)
        self._servers: dict[str, tuple[str, int] | None] = {}
        # Until the application sets a global provider (it can be set only once), spans and
        # metrics sent to the global ones would record nothing: skip them, pass on a trace.
        self._globals_pending = tracer_provider is None and meter_provider is None and _globals_unset()

    def _recording(self) -> bool:
        if self._globals_pending:
            if _globals_unset():
                return False
            self._globals_pending = False
        return True

    def server(self, node: str | None) -> tuple[str, int] | None:
        """(host, port) of a node URL, parsed once per node."""
        if node is None:
            return None
        try:
            return self._servers[node]
        except KeyError:
            server = self._servers[node] = semconv.server_of(node)
            return server

    def start_publish(self, options: Options, link: LinkLike) -> NoRecord:
        if not self._recording():
            return _pass_on()
        return PublishRecord(self, options, link)

    def start_batch(self, options: Options, link: LinkLike, count: int, routing_keys: Sequence[str] | None) -> NoRecord:
        if not self._recording():
            return _pass_on()
        return BatchRecord(self, options, link, count, routing_keys)


# What get_tracer_provider() and get_meter_provider() read first: their module globals, None until
# a provider is set. Read directly while both are None, as they are in an application that has the
# API but no SDK (often a dependency's dependency), a publish skips the two os.environ look-ups those
# calls make, about a tenth of its client time. A provider named by an environment variable is only
# loaded by those calls, so with one named at start-up they are used as they are.
_UNKNOWN = object()
_PROVIDERS_FROM_ENV = any(name in os.environ for name in ("OTEL_PYTHON_TRACER_PROVIDER", "OTEL_PYTHON_METER_PROVIDER"))


def _globals_unset() -> bool:
    """Whether neither global provider is set yet (both are still OpenTelemetry's proxies)."""
    if (
        not _PROVIDERS_FROM_ENV
        and getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None
        and getattr(_metrics_internal, "_METER_PROVIDER", _UNKNOWN) is None
    ):
        return True
    meter_provider = metrics.get_meter_provider()
    return isinstance(trace.get_tracer_provider(), ProxyTracerProvider) and (
        type(meter_provider).__name__ == "_ProxyMeterProvider"  # private class: no public way to ask
    )


class _PassOn(NoRecord):
    """No span, no metric: only the incoming trace context goes into the headers."""

    __slots__ = ()

    def headers(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier


_PASS_ON = _PassOn()


def _pass_on() -> NoRecord:
    if trace.get_current_span().get_span_context().is_valid:
        return _PASS_ON
    return NO_SPAN


class _Record(NoRecord):
    """What a publish's and a batch's records share: the span, the server, the metrics at the end."""

    __slots__ = ("_base", "_error_type", "_instruments", "_late", "_server", "_span", "_start")

    def __init__(self, instruments: Instruments, exchange: str, routing_key: str | None, link: LinkLike) -> None:
        self._instruments = instruments
        self._start = time.perf_counter()
        self._error_type: str | None = None
        # Attributes learnt after the start, set on the span in one call at the end (cheaper).
        self._late: Attributes = {}
        common_key = routing_key or ""
        destination = semconv.destination_name(exchange, common_key)
        if routing_key is None:  # the batch's routing keys differ: only the exchange applies to all
            destination = exchange or semconv.DEFAULT_EXCHANGE
        # The attributes both the span and the metrics carry.
        self._base: Attributes = {
            "messaging.system": semconv.SYSTEM,
            "messaging.operation.name": semconv.OPERATION_NAME,
            "messaging.operation.type": semconv.OPERATION_TYPE,
            "messaging.destination.name": destination,
        }
        self._server = instruments.server(link.node)
        attributes = dict(self._base)
        if instruments.duplicates:  # messaging/dup: the names aiopublish used before, where they differ
            name = f"{semconv.legacy_destination(exchange)} publish"
            attributes["messaging.destination.name"] = semconv.legacy_destination(exchange)
        else:
            name = f"{semconv.OPERATION_NAME} {semconv.span_destination(exchange, common_key)}"
        if common_key:
            attributes["messaging.rabbitmq.destination.routing_key"] = common_key
        if self._server is not None:
            attributes["server.address"], attributes["server.port"] = self._server
        self._span: Span = instruments.tracer.start_span(
            name,
            kind=SpanKind.PRODUCER,
            attributes=self._more_start_attributes(attributes),
            record_exception=False,
            set_status_on_exception=False,
        )

    def _more_start_attributes(self, attributes: Attributes) -> Attributes:
        return attributes

    def headers(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier

    def _at_node(self, link: LinkLike) -> None:
        """Take server.* from the node in use now (after a failover: the new one)."""
        server = self._instruments.server(link.node)
        if server is not None and server != self._server:
            self._server = server
            self._late["server.address"], self._late["server.port"] = server

    def retried(self, state: RetryState, error: str) -> None:
        self._span.add_event(
            RETRY_EVENT,
            {
                "aiopublish.retry.attempt": state.attempt,
                "aiopublish.retry.wait": state.next_wait,
                "error.type": semconv.error_type(state.exception),
                "exception.type": type(state.exception).__qualname__,
                "exception.message": error,
            },
        )

    def _fail(self, exc: BaseException) -> None:
        span = self._span
        self._error_type = semconv.error_type(exc)
        if span.is_recording():
            if isinstance(exc, Exception):
                span.record_exception(exc)
            self._late["error.type"] = self._error_type
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))

    def _metric_attributes(self, error_type: str | None) -> Attributes:
        attributes = dict(self._base)
        if self._server is not None:
            attributes["server.address"], attributes["server.port"] = self._server
        if error_type is not None:
            attributes["error.type"] = error_type
        return attributes

    def _end(self) -> None:
        if self._span.is_recording():
            self._span.set_attributes(self._late)
        self._span.end()
        self._instruments.duration.record(time.perf_counter() - self._start, self._metric_attributes(self._error_type))


class PublishRecord(_Record):
    """The span and metrics of one publish()."""

    __slots__ = ("_correlation_id", "_written")

    def __init__(self, instruments: Instruments, options: Options, link: LinkLike) -> None:
        self._correlation_id = options.correlation_id
        self._written = False
        super().__init__(instruments, options.exchange, options.routing_key, link)

    def _more_start_attributes(self, attributes: Attributes) -> Attributes:
        if self._correlation_id:
            attributes["messaging.message.conversation_id"] = self._correlation_id
        return attributes

    def set_message(self, message_id: str, body_size: int) -> None:
        self._late["messaging.message.id"] = message_id
        self._late["messaging.message.body.size"] = body_size

    def sent(self, link: LinkLike, channel: object) -> None:
        self._written = True
        self._at_node(link)
        late = self._late
        tag = getattr(channel, "last_delivery_tag", None)
        if tag is not None:
            late["messaging.rabbitmq.message.delivery_tag"] = tag
        version = getattr(channel, "protocol_version", None)
        if version is not None:  # AMQP 1.0 says so; 0-9-1 spans stay as they were
            late["network.protocol.name"] = "amqp"
            late["network.protocol.version"] = version
        peer = semconv.peer_of(getattr(channel, "connection", None))
        if peer is not None:
            late["network.peer.address"] = peer[0]
            if peer[1] is not None:
                late["network.peer.port"] = peer[1]

    def finish(self, exc: BaseException | None, status: str = "failed") -> None:
        if exc is None:
            self._late["aiopublish.outcome"] = status
        else:
            outcome = semconv.error_type(exc)
            self._late["aiopublish.outcome"] = outcome if outcome in ("returned", "nacked") else "failed"
            self._fail(exc)
        self._end()
        if self._written:  # refused before sending (bad option, timeout in the queue): not a sent message
            self._instruments.sent.add(1, self._metric_attributes(self._error_type))


class BatchRecord(_Record):
    """The span and metrics of one publish_many() batch: counts of outcomes, not a span per message."""

    __slots__ = ("_count", "_link", "_written")

    def __init__(
        self,
        instruments: Instruments,
        options: Options,
        link: LinkLike,
        count: int,
        routing_keys: Sequence[str] | None,
    ) -> None:
        self._count = count
        self._written: set[int] = set()
        common: str | None = options.routing_key
        if routing_keys is not None:
            keys = set(routing_keys)
            common = keys.pop() if len(keys) == 1 else (None if keys else options.routing_key)
        self._link = link
        super().__init__(instruments, options.exchange, common, link)

    def _more_start_attributes(self, attributes: Attributes) -> Attributes:
        attributes["messaging.batch.message_count"] = self._count
        return attributes

    def written(self, todo: Sequence[int], count: int) -> None:
        self._written.update(todo[:count])

    def finish(self, exc: BaseException | None, status: str = "failed") -> None:
        """End a batch that did not get to its results (cancelled): every message counts as failed."""
        if exc is None:
            return
        self._at_node(self._link)
        self._fail(exc)
        self._end()
        self._count_sent({index: self._error_type for index in self._written})

    def finish_batch(self, results: Sequence[PublishResult]) -> None:
        self._at_node(self._link)
        span = self._span
        outcomes: Counter[str] = Counter(result.status for result in results)
        errors = {result.index: semconv.error_type(result.error) for result in results if result.error is not None}
        self._late.update({f"aiopublish.batch.{outcome}": outcomes[outcome] for outcome in OUTCOMES})
        if errors:
            first = next(result for result in results if result.error is not None)
            assert first.error is not None
            self._error_type = self._late["error.type"] = errors[first.index]
            if span.is_recording():
                span.set_status(
                    Status(StatusCode.ERROR, f"{len(errors)} of {len(results)} messages failed; first: {first.error}")
                )
        self._end()
        self._count_sent({index: errors.get(index) for index in self._written})

    def _count_sent(self, error_types: dict[int, str | None]) -> None:
        for error_type, count in Counter(error_types.values()).items():
            self._instruments.sent.add(count, self._metric_attributes(error_type))
