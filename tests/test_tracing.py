"""OpenTelemetry tracing against the real broker: one PRODUCER span per publish, its context in the headers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    ProxyTracerProvider,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
)

from aiopublish import NotFound, Publisher, UndeliverableMessage, _tracing
from tests.broker import Broker


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """aiopublish's spans, through a provider of this module's own (the global one can be set only once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _tracing.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        _tracing.set_tracer_provider(None)
        provider.shutdown()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exporter.clear()
    yield exporter
    exporter.clear()


def only_span(spans: InMemorySpanExporter) -> ReadableSpan:
    finished = spans.get_finished_spans()
    assert len(finished) == 1, [s.name for s in finished]
    return finished[0]


def traceparent_ids(value: str) -> tuple[int, int]:
    """(trace id, span id) of a W3C traceparent header."""
    version, trace_id, span_id, flags = value.split("-")
    assert (version, len(trace_id), len(span_id), len(flags)) == ("00", 32, 16, 2)
    return int(trace_id, 16), int(span_id, 16)


def test_enabled_when_the_api_imports() -> None:
    """With opentelemetry-api installed (the otel extra), tracing is enabled."""
    assert _tracing.enabled is True


async def test_publish_makes_one_producer_span(amqp_url: str, broker: Broker, spans: InMemorySpanExporter) -> None:
    """A confirmed publish to the default exchange gives one PRODUCER span with the messaging attributes."""
    queue = await broker.queue()
    async with Publisher(amqp_url) as publisher:
        await publisher.publish({"hello": "world"}, routing_key=queue)
    message = await broker.get(queue)
    span = only_span(spans)
    assert span.name == "amq.default publish"
    assert span.kind is SpanKind.PRODUCER
    assert span.instrumentation_scope is not None and span.instrumentation_scope.name == "aiopublish"
    assert dict(span.attributes or {}) == {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "amq.default",
        "messaging.rabbitmq.destination.routing_key": queue,
        "messaging.message.id": message.header.properties.message_id,
        "messaging.message.body.size": len(message.body),
        "aiopublish.outcome": "confirmed",
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_traceparent_header_is_the_span(amqp_url: str, broker: Broker, spans: InMemorySpanExporter) -> None:
    """The message read back carries a traceparent whose trace id and span id are the publish span's."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("x")
    headers = (await broker.get(queue)).header.properties.headers or {}
    span = only_span(spans)
    assert span.context is not None
    assert traceparent_ids(str(headers["traceparent"])) == (span.context.trace_id, span.context.span_id)


async def test_named_exchange_and_caller_headers(amqp_url: str, broker: Broker, spans: InMemorySpanExporter) -> None:
    """To a named exchange the span is "<exchange> publish"; the caller's headers arrive beside the traceparent."""
    queue = await broker.queue()
    exchange = await broker.exchange("direct")
    await broker.bind(queue, exchange, "rk")
    async with Publisher(amqp_url, headers={"from": "constructor"}) as publisher:
        await publisher.publish("x", exchange=exchange, routing_key="rk", extra_headers={"extra": "1"})
    headers = (await broker.get(queue)).header.properties.headers or {}
    span = only_span(spans)
    assert span.name == f"{exchange} publish"
    assert (span.attributes or {})["messaging.destination.name"] == exchange
    assert headers["from"] == "constructor"
    assert headers["extra"] == "1"
    assert "traceparent" in headers


async def test_publish_inside_a_span_is_its_child(amqp_url: str, broker: Broker, spans: InMemorySpanExporter) -> None:
    """A publish made inside an application span is a child of it, in the same trace the message carries."""
    queue = await broker.queue()
    provider = _tracing._provider
    assert provider is not None
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        with provider.get_tracer("app").start_as_current_span("handle request") as parent:
            await publisher.publish("x")
    headers = (await broker.get(queue)).header.properties.headers or {}
    publish = next(s for s in spans.get_finished_spans() if s.name.endswith(" publish"))
    assert publish.parent is not None
    assert publish.parent.span_id == parent.get_span_context().span_id
    assert traceparent_ids(str(headers["traceparent"]))[0] == parent.get_span_context().trace_id


async def test_tracestate_travels(amqp_url: str, broker: Broker, spans: InMemorySpanExporter) -> None:
    """An incoming trace's tracestate is sent along with the traceparent."""
    queue = await broker.queue()
    incoming = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1")]),
    )
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        with trace.use_span(NonRecordingSpan(incoming)):
            await publisher.publish("x")
    headers = (await broker.get(queue)).header.properties.headers or {}
    assert headers["tracestate"] == "vendor=v1"
    assert traceparent_ids(str(headers["traceparent"]))[0] == incoming.trace_id
    assert only_span(spans).parent == incoming


async def test_returned_publish_is_an_error_span(amqp_url: str, broker: Broker, spans: InMemorySpanExporter) -> None:
    """A mandatory publish no queue takes ends its span with outcome "returned" and an error status."""
    exchange = await broker.exchange("direct")
    async with Publisher(amqp_url) as publisher:
        with pytest.raises(UndeliverableMessage):
            await publisher.publish("x", exchange=exchange, routing_key="nowhere", mandatory=True)
    span = only_span(spans)
    attributes = span.attributes or {}
    assert attributes["aiopublish.outcome"] == "returned"
    assert attributes["error.type"] == "returned"
    assert span.status.status_code is StatusCode.ERROR
    assert "NO_ROUTE" in (span.status.description or "")
    assert [event.name for event in span.events] == ["exception"]


async def test_nacked_publish_is_an_error_span(amqp_url: str, broker: Broker, spans: InMemorySpanExporter) -> None:
    """A publish the broker nacks (full queue, reject-publish) ends its span with outcome "nacked", an error."""
    queue = await broker.queue(**{"x-max-length": 1, "x-overflow": "reject-publish"})
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("fits")
        with pytest.raises(UndeliverableMessage):
            await publisher.publish("refused")
    first, second = spans.get_finished_spans()
    assert (first.attributes or {})["aiopublish.outcome"] == "confirmed"
    assert (second.attributes or {})["aiopublish.outcome"] == "nacked"
    assert second.status.status_code is StatusCode.ERROR


async def test_channel_error_is_a_failed_span(amqp_url: str, broker: Broker, spans: InMemorySpanExporter) -> None:
    """A publish to a missing exchange ends its span as "failed" with error.type NotFound."""
    missing = broker.name("x")
    async with Publisher(amqp_url) as publisher:
        with pytest.raises(NotFound):
            await publisher.publish("x", exchange=missing, routing_key="k")
    span = only_span(spans)
    assert (span.attributes or {})["aiopublish.outcome"] == "failed"
    assert (span.attributes or {})["error.type"] == "NotFound"
    assert span.status.status_code is StatusCode.ERROR


async def test_disabled_tracing_makes_no_span_and_no_header(
    amqp_url: str, broker: Broker, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With tracing's `enabled` False no span is made and no traceparent header is sent."""
    monkeypatch.setattr(_tracing, "enabled", False)
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("x", headers={"kept": "yes"})
    headers = (await broker.get(queue)).header.properties.headers or {}
    assert spans.get_finished_spans() == ()
    assert headers == {"kept": "yes"}


async def test_without_sdk_only_an_incoming_trace_is_passed_on(
    amqp_url: str, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the API but no SDK, a publish sends no trace headers, except an incoming trace's context, unchanged."""
    # The suite hands its SDK provider to aiopublish alone (set_tracer_provider), never globally.
    assert isinstance(trace.get_tracer_provider(), ProxyTracerProvider), "no global tracer provider may be set"
    monkeypatch.setattr(_tracing, "_provider", None)  # this module's provider off, for this test only
    monkeypatch.setattr(_tracing, "_tracer", None)
    queue = await broker.queue()
    incoming = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("alone")
        with trace.use_span(NonRecordingSpan(incoming)):
            await publisher.publish("inside")
    alone, inside = await broker.get_all(queue)
    assert alone.header.properties.headers in (None, {})
    assert traceparent_ids(str((inside.header.properties.headers or {})["traceparent"])) == (0x1234, 0x5678)
