"""Per-message routing keys and headers (no option set per message): what arrives, and what fails alone."""

from __future__ import annotations

import asyncio
import math

import pytest
from pamqp import commands
from pamqp.frame import unmarshal
from pamqp.header import ContentHeader

from aiopublish import Publisher, _wire
from aiopublish._options import Options
from tests.broker import Broker


def _decoded_properties(properties: bytes) -> commands.Basic.Properties:
    """The properties as pamqp decodes them from a content header frame."""
    frames = b"".join(_wire.content_frames(1, properties, b"x", 131072))
    _, _, header = unmarshal(frames)
    assert isinstance(header, ContentHeader)
    return header.properties


async def test_round_robin_routing_keys_reach_their_queues(amqp_url: str, broker: Broker) -> None:
    """2,000 messages round-robin over 4 queues: each queue holds its own, in order, with the same properties."""
    queues = [await broker.queue() for _ in range(4)]
    keys = [queues[i % 4] for i in range(2000)]
    async with Publisher(amqp_url, headers={"app": "t"}, app_id="rc") as publisher:
        results = await publisher.publish_many(range(2000), routing_keys=keys, priority=3)
    assert [r.status for r in results] == ["confirmed"] * 2000
    ids = {r.message_id: r.index for r in results}
    assert len(ids) == 2000
    for number, queue in enumerate(queues):
        got = await broker.get_all(queue)
        assert [int(m.body) for m in got] == list(range(number, 2000, 4))
        assert [ids[m.header.properties.message_id] for m in got] == list(range(number, 2000, 4))
        for message in got:
            assert message.header.properties.headers == {"app": "t"}
            assert (message.header.properties.app_id, message.header.properties.priority) == ("rc", 3)
            assert message.header.properties.content_type == "application/json"


async def test_per_message_headers_arrive_merged(amqp_url: str, broker: Broker) -> None:
    """Each message's headers arrive merged over the publisher's and the call's; the message wins a shared name."""
    queue = await broker.queue()
    per_message: list[dict[str, object] | None] = [
        {"n": 0},
        None,
        {},
        {"shared": "message", "n": 3},
        {"nested": {"a": [1, 2.5, None]}, "flag": True},
        {"extra": "message wins"},
    ]
    async with Publisher(amqp_url, routing_key=queue, headers={"base": "1", "shared": "ctor"}) as publisher:
        results = await publisher.publish_many(range(6), headers=per_message, extra_headers={"extra": "call"})
    assert [r.status for r in results] == ["confirmed"] * 6
    got = await broker.get_all(queue)
    base = {"base": "1", "shared": "ctor", "extra": "call"}
    assert [m.header.properties.headers for m in got] == [{**base, **(h or {})} for h in per_message]
    assert [int(m.body) for m in got] == list(range(6))


async def test_compression_header_is_not_overridden_per_message(amqp_url: str, broker: Broker) -> None:
    """With compression on, a message's own 'compression' header cannot replace the one naming the codec."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, compression="gzip") as publisher:
        results = await publisher.publish_many(["a", "b"], headers=[{"compression": "none", "k": 1}, {"k": 2}])
    assert all(r.ok for r in results)
    first, second = await broker.get_all(queue)
    assert first.header.properties.headers == {"compression": "application/x-gzip", "k": 1}
    assert second.header.properties.headers == {"compression": "application/x-gzip", "k": 2}


async def test_bad_routing_keys_among_good_ones_fail_alone(amqp_url: str, broker: Broker) -> None:
    """A non-str and an over-long routing key among 500 good ones fail alone, named; the other 498 arrive."""
    queue = await broker.queue()
    keys: list[object] = [queue] * 500
    keys[137] = 5
    keys[300] = "k" * 256
    async with Publisher(amqp_url) as publisher:
        results = await publisher.publish_many(range(500), routing_keys=keys)  # type: ignore[arg-type]
    failed = {r.index: r.error for r in results if not r.ok}
    assert set(failed) == {137, 300}
    assert isinstance(failed[137], TypeError) and "payload 137: routing_key must be a str" in str(failed[137])
    assert isinstance(failed[300], ValueError) and "payload 300: routing_key is 256 bytes long" in str(failed[300])
    got = await broker.get_all(queue)
    assert [int(m.body) for m in got] == [i for i in range(500) if i not in (137, 300)]
    assert {m.header.properties.message_id for m in got} == {r.message_id for r in results if r.ok}


async def test_bad_headers_among_good_ones_fail_alone(amqp_url: str, broker: Broker) -> None:
    """A NaN header, a non-str key and a non-dict entry among 500 fail alone, each named; the rest arrive."""
    queue = await broker.queue()
    headers: list[object] = [{"n": i} for i in range(500)]
    headers[10] = {"bad": math.nan}
    headers[250] = {1: "int key"}
    headers[499] = ["not", "a", "dict"]
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        results = await publisher.publish_many(range(500), headers=headers)  # type: ignore[arg-type]
    failed = {r.index: r.error for r in results if not r.ok}
    assert set(failed) == {10, 250, 499}
    assert isinstance(failed[10], ValueError) and "payload 10: headers['bad'] is nan" in str(failed[10])
    assert isinstance(failed[250], TypeError) and "payload 250: headers has a key 1" in str(failed[250])
    assert isinstance(failed[499], TypeError) and "payload 499: headers must be a dict, not list" in str(failed[499])
    got = await broker.get_all(queue)
    assert [m.header.properties.headers for m in got] == [{"n": i} for i in range(500) if i not in (10, 250, 499)]


async def test_concurrent_publishes_to_many_routing_keys(amqp_url: str, broker: Broker) -> None:
    """512 concurrent publish() calls over 4 queues, then over 300 keys (past the options cache): all arrive right."""
    queues = [await broker.queue() for _ in range(4)]
    async with Publisher(amqp_url, headers={"h": 1}, delivery_mode=1) as publisher:
        results = await asyncio.gather(*(publisher.publish(i, routing_key=queues[i % 4]) for i in range(512)))
        unroutable = await asyncio.gather(*(publisher.publish(i, routing_key=f"none-{i}") for i in range(300)))
    assert all(r.status == "confirmed" for r in [*results, *unroutable])
    for number, queue in enumerate(queues):
        got = await broker.get_all(queue)
        assert [int(m.body) for m in got] == list(range(number, 512, 4))
        assert all(m.header.properties.headers == {"h": 1} for m in got)
        assert all(m.header.properties.delivery_mode == 1 for m in got)


@pytest.mark.parametrize("option", ["routing_key", "exchange"])
async def test_overlong_destination_is_refused_and_the_next_publish_confirmed(
    amqp_url: str, broker: Broker, option: str
) -> None:
    """A routing key or exchange over 255 bytes raises ValueError naming it; the channel's count stays right."""
    queue = await broker.queue()
    async with Publisher(amqp_url, retry=False, timeout=5) as publisher:
        with pytest.raises(ValueError, match=f"{option} is 256 bytes long; AMQP allows at most 255"):
            await publisher.publish("x", **{option: "k" * 256})  # type: ignore[arg-type]
        result = await publisher.publish("next", routing_key=queue)
    assert result.status == "confirmed"
    assert [m.body for m in await broker.get_all(queue)] == [b'"next"']


def test_routing_key_overrides_share_templates() -> None:
    """Options that differ only in routing key share their properties templates; a header change does not."""
    base = Options.build(
        {
            "use_confirms": True,
            "serializer": "json",
            "compression": None,
            "delivery_mode": 2,
            "mandatory": False,
            "priority": 0,
            "expiration": None,
            "declare": [],
            "retry": True,
            "retry_policy": {},
        },
        {"headers": {"a": 1}},
    )
    first = base.override({"routing_key": "one"})
    second = base.override({"routing_key": "two", "mandatory": True})
    assert first._templates is base._templates is second._templates
    assert first.prepare("x").properties[:-30] == second.prepare("x").properties[:-30]
    assert base.override({"headers": {"b": 2}})._templates is not base._templates


@pytest.mark.parametrize(
    ("template_headers", "message_headers"),
    [
        ({}, {"n": 1}),
        ({"a": "x", "b": [1, 2]}, {"c": 2.5, "d": None}),
        ({"a": "x", "compression": "application/x-gzip"}, {"z": {"deep": True}}),
    ],
)
def test_spliced_headers_decode_as_the_merged_table(
    template_headers: dict[str, object], message_headers: dict[str, object]
) -> None:
    """A template with a message's header entries spliced in decodes to the merged headers, other properties intact."""
    template = _wire.PropertiesTemplate(
        {
            "content_type": "application/json",
            "content_encoding": "utf-8",
            "headers": template_headers,
            "delivery_mode": 2,
            "expiration": "5000",
            "app_id": "app",
        }
    )
    spliced = template.encode_with_headers("id-7", _wire.table_entries(message_headers))
    properties = _decoded_properties(spliced)
    assert properties.headers == {**template_headers, **message_headers}
    assert (properties.content_type, properties.content_encoding) == ("application/json", "utf-8")
    assert (properties.delivery_mode, properties.expiration, properties.app_id) == (2, "5000", "app")
    assert properties.message_id == "id-7"
    replaced = _decoded_properties(template.encode_with_headers("id-8", _wire.table_entries({"only": 1}), replace=True))
    assert replaced.headers == {"only": 1}


def test_over_long_message_id_is_refused_by_the_template() -> None:
    """A message_id over 255 bytes is a ValueError naming it, with or without spliced headers."""
    template = _wire.PropertiesTemplate({"delivery_mode": 2})
    with pytest.raises(ValueError, match="message_id is 256 bytes long"):
        template.encode("m" * 256)
    with pytest.raises(ValueError, match="message_id is 256 bytes long"):
        template.encode_with_headers("m" * 256, _wire.table_entries({"a": 1}))


def test_header_names_are_checked_every_time_they_are_refused() -> None:
    """The cache of encoded header names holds only good names: a refused one is refused again, naming it."""
    long_key = "k" * 129
    for _ in range(2):
        with pytest.raises(ValueError, match=r"headers has a key 129 bytes long"):
            _wire.table_entries({long_key: 1})
        with pytest.raises(TypeError, match=r"headers has a key 7 of type int"):
            _wire.table_entries({7: 1})  # type: ignore[dict-item]
    assert _wire.table_entries({"same": "v"}) == _wire.table_entries({"same": "v"}) == b"\x04sameS\x00\x00\x00\x01v"
