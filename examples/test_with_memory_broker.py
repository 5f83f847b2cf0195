"""Testing code that publishes, with no RabbitMQ: copy this file into your own test suite.

The fixtures come with aiopublish (a pytest plugin); the tests need pytest-asyncio. From a clone,
with the project's settings (pyproject.toml; the test run collects this file too):

    pip install -e ".[test]" && python -m pytest examples/test_with_memory_broker.py

- `memory_broker`: a fresh in-memory broker; every ``Publisher("memory://")`` publishes to it.
- `patched_broker`: the same, and every Publisher created during the test publishes to it
  whatever URL the code gives (for code with its broker URL built in).
- `instant_retries`: retry policies do not sleep.
"""

from __future__ import annotations

import pytest

from aiopublish import ConnectionFailed, Exchange, Publisher, Queue, RetryPolicy, UndeliverableMessage
from aiopublish.retry import stop_after_attempt, wait_fixed
from aiopublish.testing import InMemoryBroker

pytestmark = pytest.mark.asyncio  # not needed with asyncio_mode = auto

# -- the application code under test --------------------------------------------------------------

ORDERS = Exchange("orders", "topic")


async def place_order(order_id: int, total: float) -> None:
    """Application code that builds its own Publisher with its production URL."""
    async with Publisher("amqp://shop:secret@rabbitmq.internal/", declare=[ORDERS], exchange=ORDERS) as publisher:
        await publisher.publish(
            {"order": order_id, "total": total}, routing_key="order.placed", headers={"source": "shop"}
        )


class Notifier:
    """Application code that is given its Publisher."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def notify(self, user: str, text: str) -> None:
        await self.publisher.publish({"user": user, "text": text}, routing_key="notifications", mandatory=True)


# -- the tests ------------------------------------------------------------------------------------


async def test_place_order_publishes_an_event(patched_broker: InMemoryBroker) -> None:
    """place_order publishes one order.placed event, which a queue bound to order.* receives."""
    patched_broker.declare(Queue("billing", ORDERS, "order.*"))

    await place_order(42, 9.99)

    message = patched_broker.assert_published_once(
        exchange="orders", routing_key="order.placed", payload={"order": 42, "total": 9.99}
    )
    assert message.headers == {"source": "shop"}
    assert message.properties["content_type"] == "application/json"
    assert patched_broker.messages("billing") == [message]


async def test_notifier_publishes_to_the_notifications_queue(memory_broker: InMemoryBroker) -> None:
    """With the queue declared, the notification is routed to it."""
    async with Publisher("memory://", declare=[Queue("notifications")]) as publisher:
        await Notifier(publisher).notify("ann", "your order shipped")

    memory_broker.assert_published_once(queue="notifications", payload={"user": "ann", "text": "your order shipped"})


async def test_notifier_fails_loudly_without_a_queue(memory_broker: InMemoryBroker) -> None:
    """mandatory=True and no queue: the publish raises, as it would against RabbitMQ."""
    async with Publisher("memory://") as publisher:
        with pytest.raises(UndeliverableMessage) as info:
            await Notifier(publisher).notify("ann", "nobody listens")

    assert (info.value.reason, info.value.reply_code) == ("returned", 312)
    assert memory_broker.published[0].outcome == "returned"


async def test_nothing_is_published_when_there_is_nothing_to_say(patched_broker: InMemoryBroker) -> None:
    """assert_nothing_published fails listing whatever was published."""
    patched_broker.assert_nothing_published()


async def test_retry_policies_do_not_sleep(instant_retries: None) -> None:
    """With instant_retries, a policy that would wait 60 s between attempts does not wait at all."""
    attempts = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionFailed("not yet")
        return "done"

    policy = RetryPolicy(stop=stop_after_attempt(5), wait=wait_fixed(60))
    assert await policy.run(flaky, retry=lambda exc: isinstance(exc, ConnectionFailed)) == "done"
    assert len(attempts) == 3
