"""AMQP 1.0 framing (part 2.3): protocol headers, frames out, and a reader that splits frames in.

A frame is ``size (4) | doff (1) | type (1) | channel (2) | extended header | body``;
the body is one performative, for a transfer followed by (part of) the message.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from ._codec import DecodeError, decode

__all__ = [
    "AMQP_HEADER",
    "FrameReader",
    "MIN_MAX_FRAME_SIZE",
    "SASL_HEADER",
    "TYPE_AMQP",
    "TYPE_SASL",
    "InFrame",
    "frame",
]

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
TYPE_AMQP = 0
TYPE_SASL = 1
# Every peer accepts frames this large (part 2.7.1, open's max-frame-size).
MIN_MAX_FRAME_SIZE = 512
FRAME_HEADER_SIZE = 8

_HEADER = struct.Struct(">IBBH")


def frame(channel: int, body: bytes, frame_type: int = TYPE_AMQP) -> bytes:
    """One frame carrying `body` (a performative, and for a transfer its payload) on `channel`."""
    return _HEADER.pack(FRAME_HEADER_SIZE + len(body), 2, frame_type, channel) + body


class InFrame(NamedTuple):
    """One frame read: its type, channel, performative (None for an empty heartbeat frame) and payload."""

    frame_type: int
    channel: int
    performative: Any
    payload: bytes


class FrameReader:
    """Splits bytes read from the socket, in pieces of any size, into frames.

    Raises DecodeError on a frame the specification does not allow (or larger than
    `max_frame_size`, the limit we announced): the connection is then unusable.
    """

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[InFrame]:
        buffer = self._buffer
        buffer += data
        frames: list[InFrame] = []
        offset = 0
        while len(buffer) - offset >= FRAME_HEADER_SIZE:
            size, doff, frame_type, channel = _HEADER.unpack_from(buffer, offset)
            if size < FRAME_HEADER_SIZE or doff < 2 or doff * 4 > size:
                raise DecodeError(f"a malformed frame header (size {size}, doff {doff})")
            if size > self.max_frame_size:
                raise DecodeError(f"a frame of {size} bytes, over the max-frame-size of {self.max_frame_size}")
            if len(buffer) - offset < size:
                break
            body = bytes(buffer[offset + doff * 4 : offset + size])
            offset += size
            if not body:
                frames.append(InFrame(frame_type, channel, None, b""))
                continue
            performative, end = decode(body)
            frames.append(InFrame(frame_type, channel, performative, body[end:]))
        del buffer[:offset]
        return frames
