"""The wire format of properties and headers, pinned against py-amqp (what nameko/kombu send and decode).

The byte tables need no broker; the read-back tests publish through the real broker and
read with aiormq (pamqp) and with py-amqp itself.
"""

from __future__ import annotations

import asyncio
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

import amqp
import pytest
from amqp.basic_message import Message as AmqpMessage
from amqp.serialization import dumps as amqp_dumps
from amqp.serialization import loads as amqp_loads
from pamqp import commands as spec
from pamqp import encode as pamqp_encode
from yarl import URL

from aiopublish import Publisher, Queue
from aiopublish._wire import PropertiesTemplate, check_content_header, field_table
from tests.broker import Broker

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


def padded_headers(publisher: Publisher, properties_size: int) -> dict[str, str]:
    """Headers that make this publisher's encoded properties exactly `properties_size` bytes."""
    base = len(publisher._defaults.override({"headers": {"pad": ""}}).prepare(b"").properties)
    return {"pad": "x" * (properties_size - base)}


async def test_header_over_frame_max_raises_and_costs_nothing(broker: Broker, amqp_url: str) -> None:
    """Properties of exactly the broker's limit go through; one byte more is a ValueError: no reconnect, next works."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, serializer="raw", retry=False) as publisher:
        frame_max = publisher._link.ready_channel()._frame_max  # type: ignore[union-attr]
        limit = frame_max - 20
        await publisher.publish(b"fits", headers=padded_headers(publisher, limit))
        with pytest.raises(ValueError, match=rf"encode to {limit + 1} bytes; the broker's frame_max \({frame_max}\)"):
            await publisher.publish(b"too big", headers=padded_headers(publisher, limit + 1))
        await publisher.publish(b"after")
        assert publisher.metrics.reconnects == 0
    bodies = [m.body for m in await broker.get_all(queue)]
    assert bodies == [b"fits", b"after"]


# -- read back through the broker -------------------------------------------------------------------

ROUND_TRIP: dict[str, Any] = {
    "float": 0.1,
    "float2": 123456789.125,
    "huge": 1e300,
    "tiny": 5e-324,
    "naive": STAMP,
    "aware": datetime(2026, 1, 2, 3, 4, 5, tzinfo=EAST),
    "bytes": b"\xff\x00\xfe",
    "text-bytes": b"abc",
    "int64": -(2**40),
    "decimal": Decimal("-3.14159"),
    "nested": {"a": [1, 2.5, {"b": None, "when": STAMP}], "c": True},
}


def py_amqp_get(url: str, queue: str) -> dict[str, Any]:
    """The next message's properties in `queue`, read with py-amqp (what a nameko consumer runs)."""
    parsed = URL(url)
    connection = amqp.Connection(
        host=f"{parsed.host}:{parsed.port or 5672}",
        userid=parsed.user or "guest",
        password=parsed.password or "guest",
        virtual_host=parsed.path[1:] or "/",
    )
    connection.connect()
    try:
        channel = connection.channel()
        message = channel.basic_get(queue, no_ack=True)
        assert message is not None, f"queue {queue} is empty"
        return dict(message.properties)
    finally:
        connection.close()


async def test_round_trip_through_the_broker(broker: Broker, amqp_url: str) -> None:
    """Floats, datetimes, bytes and nested tables arrive as sent, read by aiormq (pamqp) and by py-amqp."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, retry=False) as publisher:
        await publisher.publish("one", headers=ROUND_TRIP, timestamp=STAMP)
        await publisher.publish("two", headers=ROUND_TRIP, timestamp=STAMP)
    got = (await broker.get(queue)).header.properties
    headers = dict(got.headers or {})
    for name in ("float", "float2", "huge", "tiny", "int64", "decimal"):
        assert headers[name] == ROUND_TRIP[name], name
    assert headers["bytes"] == b"\xff\x00\xfe" and headers["text-bytes"] == "abc"
    assert _utc(headers["naive"]) == STAMP.replace(tzinfo=UTC)
    assert _utc(headers["aware"]) == ROUND_TRIP["aware"]
    assert _utc(got.timestamp) == STAMP.replace(tzinfo=UTC)
    nested = headers["nested"]
    assert nested["a"][:2] == [1, 2.5] and nested["a"][2]["b"] is None and nested["c"] is True
    assert _utc(nested["a"][2]["when"]) == STAMP.replace(tzinfo=UTC)

    properties = await asyncio.to_thread(py_amqp_get, amqp_url, queue)
    expected = {
        **ROUND_TRIP,
        "aware": datetime(2026, 1, 1, 21, 34, 5),  # py-amqp hands back naive UTC datetimes
        "text-bytes": "abc",
        "nested": {"a": [1, 2.5, {"b": None, "when": STAMP}], "c": True},
    }
    assert properties["application_headers"] == expected
    assert properties["timestamp"] == calendar.timegm(STAMP.utctimetuple())


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def test_headers_exchange_routes_on_64_bit_ints_and_doubles(broker: Broker, amqp_url: str) -> None:
    """The broker parses py-amqp's 'L' ints and 'd' doubles: a headers exchange matches them to its binding."""
    exchange = await broker.exchange("headers")
    queue = await broker.queue()
    await broker.bind(queue, exchange, arguments={"x-match": "all", "big": 2**40, "ratio": 0.5})
    async with Publisher(amqp_url, exchange=exchange, serializer="raw", retry=False) as publisher:
        await publisher.publish(b"match", headers={"big": 2**40, "ratio": 0.5})
        await publisher.publish(b"other int", headers={"big": 2**40 + 1, "ratio": 0.5})
        await publisher.publish(b"other float", headers={"big": 2**40, "ratio": 0.25})
        assert publisher.metrics.reconnects == 0
    assert [m.body for m in await broker.get_all(queue)] == [b"match"]


async def test_bad_header_among_500_good_ones(broker: Broker, amqp_url: str) -> None:
    """Among 500 concurrent good publishes, a NaN header, a header over frame_max and an oversized body each raise
    ValueError; all 500 good ones are in the queue, with no reconnect."""
    queue = await broker.queue()
    bad = {
        120: {"headers": {"ratio": math.nan}},
        250: {"headers": {"pad": "x" * 200_000}},
        380: {"max_message_size": 3},
    }
    async with Publisher(amqp_url, declare=[Queue(queue, durable=True)], routing_key=queue) as publisher:
        results = await asyncio.gather(
            *(
                publisher.publish({"i": i}, message_id=f"m-{i}", **bad.get(i, {"headers": {"i": i}}))
                for i in range(503)
            ),
            return_exceptions=True,
        )
        assert publisher.metrics.reconnects == 0
    failed = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
    assert set(failed) == set(bad)
    assert all(isinstance(error, ValueError) for error in failed.values())
    assert "headers['ratio']" in str(failed[120]) and "frame_max" in str(failed[250])
    assert "max_message_size is 3" in str(failed[380])
    ids = [m.header.properties.message_id for m in await broker.get_all(queue)]
    assert sorted(ids) == sorted(f"m-{i}" for i in range(503) if i not in bad)


async def test_publish_many_header_over_frame_max_fails_alone(broker: Broker, amqp_url: str) -> None:
    """In publish_many, one message whose headers exceed frame_max fails with ValueError; the other 499 arrive."""
    queue = await broker.queue()
    headers: list[dict[str, Any] | None] = [{"i": i} for i in range(500)]
    headers[250] = {"pad": "x" * 200_000}
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        results = await publisher.publish_many(range(500), headers=headers)
        assert publisher.metrics.reconnects == 0
    failed = [r for r in results if not r.ok]
    assert [r.index for r in failed] == [250]
    assert isinstance(failed[0].error, ValueError) and "frame_max" in str(failed[0].error)
    ids = {m.header.properties.message_id for m in await broker.get_all(queue)}
    assert ids == {r.message_id for r in results if r.ok} and len(ids) == 499


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
