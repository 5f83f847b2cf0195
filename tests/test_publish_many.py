"""publish_many: per-message outcomes, all-or-nothing encoding, and the in-flight bound."""

from __future__ import annotations

import asyncio
import warnings

import pytest

from aiopublish import Publisher, PublishResult, SerializationError
from aiopublish.retry import set_testing
from tests.broker import Broker


async def test_outcomes_are_reported_per_message(amqp_url: str, broker: Broker) -> None:
    """Routable messages are confirmed and unroutable mandatory ones returned, each in its own result."""
    queue = await broker.queue()
    exchange = await broker.exchange("direct")
    await broker.bind(queue, exchange, "good")
    keys = ["good" if i % 4 else "bad" for i in range(200)]
    async with Publisher(amqp_url, exchange=exchange) as publisher:
        results = await publisher.publish_many(range(200), routing_keys=keys, mandatory=True)
    assert [r.index for r in results] == list(range(200))
    assert [r.status for r in results] == ["confirmed" if k == "good" else "returned" for k in keys]
    assert all(r.ok == (k == "good") for r, k in zip(results, keys, strict=True))
    assert len({r.message_id for r in results}) == 200
    delivered = [int(m.body) for m in await broker.get_all(queue)]
    assert delivered == [i for i, k in enumerate(keys) if k == "good"]
    received_ids = {r.message_id for r in results if r.ok}
    assert len(received_ids) == len(delivered)


async def test_nacks_do_not_hide_confirms(amqp_url: str, broker: Broker) -> None:
    """With a queue that rejects past 5 messages, the first 5 are confirmed and the rest nacked."""
    queue = await broker.queue(**{"x-max-length": 5, "x-overflow": "reject-publish"})
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        results = await publisher.publish_many([{"n": i} for i in range(20)])
    statuses = [r.status for r in results]
    assert statuses.count("confirmed") == 5 and statuses.count("nacked") == 15
    assert await broker.depth(queue) == 5


async def test_bad_payload_fails_alone(amqp_url: str, broker: Broker) -> None:
    """One payload that cannot be encoded fails alone with SerializationError naming it; the others are sent."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        results = await publisher.publish_many([1, 2, 3, object(), 5])
    assert [r.status for r in results] == ["confirmed"] * 3 + ["failed", "confirmed"]
    assert isinstance(results[3].error, SerializationError) and "payload 3" in str(results[3].error)
    assert sorted(int(m.body) for m in await broker.get_all(queue)) == [1, 2, 3, 5]


async def test_per_message_headers_and_options(amqp_url: str, broker: Broker) -> None:
    """Per-message headers merge over the call's headers; call options apply to every message."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, headers={"base": "1"}) as publisher:
        results = await publisher.publish_many(
            ["a", "b"], headers=[{"n": 0}, None], delivery_mode=1, extra_headers={"call": "x"}
        )
    assert all(r.status == "confirmed" for r in results)
    first, second = await broker.get_all(queue)
    assert first.header.properties.headers == {"base": "1", "call": "x", "n": 0}
    assert second.header.properties.headers == {"base": "1", "call": "x"}
    assert first.header.properties.delivery_mode == second.header.properties.delivery_mode == 1


async def test_mismatched_per_message_lists_are_rejected(amqp_url: str) -> None:
    """routing_keys with the wrong length is a ValueError before anything is sent."""
    publisher = Publisher(amqp_url)
    with pytest.raises(ValueError, match="routing_keys has 1 entries for 2 payloads"):
        await publisher.publish_many([1, 2], routing_keys=["a"])
    await publisher.close()


async def test_without_confirms_status_is_sent(amqp_url: str, broker: Broker) -> None:
    """With confirms off every message is reported "sent" and all arrive."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, use_confirms=False) as publisher:
        results = await publisher.publish_many(range(50))
    assert {r.status for r in results} == {"sent"}
    await publisher.close()
    assert sorted(int(m.body) for m in await broker.get_all(queue)) == list(range(50))


async def test_missing_exchange_fails_each_message(amqp_url: str, broker: Broker) -> None:
    """A batch to a missing exchange reports NotFound on its messages instead of raising."""
    from aiopublish import NotFound

    async with Publisher(amqp_url) as publisher:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with set_testing(True):
                results = await publisher.publish_many(range(5), exchange=broker.name("missing"))
    assert {r.status for r in results} == {"failed"}
    assert any(isinstance(r.error, NotFound) for r in results)


@pytest.mark.parametrize("use_batch", [False, True])
async def test_max_in_flight_bounds_unconfirmed_publishes(amqp_url: str, broker: Broker, use_batch: bool) -> None:
    """No more than max_in_flight publishes wait for a confirm at once, for publish() and publish_many()."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, max_in_flight=16) as publisher:
        if use_batch:
            work: asyncio.Future[object] = asyncio.ensure_future(publisher.publish_many(range(2000)))
        else:
            work = asyncio.gather(*(publisher.publish(i) for i in range(2000)))
        highest = 0
        while not work.done():
            highest = max(highest, publisher.in_flight)
            await asyncio.sleep(0)
        results = await work
    assert 1 < highest <= 16
    if use_batch:
        assert all(isinstance(r, PublishResult) and r.ok for r in results)  # type: ignore[attr-defined]
    assert await broker.depth(queue) == 2000


def test_max_in_flight_must_be_positive() -> None:
    """max_in_flight below 1 is a ValueError naming it."""
    with pytest.raises(ValueError, match="max_in_flight"):
        Publisher("amqp://localhost/", max_in_flight=0)
