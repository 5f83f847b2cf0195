"""What the in-memory broker reads out of a publish: the properties and the payload a consumer would get.

The payload is decoded by aiopublish's one codec registry (`_serialization.decode_body`,
the serializers' and compressors' own decoders, kombu's json markers included), so a
registered serializer decodes here too.
"""

from __future__ import annotations

import struct
from typing import Any

from pamqp import commands as spec
from pamqp.header import ContentHeader

from .._serialization import decode_body, register_decoder, register_decompressor

__all__ = ["decode_payload", "decode_properties", "register_decoder", "register_decompressor"]

# AMQP basic properties in wire order: (pamqp attribute, name aiopublish uses).
_PROPERTY_NAMES = tuple((name, "type" if name == "message_type" else name) for name in spec.Basic.Properties.__slots__)


def decode_payload(body: bytes, content_type: str | None, content_encoding: str | None, compression: Any) -> Any:
    """The payload a kombu consumer would get (see aiopublish._serialization.decode_body)."""
    return decode_body(body, content_type, content_encoding, compression)


def decode_properties(properties: bytes, body_size: int) -> dict[str, Any]:
    """Every property set in an encoded property list (flags + values), by aiopublish's names."""
    header = ContentHeader()
    header.unmarshal(struct.pack(">HHQ", spec.Basic.frame_id, 0, body_size) + properties)
    (flags,) = struct.unpack_from(">H", properties)
    decoded = header.properties
    return {
        name: getattr(decoded, attribute)
        for attribute, name in _PROPERTY_NAMES
        if flags & spec.Basic.Properties.flags[attribute]
    }
