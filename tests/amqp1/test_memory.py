"""The in-memory broker asked to behave as RabbitMQ 4.x over AMQP 1.0 (memory://...?protocol=amqp1).

The outcomes asserted here are the ones test_broker.py observes on a real 4.x node.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiopublish import NotFound, Publisher, Queue, UndeliverableMessage
from aiopublish.testing import get_broker, reset

URL = "memory://amqp1test/?protocol=amqp1"
CLASSIC = "memory://amqp1test/"


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    reset()
    yield
    reset()


async def test_a_missing_queue_is_not_found_over_amqp1_only() -> None:
    """/queues/Q with no queue: NotFound over AMQP 1.0, while 0-9-1 confirms and drops the unroutable message."""
    async with Publisher(URL, routing_key="nope", timeout=1) as publisher:
        with pytest.raises(NotFound, match="amqp:not-found: no queue 'nope'"):
            await publisher.publish(b"x")
    async with Publisher(CLASSIC, routing_key="nope", timeout=1) as publisher:
        assert (await publisher.publish(b"x")).status == "confirmed"


async def test_a_missing_exchange_is_not_found() -> None:
    """/exchanges/X/key with no exchange X: NotFound naming it."""
    async with Publisher(URL, exchange="no-such", routing_key="k", timeout=1) as publisher:
        with pytest.raises(NotFound, match="no exchange 'no-such'"):
            await publisher.publish(b"x")


async def test_released_is_returned_when_mandatory() -> None:
    """Unroutable: released -> UndeliverableMessage("returned") with mandatory, confirmed without."""
    async with Publisher(URL, exchange="amq.direct", routing_key="nobody", timeout=1) as publisher:
        with pytest.raises(UndeliverableMessage, match="released") as raised:
            await publisher.publish(b"x", mandatory=True)
        assert raised.value.reason == "returned"
        assert (await publisher.publish(b"x")).status == "confirmed"


async def test_a_full_reject_publish_queue_rejects() -> None:
    """A queue at x-max-length with reject-publish: UndeliverableMessage("rejected") with the condition."""
    full = Queue("full", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    async with Publisher(URL, declare=[full], routing_key="full", timeout=1) as publisher:
        await publisher.publish(b"1")
        with pytest.raises(UndeliverableMessage) as raised:
            await publisher.publish(b"2")
    assert raised.value.reason == "rejected"
    assert (raised.value.reply_text or "").startswith("amqp:resource-limit-exceeded")
    assert len(get_broker(URL).messages("full")) == 1


async def test_options_without_an_amqp1_meaning_are_refused() -> None:
    """type and nested headers are refused as on the wire, and nothing is recorded."""
    async with Publisher(URL, declare=[Queue("q")], routing_key="q", timeout=1) as publisher:
        with pytest.raises(ValueError, match="type option"):
            await publisher.publish(b"x", type="t")
        with pytest.raises(ValueError, match="simple values only"):
            await publisher.publish(b"x", headers={"n": [1]})
    assert get_broker(URL).messages("q") == []
