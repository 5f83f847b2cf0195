"""AMQP 0-9-1 frames for basic.publish, built by hand so the hot path does the least work.

A publish is three frames or more: the basic.publish method, a content header
(body size and properties) and the body split to the connection's frame_max.
The method frame depends only on (exchange, routing key, mandatory) and is
cached; the properties are split around message_id, which changes per message,
so everything before and after it (headers included) is encoded once per option set.

Header values are encoded as py-amqp encodes them (what kombu and nameko send and
decode), not as pamqp does: floats as 64-bit doubles ('d'), ints as 'I' or 'L',
bytes as long strings ('S'). What py-amqp would send but the broker or a consumer
would choke on is refused here instead, naming the header: NaN and infinities,
keys over 128 bytes (py-amqp and pamqp cut or crash), non-str keys, integers and
timestamps outside their 64-bit fields, unsupported types. Every refusal is a
TypeError or a ValueError; struct.error and OverflowError never escape.
"""

from __future__ import annotations

import calendar
import math
import struct
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

__all__ = [
    "CONTENT_HEADER_ROOM",
    "FRAME_OVERHEAD",
    "PropertiesTemplate",
    "check_content_header",
    "content_frames",
    "field_table",
    "method_frame",
    "table_entries",
    "short_string",
    "timestamp_seconds",
]

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
# A content header frame's head and the class/weight/size head in one pack.
_content_head = struct.Struct(">BHIHHQ")
# The end of the content header frame and the head of a body frame, in one pack.
_end_and_body_head = struct.Struct(">BBHI")
# A content header frame is the frame overhead, the class/weight/size head, then the properties.
CONTENT_HEADER_ROOM = FRAME_OVERHEAD + _header_head.size

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

_MAX_KEY_BYTES = 128  # AMQP 0-9-1: a field name is a shortstr of at most 128 octets
_MAX_LONG = 0xFFFFFFFF  # a long string's or a table's length
_MAX_TIMESTAMP = 0xFFFFFFFFFFFFFFFF  # unsigned 64-bit seconds
_I64 = (-(1 << 63), (1 << 63) - 1)
_I32_MAX = 0x7FFFFFFF
_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_i32 = struct.Struct(">i")
_i64 = struct.Struct(">q")
_f64 = struct.Struct(">d")
_decimal = struct.Struct(">Bi")
_str_head = struct.Struct(">BI")  # a long string's type tag and length
_int_entry = struct.Struct(">Bi")  # a signed 32-bit int's type tag and value


def short_string(value: str, what: str) -> bytes:
    """An AMQP shortstr; ValueError naming `what` when it does not fit in 255 bytes."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"{what} is {len(raw)} bytes long; AMQP allows at most 255")
    return bytes((len(raw),)) + raw


def timestamp_seconds(value: Any, what: str) -> int:
    """Whole seconds since the epoch of a datetime (naive = UTC, as py-amqp) or a number of seconds.

    ValueError naming `what` outside the AMQP timestamp (unsigned 64-bit seconds), TypeError for
    anything but a datetime, an int or a float.
    """
    if isinstance(value, datetime):
        try:
            # utctimetuple() leaves a naive datetime as it is: py-amqp's reading (UTC), not local time.
            seconds = calendar.timegm(value.utctimetuple())
        except (OverflowError, ValueError):
            raise ValueError(f"{what} {value!r} is out of range once converted to UTC") from None
        if seconds < 0:
            raise ValueError(f"{what} {value.isoformat()} is before 1970: an AMQP timestamp cannot hold it")
        return seconds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a datetime or seconds since the epoch, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, not {value!r}")
    if not 0 <= value <= _MAX_TIMESTAMP:
        raise ValueError(f"{what} {value!r} is outside what an AMQP timestamp holds (0 to 2**64-1 seconds)")
    return int(value)


# -- field tables (headers) --------------------------------------------------------------------


class _Refused(Exception):
    """A header value that cannot go on the wire; the path to it is filled in as the stack unwinds."""

    def __init__(self, kind: type[Exception], text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text
        self.path: list[str] = []


def field_table(table: Mapping[str, Any], what: str = "headers") -> bytes:
    """`table` as an AMQP field table (length-prefixed), encoded as py-amqp encodes it.

    Raises TypeError/ValueError naming the header by its path, e.g. ``headers['a']['b']``.
    """
    return _naming_refusals(_table, table, what)


def table_entries(table: Mapping[str, Any], what: str = "headers") -> bytes:
    """The entries of `table` as a field table holds them, without the length prefix.

    For splicing per-message headers after an option set's encoded ones (see
    PropertiesTemplate.encode_with_headers); refusals as field_table's.
    """
    return _naming_refusals(_entries, table, what)


def _naming_refusals(encode: Callable[[Mapping[Any, Any]], bytes], table: Mapping[str, Any], what: str) -> bytes:
    """`encode(table)`, a refusal raised as TypeError/ValueError naming its path under `what`."""
    try:
        return encode(table)
    except _Refused as refused:
        path = what + "".join(reversed(refused.path))
        raise refused.kind(f"{path} {refused.text}") from None
    except RecursionError:
        raise ValueError(f"{what} nest too deeply (or contain themselves) to be sent") from None


def _table(table: Mapping[Any, Any]) -> bytes:
    return _long_prefixed(_entries(table))


def _entries(table: Mapping[Any, Any]) -> bytes:
    out: list[bytes] = []
    append = out.append
    encoders = _ENCODERS
    keys = _encoded_keys
    for key, value in table.items():
        # Header names repeat from message to message: each str key is encoded (and checked) once.
        try:
            append(keys[key])
        except (KeyError, TypeError):  # new, or not a str (an odd Mapping's unhashable key): checked
            append(_new_key(key))
        kind = type(value)
        # The usual header values inline (an ASCII str cannot fail to encode), the rest by type.
        if kind is str and value.isascii() and len(value) <= _MAX_LONG:
            append(_str_head.pack(0x53, len(value)) + value.encode("ascii"))  # 'S'
        elif kind is int and -_I32_MAX <= value <= _I32_MAX:
            append(_int_entry.pack(0x49, value))  # 'I'
        else:
            try:
                append(encoders.get(kind, _item)(value))
            except _Refused as refused:
                refused.path.append(f"[{key!r}]")
                raise
    return b"".join(out)


# str key -> its encoded field name (only keys that passed _key's checks).
_encoded_keys: dict[str, bytes] = {}
_ENCODED_KEYS_MAX = 4096


def _new_key(key: Any) -> bytes:
    encoded = _key(key)
    if type(key) is str:
        if len(_encoded_keys) >= _ENCODED_KEYS_MAX:
            _encoded_keys.clear()
        _encoded_keys[key] = encoded
    return encoded


def _key(key: Any) -> bytes:
    try:
        raw = key.encode("utf-8") if type(key) is str else _odd_key(key)
    except UnicodeEncodeError:
        raise _Refused(ValueError, f"has a key {key!r} that is not valid UTF-8 text") from None
    if len(raw) > _MAX_KEY_BYTES:
        raise _Refused(
            ValueError,
            f"has a key {len(raw)} bytes long ({key[:20]!r}...); AMQP allows at most {_MAX_KEY_BYTES}, not cut",
        )
    return bytes((len(raw),)) + raw


def _odd_key(key: Any) -> bytes:
    if not isinstance(key, str):
        raise _Refused(TypeError, f"has a key {key!r} of type {type(key).__name__}: AMQP table keys must be str")
    return key.encode("utf-8")  # a str subclass


def _array(values: list[Any] | tuple[Any, ...]) -> bytes:
    out = []
    for index, value in enumerate(values):
        try:
            out.append(_ENCODERS.get(type(value), _item)(value))
        except _Refused as refused:
            refused.path.append(f"[{index}]")
            raise
    return _long_prefixed(b"".join(out))


def _long_prefixed(data: bytes) -> bytes:
    if len(data) > _MAX_LONG:
        raise _Refused(ValueError, f"is {len(data)} bytes long; an AMQP table or string holds at most 2**32-1")
    return _u32.pack(len(data)) + data


def _str(value: str) -> bytes:
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Refused(ValueError, "is not valid UTF-8 text (it holds a lone surrogate)") from None
    if len(raw) > _MAX_LONG:
        raise _Refused(ValueError, f"is {len(raw)} bytes long; an AMQP long string holds at most 2**32-1")
    return b"S" + _u32.pack(len(raw)) + raw


def _bytes(value: bytes) -> bytes:
    # py-amqp sends bytes as a long string ('S'), not as pamqp's byte array ('x').
    return b"S" + _long_prefixed(bytes(value))


def _bool(value: bool) -> bytes:
    return b"t\x01" if value else b"t\x00"


def _int(value: int) -> bytes:
    # py-amqp's sizes: 'I' (signed 32-bit) unless beyond +-(2**31-1), then 'L' (signed 64-bit).
    if -_I32_MAX <= value <= _I32_MAX:
        return b"I" + _i32.pack(value)
    if not _I64[0] <= value <= _I64[1]:
        raise _Refused(ValueError, f"is {value}: an AMQP table holds integers of at most 64 bits")
    return b"L" + _i64.pack(value)


def _float(value: float) -> bytes:
    if not math.isfinite(value):
        raise _Refused(ValueError, f"is {value!r}: AMQP headers cannot hold NaN or infinity")
    return b"d" + _f64.pack(value)


def _decimal_value(value: Decimal) -> bytes:
    if not value.is_finite():
        raise _Refused(ValueError, f"is {value!r}: AMQP headers cannot hold NaN or infinity")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    number = int("".join(map(str, digits)) or "0")
    if exponent > 0:  # Decimal("1E+2"): py-amqp cannot send it; as scale 0 it is exact
        number *= 10**exponent
        exponent = 0
    if sign:
        number = -number
    if -exponent > 255 or not -(_I32_MAX + 1) <= number <= _I32_MAX:
        raise _Refused(ValueError, f"is {value!r}: an AMQP decimal holds a 32-bit value and a scale up to 255")
    return b"D" + _decimal.pack(-exponent, number)


def _datetime(value: datetime) -> bytes:
    try:
        return b"T" + _u64.pack(timestamp_seconds(value, "timestamp"))
    except ValueError:
        raise _Refused(
            ValueError, f"is {value!r}: an AMQP timestamp holds 1970 to 2**64-1 seconds (UTC; naive is UTC)"
        ) from None


def _none(value: None) -> bytes:
    return b"V"


def _mapping(value: Mapping[Any, Any]) -> bytes:
    return b"F" + _table(value)


def _sequence(value: list[Any] | tuple[Any, ...]) -> bytes:
    return b"A" + _array(value)


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    str: _str,
    bytes: _bytes,
    bool: _bool,
    int: _int,
    float: _float,
    Decimal: _decimal_value,
    datetime: _datetime,
    type(None): _none,
    dict: _mapping,
    list: _sequence,
    tuple: _sequence,
}
# For subclasses (IntEnum, OrderedDict, ...): bool before int, as bool is an int.
_BY_ISINSTANCE: tuple[tuple[type | tuple[type, ...], Callable[[Any], bytes]], ...] = (
    (str, _str),
    (bytes, _bytes),
    (bool, _bool),
    (int, _int),
    (float, _float),
    (Decimal, _decimal_value),
    (datetime, _datetime),
    (Mapping, _mapping),
    ((list, tuple), _sequence),
)


def _item(value: Any) -> bytes:
    """A value of no exact type in _ENCODERS: a subclass (IntEnum, OrderedDict, ...) or refused."""
    for kind, encoder in _BY_ISINSTANCE:
        if isinstance(value, kind):
            return encoder(value)
    raise _Refused(
        TypeError,
        f"is a {type(value).__name__}: AMQP headers hold str, bytes, bool, int, float, Decimal, "
        "datetime, None, and dicts and lists of these",
    )


# -- properties --------------------------------------------------------------------------------


def _encode_property(name: str, value: Any) -> bytes:
    if name == "headers":
        if not isinstance(value, Mapping):
            raise TypeError(f"headers must be a dict, not {type(value).__name__}")
        return field_table(value, "headers")
    if name in ("delivery_mode", "priority"):
        return bytes((value,))
    if name == "timestamp":
        return _u64.pack(timestamp_seconds(value, "timestamp"))
    return short_string(value, name)


class PropertiesTemplate:
    """The content-header properties of one option set, with a hole for message_id and room for headers.

    The property list is laid out as: flags, head (content_type, content_encoding), headers,
    middle (delivery_mode to expiration), message_id, suffix (timestamp to cluster_id).
    `encode` fills in the message_id only. `encode_with_headers` also splices one message's
    own header entries (encoded by table_entries) after the option set's, so a message with
    headers of its own costs the encoding of those alone, not of an option set and a template.
    """

    __slots__ = ("_entries", "_flags_with_headers", "_head", "_middle", "_start", "_suffix", "header_keys")

    def __init__(self, properties: Mapping[str, Any]) -> None:
        flags = _PROPERTY_BITS["message_id"]
        encoded: dict[str, bytes] = {}
        for name in (*_BEFORE_MESSAGE_ID, *_AFTER_MESSAGE_ID):
            value = properties.get(name)
            if value is None or (name == "headers" and not value):
                continue
            flags |= _PROPERTY_BITS[name]
            encoded[name] = _encode_property(name, value)
        headers = encoded.get("headers", b"")
        self._head = b"".join(encoded.get(name, b"") for name in _BEFORE_MESSAGE_ID[:2])
        self._middle = b"".join(encoded.get(name, b"") for name in _BEFORE_MESSAGE_ID[3:])
        self._entries = headers[4:]  # without the table's length prefix
        self._start = struct.pack(">H", flags) + self._head + headers + self._middle
        self._flags_with_headers = struct.pack(">H", flags | _PROPERTY_BITS["headers"])
        self._suffix = b"".join(encoded.get(name, b"") for name in _AFTER_MESSAGE_ID)
        #: The names of the option set's headers: a message's own headers that share none are spliced.
        self.header_keys = frozenset(properties.get("headers") or ())

    def encode(self, message_id: str) -> bytes:
        """The property flags and list for a message with this id (a str: the options checked it)."""
        raw = message_id.encode("utf-8")
        if len(raw) > 255:
            raise ValueError(f"message_id is {len(raw)} bytes long; AMQP allows at most 255")
        return self._start + bytes((len(raw),)) + raw + self._suffix

    def encode_with_headers(self, message_id: str, entries: bytes, *, replace: bool = False) -> bytes:
        """As `encode`, with header `entries` after the option set's own (or instead of them: `replace`)."""
        raw = message_id.encode("utf-8")
        if len(raw) > 255:
            raise ValueError(f"message_id is {len(raw)} bytes long; AMQP allows at most 255")
        if self._entries and not replace:
            entries = self._entries + entries
        if len(entries) > _MAX_LONG:
            raise ValueError(f"headers are {len(entries)} bytes long; an AMQP table holds at most 2**32-1")
        return b"".join(
            (
                self._flags_with_headers,
                self._head,
                _u32.pack(len(entries)),
                entries,
                self._middle,
                bytes((len(raw),)),
                raw,
                self._suffix,
            )
        )


def check_content_header(properties: bytes, frame_max: int) -> None:
    """ValueError when the content header frame of these properties would exceed `frame_max`.

    RabbitMQ closes the whole connection (501 frame_too_large) for a frame over the negotiated
    frame_max, and a content header cannot be split like a body: refuse it before writing.
    """
    if len(properties) + CONTENT_HEADER_ROOM > frame_max:
        raise ValueError(
            f"the message's properties and headers encode to {len(properties)} bytes; "
            f"the broker's frame_max ({frame_max}) allows {frame_max - CONTENT_HEADER_ROOM}"
        )


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


def content_frames(channel: int, properties: bytes, body: bytes, frame_max: int) -> list[bytes]:
    """The content header frame and the body frames (each at most frame_max long), as pieces to join.

    Pieces rather than one bytes: the channel joins a whole event-loop turn's frames at once,
    so the body is copied once, into the write, and not first into its own frame.
    """
    size = len(body)
    chunk = frame_max - FRAME_OVERHEAD
    head = _content_head.pack(_FRAME_HEADER, channel, _header_head.size + len(properties), _BASIC_CLASS, 0, size)
    if 0 < size <= chunk:  # the usual case: one body frame
        return [head, properties, _end_and_body_head.pack(0xCE, _FRAME_BODY, channel, size), body, _FRAME_END]
    out = [head, properties, _FRAME_END]
    for start in range(0, size, chunk):
        part = body[start : start + chunk]
        out += (_frame_head.pack(_FRAME_BODY, channel, len(part)), part, _FRAME_END)
    return out
