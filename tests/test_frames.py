"""ConfirmFrames against the real broker: returns among confirms, reads in pieces, and the channel's side of it.

The reader itself, driven without a broker, is in tests/unit/test_frames.py (and fuzzed in
tests/unit/test_frames_fuzz.py).
"""

from __future__ import annotations

import asyncio

import pytest
from pamqp import commands
from yarl import URL

from aiopublish import Publisher, PublishTimeout
from tests.broker import Broker, until
from tests.faults.proxy import TcpProxy
from tests.internals import channel_of


async def _returns_over_four_queues(url: str, broker: Broker, rounds: int, n: int = 2_000) -> None:
    """n mandatory publishes over 4 queues, every 7th unroutable, `rounds` times through publish_many
    and through concurrent publish(): exactly the unroutable ones are returned, per message."""
    queues = [await broker.queue() for _ in range(4)]
    keys = ["nowhere" if i % 7 == 3 else queues[i % 4] for i in range(n)]
    async with Publisher(url, mandatory=True) as publisher:
        for _ in range(rounds):
            results = await publisher.publish_many([{"i": i} for i in range(n)], routing_keys=keys)
            assert [r.status for r in results] == ["returned" if k == "nowhere" else "confirmed" for k in keys]
            outcomes = await asyncio.gather(
                *(publisher.publish({"i": i}, routing_key=k) for i, k in enumerate(keys)), return_exceptions=True
            )
            returned = [i for i, o in enumerate(outcomes) if isinstance(o, Exception)]
            assert returned == [i for i, k in enumerate(keys) if k == "nowhere"]
            assert all(getattr(outcomes[i], "reason", None) == "returned" for i in returned)
        assert publisher.metrics.reconnects == 0
    routed = [k for k in keys if k != "nowhere"]
    for queue in queues:
        assert await broker.depth(queue) == 2 * rounds * routed.count(queue)


async def test_returns_among_confirms_over_four_queues_are_each_reported(amqp_url: str, broker: Broker) -> None:
    """2,000 mandatory publishes over 4 queues, every 7th unroutable: RabbitMQ acks nearly one by one.

    Each return must be recorded before its ack settles the publish: exactly the unroutable
    ones are "returned", the rest confirmed, per message id, and each queue holds its own.
    """
    await _returns_over_four_queues(amqp_url, broker, rounds=3)


def test_on_uvloop_returns_confirms_and_deadlines_come_out_the_same(amqp_url: str) -> None:
    """The same on uvloop, whose loop orders callbacks its own way; and a deadline still ends a publish."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        broker = Broker(amqp_url)
        try:
            await _returns_over_four_queues(amqp_url, broker, rounds=2)
            queue = await broker.queue()
            # Through a proxy held silent: no ack can beat the deadline. (timeout=1e-9 alone raced:
            # uvloop's clock ticks in milliseconds, and a quick broker's ack came first, truly.)
            target = URL(amqp_url)
            proxy = await TcpProxy(target.host or "127.0.0.1", target.port or 5672).start()
            try:
                async with Publisher(proxy.url(), routing_key=queue) as publisher:
                    proxy.go_silent(True)
                    with pytest.raises(PublishTimeout):
                        await publisher.publish("too hasty", timeout=0.2)
                    proxy.go_silent(False)
                    assert (await publisher.publish("next", timeout=20)).status == "confirmed"
            finally:
                await proxy.stop()
        finally:
            await broker.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


@pytest.mark.parametrize("size", [5, 23])
async def test_returns_and_acks_read_in_pieces_keep_their_order(broker: Broker, tcp_proxy: TcpProxy, size: int) -> None:
    """The broker's bytes reach the client `size` at a time: a return and its ack land in different reads.

    Then the return is in the channel's queue (or being read) when the ack is read, and the
    channel must decline to settle it ahead: still exactly the unroutable ones are returned.
    """
    queues = [await broker.queue() for _ in range(4)]
    n = 400
    keys = ["nowhere" if i % 5 == 2 else queues[i % 4] for i in range(n)]
    async with Publisher(tcp_proxy.url(), mandatory=True) as publisher:
        await publisher.connect()
        tcp_proxy.trickle(size)
        results = await publisher.publish_many([{"i": i} for i in range(n)], routing_keys=keys)
        assert [r.status for r in results] == ["returned" if k == "nowhere" else "confirmed" for k in keys]
        outcomes = await asyncio.gather(
            *(publisher.publish({"i": i}, routing_key=k) for i, k in enumerate(keys)), return_exceptions=True
        )
        returned = [i for i, o in enumerate(outcomes) if isinstance(o, Exception)]
        assert returned == [i for i, k in enumerate(keys) if k == "nowhere"], outcomes[:3]
        tcp_proxy.trickle(None)
        assert publisher.metrics.reconnects == 0
    for queue in queues:
        assert await broker.depth(queue) == 2 * keys.count(queue)


async def test_the_channel_declines_while_frames_wait_in_its_queue(amqp_url: str, broker: Broker) -> None:
    """ConfirmChannel.confirm_now settles nothing while a frame waits in its queue or a return is being read."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("open the channel")
        channel = channel_of(publisher)
        future = channel.send(publisher._defaults.prepare("held"), track=True)
        assert future is not None
        tag = channel.last_delivery_tag
        channel.frames.put_nowait((0, commands.Basic.Ack(delivery_tag=0)))  # a frame ahead (settles nothing)
        assert channel.confirm_now(tag, False, True) is False
        assert not future.done()
        await until(channel.frames.empty)  # the channel's reader has taken it
        channel._returning = True
        assert channel.confirm_now(tag, False, True) is False
        channel._returning = False
        await future  # the broker's own ack settles it
    assert await broker.depth(queue) == 2


async def test_a_multiple_ack_settles_up_to_its_tag_and_a_stale_one_nothing(amqp_url: str, broker: Broker) -> None:
    """A multiple ack settles every publish up to its tag and none after; the broker's own later acks of the
    same tags (stale by then) settle only what is still open, and later publishes are confirmed as usual."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("open the channel")
        channel = channel_of(publisher)
        futures = [channel.send(publisher._defaults.prepare(i), track=True) for i in range(5)]
        tags = [channel.last_delivery_tag - 4 + i for i in range(5)]
        assert channel.confirm_now(tags[2], True, True)  # as if the broker had acked the first three at once
        assert [f is not None and f.done() for f in futures] == [True, True, True, False, False]
        assert channel.in_flight == 2
        await asyncio.gather(*(f for f in futures if f is not None))  # the broker's acks: the last two settle
        assert channel.in_flight == 0
        assert channel.confirm_now(tags[4] + 100, True, True)  # beyond anything sent: settles nothing
        later = [channel.send(publisher._defaults.prepare(i), track=True) for i in range(3)]
        assert channel.confirm_now(channel.last_delivery_tag, True, True)  # these three, at once
        assert all(f is not None and f.done() for f in later)
        result = await publisher.publish("after")
        assert result.status == "confirmed" and channel.in_flight == 0
    assert await broker.depth(queue) == 10
