"""What the wire carries: routing and every AMQP property, read back from a real queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from aiopublish import Exchange, Publisher
from tests.broker import Broker


async def test_default_exchange_routes_by_queue_name(amqp_url: str, broker: Broker) -> None:
    """exchange=None publishes through the default exchange to the queue named by routing_key."""
    queue = await broker.queue()
    async with Publisher(amqp_url) as publisher:
        await publisher.publish({"hello": "world"}, exchange=None, routing_key=queue)
    message = await broker.get(queue)
    assert json.loads(message.body) == {"hello": "world"}
    assert message.header.properties.content_type == "application/json"
    assert message.header.properties.content_encoding == "utf-8"
    assert message.header.properties.delivery_mode == 2
    assert message.delivery.exchange == ""
    assert message.delivery.routing_key == queue


async def test_exchange_object_routes_by_its_name(amqp_url: str, broker: Broker) -> None:
    """An Exchange object as `exchange` publishes to the exchange of that name."""
    queue = await broker.queue()
    exchange = await broker.exchange("direct")
    await broker.bind(queue, exchange, "rk")
    async with Publisher(amqp_url) as publisher:
        await publisher.publish("x", exchange=Exchange(exchange), routing_key="rk")
    message = await broker.get(queue)
    assert message.delivery.exchange == exchange


async def test_delivery_mode_transient_and_by_name(amqp_url: str, broker: Broker) -> None:
    """delivery_mode 1 and "transient"/"persistent" reach the wire as 1 and 2."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("a", delivery_mode=1)
        await publisher.publish("b", delivery_mode="transient")
        await publisher.publish("c", delivery_mode="persistent")
    modes = [m.header.properties.delivery_mode for m in await broker.get_all(queue)]
    assert modes == [1, 1, 2]


async def test_priority_round_trips(amqp_url: str, broker: Broker) -> None:
    """priority=10 arrives as the message priority."""
    queue = await broker.queue(**{"x-max-priority": 10})
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("p", priority=10)
    assert (await broker.get(queue)).header.properties.priority == 10


async def test_expiration_is_seconds_sent_as_milliseconds(amqp_url: str, broker: Broker) -> None:
    """expiration=10 (seconds) is sent as "10000"; floats and timedeltas work the same way."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("a", expiration=10)
        await publisher.publish("b", expiration=1.5)
        await publisher.publish("c", expiration=timedelta(minutes=1))
    values = [m.header.properties.expiration for m in await broker.get_all(queue)]
    assert values == ["10000", "1500", "60000"]


async def test_pass_through_properties(amqp_url: str, broker: Broker) -> None:
    """reply_to, correlation_id, message_id, type, app_id, cluster_id and timestamp arrive unchanged."""
    queue = await broker.queue()
    stamp = datetime(2026, 11, 26, 12, 30, 5, tzinfo=UTC)
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish(
            "p",
            reply_to="replies",
            correlation_id="corr-1",
            message_id="msg-1",
            type="greeting",
            app_id="tests",
            cluster_id="c1",
            timestamp=stamp,
        )
    props = (await broker.get(queue)).header.properties
    assert props.reply_to == "replies"
    assert props.correlation_id == "corr-1"
    assert props.message_id == "msg-1"
    assert props.message_type == "greeting"
    assert props.app_id == "tests"
    assert props.cluster_id == "c1"
    assert props.timestamp.replace(tzinfo=UTC) == stamp


async def test_user_id_equal_to_login_is_delivered(amqp_url: str, broker: Broker) -> None:
    """user_id equal to the connection's login is accepted by the broker and delivered."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("p", user_id="guest")
    assert (await broker.get(queue)).header.properties.user_id == "guest"


async def test_every_message_gets_its_own_message_id(amqp_url: str, broker: Broker) -> None:
    """Without a message_id each message gets a fresh one, so consumers can de-duplicate."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        for i in range(5):
            await publisher.publish(i)
    ids = [m.header.properties.message_id for m in await broker.get_all(queue)]
    assert len(ids) == 5 and len(set(ids)) == 5 and all(ids)


async def test_large_body_is_split_into_frames_and_arrives_whole(amqp_url: str, broker: Broker) -> None:
    """A body several times frame_max long arrives byte for byte."""
    queue = await broker.queue()
    body = bytes(range(256)) * 4096  # 1 MiB, about 8 frames at the default frame_max
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish(body, content_type="application/octet-stream")
        await publisher.publish(b"", content_type="application/octet-stream")
    first, second = await broker.get_all(queue)
    assert first.body == body
    assert second.body == b""
