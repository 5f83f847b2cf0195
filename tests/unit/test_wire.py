"""The wire format of properties and headers, pinned against py-amqp (what nameko/kombu send and decode).

The byte tables need no broker; the read-back tests, which publish through the real broker
and read with aiormq (pamqp) and with py-amqp itself, are in tests/test_wire.py.
"""

from __future__ import annotations

import calendar
import enum
import math
import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from amqp.basic_message import Message as AmqpMessage
from amqp.serialization import dumps as amqp_dumps
from amqp.serialization import loads as amqp_loads
from pamqp import commands as spec
from pamqp import encode as pamqp_encode

from aiopublish import Publisher
from aiopublish._wire import PropertiesTemplate, check_content_header, field_table

NOWHERE = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens: a publish that connects fails
STAMP = datetime(2026, 1, 2, 3, 4, 5)
EAST = timezone(timedelta(hours=5, minutes=30))

# (header value, whether pamqp's encoding is the same bytes as py-amqp's)
HEADER_VALUES: list[tuple[str, Any, bool]] = [
    ("ascii str", "text", True),
    ("unicode str", "héllo ☃ 𝄞", True),
    ("empty str", "", True),
    ("utf-8 bytes", b"raw bytes", False),  # py-amqp: long string 'S'; pamqp refuses bytes
    ("binary bytes", b"\xff\x00\xfe", False),
    ("true", True, True),
    ("false", False, True),
    ("zero", 0, False),  # py-amqp: 'I' for every 32-bit int; pamqp: the smallest ('b', 's', 'u')
    ("small negative", -5, False),
    ("int32 max", 2**31 - 1, True),
    ("-(2**31 - 1)", -(2**31 - 1), True),
    ("-2**31", -(2**31), False),  # py-amqp switches to 'L' at -2**31; pamqp keeps 'I'
    ("2**31", 2**31, False),  # py-amqp 'L' (signed 64-bit); pamqp 'i' (unsigned 32-bit)
    ("2**40", 2**40, False),  # py-amqp 'L', pamqp 'l': same value, another letter
    ("int64 min", -(2**63), False),
    ("int64 max", 2**63 - 1, False),
    ("0.1", 0.1, False),  # py-amqp: 64-bit 'd'; pamqp: 32-bit 'f' (0.10000000149011612)
    ("123456789.125", 123456789.125, False),
    ("1e300", 1e300, False),  # pamqp: OverflowError
    ("-0.0", -0.0, False),
    ("smallest subnormal", 5e-324, False),
    ("decimal 1.50", Decimal("1.50"), True),
    ("decimal -3.14159", Decimal("-3.14159"), True),
    ("decimal int32 edge", Decimal("-2147483648"), True),
    ("naive datetime (UTC)", STAMP, True),
    ("aware datetime", datetime(2026, 1, 2, 3, 4, 5, tzinfo=EAST), True),
    ("datetime with microseconds", datetime(2026, 1, 2, 3, 4, 5, 999999), True),
    ("None", None, True),
    ("table of str", {"a": "x", "b": {"c": "y"}}, True),
    ("table with numbers", {"n": 1, "f": 0.5}, False),
    ("array of str", ["x", "y", ["z"]], True),
    ("tuple", ("x", 1), False),  # pamqp refuses tuples
    ("empty table", {}, True),
    ("empty array", [], True),
    ("nested everything", {"a": [1, 2.5, b"b", None, {"t": STAMP, "d": Decimal("0.01")}]}, False),
]


def pamqp_table(value: dict[str, Any]) -> bytes | None:
    """pamqp's encoding, or None where pamqp refuses the value."""
    try:
        return pamqp_encode.field_table(value)
    except (TypeError, ValueError, OverflowError):
        return None


@pytest.mark.parametrize(("value", "pamqp_agrees"), [v[1:] for v in HEADER_VALUES], ids=[v[0] for v in HEADER_VALUES])
def test_header_value_bytes_match_py_amqp(value: Any, pamqp_agrees: bool) -> None:
    """Each header value encodes to py-amqp's exact bytes; pamqp's bytes agree exactly where the table says."""
    table = {"v": value}
    ours = field_table(table)
    assert ours == amqp_dumps("F", [table])
    assert (ours == pamqp_table(table)) is pamqp_agrees


def test_header_values_decode_back_with_py_amqp() -> None:
    """py-amqp decodes our table to the values sent (floats exact, naive datetimes as UTC, bytes as sent)."""
    table = {name: value for name, value, _ in HEADER_VALUES}
    (decoded,), _ = amqp_loads("F", field_table(table), 0)
    assert decoded["0.1"] == 0.1 and decoded["123456789.125"] == 123456789.125 and decoded["1e300"] == 1e300
    assert math.copysign(1, decoded["-0.0"]) == -1
    assert decoded["binary bytes"] == b"\xff\x00\xfe"
    assert decoded["utf-8 bytes"] == "raw bytes"  # py-amqp's own reading of its long strings
    assert decoded["naive datetime (UTC)"] == STAMP
    assert decoded["aware datetime"] == datetime(2026, 1, 1, 21, 34, 5)
    assert decoded["2**40"] == 2**40 and decoded["int64 min"] == -(2**63)
    assert decoded["decimal -3.14159"] == Decimal("-3.14159")
    assert decoded["nested everything"] == {"a": [1, 2.5, "b", None, {"t": STAMP, "d": Decimal("0.01")}]}


def test_decimal_with_positive_exponent_is_sent_exactly() -> None:
    """Decimal('1E+2'), which py-amqp cannot pack, goes as 100 with scale 0 rather than failing."""
    (decoded,), _ = amqp_loads("F", field_table({"d": Decimal("1E+2")}), 0)
    assert decoded == {"d": Decimal(100)}


def test_key_of_128_bytes_is_sent_whole() -> None:
    """A key of exactly 128 bytes (multi-byte characters counted in bytes) goes out uncut."""
    key = "é" * 64
    (decoded,), _ = amqp_loads("F", field_table({key: 1}), 0)
    assert decoded == {key: 1}


# -- whole property lists ------------------------------------------------------------------------

ALL_PROPERTIES: dict[str, Any] = {
    "content_type": "application/json",
    "content_encoding": "utf-8",
    "headers": {"f": 0.1, "b": b"\x01", "t": STAMP, "n": {"x": [1, "y"]}},
    "delivery_mode": 2,
    "priority": 7,
    "correlation_id": "corr",
    "reply_to": "replies",
    "expiration": "10000",
    "timestamp": STAMP,
    "type": "order.paid",
    "user_id": "guest",
    "app_id": "shop",
    "cluster_id": "c1",
}
PROPERTY_SETS: list[tuple[str, dict[str, Any], bool]] = [
    ("content type only", {"content_type": "text/plain"}, True),
    ("every property", ALL_PROPERTIES, False),  # headers hold a float and bytes
    # pamqp refuses cluster_id (deprecated in 0-9-1); py-amqp and RabbitMQ take it
    ("every property, str headers", {**ALL_PROPERTIES, "headers": {"a": "b", "c": ["d"]}}, False),
    ("str headers, no cluster_id", {**ALL_PROPERTIES, "headers": {"a": "b"}, "cluster_id": None}, True),
    ("timestamp as seconds", {"content_type": "x", "timestamp": 1767322800}, True),
    ("unicode strings", {"content_type": "text/plain", "type": "ünïcode", "app_id": "☃"}, True),
]


def py_amqp_properties(properties: dict[str, Any], message_id: str) -> bytes:
    renamed = {("application_headers" if name == "headers" else name): value for name, value in properties.items()}
    if isinstance(renamed.get("timestamp"), datetime):
        renamed["timestamp"] = calendar.timegm(renamed["timestamp"].utctimetuple())  # py-amqp takes int seconds
    message = AmqpMessage(b"", message_id=message_id, **renamed)
    encoded: bytes = message._serialize_properties()
    return encoded


def pamqp_properties(properties: dict[str, Any], message_id: str) -> bytes | None:
    renamed = {
        ("message_type" if name == "type" else name): value for name, value in properties.items() if value is not None
    }
    if isinstance(renamed.get("timestamp"), int):
        renamed["timestamp"] = datetime.fromtimestamp(renamed["timestamp"], UTC)
    try:
        encoded: bytes = spec.Basic.Properties(message_id=message_id, **renamed).marshal()
    except (TypeError, ValueError, OverflowError):
        return None
    return encoded


@pytest.mark.parametrize(
    ("properties", "pamqp_agrees"), [p[1:] for p in PROPERTY_SETS], ids=[p[0] for p in PROPERTY_SETS]
)
def test_property_bytes_match_py_amqp(properties: dict[str, Any], pamqp_agrees: bool) -> None:
    """The template's property flags and list are py-amqp's bytes for the same message (pamqp's where they agree)."""
    ours = PropertiesTemplate(properties).encode("m-1")
    assert ours == py_amqp_properties(properties, "m-1")
    assert (ours == pamqp_properties(properties, "m-1")) is pamqp_agrees


@pytest.fixture
def new_york() -> Iterator[None]:
    """Run the test under TZ=America/New_York (restored after)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.usefixtures("new_york")
def test_naive_timestamp_is_utc_whatever_the_local_zone() -> None:
    """Under TZ=America/New_York a naive 05:06:07 goes out as 05:06:07 UTC, as py-amqp reads it."""
    naive = datetime(2026, 3, 1, 5, 6, 7)
    assert time.localtime(0).tm_hour == 19  # the zone really is in force: 1970-01-01 00:00 UTC is 19:00 there
    options = Publisher(NOWHERE, serializer="raw")._defaults.override({"timestamp": naive})
    encoded = options.prepare(b"").properties
    message = AmqpMessage(b"")
    message._load_properties(60, encoded, 0)
    assert message.properties["timestamp"] == calendar.timegm((2026, 3, 1, 5, 6, 7, 0, 0, 0))


# -- frame_max -------------------------------------------------------------------------------------


def test_check_content_header_boundary() -> None:
    """A content header frame may be exactly frame_max long (8 framing + 12 head + properties), not one byte more."""
    check_content_header(b"x" * (4096 - 20), 4096)
    with pytest.raises(ValueError, match=r"encode to 4077 bytes; the broker's frame_max \(4096\) allows 4076"):
        check_content_header(b"x" * (4096 - 19), 4096)


# -- read back through the broker -------------------------------------------------------------------


class Colour(enum.IntEnum):
    RED = 1


class Text(str):
    pass


def _self_referencing() -> dict[str, Any]:
    table: dict[str, Any] = {}
    table["me"] = table
    return table


def _deep(levels: int) -> dict[str, Any]:
    table: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        table = {"t": table}
    return table


ODD_VALUES: list[tuple[str, Any]] = [
    ("object", object()),
    ("complex", 1j),
    ("fraction", Fraction(1, 3)),
    ("bytearray", bytearray(b"x")),
    ("memoryview", memoryview(b"x")),
    ("float subclass NaN", type("F", (float,), {})(math.nan)),
    ("self-referencing table", _self_referencing()),
    ("10,000 levels deep", _deep(10_000)),
    ("OrderedDict with an int key", OrderedDict([(1, "x")])),
    ("str subclass key over 128 bytes", {Text("k" * 200): 1}),
    ("datetime.min aware east of UTC", datetime.min.replace(tzinfo=EAST)),
    ("type", int),
]


@pytest.mark.parametrize("value", [v[1] for v in ODD_VALUES], ids=[v[0] for v in ODD_VALUES])
def test_odd_values_raise_only_type_or_value_errors(value: Any) -> None:
    """Whatever the value, a refusal is a TypeError or ValueError naming headers, never another exception."""
    with pytest.raises((TypeError, ValueError), match="headers") as caught:
        field_table({"v": value})
    assert type(caught.value) in (TypeError, ValueError)


def test_subclasses_encode_like_their_base() -> None:
    """IntEnum, str subclasses and OrderedDict encode as int, str and table, as py-amqp encodes them."""
    table = {Text("k"): Text("v"), "c": Colour.RED, "o": OrderedDict(a="b")}
    assert field_table(table) == amqp_dumps("F", [{"k": "v", "c": 1, "o": {"a": "b"}}])
