"""get_connection and get_producer: pooled aio-pika objects, as nameko's helpers are."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from typing import Any

import aio_pika
import pytest

import aiopublish
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


async def test_close_pools_closes_connections_and_channels(amqp_url: str) -> None:
    """close_pools() closes every pooled channel and connection of this loop; the next use opens new ones."""
    async with get_producer(amqp_url) as producer, get_connection(amqp_url) as connection:
        assert not connection.is_closed
    async with get_connection(amqp_url, transport_options={"heartbeat": 20}) as other:
        pass
    await aiopublish.close_pools()
    assert producer.is_closed
    assert connection.is_closed
    assert other.is_closed
    await aiopublish.close_pools()  # idempotent
    async with get_connection(amqp_url) as reopened:
        assert reopened is not connection
        assert not reopened.is_closed
    await aiopublish.close_pools()
    assert reopened.is_closed


async def test_concurrent_first_use_opens_one_connection(amqp_url: str) -> None:
    """Ten get_connection() entered at once before any connection exists all get the same one."""

    async def enter() -> object:
        async with get_connection(amqp_url) as connection:
            return connection

    connections = await asyncio.gather(*(enter() for _ in range(10)))
    assert len({id(connection) for connection in connections}) == 1
    await aiopublish.close_pools()


@pytest.mark.parametrize("call_close", [True, False], ids=["close_pools", "forgotten"])
async def test_nothing_pending_at_exit(amqp_url: str, broker: Broker, call_close: bool) -> None:
    """A program using get_producer ends with nothing pending, whether or not it calls close_pools()."""
    queue = await broker.queue()
    script = textwrap.dedent(
        f"""
        import asyncio, aio_pika, aiopublish

        async def main():
            async with aiopublish.get_producer({amqp_url!r}) as producer:
                await producer.default_exchange.publish(aio_pika.Message(b"at exit"), routing_key={queue!r})
            if {call_close!r}:
                await aiopublish.close_pools()

        asyncio.run(main())
        print("done")
        """
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "dev", "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    errors = stderr.decode()
    assert process.returncode == 0, errors
    assert stdout.decode().strip() == "done"
    assert "Task was destroyed" not in errors
    assert "Event loop is closed" not in errors
    assert errors == ""
    assert (await broker.get(queue)).body == b"at exit"


@pytest.mark.parametrize("helper", [get_connection, get_producer])
async def test_amqplain_is_refused_with_the_reason(amqp_url: str, helper: Any) -> None:
    """AMQPLAIN on the aio-pika helpers is a ValueError saying aio-pika cannot do it and Publisher can."""
    with pytest.raises(ValueError, match=r"cannot log in with AMQPLAIN: .*aio-pika.*Publisher\(\.\.\., login_method"):
        async with helper(amqp_url, login_method="amqplain"):
            pass
