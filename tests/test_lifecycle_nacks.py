"""retry_nacked: a nacked publish is retried under the retry policy within its timeout (off by default, like nameko)."""

from __future__ import annotations

import asyncio

import pytest

from aiopublish import Publisher, RetryPolicy, UndeliverableMessage
from aiopublish.retry import stop_never, wait_fixed
from tests.broker import Broker, until

RETRY_FAST = RetryPolicy(stop=stop_never, wait=wait_fixed(0.05))


async def full_queue(broker: Broker) -> str:
    """A queue holding one message already, that nacks every further publish (x-overflow: reject-publish)."""
    queue = await broker.queue(**{"x-max-length": 1, "x-overflow": "reject-publish"})
    channel = await broker.channel()
    await channel.basic_publish(b"first", routing_key=queue)
    assert await broker.depth(queue) == 1
    return queue


async def test_nack_raises_at_once_by_default(amqp_url: str, broker: Broker) -> None:
    """Without retry_nacked a nack is final: UndeliverableMessage("nacked") at once, nothing retried."""
    queue = await full_queue(broker)
    async with Publisher(amqp_url, routing_key=queue, retry_policy=RETRY_FAST) as publisher:
        with pytest.raises(UndeliverableMessage, match="nacked") as caught:
            await publisher.publish("refused")
        assert caught.value.reason == "nacked"
        assert publisher.metrics.retried == 0


async def test_retry_nacked_waits_for_room_in_the_queue(amqp_url: str, broker: Broker) -> None:
    """With retry_nacked (per call) a reject-publish queue's nacks turn into waiting until a consumer makes room."""
    queue = await full_queue(broker)
    async with Publisher(amqp_url, routing_key=queue, retry_policy=RETRY_FAST) as publisher:
        task = asyncio.create_task(publisher.publish("waits for room", retry_nacked=True, timeout=20))
        await until(lambda: publisher.metrics.retried >= 3)
        assert not task.done()
        assert (await broker.get(queue)).body == b"first"  # a consumer takes the message: room for one
        await task
        assert publisher.metrics.nacked == 0
    assert [m.body for m in await broker.get_all(queue)] == [b'"waits for room"']


async def test_retry_nacked_gives_up_with_the_nack_at_the_timeout(amqp_url: str, broker: Broker) -> None:
    """A queue that never makes room: UndeliverableMessage("nacked") once the timeout passes, not later."""
    queue = await full_queue(broker)
    async with Publisher(amqp_url, routing_key=queue, retry_policy=RETRY_FAST, retry_nacked=True) as publisher:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UndeliverableMessage, match="nacked"):
            await publisher.publish("never fits", timeout=1)
        # On the loop's clock: not before the timeout, and it ended there (the policy alone never stops).
        assert 1.0 <= loop.time() - started < 30
        assert publisher.metrics.retried >= 5 and publisher.metrics.nacked == 1


async def test_publish_many_honours_retry_nacked(amqp_url: str, broker: Broker) -> None:
    """publish_many(retry_nacked=True) publishes the nacked messages again until they fit or the timeout passes."""
    queue = await broker.queue(**{"x-max-length": 3, "x-overflow": "reject-publish"})
    async with Publisher(amqp_url, routing_key=queue, retry_policy=RETRY_FAST) as publisher:
        task = asyncio.create_task(publisher.publish_many(list(range(6)), retry_nacked=True, timeout=20))
        await until(lambda: publisher.metrics.retried >= 2)
        # Make room for the rest: take exactly the 3 the queue holds. Draining it until empty
        # could also take messages the retries put in meanwhile, and leave it less than full.
        channel = await broker.channel()
        taken = [(await channel.basic_get(queue, no_ack=True)).body for _ in range(3)]
        results = await task
        refused = await publisher.publish_many(list(range(6, 12)), retry_nacked=False)  # the queue is full again
    assert all(r.ok for r in results), results
    assert [r.status for r in refused] == ["nacked"] * 6
    assert sorted(taken + [m.body for m in await broker.get_all(queue)]) == [str(i).encode() for i in range(6)]


def test_retry_nacked_must_be_a_bool() -> None:
    """retry_nacked="yes" is a TypeError naming the option, in the constructor and per call."""
    with pytest.raises(TypeError, match="retry_nacked must be True or False"):
        Publisher("amqp://localhost/", retry_nacked="yes")  # type: ignore[arg-type]
