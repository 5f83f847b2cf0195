"""OpenTelemetry over AMQP 1.0: the same span as over 0-9-1, with the protocol named (no broker needed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import aiopublish
from aiopublish import Publisher, _tracing
from tests.amqp1.stub import StubPeer


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """aiopublish instrumented with providers of this test's own; the suite's state put back after."""
    saved = (_tracing.enabled, _tracing._providers, _tracing._instruments)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    meters = MeterProvider()
    aiopublish.instrument(tracer_provider=provider, meter_provider=meters)
    try:
        yield spans
    finally:
        _tracing.enabled, _tracing._providers, _tracing._instruments = saved
        provider.shutdown()
        meters.shutdown()


async def test_a_publish_span_names_amqp_1_0(exporter: InMemorySpanExporter) -> None:
    """The span carries messaging.system rabbitmq, network.protocol.name/version amqp 1.0 and the peer."""
    async with StubPeer(initial_credit=5) as peer, Publisher(peer.url, routing_key="q", timeout=5) as publisher:
        await publisher.publish(b"x", message_id="m-1")
    [span] = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["network.protocol.name"] == "amqp"
    assert attributes["network.protocol.version"] == "1.0"
    assert attributes["network.peer.address"] == "127.0.0.1"
    assert attributes["messaging.message.id"] == "m-1"
    assert attributes["aiopublish.outcome"] == "confirmed"
