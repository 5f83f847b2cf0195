"""The two messaging metrics against the real broker: operation duration and sent messages, with their attributes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import TracerProvider

import aiopublish
from aiopublish import ConnectionFailed, NotFound, Publisher, _tracing
from tests.broker import Broker
from tests.faults.proxy import TcpProxy

DURATION = "messaging.client.operation.duration"
SENT = "messaging.client.sent.messages"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class Meters:
    """aiopublish's metrics read by an in-memory reader of the test's own."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        self.tracer_provider = TracerProvider()  # spans go nowhere: only the metrics matter here

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                assert scope.scope.name == "aiopublish"
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def histogram(self) -> list[HistogramDataPoint]:
        return self.points(DURATION)

    def sent(self) -> dict[frozenset[tuple[str, Any]], int]:
        """The sent-messages counter, by attribute set."""
        points: list[NumberDataPoint] = self.points(SENT)
        return {frozenset((p.attributes or {}).items()): int(p.value) for p in points}


@pytest.fixture
def meters() -> Iterator[Meters]:
    """Instrument aiopublish for one test; put back the state the suite had before."""
    saved = (_tracing.enabled, _tracing._providers, _tracing._instruments)
    meters = Meters()
    aiopublish.instrument(tracer_provider=meters.tracer_provider, meter_provider=meters.provider)
    try:
        yield meters
    finally:
        _tracing.enabled, _tracing._providers, _tracing._instruments = saved
        meters.provider.shutdown()
        meters.tracer_provider.shutdown()


def attributes(url: str, destination: str, error_type: str | None = None) -> frozenset[tuple[str, Any]]:
    """The attribute set the conventions require on both metrics for a publish through `url`."""
    parts = urlsplit(url)
    found = {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.destination.name": destination,
        "server.address": parts.hostname or "127.0.0.1",
        "server.port": parts.port or 5672,
    }
    if error_type is not None:
        found["error.type"] = error_type
    return frozenset(found.items())


async def test_confirmed_publishes(amqp_url: str, broker: Broker, meters: Meters) -> None:
    """Three confirmed publishes: one duration series of count 3 in the conventions' buckets, and 3 sent."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        for n in range(3):
            await publisher.publish(n)
    assert await broker.depth(queue) == 3
    (point,) = meters.histogram()
    assert frozenset((point.attributes or {}).items()) == attributes(amqp_url, queue)
    assert point.count == 3
    assert tuple(point.explicit_bounds) == BUCKETS
    assert 0 < point.sum < 30
    assert meters.sent() == {attributes(amqp_url, queue): 3}


async def test_failures_carry_error_type(amqp_url: str, broker: Broker, meters: Meters) -> None:
    """A NotFound and a returned publish were written: both metrics count them under their error.type."""
    queue = await broker.queue()
    missing = broker.name("x")
    exchange = await broker.exchange("direct")
    async with Publisher(amqp_url) as publisher:
        await publisher.publish("fine", routing_key=queue)
        with pytest.raises(NotFound):
            await publisher.publish("lost", exchange=missing, routing_key="k")
        with pytest.raises(aiopublish.UndeliverableMessage):
            await publisher.publish("back", exchange=exchange, routing_key="k", mandatory=True)
    ok = attributes(amqp_url, queue)
    not_found = attributes(amqp_url, f"{missing}:k", "NotFound")
    returned = attributes(amqp_url, f"{exchange}:k", "returned")
    assert meters.sent() == {ok: 1, not_found: 1, returned: 1}
    histogram = {frozenset((p.attributes or {}).items()): p.count for p in meters.histogram()}
    assert histogram == {ok: 1, not_found: 1, returned: 1}


async def test_never_sent_is_not_counted(broker: Broker, tcp_proxy: TcpProxy, meters: Meters) -> None:
    """A publish that never got a connection has a duration with error.type, but no sent message."""
    queue = await broker.queue()
    tcp_proxy.refuse(True)
    publisher = Publisher(tcp_proxy.url(), routing_key=queue, retry=False)
    with pytest.raises(ConnectionFailed):
        await publisher.publish("x")
    await publisher.close()
    assert meters.sent() == {}
    (point,) = meters.histogram()
    point_attributes = dict(point.attributes or {})
    assert point_attributes["error.type"] == "ConnectionFailed"
    assert "server.address" not in point_attributes  # no node was ever connected to
    assert point.count == 1


async def test_publish_many_counts_each_written_message(amqp_url: str, broker: Broker, meters: Meters) -> None:
    """A batch: one duration point for the whole call; sent counts every message by its own outcome."""
    exchange = await broker.exchange("direct")
    ok = await broker.queue()
    full = await broker.queue(**{"x-max-length": 0, "x-overflow": "reject-publish"})
    await broker.bind(ok, exchange, "ok")
    await broker.bind(full, exchange, "full")
    keys = ["ok", "full", "ok", "nowhere", "ok", "full", "ok"]
    async with Publisher(amqp_url, exchange=exchange, mandatory=True) as publisher:
        results = await publisher.publish_many(range(len(keys)), routing_keys=keys)
    assert [r.status for r in results].count("confirmed") == 4
    assert await broker.depth(ok) == 4
    assert meters.sent() == {
        attributes(amqp_url, exchange): 4,
        attributes(amqp_url, exchange, "nacked"): 2,
        attributes(amqp_url, exchange, "returned"): 1,
    }
    (point,) = meters.histogram()
    assert point.count == 1
    first_failure = next(r for r in results if not r.ok)
    assert frozenset((point.attributes or {}).items()) == attributes(amqp_url, exchange, first_failure.status)


async def test_publish_many_refused_before_sending(broker: Broker, tcp_proxy: TcpProxy, meters: Meters) -> None:
    """A batch that never reached a broker counts no sent message; its duration names the error."""
    tcp_proxy.refuse(True)
    publisher = Publisher(tcp_proxy.url(), routing_key="q", retry=False)
    results = await publisher.publish_many(["a", "b"])
    await publisher.close()
    assert [r.status for r in results] == ["failed", "failed"]
    assert meters.sent() == {}
    (point,) = meters.histogram()
    assert (point.attributes or {})["error.type"] == "ConnectionFailed"


async def test_metrics_without_a_tracer_provider_still_count(amqp_url: str, broker: Broker, meters: Meters) -> None:
    """With only a meter provider given (spans to the unset global provider), the metrics are recorded."""
    aiopublish.instrument(meter_provider=meters.provider)
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("x")
    message = await broker.get(queue)
    assert "traceparent" not in (message.header.properties.headers or {})  # no SDK provider: no trace to pass on
    assert meters.sent() == {attributes(amqp_url, queue): 1}
