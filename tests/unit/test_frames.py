"""ConfirmFrames: the connection's reader settles confirms as it reads them, and yields the rest as aiormq would."""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq.connection
import pytest
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError
from pamqp import body, commands, frame, header
from pamqp.heartbeat import Heartbeat

from aiopublish import Publisher, PublishTimeout
from aiopublish._frames import ConfirmFrames
from tests.broker import Broker, until
from tests.faults.proxy import TcpProxy


class FakeChannel:
    """Records what confirm_now settles; declines, as ConfirmChannel does, while frames wait in its queue.

    `queued` stands for the channel's frame queue: the test puts there what ConfirmFrames
    yields for this channel, and never processes it. `accept=False` declines every confirm.
    """

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.queued: list[Any] = []
        self.settled: list[tuple[int, bool, bool]] = []

    def confirm_now(self, delivery_tag: int, multiple: bool, acked: bool) -> bool:
        if not self.accept or self.queued:
            return False
        self.settled.append((delivery_tag, multiple, acked))
        return True


def _return_frames(channel: int) -> bytes:
    content = b'{"id": 1}'
    return (
        frame.marshal(commands.Basic.Return(312, "NO_ROUTE", "", "nowhere"), channel)
        + frame.marshal(header.ContentHeader(0, len(content), commands.Basic.Properties(message_id="m1")), channel)
        + frame.marshal(body.ContentBody(content), channel)
    )


STREAM = b"".join(
    (
        frame.marshal(commands.Basic.Ack(delivery_tag=1), 1),
        frame.marshal(commands.Basic.Ack(delivery_tag=5, multiple=True), 1),
        frame.marshal(commands.Basic.Nack(delivery_tag=6, multiple=False, requeue=True), 1),
        frame.marshal(Heartbeat(), 0),
        frame.marshal(commands.Basic.Ack(delivery_tag=2), 2),  # channel 2 is aiormq's own
        _return_frames(1),
        frame.marshal(commands.Basic.Ack(delivery_tag=7), 1),  # behind the return: must stay behind it
        frame.marshal(commands.Basic.Nack(delivery_tag=9, multiple=True), 1),
        frame.marshal(commands.Channel.Close(406, "PRECONDITION_FAILED - x", 60, 40), 3),
    )
)


async def _collect(chunks: list[bytes], channels: dict[int, Any], *, eof: bool = True) -> tuple[list[Any], int]:
    reader = asyncio.StreamReader()
    heard = 0

    def on_read() -> None:
        nonlocal heard
        heard += 1

    frames = ConfirmFrames(reader, channels.get, on_read)
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    out = [received async for received in frames]
    return out, heard


async def _aiormq_frames(data: bytes) -> list[Any]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    receiver = aiormq.connection.FrameReceiver(reader)
    receiver.started = True
    return [received async for received in receiver]


def _describe(received: list[Any]) -> list[tuple[int, int, str, dict[str, Any]]]:
    return [(weight, number, type(f).__name__, dict(vars(f))) for weight, number, f in received]


async def test_the_stream_in_one_read() -> None:
    """Leading confirms settle at once; everything else is yielded exactly as aiormq's FrameReceiver yields it."""
    ours = FakeChannel()
    out, heard = await _collect([STREAM], {1: ours, 2: object()})
    assert ours.settled == [(1, False, True), (5, True, True), (6, False, False)]
    expected = await _aiormq_frames(STREAM)
    # aiormq's own frames, minus the three settled: the heartbeat and all after it, in order, alike.
    assert _describe(out) == _describe(expected[3:])
    assert heard == 1


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 13, 21, 64])
async def test_any_split_of_the_stream_gives_the_same_frames(size: int) -> None:
    """Read in chunks of `size` bytes: the same frames in the same order, whatever the split."""
    ours = FakeChannel()
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    reader = asyncio.StreamReader()
    frames = ConfirmFrames(reader, {1: ours, 2: object()}.get, lambda: None)
    collected: list[Any] = []

    async def consume() -> None:
        async for received in frames:
            collected.append(received)
            if received[1] == 1:
                ours.queued.append(received[2])  # what aiormq's loop does: into the channel's queue

    task = asyncio.create_task(consume())
    for chunk in chunks:  # one chunk per read
        reader.feed_data(chunk)
        await asyncio.sleep(0)
    reader.feed_eof()
    await task
    expected = await _aiormq_frames(STREAM)
    settled = {(1, False, True), (5, True, True), (6, False, False)}
    assert set(ours.settled) <= settled | {(7, False, True), (9, True, False)}
    # Whatever was settled directly is missing from the yielded frames, and nothing else is.
    yielded_confirms = [
        (f.delivery_tag, f.multiple, isinstance(f, commands.Basic.Ack))
        for _, n, f in collected
        if n == 1 and isinstance(f, commands.Basic.Ack | commands.Basic.Nack)
    ]
    all_confirms = [(1, False, True), (5, True, True), (6, False, False), (7, False, True), (9, True, False)]
    assert sorted(ours.settled + yielded_confirms) == sorted(all_confirms)
    # The two behind the basic.return are never settled ahead of it.
    assert (7, False, True) not in ours.settled and (9, True, False) not in ours.settled
    others = [r for r in collected if not (r[1] == 1 and isinstance(r[2], commands.Basic.Ack | commands.Basic.Nack))]
    expected_others = [
        r for r in expected if not (r[1] == 1 and isinstance(r[2], commands.Basic.Ack | commands.Basic.Nack))
    ]
    assert _describe(others) == _describe(expected_others)


async def test_a_channel_that_declines_gets_its_confirm_in_the_queue() -> None:
    """confirm_now returning False (frames queued before it): the ack is yielded, in order."""
    declining = FakeChannel(accept=False)
    data = frame.marshal(commands.Basic.Ack(delivery_tag=3), 1)
    out, _ = await _collect([data], {1: declining})
    assert declining.settled == []
    assert [(n, type(f).__name__, f.delivery_tag) for _, n, f in out] == [(1, "Ack", 3)]


async def test_a_frame_without_its_end_octet_is_an_invalid_frame() -> None:
    data = bytearray(frame.marshal(commands.Basic.Ack(delivery_tag=3), 1))
    data[-1] = 0x00
    with pytest.raises(InvalidFrameError):
        await _collect([bytes(data)], {})


async def test_eof_inside_a_frame_is_a_connection_error_and_between_frames_the_end() -> None:
    data = frame.marshal(commands.Basic.Ack(delivery_tag=3), 1)
    with pytest.raises(AMQPConnectionError, match="unexpectedly closed"):
        await _collect([data + data[:5]], {1: FakeChannel()})
    ours = FakeChannel()
    out, _ = await _collect([data], {1: ours})
    assert out == [] and ours.settled == [(3, False, True)]


async def test_a_broken_socket_is_a_connection_error() -> None:
    reader = asyncio.StreamReader()
    frames = ConfirmFrames(reader, {}.get, lambda: None)
    reader.set_exception(ConnectionResetError("reset by peer"))
    with pytest.raises(AMQPConnectionError, match="reset"):
        await anext(frames)


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
            async with Publisher(amqp_url, routing_key=queue) as publisher:
                with pytest.raises(PublishTimeout):
                    await publisher.publish("too hasty", timeout=1e-9)
                assert (await publisher.publish("next")).status == "confirmed"
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
        channel = publisher._link.ready_channel()
        assert channel is not None
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
        channel = publisher._link.ready_channel()
        assert channel is not None
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
