"""ConfirmFrames: the connection's reader settles confirms as it reads them, and yields the rest as aiormq would.

Driven without a broker: bytes fed to a StreamReader, channels that record what is settled.
The same through the real broker is in tests/test_frames.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq.connection
import pytest
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError
from pamqp import body, commands, frame, header
from pamqp.heartbeat import Heartbeat

from aiopublish._frames import ConfirmFrames


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
