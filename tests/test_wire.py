"""The wire format through the real broker: frame_max at its edge, and headers read back with aiormq and py-amqp.

The byte tables, pinned against py-amqp without a broker, are in tests/unit/test_wire.py.
"""

from __future__ import annotations

import asyncio
import calendar
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import amqp
import pytest
from yarl import URL

from aiopublish import Publisher, Queue
from tests.broker import Broker
from tests.internals import channel_of
from tests.unit.test_wire import EAST, STAMP


def padded_headers(publisher: Publisher, properties_size: int) -> dict[str, str]:
    """Headers that make this publisher's encoded properties exactly `properties_size` bytes."""
    base = len(publisher._defaults.override({"headers": {"pad": ""}}).prepare(b"").properties)
    return {"pad": "x" * (properties_size - base)}


async def test_header_over_frame_max_raises_and_costs_nothing(broker: Broker, amqp_url: str) -> None:
    """Properties of exactly the broker's limit go through; one byte more is a ValueError: no reconnect, next works."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, serializer="raw", retry=False) as publisher:
        frame_max = channel_of(publisher)._frame_max
        limit = frame_max - 20
        await publisher.publish(b"fits", headers=padded_headers(publisher, limit))
        with pytest.raises(ValueError, match=rf"encode to {limit + 1} bytes; the broker's frame_max \({frame_max}\)"):
            await publisher.publish(b"too big", headers=padded_headers(publisher, limit + 1))
        await publisher.publish(b"after")
        assert publisher.metrics.reconnects == 0
    bodies = [m.body for m in await broker.get_all(queue)]
    assert bodies == [b"fits", b"after"]


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
