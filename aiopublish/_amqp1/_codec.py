"""The AMQP 1.0 type system (OASIS AMQP 1.0, part 1): encoders to bytes and one decoder.

Encoders are small functions that return the encoding of one value of one AMQP type:
a publisher knows the type of every field it writes, so nothing is guessed from a
Python type except in `encode_value` (application properties, amqp-value bodies),
where the mapping is stated. Each encoder picks the shortest form the specification
allows (`uint0`, `smalluint`, `str8` before `str32`...), as the specification's
examples do.

`decode` reads any value the specification defines: a symbol comes back as `Symbol`
(a `str`), a described value as `Described(descriptor, value)`, a timestamp as
`Timestamp` (milliseconds since the Unix epoch), lists and arrays as lists, maps as
dicts. Malformed input raises `DecodeError` (a ValueError), never IndexError.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

__all__ = [
    "DecodeError",
    "Described",
    "Symbol",
    "Timestamp",
    "decode",
    "encode_array_symbols",
    "encode_binary",
    "encode_bool",
    "encode_described",
    "encode_list",
    "encode_map",
    "encode_null",
    "encode_string",
    "encode_symbol",
    "encode_timestamp",
    "encode_ubyte",
    "encode_uint",
    "encode_ulong",
    "encode_ushort",
    "encode_value",
]

NULL = b"\x40"
TRUE = b"\x41"
FALSE = b"\x42"

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")


class DecodeError(ValueError):
    """The bytes are not a valid AMQP 1.0 encoding."""


class Symbol(str):
    """An AMQP symbol (an ASCII name such as ``amqp:not-found``), told apart from a string."""

    __slots__ = ()


class Timestamp(int):
    """An AMQP timestamp: milliseconds since the Unix epoch."""

    __slots__ = ()


class Described(NamedTuple):
    """A described value: performatives, message sections, outcomes, errors."""

    descriptor: Any
    value: Any


# -- encoders of one type --------------------------------------------------------------------


def encode_null() -> bytes:
    return NULL


def encode_bool(value: bool) -> bytes:
    return TRUE if value else FALSE


def encode_ubyte(value: int) -> bytes:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{value} does not fit an AMQP ubyte")
    return b"\x50" + bytes((value,))


def encode_ushort(value: int) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{value} does not fit an AMQP ushort")
    return b"\x60" + _U16.pack(value)


def encode_uint(value: int) -> bytes:
    if value == 0:
        return b"\x43"  # uint0
    if 0 < value <= 0xFF:
        return b"\x52" + bytes((value,))  # smalluint
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{value} does not fit an AMQP uint")
    return b"\x70" + _U32.pack(value)


def encode_ulong(value: int) -> bytes:
    if value == 0:
        return b"\x44"  # ulong0
    if 0 < value <= 0xFF:
        return b"\x53" + bytes((value,))  # smallulong
    if not 0 <= value <= 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"{value} does not fit an AMQP ulong")
    return b"\x80" + _U64.pack(value)


def encode_long(value: int) -> bytes:
    if -128 <= value <= 127:
        return b"\x55" + _I8.pack(value)  # smalllong
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{value} does not fit an AMQP long")
    return b"\x81" + _I64.pack(value)


def encode_double(value: float) -> bytes:
    return b"\x82" + _F64.pack(value)


def encode_timestamp(milliseconds: int) -> bytes:
    return b"\x83" + _I64.pack(milliseconds)


def encode_uuid(value: uuid.UUID) -> bytes:
    return b"\x98" + value.bytes


def _variable(short_code: bytes, long_code: bytes, data: bytes) -> bytes:
    size = len(data)
    if size <= 0xFF:
        return short_code + bytes((size,)) + data
    return long_code + _U32.pack(size) + data


def encode_binary(value: bytes) -> bytes:
    return _variable(b"\xa0", b"\xb0", value)


def encode_string(value: str) -> bytes:
    return _variable(b"\xa1", b"\xb1", value.encode("utf-8"))


def encode_symbol(value: str) -> bytes:
    try:
        data = value.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"an AMQP symbol is ASCII only, not {value!r}") from None
    return _variable(b"\xa3", b"\xb3", data)


def encode_list(items: Sequence[bytes]) -> bytes:
    """A list of already-encoded values (list0 when empty)."""
    if not items:
        return b"\x45"
    data = b"".join(items)
    # list8's size counts the count byte too; both must fit one octet.
    if len(data) + 1 <= 0xFF and len(items) <= 0xFF:
        return b"\xc0" + bytes((len(data) + 1, len(items))) + data
    return b"\xd0" + _U32.pack(len(data) + 4) + _U32.pack(len(items)) + data


def encode_fields(items: Sequence[bytes]) -> bytes:
    """A performative's or section's field list: trailing nulls dropped, as the specification allows."""
    end = len(items)
    while end and items[end - 1] == NULL:
        end -= 1
    return encode_list(items[:end])


def encode_map(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """A map of already-encoded keys and values."""
    data = b"".join(key + value for key, value in pairs)
    count = len(pairs) * 2
    if len(data) + 1 <= 0xFF and count <= 0xFF:
        return b"\xc1" + bytes((len(data) + 1, count)) + data
    return b"\xd1" + _U32.pack(len(data) + 4) + _U32.pack(count) + data


def encode_array_symbols(values: Sequence[str]) -> bytes:
    """An array of symbols (sym8 elements when they all fit, else sym32)."""
    raw = [value.encode("ascii") for value in values]
    if all(len(item) <= 0xFF for item in raw):
        data = b"\xa3" + b"".join(bytes((len(item),)) + item for item in raw)
    else:
        data = b"\xb3" + b"".join(_U32.pack(len(item)) + item for item in raw)
    # The size counts the count and the constructor; array8 when both fit one octet.
    if len(data) + 1 <= 0xFF and len(raw) <= 0xFF:
        return b"\xe0" + bytes((len(data) + 1, len(raw))) + data
    return b"\xf0" + _U32.pack(len(data) + 4) + _U32.pack(len(raw)) + data


def encode_described(code: int, value: bytes) -> bytes:
    """A value described by a numeric (ulong) descriptor, as every performative and section is."""
    return b"\x00" + encode_ulong(code) + value


def encode_value(value: Any, what: str = "value") -> bytes:
    """A Python value as the AMQP type that holds it; TypeError naming `what` for anything else.

    None -> null, bool -> boolean, int -> long (ulong past a long's range), float -> double,
    str -> string (`Symbol` -> symbol), bytes -> binary, datetime -> timestamp (ms),
    UUID -> uuid, mappings -> map, lists and tuples -> list.
    """
    if value is None:
        return NULL
    if value is True or value is False:
        return encode_bool(value)
    if isinstance(value, int):
        if isinstance(value, Timestamp):
            return encode_timestamp(int(value))
        if value >= 2**63:
            return encode_ulong(value)
        return encode_long(value)
    if isinstance(value, float):
        return encode_double(value)
    if isinstance(value, str):
        return encode_symbol(value) if isinstance(value, Symbol) else encode_string(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return encode_binary(bytes(value))
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return encode_timestamp(int(aware.timestamp() * 1000))
    if isinstance(value, uuid.UUID):
        return encode_uuid(value)
    if isinstance(value, Mapping):
        return encode_map([(encode_value(k, what), encode_value(v, what)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return encode_list([encode_value(item, what) for item in value])
    raise TypeError(f"{what}: {type(value).__name__} has no AMQP 1.0 encoding")


# -- the decoder ------------------------------------------------------------------------------


def decode(data: bytes | memoryview, offset: int = 0) -> tuple[Any, int]:
    """The value encoded at `offset` in `data` and the offset just past it."""
    try:
        code = data[offset]
    except IndexError:
        raise DecodeError("the data ends where a value should start") from None
    if code == 0x00:
        descriptor, offset = decode(data, offset + 1)
        value, offset = decode(data, offset)
        return Described(descriptor, value), offset
    return _decode_as(data, code, offset + 1)


def _need(data: bytes | memoryview, offset: int, size: int) -> None:
    if size < 0 or offset + size > len(data):
        raise DecodeError(f"the data ends inside a value ({size} bytes needed at offset {offset})")


def _decode_as(data: bytes | memoryview, code: int, offset: int) -> tuple[Any, int]:
    """The value of type `code` whose encoding starts at `offset` (past the constructor)."""
    fixed = _FIXED.get(code)
    if fixed is not None:
        size, read = fixed
        _need(data, offset, size)
        return read(data, offset), offset + size
    if code in _VARIABLE:
        width, kind = _VARIABLE[code]
        _need(data, offset, width)
        size = data[offset] if width == 1 else _U32.unpack_from(data, offset)[0]
        offset += width
        _need(data, offset, size)
        raw = bytes(data[offset : offset + size])
        offset += size
        try:
            if kind == "binary":
                return raw, offset
            if kind == "string":
                return raw.decode("utf-8"), offset
            return Symbol(raw.decode("ascii")), offset
        except UnicodeDecodeError as exc:
            raise DecodeError(f"a {kind} that is not valid {exc.encoding}") from None
    if code in (0xC0, 0xC1, 0xD0, 0xD1, 0xE0, 0xF0):
        width = 1 if code in (0xC0, 0xC1, 0xE0) else 4
        _need(data, offset, 2 * width)
        if width == 1:
            size, count = data[offset], data[offset + 1]
        else:
            size, count = _U32.unpack_from(data, offset)[0], _U32.unpack_from(data, offset + 4)[0]
        end = offset + width + size
        _need(data, offset + width, size)
        offset += 2 * width
        if code in (0xE0, 0xF0):
            items, offset = _array(data, offset, count)
        else:
            items = []
            for _ in range(count):
                item, offset = decode(data, offset)
                items.append(item)
        if offset != end:
            raise DecodeError(f"a compound value's size says it ends at {end}, its items end at {offset}")
        if code in (0xC1, 0xD1):
            if count % 2:
                raise DecodeError("a map with an odd number of keys and values")
            return _as_map(items), offset
        return items, offset
    raise DecodeError(f"unknown AMQP type code 0x{code:02x}")


def _as_map(items: list[Any]) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    for index in range(0, len(items), 2):
        key = items[index]
        try:
            result[key] = items[index + 1]
        except TypeError:  # an unhashable key (a list): keep it findable by its text
            result[repr(key)] = items[index + 1]
    return result


def _array(data: bytes | memoryview, offset: int, count: int) -> tuple[list[Any], int]:
    """The `count` elements of an array: one constructor, then values without constructors."""
    _need(data, offset, 1)
    code = data[offset]
    offset += 1
    descriptor = None
    if code == 0x00:
        descriptor, offset = decode(data, offset)
        _need(data, offset, 1)
        code = data[offset]
        offset += 1
    items = []
    for _ in range(count):
        item, offset = _decode_as(data, code, offset)
        items.append(item if descriptor is None else Described(descriptor, item))
    return items, offset


def _const(value: Any) -> Any:
    return lambda data, offset: value


def _struct(unpacker: struct.Struct, wrap: Any = None) -> Any:
    if wrap is None:
        return lambda data, offset: unpacker.unpack_from(data, offset)[0]
    return lambda data, offset: wrap(unpacker.unpack_from(data, offset)[0])


def _bool(data: bytes | memoryview, offset: int) -> bool:
    byte = data[offset]
    if byte > 1:
        raise DecodeError(f"a boolean byte must be 0 or 1, not {byte}")
    return byte == 1


_FIXED: dict[int, tuple[int, Any]] = {
    0x40: (0, _const(None)),
    0x41: (0, _const(True)),
    0x42: (0, _const(False)),
    0x45: (0, lambda data, offset: []),  # list0
    0x56: (1, _bool),
    0x50: (1, lambda data, offset: data[offset]),  # ubyte
    0x60: (2, _struct(_U16)),  # ushort
    0x70: (4, _struct(_U32)),  # uint
    0x52: (1, lambda data, offset: data[offset]),  # smalluint
    0x43: (0, _const(0)),  # uint0
    0x80: (8, _struct(_U64)),  # ulong
    0x53: (1, lambda data, offset: data[offset]),  # smallulong
    0x44: (0, _const(0)),  # ulong0
    0x51: (1, _struct(_I8)),  # byte
    0x61: (2, _struct(_I16)),  # short
    0x71: (4, _struct(_I32)),  # int
    0x54: (1, _struct(_I8)),  # smallint
    0x81: (8, _struct(_I64)),  # long
    0x55: (1, _struct(_I8)),  # smalllong
    0x72: (4, _struct(_F32)),  # float
    0x82: (8, _struct(_F64)),  # double
    0x74: (4, lambda data, offset: bytes(data[offset : offset + 4])),  # decimal32, kept raw
    0x84: (8, lambda data, offset: bytes(data[offset : offset + 8])),  # decimal64
    0x94: (16, lambda data, offset: bytes(data[offset : offset + 16])),  # decimal128
    0x73: (4, lambda data, offset: chr(_U32.unpack_from(data, offset)[0])),  # char (UTF-32)
    0x83: (8, _struct(_I64, Timestamp)),  # timestamp
    0x98: (16, lambda data, offset: uuid.UUID(bytes=bytes(data[offset : offset + 16]))),
}

_VARIABLE: dict[int, tuple[int, str]] = {
    0xA0: (1, "binary"),
    0xB0: (4, "binary"),
    0xA1: (1, "string"),
    0xB1: (4, "string"),
    0xA3: (1, "symbol"),
    0xB3: (4, "symbol"),
}
