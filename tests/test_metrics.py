"""Publisher.metrics against the real broker: every counter matches what the broker did."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import pytest

from aiopublish import NotFound, Publisher, SerializationError, UndeliverableMessage
from aiopublish._metrics import Metrics
from tests.broker import Broker


async def test_counters_after_confirmed_returned_and_nacked(amqp_url: str, broker: Broker) -> None:
    """N confirmed, one returned and one nacked publish give exactly those counts and nothing in flight."""
    queue = await broker.queue()
    full = await broker.queue(**{"x-max-length": 1, "x-overflow": "reject-publish"})
    unrouted = await broker.exchange("direct")
    n = 25
    async with Publisher(amqp_url) as publisher:
        await asyncio.gather(*(publisher.publish({"n": i}, routing_key=queue) for i in range(n)))
        with pytest.raises(UndeliverableMessage) as returned:
            await publisher.publish("r", exchange=unrouted, routing_key="nowhere", mandatory=True)
        await publisher.publish("first", routing_key=full)
        with pytest.raises(UndeliverableMessage) as nacked:
            await publisher.publish("second", routing_key=full)
        metrics = publisher.metrics
    assert returned.value.reason == "returned"
    assert nacked.value.reason == "nacked"
    assert asdict(metrics) == asdict(
        Metrics(published=n + 3, confirmed=n + 1, returned=1, nacked=1, failed=2, retried=0, reconnects=0, in_flight=0)
    )
    assert len(await broker.get_all(queue)) == n
    assert await broker.depth(full) == 1


async def test_fresh_publisher_counts_nothing(amqp_url: str) -> None:
    """A publisher that has connected but not published reports all counters at zero."""
    async with Publisher(amqp_url) as publisher:
        assert asdict(publisher.metrics) == asdict(Metrics())


async def test_metrics_is_a_snapshot(amqp_url: str, broker: Broker) -> None:
    """The object `metrics` returns does not change with later publishes, and changing it changes nothing."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("one")
        before = publisher.metrics
        before.confirmed = 99
        await publisher.publish("two")
        after = publisher.metrics
    assert before.published == 1
    assert after.published == 2
    assert after.confirmed == 2


async def test_broker_channel_error_counts_as_failed(amqp_url: str, broker: Broker) -> None:
    """A publish to a missing exchange (404) is published once, failed once, not retried, not confirmed."""
    missing = broker.name("x")
    queue = await broker.queue()
    async with Publisher(amqp_url) as publisher:
        with pytest.raises(NotFound):
            await publisher.publish("x", exchange=missing, routing_key="k")
        await publisher.publish("after", routing_key=queue)
        metrics = publisher.metrics
    assert (metrics.published, metrics.confirmed, metrics.failed, metrics.retried) == (2, 1, 1, 0)
    assert (metrics.returned, metrics.nacked, metrics.reconnects, metrics.in_flight) == (0, 0, 0, 0)
    assert len(await broker.get_all(queue)) == 1


async def test_concurrent_publishes_all_counted(amqp_url: str, broker: Broker) -> None:
    """Hundreds of concurrent publishes are each counted once as published and confirmed."""
    queue = await broker.queue()
    n = 500
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await asyncio.gather(*(publisher.publish(i) for i in range(n)))
        metrics = publisher.metrics
    assert (metrics.published, metrics.confirmed, metrics.failed, metrics.in_flight) == (n, n, 0, 0)
    assert await broker.depth(queue) == n


async def test_serialization_error_counts_as_failed(amqp_url: str) -> None:
    """A publish that raises SerializationError counts as failed (and as nothing else)."""
    async with Publisher(amqp_url, routing_key="unused") as publisher:
        with pytest.raises(SerializationError):
            await publisher.publish(object())
        metrics = publisher.metrics
    assert (metrics.published, metrics.failed) == (0, 1)
