"""get_connection and get_producer: pooled aio-pika objects, as nameko's helpers are."""

from __future__ import annotations

import aio_pika

from aiopublish import get_connection, get_producer
from tests.broker import Broker


async def test_get_connection_is_pooled(amqp_url: str) -> None:
    """Two sequential get_connection() with the same arguments yield the same robust connection."""
    async with get_connection(amqp_url) as first:
        pass
    async with get_connection(amqp_url) as second:
        assert isinstance(second, aio_pika.abc.AbstractRobustConnection)
    assert first is second
    async with get_connection(amqp_url, transport_options={"heartbeat": 30}) as other:
        assert other is not first
    await first.close()
    await other.close()


async def test_get_producer_confirm_mode_and_pooling(amqp_url: str, broker: Broker) -> None:
    """get_producer gives a confirm-mode channel, the same for the same flag, another for the other flag."""
    queue = await broker.queue()
    async with get_producer(amqp_url) as confirming:
        assert confirming.publisher_confirms is True
        await confirming.default_exchange.publish(aio_pika.Message(b"via producer"), routing_key=queue)
    async with get_producer(amqp_url, confirms=True) as again:
        assert again is confirming
    async with get_producer(amqp_url, confirms=False) as plain:
        assert plain is not confirming
        assert plain.publisher_confirms is False
    assert (await broker.get(queue)).body == b"via producer"
    async with get_connection(amqp_url) as connection:
        await connection.close()
