"""A publish's message as AMQP 1.0 sections, from the same `Prepared` an 0-9-1 channel writes.

The options are encoded once, as 0-9-1 properties (`Options.prepare`), whatever the
protocol: this module reads them back and maps each to its AMQP 1.0 place, so both
protocols carry the same message.

| aiopublish option            | AMQP 1.0                                              |
| ---------------------------- | ----------------------------------------------------- |
| delivery_mode (2 / 1)        | header.durable (true / false)                         |
| priority                     | header.priority                                       |
| expiration (ms, a string)    | header.ttl                                            |
| message_id, correlation_id   | properties.message-id, correlation-id (strings)       |
| user_id                      | properties.user-id (its UTF-8 bytes)                  |
| reply_to                     | properties.reply-to                                   |
| content_type / _encoding     | properties.content-type / content-encoding (symbols)  |
| timestamp (seconds)          | properties.creation-time (ms)                         |
| headers (compression too)    | application-properties (simple values only)           |
| the body                     | one data section                                      |

`type`, `app_id` and `cluster_id` have no AMQP 1.0 property: a publish that sets one
is refused with a ValueError before anything is sent, as is a header whose value is a
table or a list (application properties hold simple values only, part 3.2.5).
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pamqp import commands as spec
from pamqp.header import ContentHeader

from .._options import Prepared
from . import _performatives as p
from ._codec import (
    NULL,
    encode_binary,
    encode_bool,
    encode_described,
    encode_list,
    encode_string,
    encode_symbol,
    encode_timestamp,
    encode_ubyte,
    encode_uint,
    encode_value,
)

__all__ = ["encode_message"]

_FLAGS = spec.Basic.Properties.flags
_REFUSED = {
    "message_type": "type",
    "app_id": "app_id",
    "cluster_id": "cluster_id",
}


def _properties(encoded: bytes, body_size: int) -> tuple[int, Any]:
    header = ContentHeader()
    header.unmarshal(struct.pack(">HHQ", spec.Basic.frame_id, 0, body_size) + encoded)
    (flags,) = struct.unpack_from(">H", encoded)
    return flags, header.properties


def _application_value(name: str, value: Any) -> bytes:
    if isinstance(value, (dict, list, tuple)):
        raise ValueError(
            f"header {name!r} holds a {type(value).__name__}: AMQP 1.0 application properties "
            "hold simple values only (strings, numbers, booleans, bytes, timestamps)"
        )
    if isinstance(value, Decimal):
        value = str(value)
    if isinstance(value, datetime):
        return encode_timestamp(int(value.timestamp() * 1000))
    return encode_value(value, f"header {name!r}")


class _Template:
    """The sections of every message that shares an option set: all but its message-id and body."""

    __slots__ = ("application", "header", "rest")

    def __init__(self, header: bytes, rest: list[bytes], application: bytes) -> None:
        self.header = header
        self.rest = rest  # the properties' fields after message-id
        self.application = application


# Option sets seen recently, by their 0-9-1 properties without the message id (see _split).
_templates: dict[tuple[bytes, bytes], _Template] = {}
_TEMPLATES_MAX = 256
# Fields before message_id, in wire order: (flag, size of a fixed field, or 0 for a shortstr, -1 for a table).
_BEFORE_ID = (
    (1 << 15, 0),  # content_type
    (1 << 14, 0),  # content_encoding
    (1 << 13, -1),  # headers
    (1 << 12, 1),  # delivery_mode
    (1 << 11, 1),  # priority
    (1 << 10, 0),  # correlation_id
    (1 << 9, 0),  # reply_to
    (1 << 8, 0),  # expiration
)
_MESSAGE_ID_FLAG = 1 << 7


def _split(encoded: bytes) -> tuple[bytes, bytes]:
    """The properties before and after the message_id field (which aiopublish always sets)."""
    (flags,) = struct.unpack_from(">H", encoded)
    position = 2
    for flag, size in _BEFORE_ID:
        if flags & flag:
            if size == 0:
                position += 1 + encoded[position]
            elif size == -1:
                position += 4 + int.from_bytes(encoded[position : position + 4], "big")
            else:
                position += size
    if not flags & _MESSAGE_ID_FLAG:
        return encoded, b""
    return encoded[:position], encoded[position + 1 + encoded[position] :]


def _template(message: Prepared) -> _Template:
    flags, props = _properties(message.properties, len(message.body))
    for attribute, option in _REFUSED.items():
        if flags & _FLAGS[attribute]:
            raise ValueError(f"the {option} option has no AMQP 1.0 property: leave it unset for amqp1:// publishers")
    ttl = NULL
    if props.expiration is not None:
        ttl = encode_uint(int(props.expiration))
    header = p.section(
        p.HEADER,
        [
            encode_bool(props.delivery_mode == 2),
            NULL if not flags & _FLAGS["priority"] else encode_ubyte(props.priority or 0),
            ttl,
        ],
    )
    timestamp = props.timestamp
    if timestamp is not None and timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    rest = [
        NULL if props.user_id is None else encode_binary(props.user_id.encode("utf-8")),
        NULL,  # to: the link's address says where
        NULL,  # subject
        NULL if props.reply_to is None else encode_string(props.reply_to),
        NULL if props.correlation_id is None else encode_string(props.correlation_id),
        NULL if props.content_type is None else encode_symbol(props.content_type),
        NULL if props.content_encoding is None else encode_symbol(props.content_encoding),
        NULL,  # absolute-expiry-time
        NULL if timestamp is None else encode_timestamp(int(timestamp.timestamp() * 1000)),
    ]
    while rest and rest[-1] == NULL:
        rest.pop()
    headers = props.headers or {}
    application = p.map_section(
        p.APPLICATION_PROPERTIES,
        [(encode_string(str(name)), _application_value(str(name), value)) for name, value in headers.items()],
    )
    return _Template(header, rest, application)


def encode_message(message: Prepared) -> bytes:
    """The message's sections: header, properties, application-properties, one data section.

    Raises ValueError naming an option or header that AMQP 1.0 cannot carry. The sections
    of an option set are built once (from its first message) and reused with each message's id.
    """
    key = _split(message.properties)
    template = _templates.get(key)
    if template is None:
        template = _template(message)
        if len(_templates) >= _TEMPLATES_MAX:
            _templates.clear()
        _templates[key] = template
    properties = encode_described(p.PROPERTIES, encode_list([encode_string(message.message_id), *template.rest]))
    return template.header + properties + template.application + p.data_section(message.body)
