"""Opening, closing and sharing: lazy connect, idempotent close, one channel for concurrent publishes."""

from __future__ import annotations

import asyncio

import pytest

from aiopublish import Publisher, PublisherClosed
from tests.broker import Broker, until


async def test_first_publish_connects_lazily(amqp_url: str, broker: Broker) -> None:
    """A publisher that was never entered connects at its first publish."""
    queue = await broker.queue()
    publisher = Publisher(amqp_url, routing_key=queue)
    assert publisher.state.connections_opened == 0 and not publisher.state.connected
    try:
        await publisher.publish("lazy")
        assert publisher.state.connections_opened == 1 and publisher.state.connected
    finally:
        await publisher.close()
    assert (await broker.get(queue)).body == b'"lazy"'


async def test_close_is_idempotent_and_publish_after_close_raises(amqp_url: str, broker: Broker) -> None:
    """close() twice is fine; publish() after close raises PublisherClosed and sends nothing."""
    queue = await broker.queue()
    publisher = Publisher(amqp_url, routing_key=queue)
    async with publisher:
        await publisher.publish("1")
    await publisher.close()
    assert publisher.is_closed
    with pytest.raises(PublisherClosed, match="closed"):
        await publisher.publish("2")
    assert await broker.depth(queue) == 1


async def test_close_without_connecting(amqp_url: str) -> None:
    """Closing a publisher that never connected does nothing and leaves it closed."""
    publisher = Publisher(amqp_url)
    await publisher.close()
    with pytest.raises(PublisherClosed):
        await publisher.connect()


async def test_close_waits_for_in_flight_confirms(amqp_url: str, broker: Broker) -> None:
    """close() while publishes wait for confirms lets them finish: all are confirmed and stored."""
    queue = await broker.queue()
    publisher = Publisher(amqp_url, routing_key=queue)
    await publisher.connect()
    tasks = [asyncio.create_task(publisher.publish(i)) for i in range(500)]
    # Let every task write its frames; none can have its confirm yet (the broker needs a round trip).
    await until(lambda: publisher.in_flight == 500)
    await publisher.close()
    assert all(task.done() for task in tasks)
    assert [task.exception() for task in tasks] == [None] * 500
    assert await broker.depth(queue) == 500


async def test_concurrent_publishes_share_one_connection_and_channel(amqp_url: str, broker: Broker) -> None:
    """Many concurrent publishes use one connection and one channel, and all are confirmed."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        before = publisher.state
        await asyncio.gather(*(publisher.publish(i) for i in range(1000)))
        after = publisher.state
        assert (after.connections_opened, after.channel_number) == (before.connections_opened, 1)
        assert after.in_flight == 0
    assert sorted(int(m.body) for m in await broker.get_all(queue)) == list(range(1000))


async def test_cancelled_publish_leaves_nothing_pending(amqp_url: str, broker: Broker) -> None:
    """A publish cancelled while waiting for its confirm removes its record; later publishes are unaffected."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        task = asyncio.create_task(publisher.publish("cancelled"))
        await until(lambda: publisher.in_flight == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert publisher.in_flight == 0
        await publisher.publish("next")
        assert publisher.in_flight == 0


async def test_repr_masks_password(amqp_url: str) -> None:
    """The publisher's repr shows the URL without its password."""
    publisher = Publisher("amqp://user:s3cr3t-pw@127.0.0.1:5672/")
    assert "s3cr3t-pw" not in repr(publisher)
    assert "******" in repr(publisher)
    await publisher.close()
