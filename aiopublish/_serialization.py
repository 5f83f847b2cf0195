"""Serializers and compressors, with kombu's wire format so nameko consumers read our messages.

A serializer turns a payload into (content_type, content_encoding, body bytes) and,
given a decoder, body bytes back into a payload; a compressor turns body bytes into
compressed bytes (and back) and names itself in the message's `compression` header
by content type, exactly as kombu does. One registry holds both directions:
`decode_body` undoes what `encode_body` and `compress` did, as a kombu consumer would.
"""

from __future__ import annotations

import base64
import bz2
import dataclasses
import importlib.util
import io
import json
import lzma
import re
import zlib
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from ._exceptions import SerializationError

__all__ = [
    "Compressor",
    "Serializer",
    "compress",
    "decode_body",
    "encode_body",
    "get_compressor",
    "get_serializer",
    "register_compressor",
    "register_decoder",
    "register_decompressor",
    "register_serializer",
]

Decoder = Callable[[bytes], Any]


class Serializer:
    """How one serializer name encodes a payload (and, with a `decoder`, how its bodies decode)."""

    # Plain slotted classes, not dataclasses: generating dataclass methods at import costs more
    # than this whole module (see tests/test_import_cost.py). Read-only by convention.
    __slots__ = ("content_encoding", "content_type", "decoder", "encoder", "name")
    name: str
    encoder: Callable[[Any], bytes | str]
    content_type: str
    content_encoding: str
    decoder: Decoder | None

    def __init__(
        self,
        name: str,
        encoder: Callable[[Any], bytes | str],
        content_type: str,
        content_encoding: str,
        decoder: Decoder | None = None,
    ) -> None:
        self.name = name
        self.encoder = encoder
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.decoder = decoder

    def __repr__(self) -> str:
        return f"Serializer({self.name!r}, content_type={self.content_type!r})"


class Compressor:
    """How one compression name compresses a body, the header value that names it, and how to undo it."""

    __slots__ = ("compress", "content_type", "decompress", "name")
    name: str
    compress: Callable[[bytes], bytes]
    content_type: str
    decompress: Callable[[bytes], bytes] | None

    def __init__(
        self,
        name: str,
        compress: Callable[[bytes], bytes],
        content_type: str,
        decompress: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.name = name
        self.compress = compress
        self.content_type = content_type
        self.decompress = decompress

    def __repr__(self) -> str:
        return f"Compressor({self.name!r}, content_type={self.content_type!r})"


_serializers: dict[str, Serializer] = {}
_compressors: dict[str, Compressor] = {}
# The decoding side, by content type (the message says its content type, not the serializer's name).
_decoders: dict[str, Decoder] = {}
_decompressors: dict[str, Callable[[bytes], bytes]] = {}


def register_serializer(
    name: str,
    encoder: Callable[[Any], bytes | str],
    content_type: str,
    content_encoding: str = "utf-8",
    *,
    decoder: Decoder | None = None,
) -> None:
    """Make `serializer=name` available. A str result is encoded with `content_encoding`.

    `encoder` takes the payload and returns bytes or str; an exception it raises becomes a
    SerializationError naming where in the payload the refused value is. `decoder` (optional)
    turns a body of `content_type` back into the payload: `decode_body` and the in-memory
    broker's `payload` use it. Registering a name again replaces it. Raises ValueError for an
    empty name, TypeError for a decoder that is not callable.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"serializer name must be a non-empty str, not {name!r}")
    if decoder is not None and not callable(decoder):
        raise TypeError(f"decoder must be callable, not {type(decoder).__name__}")
    _serializers[name] = Serializer(name, encoder, content_type, content_encoding, decoder)
    if decoder is not None:
        _decoders[content_type] = decoder


def register_decoder(content_type: str, decoder: Decoder) -> None:
    """Decode bodies of `content_type` with `decoder` (for content types no serializer here produces)."""
    if not content_type or not isinstance(content_type, str):
        raise ValueError(f"content_type must be a non-empty str, not {content_type!r}")
    if not callable(decoder):
        raise TypeError(f"decoder must be callable, not {type(decoder).__name__}")
    _decoders[content_type] = decoder


def register_compressor(
    name: str,
    compress: Callable[[bytes], bytes],
    content_type: str,
    aliases: tuple[str, ...] = (),
    *,
    decompress: Callable[[bytes], bytes] | None = None,
) -> None:
    """Make `compression=name` (and each alias) available; `content_type` goes in the `compression` header.

    `compress` takes the serialized body (bytes) and returns the compressed bytes. `decompress`
    (optional) undoes it, for `decode_body` and the in-memory broker. Registering a name again
    replaces it. Raises ValueError for an empty name, TypeError for a `decompress` that is not
    callable.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"compression name must be a non-empty str, not {name!r}")
    if decompress is not None and not callable(decompress):
        raise TypeError(f"decompress must be callable, not {type(decompress).__name__}")
    codec = Compressor(name, compress, content_type, decompress)
    for key in (name, *aliases):
        _compressors[key] = codec
    if decompress is not None:
        _decompressors[content_type] = decompress


def register_decompressor(content_type: str, decompress: Callable[[bytes], bytes]) -> None:
    """Undo `compression` headers of `content_type` with `decompress`."""
    if not content_type or not isinstance(content_type, str):
        raise ValueError(f"content_type must be a non-empty str, not {content_type!r}")
    if not callable(decompress):
        raise TypeError(f"decompress must be callable, not {type(decompress).__name__}")
    _decompressors[content_type] = decompress


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


# -- JSON: kombu's, both ways, and the payload objects json and msgpack accept --------------------
#
# kombu 5.3+ writes datetime, date, time, Decimal, UUID and bytes as
# {"__type__": marker, "__value__": value} and reads them back to the same objects
# (kombu/utils/json.py): "json" writes exactly those shapes and its decoder reads them.
# "json-plain" is for consumers that are not kombu: the same types as ISO 8601 / canonical
# strings, bytes as base64. Both take pydantic v2 models (model_dump(mode="json"), found by
# their attributes: pydantic is never imported) and dataclasses (dataclasses.asdict, nested
# ones too); msgpack takes the same objects. Anything else is refused.
#
# Speed: orjson (when installed) writes plain data itself and calls the hooks only for the
# types it passes through; the stdlib path uses one module-level encoder, which costs what
# json.dumps(payload) costs. orjson writes a uuid.UUID as its string with no option to hand it
# over, so when its output holds a UUID-shaped string and the payload is not plain data, the
# stdlib encoder writes it instead.

_orjson: Any
try:  # orjson is an optional speedup: aiopublish[speed]
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

# Types orjson would encode itself but differently from the stdlib are passed through to the
# hooks (or make orjson raise, and the stdlib decides), so a payload is accepted or refused the
# same way with or without orjson. No OPT_NON_STR_KEYS: orjson would write UUID, date and enum
# keys that the stdlib refuses; dicts with int keys go to the stdlib, which writes them as kombu.
_ORJSON_OPTIONS = (
    0
    if _orjson is None
    else _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS | _orjson.OPT_PASSTHROUGH_SUBCLASS
)
# Part of every uuid.UUID as orjson writes it (lowercase, hyphenated); starting at a literal
# "-" keeps the search quick.
_UUID_TEXT = re.compile(rb"-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-")
_HYPHEN = ord("-")  # `int in bytes` is a memchr; `b"-" in bytes` costs ten times more
_PLAIN_TYPES = frozenset((str, int, float, bool, type(None)))
_CONTAINER_TYPES = frozenset((dict, list, tuple))
_PLAIN_OR_CONTAINER_TYPES = _PLAIN_TYPES | _CONTAINER_TYPES


def model_to_data(value: Any) -> Any:
    """A pydantic v2 model as ``model_dump(mode="json")``, a dataclass as ``asdict``; else TypeError."""
    dump = getattr(value, "model_dump", None)
    if dump is not None and hasattr(type(value), "__pydantic_serializer__"):
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    name = type(value).__name__
    raise TypeError(f"Object of type {name} is not serializable (neither a pydantic model nor a dataclass)")


def _kombu_default(value: Any) -> Any:
    """kombu's JSONEncoder.default, in its order (``__json__``, its types, bytes), then models."""
    reducer = getattr(value, "__json__", None)
    if reducer is not None:
        return reducer()
    # datetime before date: a datetime is a date too.
    if isinstance(value, datetime):
        return {"__type__": "datetime", "__value__": value.isoformat()}
    if isinstance(value, date):
        return {"__type__": "date", "__value__": value.isoformat()}
    if isinstance(value, time):
        return {"__type__": "time", "__value__": value.isoformat()}
    if isinstance(value, Decimal):
        return {"__type__": "decimal", "__value__": str(value)}
    if isinstance(value, UUID):
        return {"__type__": "uuid", "__value__": {"hex": value.hex}}
    if isinstance(value, bytes):
        try:
            return {"__type__": "bytes", "__value__": value.decode("utf-8")}
        except UnicodeDecodeError:
            return {"__type__": "base64", "__value__": base64.b64encode(value).decode("utf-8")}
    return model_to_data(value)


def _plain_default(value: Any) -> Any:
    """The same types as plain JSON values: ISO 8601 and canonical strings, bytes as base64."""
    reducer = getattr(value, "__json__", None)
    if reducer is not None:
        return reducer()
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return model_to_data(value)


# json.dumps(payload) with no options reuses one encoder; these do the same, with a hook.
# Their output is json.dumps' (and so kombu's) byte for byte: ", " and ": ", non-ASCII escaped.
_kombu_encoder = json.JSONEncoder(default=_kombu_default)
_plain_encoder = json.JSONEncoder(default=_plain_default)


def _holds_only_plain_data(payload: Any) -> bool:
    """True when `payload` is dicts, lists and tuples of str, int, float, bool and None only.

    Only values are looked at: orjson (without OPT_NON_STR_KEYS) wrote only str keys. The types
    of a container's values are gathered at C speed (set(map(type, ...))), so a flat dict costs
    one pass; recursion is bounded by orjson's own nesting limit, as orjson encoded this payload.
    """
    kind = type(payload)
    if kind is dict:
        values: Any = payload.values()
    elif kind is list or kind is tuple:
        values = payload
    else:
        return kind in _PLAIN_TYPES
    kinds = set(map(type, values))
    if kinds <= _PLAIN_TYPES:
        return True
    if not kinds <= _PLAIN_OR_CONTAINER_TYPES:
        return False
    return all(_holds_only_plain_data(value) for value in values if type(value) in _CONTAINER_TYPES)


def _orjson_with_hook(payload: Any, default: Callable[[Any], Any]) -> bytes | None:
    """orjson's bytes with `default` for what it passes through, or None: then the stdlib decides."""
    try:
        encoded: bytes = _orjson.dumps(payload, default=default, option=_ORJSON_OPTIONS)
    except TypeError:
        return None  # e.g. an int beyond 64 bits, an int key, a set: the stdlib accepts or refuses it
    return encoded


def dumps_kombu(payload: Any) -> bytes:
    """JSON bytes kombu reads back to the same objects: orjson's when installed, else json.dumps'.

    Both decode to the same value, except NaN and infinities, which orjson writes as null.
    """
    if _orjson is not None:
        try:
            # Plain data first, with no hook (quickest); orjson raises at once on anything else.
            encoded: bytes | None = _orjson.dumps(payload, option=_ORJSON_OPTIONS)
        except TypeError:
            encoded = _orjson_with_hook(payload, _kombu_default)
        # No hyphen, no UUID (one memchr for most payloads); plain data holds no uuid.UUID either
        # (one quick pass); else a uuid.UUID orjson wrote as a string would show as UUID-shaped text.
        if encoded is not None and (
            _HYPHEN not in encoded or _holds_only_plain_data(payload) or _UUID_TEXT.search(encoded) is None
        ):
            return encoded
    return _kombu_encoder.encode(payload).encode("utf-8")


def dumps_plain(payload: Any) -> bytes:
    """JSON bytes for consumers that are not kombu: datetimes, UUIDs, Decimals as strings, bytes as base64."""
    if _orjson is not None:
        # orjson writes a uuid.UUID as str(uuid), as _plain_default does.
        encoded = _orjson_with_hook(payload, _plain_default)
        if encoded is not None:
            return encoded
    return _plain_encoder.encode(payload).encode("utf-8")


_KOMBU_TYPES: dict[str, Any] = {
    "datetime": datetime.fromisoformat,
    "date": lambda value: datetime.fromisoformat(value).date(),
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": lambda value: UUID(**value),
    "bytes": lambda value: value.encode("utf-8"),
    "base64": lambda value: base64.b64decode(value.encode("utf-8")),
}


def _kombu_object_hook(obj: dict[str, Any]) -> Any:
    # kombu's object_hook: exactly the two keys make a marker; an unknown marker is an error.
    if obj.keys() == {"__type__", "__value__"}:
        decode = _KOMBU_TYPES.get(obj["__type__"])
        if decode is None:
            raise ValueError(f"unsupported __type__ {obj['__type__']!r} in a kombu JSON body")
        return decode(obj["__value__"])
    return obj


def loads_kombu(body: bytes) -> Any:
    """What kombu's json decoder returns for `body` (UTF-8): the marked types as objects."""
    return json.loads(body.decode("utf-8"), object_hook=_kombu_object_hook)


def _pickle_dumps(payload: Any) -> bytes:
    import pickle  # here: few publishers pickle, and the import is not free

    return pickle.dumps(payload, protocol=pickle.DEFAULT_PROTOCOL)


def _raw_placeholder(payload: Any) -> bytes:  # pragma: no cover - encode_body handles raw itself
    raise AssertionError("raw is handled by encode_body")


def _pickle_loads(body: bytes) -> Any:
    # Only decode_body's callers (the in-memory broker) read these: bodies this process wrote.
    import pickle

    return pickle.loads(body)


register_serializer("raw", _raw_placeholder, "application/data", "binary")
# json-plain first: "json" registers the application/json decoder last, so kombu's wins.
register_serializer("json-plain", dumps_plain, "application/json", "utf-8", decoder=loads_kombu)
register_serializer("json", dumps_kombu, "application/json", "utf-8", decoder=loads_kombu)
register_serializer("pickle", _pickle_dumps, "application/x-python-serialize", "binary", decoder=_pickle_loads)

# The optional extras are found here and imported at their first use, not at `import aiopublish`.
if importlib.util.find_spec("msgpack") is not None:  # aiopublish[msgpack]

    def _msgpack_dumps(payload: Any) -> bytes:
        import msgpack

        # `default` runs only for what msgpack cannot pack itself: pydantic models and dataclasses.
        packed: bytes = msgpack.packb(payload, use_bin_type=True, default=model_to_data)
        return packed

    def _msgpack_loads(body: bytes) -> Any:
        import msgpack

        return msgpack.unpackb(body, raw=False)

    register_serializer("msgpack", _msgpack_dumps, "application/x-msgpack", "binary", decoder=_msgpack_loads)

# kombu's "gzip" is zlib, named by this content type: the same pairs as kombu.compression.
register_compressor("gzip", zlib.compress, "application/x-gzip", aliases=("zlib",), decompress=zlib.decompress)
register_compressor("bzip2", bz2.compress, "application/x-bz2", decompress=bz2.decompress)
register_compressor("lzma", lzma.compress, "application/x-lzma", aliases=("xz",), decompress=lzma.decompress)

if importlib.util.find_spec("zstandard") is not None:  # aiopublish[zstd]

    def _zstd_compress(body: bytes) -> bytes:
        import zstandard

        compressed: bytes = zstandard.ZstdCompressor().compress(body)
        return compressed

    def _zstd_decompress(body: bytes) -> bytes:
        import zstandard

        # A stream reader also reads frames that do not record their content size (as kombu does).
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
            data: bytes = reader.read()
        return data

    register_compressor("zstd", _zstd_compress, "application/zstd", decompress=_zstd_decompress)


def _raw_encode(payload: Any) -> tuple[str, str, bytes]:
    # kombu's raw_encode: bytes go as they are, str as utf-8, both as application/data.
    if isinstance(payload, str):
        return "application/data", "utf-8", payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return "application/data", "binary", bytes(payload)
    raise SerializationError(f"the raw serializer sends bytes or str, not {type(payload).__name__}")


def _a(value: Any) -> str:
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


# How deep _where_refused looks into a payload before it names the container it got to.
_WHERE_MAX_DEPTH = 64


def _where_refused(payload: Any, encoder: Callable[[Any], bytes | str]) -> tuple[str, Any]:
    """The path inside `payload` (``payload["a"][3]``) to the innermost entry `encoder` refuses alone.

    Walks dicts, lists and tuples: at each level the first entry that cannot be encoded on its
    own is followed. Returns ("", payload) when no entry is to blame (the payload itself, or a
    dict key). Runs only after encoding failed, so its cost (one encode per entry tried) is paid
    by refused payloads alone.
    """
    path = "payload"
    value = payload
    seen: set[int] = set()
    for _ in range(_WHERE_MAX_DEPTH):
        if id(value) in seen:  # a cycle: the container that closes it is the answer
            break
        seen.add(id(value))
        if isinstance(value, dict):
            entries: Any = value.items()
        elif isinstance(value, (list, tuple)):
            entries = enumerate(value)
        else:
            break
        for key, entry in entries:
            try:
                encoder(entry)
            except Exception:
                path += f"[{json.dumps(key, ensure_ascii=False) if isinstance(key, str) else repr(key)}]"
                value = entry
                break
        else:
            break
    return ("", payload) if path == "payload" else (path, value)


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
    except Exception as exc:
        # Only now, on the failure path, look for where in the payload the refused value is.
        path, culprit = _where_refused(payload, codec.encoder)
        if isinstance(exc, SerializationError):
            if not path:
                raise
            raise SerializationError(f"{exc} (at {path})") from exc
        place = f"{path}, {_a(culprit)}" if path else _a(payload)
        raise SerializationError(f"serializer {codec.name!r} cannot encode {place}: {exc}") from exc
    if not isinstance(body, (bytes, bytearray)):
        raise SerializationError(f"serializer {codec.name!r} returned {type(body).__name__}, not bytes")
    return codec.content_type, codec.content_encoding, bytes(body)


def compress(body: bytes, compression: Compressor | str) -> tuple[bytes, str]:
    """Compress `body`; return it with the value of the `compression` header."""
    codec = compression if isinstance(compression, Compressor) else get_compressor(compression)
    return codec.compress(body), codec.content_type


def decode_body(body: bytes, content_type: str | None, content_encoding: str | None, compression: Any) -> Any:
    """The payload a kombu consumer would get: decompressed, then deserialized by content type.

    `compression` is the message's `compression` header (a content type, or None). json
    (kombu's markers turned back into datetime, UUID, Decimal, bytes ...), pickle, msgpack
    and registered decoders give objects; text/* (and any body with a content_encoding other
    than "binary") gives str; anything else stays bytes. When the compression or the body
    cannot be decoded, the result is the body as it came.
    """
    if compression:
        decompress = _decompressors.get(str(compression))
        if decompress is None:
            return body
        try:
            body = decompress(body)
        except Exception:
            return body
    decoder = _decoders.get(content_type or "")
    try:
        if decoder is not None:
            return decoder(body)
        if (content_type or "").startswith("text/"):
            return body.decode(content_encoding or "utf-8")
        if content_encoding and content_encoding.lower() not in ("binary", "ascii-8bit"):
            return body.decode(content_encoding)
    except Exception:
        return body
    return body
