"""What the in-memory broker reads out of a publish: the properties and the payload a consumer would get.

This is the one place the in-memory broker turns bytes back into objects. It keeps its
own small table of decoders and decompressors by content type (kombu's names), apart
from aiopublish's serializer registry; when that registry can decode as well, only
`decode_payload` (and the two `register_*` functions) need to change.
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import pickle
import struct
import zlib
from collections.abc import Callable
from typing import Any

from pamqp import commands as spec
from pamqp.header import ContentHeader

__all__ = ["decode_payload", "decode_properties", "register_decoder", "register_decompressor"]

# AMQP basic properties in wire order: (pamqp attribute, name aiopublish uses).
_PROPERTY_NAMES = tuple((name, "type" if name == "message_type" else name) for name in spec.Basic.Properties.__slots__)
# content_encoding values that mean "these are bytes, not text".
_BINARY_ENCODINGS = ("binary", "ascii-8bit")


def _zstd_decompress(body: bytes) -> bytes:
    import zstandard

    # A stream reader also reads frames that do not record their content size (as kombu does).
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
        data: bytes = reader.read()
    return data


def _msgpack_loads(body: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(body, raw=False)


_decompressors: dict[str, Callable[[bytes], bytes]] = {
    # kombu's "gzip" is zlib, named by this content type: the same pairs as kombu.compression.
    "application/x-gzip": zlib.decompress,
    "application/x-bz2": bz2.decompress,
    "application/x-lzma": lzma.decompress,
    "application/zstd": _zstd_decompress,
}
_decoders: dict[str, Callable[[bytes], Any]] = {
    "application/json": json.loads,
    "application/x-python-serialize": pickle.loads,
    "application/x-msgpack": _msgpack_loads,
}


def register_decompressor(content_type: str, decompress: Callable[[bytes], bytes]) -> None:
    """Undo `compression` headers of this content type (for a compressor added with register_compressor)."""
    _decompressors[content_type] = decompress


def register_decoder(content_type: str, decode: Callable[[bytes], Any]) -> None:
    """Decode bodies of this content type into `RecordedMessage.payload` (for a serializer of your own)."""
    _decoders[content_type] = decode


def _decompressed(body: bytes, compression: Any) -> bytes | None:
    """The body with its compression undone; None when the compression is unknown or the body is not valid."""
    decompress = _decompressors.get(str(compression))
    if decompress is None:
        return None
    try:
        return decompress(body)
    except Exception:
        return None


def _is_text(content_type: str, content_encoding: str | None) -> bool:
    if content_type.startswith("text/"):
        return True
    return bool(content_encoding) and str(content_encoding).lower() not in _BINARY_ENCODINGS


def decode_payload(body: bytes, content_type: str | None, content_encoding: str | None, compression: Any) -> Any:
    """The payload a kombu consumer would get: decompressed, then deserialized by content type.

    json, pickle and msgpack become objects; text/* (and any body with a content_encoding
    other than "binary") becomes str; anything else stays bytes. When the compression or
    the body cannot be decoded, the payload is the body as sent.
    """
    if compression:
        decompressed = _decompressed(body, compression)
        if decompressed is None:
            return body
        body = decompressed
    decoder = _decoders.get(content_type or "")
    try:
        if decoder is not None:
            return decoder(body)
        if _is_text(content_type or "", content_encoding):
            return body.decode(content_encoding or "utf-8")
    except Exception:
        return body
    return body


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
