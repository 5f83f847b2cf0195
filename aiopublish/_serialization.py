"""Serializers and compressors, with kombu's wire format so nameko consumers read our messages.

A serializer turns a payload into (content_type, content_encoding, body bytes); a
compressor turns body bytes into compressed bytes and names itself in the message's
`compression` header by content type, exactly as kombu does.
"""

from __future__ import annotations

import bz2
import importlib.util
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._exceptions import SerializationError

__all__ = [
    "Compressor",
    "Serializer",
    "compress",
    "encode_body",
    "get_compressor",
    "get_serializer",
    "register_compressor",
    "register_serializer",
]


@dataclass(frozen=True, slots=True)
class Serializer:
    """How one serializer name encodes a payload."""

    name: str
    encoder: Callable[[Any], bytes | str]
    content_type: str
    content_encoding: str


@dataclass(frozen=True, slots=True)
class Compressor:
    """How one compression name compresses a body, and the header value that names it."""

    name: str
    compress: Callable[[bytes], bytes]
    content_type: str


_serializers: dict[str, Serializer] = {}
_compressors: dict[str, Compressor] = {}


def register_serializer(
    name: str,
    encoder: Callable[[Any], bytes | str],
    content_type: str,
    content_encoding: str = "utf-8",
) -> None:
    """Make `serializer=name` available. A str result is encoded with `content_encoding`."""
    if not name or not isinstance(name, str):
        raise ValueError(f"serializer name must be a non-empty str, not {name!r}")
    _serializers[name] = Serializer(name, encoder, content_type, content_encoding)


def register_compressor(
    name: str,
    compress: Callable[[bytes], bytes],
    content_type: str,
    aliases: tuple[str, ...] = (),
) -> None:
    """Make `compression=name` (and each alias) available; `content_type` goes in the `compression` header."""
    if not name or not isinstance(name, str):
        raise ValueError(f"compression name must be a non-empty str, not {name!r}")
    codec = Compressor(name, compress, content_type)
    for key in (name, *aliases):
        _compressors[key] = codec


def get_serializer(name: str) -> Serializer:
    """The registered serializer called `name`, or ValueError listing the known ones."""
    try:
        return _serializers[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_serializers))
        raise ValueError(f"unknown serializer {name!r} (known: {known})") from None


def get_compressor(name: str) -> Compressor:
    """The registered compressor called `name`, or ValueError listing the known ones."""
    try:
        return _compressors[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_compressors))
        raise ValueError(f"unknown compression {name!r} (known: {known})") from None


# The optional codecs are looked up here and imported at their first use, not at
# `import aiopublish` (msgpack, orjson, json, pickle: about 15 ms together).
_UNLOADED: Any = object()
_orjson: Any = _UNLOADED if importlib.util.find_spec("orjson") is not None else None  # aiopublish[speed]
_ORJSON_OPTIONS = 0


def _load_orjson() -> Any:
    global _orjson, _ORJSON_OPTIONS
    try:
        import orjson
    except ImportError:  # pragma: no cover - a broken install: found but not importable
        _orjson = None
        return None
    # Types orjson would encode but the stdlib refuses are passed through, so orjson raises
    # and the stdlib decides: a payload is accepted or refused the same way either way.
    _ORJSON_OPTIONS = (
        orjson.OPT_NON_STR_KEYS
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_DATACLASS
        | orjson.OPT_PASSTHROUGH_SUBCLASS
    )
    _orjson = orjson
    return orjson


def _json_dumps(payload: Any) -> bytes:
    """JSON bytes: orjson's when installed (compact, UTF-8), else json.dumps' (kombu's exact bytes).

    Both decode to the same value, except NaN and infinities, which orjson writes as null.
    """
    codec = _orjson if _orjson is not _UNLOADED else _load_orjson()
    if codec is not None:
        try:
            encoded: bytes = codec.dumps(payload, option=_ORJSON_OPTIONS)
            return encoded
        except TypeError:
            pass  # e.g. an int beyond 64 bits, a set, a subclass: let the stdlib accept or refuse it
    import json

    return json.dumps(payload).encode("utf-8")


def _pickle_dumps(payload: Any) -> bytes:
    import pickle

    return pickle.dumps(payload, protocol=pickle.DEFAULT_PROTOCOL)


def _raw_placeholder(payload: Any) -> bytes:  # pragma: no cover - encode_body handles raw itself
    raise AssertionError("raw is handled by encode_body")


register_serializer("raw", _raw_placeholder, "application/data", "binary")
register_serializer("json", _json_dumps, "application/json", "utf-8")
register_serializer("pickle", _pickle_dumps, "application/x-python-serialize", "binary")

if importlib.util.find_spec("msgpack") is not None:  # the optional extra aiopublish[msgpack]

    def _msgpack_dumps(payload: Any) -> bytes:
        import msgpack

        packed: bytes = msgpack.packb(payload, use_bin_type=True)
        return packed

    register_serializer("msgpack", _msgpack_dumps, "application/x-msgpack", "binary")

register_compressor("gzip", zlib.compress, "application/x-gzip", aliases=("zlib",))
register_compressor("bzip2", bz2.compress, "application/x-bz2")
register_compressor("lzma", lzma.compress, "application/x-lzma", aliases=("xz",))

if importlib.util.find_spec("zstandard") is not None:  # the optional extra aiopublish[zstd]

    def _zstd_compress(body: bytes) -> bytes:
        import zstandard

        compressed: bytes = zstandard.ZstdCompressor().compress(body)
        return compressed

    register_compressor("zstd", _zstd_compress, "application/zstd")


def _raw_encode(payload: Any) -> tuple[str, str, bytes]:
    # kombu's raw_encode: bytes go as they are, str as utf-8, both as application/data.
    if isinstance(payload, str):
        return "application/data", "utf-8", payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return "application/data", "binary", bytes(payload)
    raise SerializationError(f"the raw serializer sends bytes or str, not {type(payload).__name__}")


def encode_body(
    payload: Any,
    serializer: Serializer | str,
    content_type: str | None,
    content_encoding: str | None,
) -> tuple[str, str, bytes]:
    """Return (content_type, content_encoding, body) the way kombu's Producer prepares them.

    Without `content_type` the serializer encodes the payload. With one, a str is
    encoded with `content_encoding` (utf-8 if none) and bytes go unchanged, labelled
    "binary" unless an encoding is given. Raises SerializationError; nothing is sent then.
    """
    if content_type:
        if isinstance(payload, str):
            encoding = content_encoding or "utf-8"
            try:
                return content_type, encoding, payload.encode(encoding)
            except (LookupError, UnicodeError) as exc:
                raise SerializationError(f"cannot encode the body as {encoding!r}: {exc}") from exc
        if isinstance(payload, (bytes, bytearray, memoryview)):
            return content_type, content_encoding or "binary", bytes(payload)
        raise SerializationError(
            f"with an explicit content_type the payload must be str or bytes, not {type(payload).__name__}"
        )
    codec = serializer if isinstance(serializer, Serializer) else get_serializer(serializer)
    if codec.name == "raw":
        return _raw_encode(payload)
    try:
        body = codec.encoder(payload)
        if isinstance(body, str):
            body = body.encode(codec.content_encoding)
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(f"serializer {codec.name!r} cannot encode a {type(payload).__name__}: {exc}") from exc
    if not isinstance(body, (bytes, bytearray)):
        raise SerializationError(f"serializer {codec.name!r} returned {type(body).__name__}, not bytes")
    return codec.content_type, codec.content_encoding, bytes(body)


def compress(body: bytes, compression: Compressor | str) -> tuple[bytes, str]:
    """Compress `body`; return it with the value of the `compression` header."""
    codec = compression if isinstance(compression, Compressor) else get_compressor(compression)
    return codec.compress(body), codec.content_type
