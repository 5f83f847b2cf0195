"""The connection's frame reader: publisher confirms are settled as they are read.

aiormq reads a frame with three `readexactly` calls, decodes it with pamqp, and
hands it through the channel's queue to the channel's reader task, which matches
it and runs `_on_confirm_frame` a loop turn later: about 90,000 instructions per
frame. That is nothing while RabbitMQ confirms in batches (`multiple`), but a
publish_many spread over several queues is confirmed almost message by message
(27,311 basic.ack frames for 40,000 messages over 4 queues), and then the reading
cost the client nearly as much as the publishing.

`ConfirmFrames` stands in for aiormq's FrameReceiver in the connection's reader
loop (AmqpConnection overrides it there and nowhere else). It reads whatever
the socket has, splits it into frames, and settles a basic.ack or basic.nack on
the spot by calling the ConfirmChannel directly, when that cannot change the
order in which the channel sees its frames: nothing read before it is still
waiting to be handed on, nothing waits in the channel's queue, and the channel
is not in the middle of reading a basic.return (which RabbitMQ sends ahead of
the same message's ack: the ack must find the return recorded). Every other
frame is decoded by pamqp and yielded to aiormq's loop exactly as FrameReceiver
would yield it, with the same errors for a broken or closed connection.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import pamqp.frame
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError
from pamqp.exceptions import PAMQPException

__all__ = ["ConfirmFrames"]

_READ_SIZE = 65536
_FRAME_HEAD = struct.Struct(">BHI")  # type, channel, payload size
_HEAD_SIZE = _FRAME_HEAD.size  # 7
_FRAME_END = 0xCE
_FRAME_METHOD = 1
# basic.ack and basic.nack method frames: class 60, method 80 / 120 (as one 32-bit number), a
# 64-bit delivery tag and one octet of bits (multiple; requeue for a nack). 13 bytes of payload each.
_ACK = 0x003C0050
_NACK = 0x003C0078
_CONFIRM_SIZE = 13
_CONFIRM = struct.Struct(">IQB")

Received = tuple[int, int, Any]  # (bytes consumed, channel number, pamqp frame), as FrameReceiver yields


class ConfirmFrames:
    """An async iterator of received frames that settles confirms itself (see the module docstring)."""

    __slots__ = ("_buffer", "_channels", "_on_read", "_reader", "_ready")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        channels: Callable[[int], object | None],
        on_read: Callable[[], None],
    ) -> None:
        self._reader = reader
        self._channels = channels  # channel number -> channel object (the connection's dict .get)
        self._on_read = on_read  # told after each read: the connection notes when it last heard the broker
        self._buffer = bytearray()
        self._ready: deque[Received] = deque()

    def __aiter__(self) -> ConfirmFrames:
        return self

    async def __anext__(self) -> Received:
        ready = self._ready
        while not ready:
            await self._read()
        return ready.popleft()

    async def _read(self) -> None:
        try:
            data = await self._reader.read(_READ_SIZE)
        except ConnectionRefusedError as e:
            raise AMQPConnectionError(f"Server connection refused: {e!r}") from e
        except ConnectionResetError as e:
            raise AMQPConnectionError(f"Server connection reset: {e!r}") from e
        except ConnectionError as e:
            raise AMQPConnectionError(f"Server connection error: {e!r}") from e
        except OSError as e:
            raise AMQPConnectionError(f"Server communication error: {e!r}") from e
        buffer = self._buffer
        if not data:
            if buffer:
                raise AMQPConnectionError(
                    f"Server connection unexpectedly closed. Read {len(buffer)} bytes of an incomplete frame"
                )
            raise StopAsyncIteration
        buffer += data
        self._on_read()
        self._split(buffer)

    def _split(self, buffer: bytearray) -> None:
        ready = self._ready
        channels = self._channels
        end = len(buffer)
        offset = 0
        while end - offset > _HEAD_SIZE:
            kind, number, size = _FRAME_HEAD.unpack_from(buffer, offset)
            stop = offset + _HEAD_SIZE + size
            if stop >= end:
                break  # the frame end octet is not here yet
            if buffer[stop] != _FRAME_END:
                raise InvalidFrameError(f"frame on channel {number} does not end with 0xCE")
            # A confirm, with nothing read before it still to be handed on: settled here if its
            # channel takes it. ConfirmChannel.confirm_now(delivery_tag, multiple, acked) -> bool
            # is False when the frame must go the usual way; aiormq's own channels (and a channel
            # already gone) have none, and their confirms take aiormq's path.
            if kind == _FRAME_METHOD and size == _CONFIRM_SIZE and not ready:
                method, tag, bits = _CONFIRM.unpack_from(buffer, offset + _HEAD_SIZE)
                if method in (_ACK, _NACK):
                    confirm_now = getattr(channels(number), "confirm_now", None)
                    if confirm_now is not None and confirm_now(tag, bool(bits & 1), method == _ACK):
                        offset = stop + 1
                        continue
            raw = bytes(buffer[offset : stop + 1])
            try:
                ready.append(pamqp.frame.unmarshal(raw))
            except PAMQPException as e:
                raise InvalidFrameError(str(e)) from e
            offset = stop + 1
        del buffer[:offset]
