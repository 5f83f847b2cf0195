"""What the broker refuses: returns, nacks and channel errors, and recovery after each."""

from __future__ import annotations

import asyncio
import warnings

import pytest

from aiopublish import NotFound, PreconditionFailed, Publisher, PublishResult, UndeliverableMessage
from tests.broker import Broker, until
from tests.internals import channel_of, unconfirmed_channel_of


async def test_mandatory_unroutable_raises_returned(amqp_url: str, broker: Broker) -> None:
    """mandatory=True with no route raises UndeliverableMessage(reason="returned") with the broker's reply."""
    exchange = await broker.exchange("direct")
    async with Publisher(amqp_url, exchange=exchange) as publisher:
        with pytest.raises(UndeliverableMessage) as info:
            await publisher.publish("lost", routing_key="nowhere", mandatory=True, message_id="m-1")
    error = info.value
    assert error.reason == "returned"
    assert error.reply_code == 312
    assert error.reply_text == "NO_ROUTE"
    assert (error.exchange, error.routing_key, error.message_id) == (exchange, "nowhere", "m-1")
    assert "m-1" in str(error) and "NO_ROUTE" in str(error)


async def test_not_mandatory_unroutable_is_silent(amqp_url: str, broker: Broker) -> None:
    """mandatory=False (the default) to a missing route is confirmed and dropped; the bound queue gets only its own."""
    exchange = await broker.exchange("direct")
    queue = await broker.queue()
    await broker.bind(queue, exchange, "somewhere")
    async with Publisher(amqp_url, exchange=exchange) as publisher:
        await publisher.publish("dropped", routing_key="nowhere")
        await publisher.publish("routed", routing_key="somewhere")
        metrics = publisher.metrics
    assert (metrics.confirmed, metrics.returned, metrics.failed) == (2, 0, 0)
    assert [m.body for m in await broker.get_all(queue)] == [b'"routed"']


async def test_mandatory_without_confirms_warns_and_succeeds(amqp_url: str, broker: Broker) -> None:
    """mandatory=True with confirms off succeeds and warns that returns cannot be detected."""
    exchange = await broker.exchange("direct")
    async with Publisher(amqp_url, exchange=exchange, use_confirms=False) as publisher:
        with pytest.warns(UserWarning, match="without publish confirms"):
            await publisher.publish("dropped", routing_key="nowhere", mandatory=True)


async def test_nack_raises_nacked(amqp_url: str, broker: Broker) -> None:
    """A broker nack (queue full with reject-publish) raises UndeliverableMessage(reason="nacked")."""
    queue = await broker.queue(**{"x-max-length": 1, "x-overflow": "reject-publish"})
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("fits")
        with pytest.raises(UndeliverableMessage) as info:
            await publisher.publish("overflows")
        assert info.value.reason == "nacked"
        assert info.value.routing_key == queue
    assert await broker.depth(queue) == 1


async def test_missing_exchange_raises_not_found_then_recovers(amqp_url: str, broker: Broker) -> None:
    """Publishing to a missing exchange raises NotFound (404); the next publish works on a new channel."""
    queue = await broker.queue()
    async with Publisher(amqp_url) as publisher:
        with pytest.raises(NotFound) as info:
            await publisher.publish("x", exchange=broker.name("missing"))
        assert info.value.reply_code == 404
        await publisher.publish("ok", routing_key=queue)
    assert (await broker.get(queue)).body == b'"ok"'


async def test_missing_exchange_without_confirms_does_not_raise(amqp_url: str, broker: Broker) -> None:
    """With confirms off, a publish to a missing exchange returns normally; the next one goes out on a new channel."""
    queue = await broker.queue()
    async with Publisher(amqp_url, use_confirms=False) as publisher:
        await publisher.publish("before", routing_key=queue)  # opens the channel without confirms
        first = unconfirmed_channel_of(publisher)
        assert first is not None and first is not channel_of(publisher)
        await publisher.publish("x", exchange=broker.name("missing"))
        assert (publisher.metrics.published, publisher.metrics.failed) == (2, 0)
        await until(lambda: first.is_closed, what="the broker closing the channel (404)")
        await publisher.publish("after", routing_key=queue)
        again = unconfirmed_channel_of(publisher)
        assert again is not None and again is not first
    assert [m.body for m in await broker.get_all(queue)] == [b'"before"', b'"after"']


async def test_wrong_user_id_raises_precondition_failed_then_recovers(amqp_url: str, broker: Broker) -> None:
    """A user_id that is not the login raises PreconditionFailed (406); the publisher recovers."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        with pytest.raises(PreconditionFailed) as info:
            await publisher.publish("x", user_id="invalid")
        assert info.value.reply_code == 406
        await publisher.publish("ok")
    assert [m.body for m in await broker.get_all(queue)] == [b'"ok"']


async def test_inequivalent_redeclare_raises_precondition_failed(amqp_url: str, broker: Broker) -> None:
    """Declaring an existing queue with other arguments raises PreconditionFailed and is not retried."""
    from aiopublish import Queue

    name = await broker.queue()
    async with Publisher(amqp_url) as publisher:
        with pytest.raises(PreconditionFailed):
            await publisher.publish("x", routing_key=name, declare=[Queue(name, durable=False)])


async def test_concurrent_publishes_each_get_their_own_outcome(amqp_url: str, broker: Broker) -> None:
    """Concurrent routable and unroutable mandatory publishes on one channel never get each other's result."""
    queue = await broker.queue()
    exchange = await broker.exchange("direct")
    await broker.bind(queue, exchange, "good")
    async with Publisher(amqp_url, exchange=exchange, mandatory=True) as publisher:
        keys = ["good" if i % 3 else "bad" for i in range(300)]
        results = await asyncio.gather(
            *(publisher.publish(i, routing_key=key) for i, key in enumerate(keys)), return_exceptions=True
        )
    for key, result in zip(keys, results, strict=True):
        if key == "good":
            assert isinstance(result, PublishResult) and result.status == "confirmed"
        else:
            assert isinstance(result, UndeliverableMessage) and result.reason == "returned"
    delivered = sorted(int(m.body) for m in await broker.get_all(queue))
    assert delivered == [i for i, key in enumerate(keys) if key == "good"]


async def test_concurrent_publishes_with_shared_message_id_are_matched(amqp_url: str, broker: Broker) -> None:
    """Publishes that reuse one message_id still get the right outcome (returns match on destination too)."""
    queue = await broker.queue()
    exchange = await broker.exchange("direct")
    await broker.bind(queue, exchange, "good")
    async with Publisher(amqp_url, exchange=exchange, mandatory=True, message_id="same") as publisher:
        keys = ["good", "bad"] * 50
        results = await asyncio.gather(
            *(publisher.publish(i, routing_key=key) for i, key in enumerate(keys)), return_exceptions=True
        )
    assert [isinstance(r, PublishResult) for r in results] == [key == "good" for key in keys]


async def test_innocent_publishes_survive_another_publish_channel_error(amqp_url: str, broker: Broker) -> None:
    """When one publish hits a 404, concurrent publishes to good destinations still succeed (retried)."""
    queue = await broker.queue()
    async with Publisher(amqp_url) as publisher:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = await asyncio.gather(
                *(publisher.publish(i, routing_key=queue) for i in range(50)),
                publisher.publish("bad", exchange=broker.name("missing")),
                *(publisher.publish(i, routing_key=queue) for i in range(50, 100)),
                return_exceptions=True,
            )
    assert isinstance(results[50], NotFound)
    assert all(isinstance(r, PublishResult) for i, r in enumerate(results) if i != 50)
    delivered = {int(m.body) for m in await broker.get_all(queue)}
    assert delivered == set(range(100))


async def test_channel_is_replaced_after_nacks(amqp_url: str, broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the broker nacks on a channel, the next publish runs on a new channel; the old one is closed."""
    from aiopublish import _link

    monkeypatch.setattr(_link, "_NACKED_CHANNEL_MIN_AGE", 0.0)
    queue = await broker.queue(**{"x-max-length": 1, "x-overflow": "reject-publish"})
    other = await broker.queue()
    async with Publisher(amqp_url) as publisher:
        await publisher.publish("fits", routing_key=queue)
        first = channel_of(publisher)
        with pytest.raises(UndeliverableMessage):
            await publisher.publish("overflows", routing_key=queue)
        await publisher.publish("fine", routing_key=other)
        second = channel_of(publisher)
        assert second is not first
        await asyncio.wait([first.closing], timeout=10)
        assert first.is_closed and not second.is_closed
    assert [m.body for m in await broker.get_all(other)] == [b'"fine"']
