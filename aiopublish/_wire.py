"""AMQP 0-9-1 frames for basic.publish, built by hand so the hot path does the least work.

A publish is three frames or more: the basic.publish method, a content header
(body size and properties) and the body split to the connection's frame_max.
The method frame depends only on (exchange, routing key, mandatory) and is
cached; the properties are split around message_id, which changes per message,
so everything before and after it is encoded once per option set.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from pamqp import encode

_FRAME_METHOD = 1
_FRAME_HEADER = 2
_FRAME_BODY = 3
_FRAME_END = b"\xce"
_BASIC_CLASS = 60
_BASIC_PUBLISH = 40
# frame type, channel, payload size
_frame_head = struct.Struct(">BHI")
# class id, weight, body size
_header_head = struct.Struct(">HHQ")
FRAME_OVERHEAD = _frame_head.size + len(_FRAME_END)

# Property flags, in the wire order of the basic class's properties.
_PROPERTY_BITS = {
    "content_type": 1 << 15,
    "content_encoding": 1 << 14,
    "headers": 1 << 13,
    "delivery_mode": 1 << 12,
    "priority": 1 << 11,
    "correlation_id": 1 << 10,
    "reply_to": 1 << 9,
    "expiration": 1 << 8,
    "message_id": 1 << 7,
    "timestamp": 1 << 6,
    "type": 1 << 5,
    "user_id": 1 << 4,
    "app_id": 1 << 3,
    "cluster_id": 1 << 2,
}
_BEFORE_MESSAGE_ID = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
)
_AFTER_MESSAGE_ID = ("timestamp", "type", "user_id", "app_id", "cluster_id")


def short_string(value: str, what: str) -> bytes:
    """An AMQP shortstr; ValueError naming `what` when it does not fit in 255 bytes."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"{what} is {len(raw)} bytes long; AMQP allows at most 255")
    return bytes((len(raw),)) + raw


def _encode_property(name: str, value: Any) -> bytes:
    if name == "headers":
        try:
            return encode.field_table(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"headers cannot be sent as an AMQP table: {exc}") from None
    if name in ("delivery_mode", "priority"):
        return bytes((value,))
    if name == "timestamp":
        seconds = int(value.timestamp()) if isinstance(value, datetime) else int(value)
        return struct.pack(">Q", seconds)
    return short_string(value, name)


class PropertiesTemplate:
    """The content-header properties of one option set, with a hole for message_id."""

    __slots__ = ("_flags", "_prefix", "_suffix")

    def __init__(self, properties: Mapping[str, Any]) -> None:
        flags = _PROPERTY_BITS["message_id"]
        prefix = bytearray()
        suffix = bytearray()
        for names, out in ((_BEFORE_MESSAGE_ID, prefix), (_AFTER_MESSAGE_ID, suffix)):
            for name in names:
                value = properties.get(name)
                if value is None or (name == "headers" and not value):
                    continue
                flags |= _PROPERTY_BITS[name]
                out += _encode_property(name, value)
        self._flags = struct.pack(">H", flags)
        self._prefix = bytes(prefix)
        self._suffix = bytes(suffix)

    def encode(self, message_id: str) -> bytes:
        """The property flags and list for a message with this id."""
        return self._flags + self._prefix + short_string(message_id, "message_id") + self._suffix


@lru_cache(maxsize=1024)
def method_frame(channel: int, exchange: str, routing_key: str, mandatory: bool) -> bytes:
    """The whole basic.publish method frame (cached: few distinct destinations are usual)."""
    payload = (
        struct.pack(">HHH", _BASIC_CLASS, _BASIC_PUBLISH, 0)
        + short_string(exchange, "exchange")
        + short_string(routing_key, "routing_key")
        + bytes((1 if mandatory else 0,))
    )
    return _frame_head.pack(_FRAME_METHOD, channel, len(payload)) + payload + _FRAME_END


def content_frames(channel: int, properties: bytes, body: bytes, frame_max: int) -> bytes:
    """The content header frame and the body frames, each body frame at most frame_max long."""
    header = _header_head.pack(_BASIC_CLASS, 0, len(body)) + properties
    out = [_frame_head.pack(_FRAME_HEADER, channel, len(header)), header, _FRAME_END]
    chunk = frame_max - FRAME_OVERHEAD
    for start in range(0, len(body), chunk):
        part = body[start : start + chunk]
        out += (_frame_head.pack(_FRAME_BODY, channel, len(part)), part, _FRAME_END)
    return b"".join(out)
