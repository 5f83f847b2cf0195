"""ConfirmFrames fuzzed: random frame streams, split at random points, against aiormq's own reader.

A valid stream (acks, multiple acks, nacks, basic.return with its content header and
body frames, channel.close, heartbeats, on several channels) must come out frame for
frame as aiormq's FrameReceiver (pamqp's unmarshal) reads it: each frame either settled
on the spot by its channel's confirm_now or yielded with the same size, channel and
fields, in stream order, whatever the split and whenever the channels read their queues.
An invalid stream (a frame end octet that is not 0xCE, a wrong size, garbage at a frame
boundary, the connection closed inside a frame) must end in a connection error, and
whatever was settled or yielded before it must be the frames wholly before the damage:
never a settled tag that was not acked.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import aiormq.connection
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pamqp import body, commands, frame, header
from pamqp.heartbeat import Heartbeat

from aiopublish._frames import ConfirmFrames

# A few seconds for the file on a busy machine; no example database written into the tree.
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

Key = tuple[Any, ...]  # what a frame is, comparable: ("confirm", channel, tag, multiple, acked) or ("frame", ...)
_FRAME_END = 0xCE
# Frame types a reader accepts (method, header, body, heartbeat) and "A", which begins b"AMQP"
# (pamqp reads a protocol header there): garbage starts with none of them, so it is never a frame.
_FRAME_TYPES = {1, 2, 3, 8, ord("A")}


class Channel:
    """A ConfirmChannel as ConfirmFrames sees it: declines a confirm while frames wait in its queue or a
    basic.return is being read, or always when `accept` is False. Its queue is read when the test says."""

    def __init__(self, accept: bool) -> None:
        self.accept = accept
        self.queue: list[Any] = []
        self.returning = False
        self._body_left = 0
        self.on_settle: Callable[[Key], None] = lambda key: None

    def confirm_now(self, delivery_tag: int, multiple: bool, acked: bool) -> bool:
        if not self.accept or self.queue or self.returning:
            return False
        self.on_settle(("confirm", delivery_tag, multiple, acked))
        return True

    def read_queue(self) -> None:
        """What the channel's reader task does: take its frames in order, following a return's content."""
        for received in self.queue:
            if isinstance(received, commands.Basic.Return):
                self.returning = True
            elif isinstance(received, header.ContentHeader):
                self._body_left = received.body_size
                self.returning = self._body_left > 0
            elif isinstance(received, body.ContentBody):
                self._body_left -= len(received.value)
                self.returning = self._body_left > 0
        self.queue.clear()


def key(number: int, received: Any) -> Key:
    if isinstance(received, commands.Basic.Ack | commands.Basic.Nack):
        return ("confirm", number, received.delivery_tag, received.multiple, isinstance(received, commands.Basic.Ack))
    return ("frame", number, type(received).__name__, sorted(vars(received).items(), key=lambda item: item[0]))


# -- streams ------------------------------------------------------------------------------------------

# 1, 3: ConfirmChannels (accepting or not, drawn); 2: a channel of aiormq's own (no confirm_now);
# 4: a channel number the connection does not know.
channel_numbers = st.sampled_from([1, 2, 3, 4])
tags = st.integers(min_value=0, max_value=2**63 - 1)  # pamqp encodes a signed 64-bit; bytes include 0xCE at times
short_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=20).filter(lambda s: len(s.encode()) < 256)


@st.composite
def acks(draw: st.DrawFn) -> list[bytes]:
    ack = commands.Basic.Ack(delivery_tag=draw(tags), multiple=draw(st.booleans()))
    return [frame.marshal(ack, draw(channel_numbers))]


@st.composite
def nacks(draw: st.DrawFn) -> list[bytes]:
    nack = commands.Basic.Nack(delivery_tag=draw(tags), multiple=draw(st.booleans()), requeue=draw(st.booleans()))
    return [frame.marshal(nack, draw(channel_numbers))]


@st.composite
def returns(draw: st.DrawFn) -> list[bytes]:
    """basic.return, its content header and the body in 0 or more body frames (RabbitMQ sends them together)."""
    number = draw(channel_numbers)
    content = draw(st.binary(max_size=300))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(content) - 1)), max_size=4))) if len(content) > 1 else []
    pieces = [content[a:b] for a, b in zip([0, *cuts], [*cuts, len(content)], strict=True) if b > a]
    method = commands.Basic.Return(draw(st.sampled_from([312, 313])), draw(short_text), "", draw(short_text))
    properties = commands.Basic.Properties(message_id=draw(short_text), delivery_mode=draw(st.sampled_from([1, 2])))
    return [
        frame.marshal(method, number),
        frame.marshal(header.ContentHeader(0, len(content), properties), number),
        *(frame.marshal(body.ContentBody(piece), number) for piece in pieces),
    ]


@st.composite
def closes(draw: st.DrawFn) -> list[bytes]:
    close = commands.Channel.Close(draw(st.sampled_from([404, 406, 403])), draw(short_text), 60, 40)
    return [frame.marshal(close, draw(channel_numbers))]


heartbeats = st.just([frame.marshal(Heartbeat(), 0)])
# Confirms weigh most: they are what the reader settles itself.
streams = st.lists(st.one_of(acks(), acks(), nacks(), returns(), closes(), heartbeats), min_size=1, max_size=25).map(
    lambda groups: [one for group in groups for one in group]
)


# -- running the readers ------------------------------------------------------------------------------


async def aiormq_reads(data: bytes) -> list[tuple[int, int, Any]]:
    """What aiormq's own FrameReceiver (pamqp's unmarshal) yields for `data`, then EOF."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    receiver = aiormq.connection.FrameReceiver(reader)
    receiver.started = True  # past the protocol header, as on a connection in use
    return [received async for received in receiver]


class Run:
    """ConfirmFrames fed `chunks` one read each; channels read their queues after the reads `reads_at` says."""

    def __init__(self, accept: tuple[bool, bool]) -> None:
        self.channels = {1: Channel(accept[0]), 2: object(), 3: Channel(accept[1])}
        self.events: list[tuple[Key, int | None]] = []  # (frame, bytes consumed or None when settled), in order
        self.error: BaseException | None = None
        for number, channel in self.channels.items():
            if isinstance(channel, Channel):
                channel.on_settle = lambda confirm, n=number: self.events.append(((confirm[0], n, *confirm[1:]), None))

    async def feed(self, chunks: list[bytes], reads_at: list[bool]) -> None:
        reader = asyncio.StreamReader()
        frames = ConfirmFrames(reader, self.channels.get, lambda: None)

        async def consume() -> None:
            async for weight, number, received in frames:
                self.events.append((key(number, received), weight))
                channel = self.channels.get(number)
                if isinstance(channel, Channel):
                    channel.queue.append(received)  # aiormq's loop: into the channel's queue

        task = asyncio.create_task(consume())
        for chunk, read in zip(chunks, reads_at, strict=True):
            reader.feed_data(chunk)
            await asyncio.sleep(0)  # one read of this chunk
            if read:
                for channel in self.channels.values():
                    if isinstance(channel, Channel):
                        channel.read_queue()
        reader.feed_eof()
        try:
            await task
        except (AMQPConnectionError, InvalidFrameError) as exc:
            self.error = exc


def split(draw: st.DrawFn, data: bytes) -> tuple[list[bytes], list[bool]]:
    """`data` cut at random points into reads, and whether the channels read their queues after each."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=12))) if len(data) > 1 else []
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]
    return chunks, draw(st.lists(st.booleans(), min_size=len(chunks), max_size=len(chunks)))


def expected_keys(received: list[tuple[int, int, Any]]) -> list[tuple[Key, int]]:
    return [(key(number, one), weight) for weight, number, one in received]


def check_against(run: Run, expected: list[tuple[Key, int]]) -> None:
    """Run's events are `expected` frame for frame: settled ones are confirms of a ConfirmChannel, the rest
    yielded with aiormq's size."""
    assert [k for k, _ in run.events] == [k for k, _ in expected]
    for (frame_key, weight), (_, aiormq_weight) in zip(run.events, expected, strict=True):
        if weight is None:
            assert frame_key[0] == "confirm" and isinstance(run.channels.get(frame_key[1]), Channel), frame_key
        else:
            assert weight == aiormq_weight, frame_key


# -- valid streams ------------------------------------------------------------------------------------


@FUZZ
@given(frames=streams, accept=st.tuples(st.booleans(), st.booleans()), data=st.data())
def test_any_valid_stream_in_any_split_reads_as_aiormq_reads_it(
    frames: list[bytes], accept: tuple[bool, bool], data: st.DataObject
) -> None:
    """Every frame is settled (a confirm its channel accepts) or yielded as aiormq yields it, in stream order."""
    stream = b"".join(frames)
    chunks, reads_at = split(data.draw, stream)
    run = Run(accept)
    expected = asyncio.run(_valid(run, stream, chunks, reads_at))
    assert run.error is None, run.error
    check_against(run, expected)
    first = expected[0][0]
    if first[:2] == ("confirm", 1) and accept[0]:  # nothing before it: it never waits in a queue
        assert run.events[0][1] is None, "a leading confirm on an accepting channel is settled on the spot"


async def _valid(run: Run, stream: bytes, chunks: list[bytes], reads_at: list[bool]) -> list[tuple[Key, int]]:
    await run.feed(chunks, reads_at)
    return expected_keys(await aiormq_reads(stream))


# -- invalid streams ----------------------------------------------------------------------------------


@st.composite
def damaged(draw: st.DrawFn) -> tuple[bytes, bytes, str]:
    """A valid stream damaged at frame k so that no reader can take it for frames: (stream, frames before k, how)."""
    frames = draw(streams)
    k = draw(st.integers(0, len(frames) - 1))
    before, target, after = b"".join(frames[:k]), bytearray(frames[k]), b"".join(frames[k + 1 :])
    how = draw(st.sampled_from(["end", "size", "garbage", "eof"]))
    if how == "end":  # the frame end octet is anything but 0xCE
        target[-1] = draw(st.integers(0, 255).filter(lambda b: b != _FRAME_END))
        return before + bytes(target) + after, before, how
    if how == "eof":  # the connection closes inside frame k
        return before + bytes(target[: draw(st.integers(1, len(target) - 1))]), before, how
    if how == "size":  # the size field is wrong, and the octet where that size says the frame ends is not 0xCE
        rest = bytes(target) + after
        size = draw(st.integers(0, 2**32 - 1).filter(lambda s: s != len(target) - 8))
        end = 7 + size
        assume(end >= len(rest) or rest[end] != _FRAME_END)
        struct.pack_into(">I", target, 3, size)
        return before + bytes(target) + after, before, how
    kind = draw(st.integers(0, 255).filter(lambda t: t not in _FRAME_TYPES))
    garbage = bytes([kind]) + draw(st.binary(max_size=30))
    return before + garbage + bytes(target) + after, before, how


@FUZZ
@given(case=damaged(), accept=st.tuples(st.booleans(), st.booleans()), data=st.data())
def test_a_damaged_stream_ends_in_a_connection_error_after_only_what_came_before(
    case: tuple[bytes, bytes, str], accept: tuple[bool, bool], data: st.DataObject
) -> None:
    """Damage in frame k: a connection error, and nothing settled or yielded but frames before k, in order."""
    stream, before, how = case
    chunks, reads_at = split(data.draw, stream)
    run = Run(accept)
    intact = asyncio.run(_damaged(run, before, chunks, reads_at))
    assert isinstance(run.error, AMQPConnectionError | InvalidFrameError), (how, run.error)
    assert len(run.events) <= len(intact), (how, run.events[len(intact) :])
    check_against(run, intact[: len(run.events)])


async def _damaged(run: Run, before: bytes, chunks: list[bytes], reads_at: list[bool]) -> list[tuple[Key, int]]:
    await run.feed(chunks, reads_at)
    # The frames wholly before the damage, as aiormq reads them.
    return expected_keys(await aiormq_reads(before))
