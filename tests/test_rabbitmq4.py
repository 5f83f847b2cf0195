"""What RabbitMQ 4.x changed for a publisher, on the broker under test (CI runs this file on 3.10, 4.0 and 4.3).

Each test reads the version the broker announces and checks what that version must do: the
default body limit (16 MiB on 4.x, 128 MiB on 3.x), the least frame_max (8192 from 4.1), and
the deprecated features 4.3 denies (a queue's x-queue-master-locator).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

import aiormq.abc
import aiormq.exceptions
import pytest

from aiopublish import Publisher, PublishResult, Queue, UnsupportedByBroker
from aiopublish._broker_limits import BrokerLimits
from aiopublish._exceptions import translate
from tests.broker import Broker
from tests.rabbitmq_chroots import announced_version

MiB = 1024 * 1024
# What RabbitMQ 4.3.6 says, as it says it: cut by the broker at 255 bytes (an AMQP shortstr).
DENIED_TEXT = (
    "INTERNAL_ERROR - Feature `queue_master_locator` is deprecated.\nBy default, this feature is not permitted "
    "anymore.\nThe feature will be removed from a future major RabbitMQ version, regardless of the configuration; "
    "actual version to be determined.\nTo con..."
)


def version_of(url: str) -> tuple[int, ...]:
    return BrokerLimits.from_server_properties({"product": "RabbitMQ", "version": announced_version(url)}).version


# -- pure logic ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("properties", "limit", "source", "frame_min"),
    [
        ({"product": "RabbitMQ", "version": "4.3.6"}, 16 * MiB, "RabbitMQ 4.3.6's default max_message_size", 8192),
        ({"product": "RabbitMQ", "version": b"4.1.0"}, 16 * MiB, "(RabbitMQ 4.x)", 8192),
        ({"product": "RabbitMQ", "version": "4.0.5"}, 16 * MiB, "RabbitMQ 4.0.5's default", 4096),
        ({"product": "RabbitMQ", "version": "3.10.8"}, 128 * MiB, "RabbitMQ 3.10.8's default", 4096),
        ({"product": "LavinMQ", "version": "2.0.0"}, 128 * MiB, "LavinMQ 2.0.0 did not say it is RabbitMQ", 4096),
        ({}, 128 * MiB, "the broker did not say", 4096),
    ],
)
def test_the_broker_version_picks_the_limits(
    properties: dict[str, object], limit: int, source: str, frame_min: int
) -> None:
    """connection.start's product and version give the default body limit, its source and the least frame_max."""
    limits = BrokerLimits.from_server_properties(properties)
    assert limits.max_message_size == limit
    assert source in limits.max_message_size_source
    assert limits.frame_min == frame_min


def test_a_denied_deprecated_feature_maps_to_unsupported_by_broker() -> None:
    """The broker's 541 "Feature X is deprecated" becomes UnsupportedByBroker (never retried), the text whole."""
    error = translate(aiormq.exceptions.ConnectionInternalError(DENIED_TEXT))
    assert isinstance(error, UnsupportedByBroker)
    assert error.feature == "queue_master_locator"
    assert DENIED_TEXT in str(error)
    assert "deprecated_features.permit.queue_master_locator = true" in str(error)


def test_frame_max_out_of_amqp_range_is_refused_before_connecting() -> None:
    """frame_max below AMQP's 4096 (or not an int) is refused by the constructor, naming the option."""
    for bad in (100, 4095, "8192", True, 2**32):
        with pytest.raises(ValueError, match=r"transport option frame_max must be an int from 4096"):
            Publisher("amqp://guest:guest@127.0.0.1:1/", transport_options={"frame_max": bad})


# -- on the broker under test -----------------------------------------------------------------------------


async def test_a_body_over_the_broker_default_is_refused_before_sending(amqp_url: str, broker: Broker) -> None:
    """One byte over the broker's default limit (by its version): ValueError naming the limit and its source,
    nothing sent, the connection kept; a body of exactly the limit is confirmed."""
    version = version_of(amqp_url)
    limit = 16 * MiB if version >= (4,) else 128 * MiB
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, serializer="raw", timeout=120) as publisher:
        await publisher.publish(b"first")
        with pytest.raises(ValueError) as refused:
            await publisher.publish(b"x" * (limit + 1))
        text = str(refused.value)
        assert f"max_message_size is {limit}" in text and "nothing was sent" in text
        assert re.search(r"RabbitMQ \d+\.\d+\.\d+'s default max_message_size", text), text
        exact = await publisher.publish(b"y" * limit)
        assert isinstance(exact, PublishResult)
        assert publisher.metrics.reconnects == 0
    bodies = [len(message.body) for message in await broker.get_all(queue)]
    assert bodies == [5, limit]


async def test_the_option_overrides_the_broker_default(amqp_url: str, broker: Broker) -> None:
    """max_message_size= replaces the version's default: a 17 MiB body goes to the broker, which on 4.x refuses
    it itself (406), and on 3.x takes it."""
    version = version_of(amqp_url)
    queue = await broker.queue()
    body = b"z" * (17 * MiB)
    async with Publisher(
        amqp_url, routing_key=queue, serializer="raw", max_message_size=64 * MiB, timeout=120
    ) as publisher:
        if version >= (4,):
            with pytest.raises(Exception, match="message size 17825792 is larger than configured max size 16777216"):
                await publisher.publish(body)
        else:
            assert isinstance(await publisher.publish(body), PublishResult)
        await publisher.publish(b"after")
    bodies = [len(message.body) for message in await broker.get_all(queue)]
    assert bodies == ([5] if version >= (4,) else [17 * MiB, 5])


async def test_a_small_frame_max_against_4_1_or_later(amqp_url: str, broker: Broker) -> None:
    """frame_max=4096: RabbitMQ 4.1+ gets UnsupportedByBroker at once (no retry), naming 8192 and the broker;
    an older broker negotiates 4096, so properties over it are refused and a 20 kB body arrives whole."""
    version = version_of(amqp_url)
    queue = await broker.queue()
    publisher = Publisher(
        amqp_url, routing_key=queue, serializer="raw", transport_options={"frame_max": 4096}, timeout=30
    )
    if version >= (4, 1):
        started = time.monotonic()
        with pytest.raises(UnsupportedByBroker, match=r"frame_max=4096 is below 8192.*RabbitMQ 4\.") as caught:
            async with publisher:
                pass
        assert caught.value.feature == "frame_max"
        assert publisher.metrics.retried == 0 and time.monotonic() - started < 10
        again = Publisher(amqp_url, routing_key=queue, transport_options={"frame_max": 8191}, timeout=30)
        try:
            with pytest.raises(UnsupportedByBroker, match="frame_max=8191"):  # and so does a publish, at once
                await again.publish(b"never")
        finally:
            await again.close()
        assert await broker.depth(queue) == 0
        return
    async with publisher:
        await publisher.publish(b"b" * 20_000)
        with pytest.raises(ValueError, match=r"frame_max \(4096\)"):
            await publisher.publish(b"c", headers={"pad": "p" * 5000})
    assert [message.body for message in await broker.get_all(queue)] == [b"b" * 20_000]


async def test_a_declaration_using_a_denied_feature(
    amqp_url: str, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """x-queue-master-locator: RabbitMQ 4.3 closes the connection with 541; publish raises UnsupportedByBroker at
    once, naming the feature and the declaration, the broker's text whole, no retry and no warning; the publisher
    still works without it. Older brokers declare the queue."""
    version = version_of(amqp_url)
    name = broker.name("qml")
    denied = Queue(name, durable=True, arguments={"x-queue-master-locator": "client-local"})
    caplog.set_level(logging.WARNING, logger="aiopublish")
    async with Publisher(amqp_url, routing_key=name, timeout=30) as publisher:
        if version >= (4, 3):
            started = time.monotonic()
            with pytest.raises(UnsupportedByBroker) as caught:
                await publisher.publish({"n": 1}, declare=[denied])
            error = caught.value
            assert error.feature == "queue_master_locator"
            assert error.declaration is not None and name in error.declaration
            assert "x-queue-master-locator" in str(error) and "To con..." in str(error)  # all the broker said
            assert publisher.metrics.retried == 0 and time.monotonic() - started < 10
            # One warning: the broker did close the connection. No retry, no reconnect attempt.
            warnings = [r.getMessage() for r in caplog.records if r.name == "aiopublish" and r.levelno >= logging.INFO]
            assert len(warnings) == 1 and warnings[0].startswith("disconnected from"), warnings
            assert not await broker.exists(name)
            other = await broker.queue()
            assert isinstance(await publisher.publish({"n": 2}, routing_key=other), PublishResult)
            assert len(await broker.get_all(other)) == 1
            return
        assert isinstance(await publisher.publish({"n": 1}, declare=[denied]), PublishResult)
    assert len(await broker.get_all(name)) == 1


async def test_declared_at_connect_a_denied_feature_is_not_retried(amqp_url: str, broker: Broker) -> None:
    """The constructor's declare list meets the same refusal on connect(): raised at once, not retried for the
    whole timeout (4.3 only; elsewhere the queue is declared)."""
    version = version_of(amqp_url)
    name = broker.name("qml")
    publisher = Publisher(
        amqp_url,
        routing_key=name,
        declare=[Queue(name, durable=True, arguments={"x-queue-master-locator": "min-masters"})],
        timeout=30,
    )
    try:
        if version >= (4, 3):
            started = time.monotonic()
            with pytest.raises(UnsupportedByBroker, match="queue_master_locator"):
                await asyncio.wait_for(publisher.connect(), 60)
            assert time.monotonic() - started < 10
        else:
            await publisher.connect()
            assert await broker.exists(name)
    finally:
        await publisher.close()


async def test_publishing_to_a_stream_with_confirms(amqp_url: str, broker: Broker) -> None:
    """A stream (x-queue-type: stream) takes confirmed publishes; a consumer reading from its first offset gets
    every one, in order (a stream cannot be read with basic.get)."""
    name = broker.name("stream")
    stream = Queue(name, durable=True, arguments={"x-queue-type": "stream"})
    async with Publisher(amqp_url, routing_key=name, declare=[stream], serializer="raw") as publisher:
        singles = [await publisher.publish(f"one-{n}".encode()) for n in range(50)]
        batch = await publisher.publish_many([f"many-{n}".encode() for n in range(450)])
    assert all(isinstance(result, PublishResult) for result in singles)
    assert [result.status for result in batch] == ["confirmed"] * 450
    expected = [f"one-{n}".encode() for n in range(50)] + [f"many-{n}".encode() for n in range(450)]
    received: list[bytes] = []
    done = asyncio.Event()
    channel = await broker.channel()
    await channel.basic_qos(prefetch_count=100)

    async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
        received.append(message.body)
        await message.channel.basic_ack(message.delivery.delivery_tag)
        if len(received) >= len(expected):
            done.set()

    consumer = await channel.basic_consume(name, on_message, arguments={"x-stream-offset": "first"})
    try:
        async with asyncio.timeout(60):
            await done.wait()
    finally:
        await channel.basic_cancel(consumer.consumer_tag)
    assert received == expected
