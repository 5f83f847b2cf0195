"""AMQP 1.0 against a private RabbitMQ 4.x node: killed mid-stream, out of link credit, a vhost refused.

What a shared node must not be put through (a kill -9, a suspended queue, a memory alarm,
a vhost without rights) happens on a node of the test's own (private_node.py), from the
same RabbitMQ series as the AMQP 1.0 node under test. Messages are counted by message id
in the queue afterwards, over 0-9-1.
"""

from __future__ import annotations

import asyncio
import time

import aiormq
import pytest

from aiopublish import AuthenticationError, Publisher, PublishResult, PublishTimeout, RetryPolicy
from aiopublish.retry import stop_after_delay, wait_exponential
from tests.amqp1.private_node import Amqp1Node
from tests.broker import until
from tests.faults.scenario import Report, count_queue, publish_continuously

pytestmark = pytest.mark.amqp1

# Reconnects for as long as a restart of the node may take here, waits from 50 ms growing to 1 s.
RESTART_RETRY = RetryPolicy(stop=stop_after_delay(120), wait=wait_exponential(multiplier=0.05, max=1))


@pytest.mark.timeout(400)
async def test_node_killed_mid_stream_loses_nothing(amqp1_node: Amqp1Node) -> None:
    """kill -9 while 50 publish() and a publish_many stream, then a restart: every confirmed id is in the queue."""
    queue = await amqp1_node.queue("kill")
    await amqp1_node.node.flush_metadata()  # the queue itself survives the kill (messages are not flushed)
    report = Report()
    batches: list[list[PublishResult]] = []
    in_batch = False
    stop = False

    async with Publisher(amqp1_node.url, routing_key=queue, retry_policy=RESTART_RETRY, timeout=150) as publisher:

        async def stream_batches() -> None:
            nonlocal in_batch
            number = 0
            while not stop:
                in_batch = True
                batches.append(await publisher.publish_many([{"batch": number, "i": i} for i in range(2_000)]))
                in_batch = False
                number += 1

        workers = asyncio.create_task(
            publish_continuously(
                publisher, queue, count=None, concurrency=50, publish_timeout=150, until=lambda: stop, report=report
            )
        )
        batcher = asyncio.create_task(stream_batches())
        await until(lambda: len(report.confirmed) >= 500 and len(batches) >= 1, within=120, what="publishing under way")
        assert in_batch, "no publish_many was streaming at the kill: nothing was tested"
        batches_before = len(batches)
        await amqp1_node.node.kill()
        confirmed_at_kill = len(report.confirmed)
        await amqp1_node.node.start(timeout=120)
        await until(
            lambda: len(report.confirmed) >= confirmed_at_kill + 500 and len(batches) >= batches_before + 2,
            within=150,
            what="publish() and publish_many going on after the restart",
            every=0.1,
        )
        stop = True
        await workers
        await batcher
        assert publisher.metrics.reconnects >= 1
        assert publisher.metrics.retried >= 1, "nothing was in flight at the kill: nothing was tested"
    await count_queue(amqp1_node.classic_url, queue, report)
    batch_confirmed = {r.message_id for batch in batches for r in batch if r.status == "confirmed"}
    batch_other = [r for batch in batches for r in batch if r.status != "confirmed"]
    in_queue = set(report.in_queue)
    print(f"\nkill -9 + restart over AMQP 1.0: {report.summary()}; publish_many: {len(batch_confirmed)} confirmed")
    assert report.lost == set(), f"{len(report.lost)} confirmed publish() messages are not in the queue"
    assert batch_confirmed - in_queue == set(), "confirmed publish_many messages are not in the queue"
    assert batch_other == [], f"with 120 s of retries every batch message goes through: {batch_other[:3]}"
    assert report.overruns == [] or max(report.overruns) < 1.0


async def test_without_link_credit_a_publish_waits_and_times_out(amqp1_node: Amqp1Node) -> None:
    """A queue that confirms nothing (suspended): once the broker's credit is used up, a publish waits
    unsent and raises PublishTimeout by its timeout; it never reaches the queue afterwards."""
    queue = await amqp1_node.queue("credit")
    async with Publisher(amqp1_node.url, routing_key=queue, timeout=30, serializer="raw") as publisher:
        assert (await publisher.publish(b"first")).status == "confirmed"  # the link is attached, credit granted
        await amqp1_node.suspend_queue(queue, suspended=True)
        try:
            # More than RabbitMQ grants a link (170 on 4.3, 128 on 4.0): the credit runs out.
            results = await publisher.publish_many([f"b{i}".encode() for i in range(400)], timeout=3)
            assert {r.status for r in results} == {"failed"}
            assert all(isinstance(r.error, PublishTimeout) for r in results)
            started = time.monotonic()
            with pytest.raises(PublishTimeout):
                await publisher.publish(b"waits for credit", timeout=1)
            assert time.monotonic() - started >= 1
        finally:
            await amqp1_node.suspend_queue(queue, suspended=False)
        # The queue confirms again, so credit comes back: a publish after it goes through.
        assert (await publisher.publish(b"after")).status == "confirmed"
    bodies = [m.body for m in await _take_all(amqp1_node, queue)]
    assert bodies[0] == b"first" and bodies[-1] == b"after"
    assert b"waits for credit" not in bodies
    sent = bodies[1:-1]
    # What the broker's credit let through (written before the credit ran out), in order, and nothing else.
    assert 0 < len(sent) < 400
    assert sent == [f"b{i}".encode() for i in range(len(sent))]


async def test_a_memory_alarm_stops_transfers_until_cleared(amqp1_node: Amqp1Node) -> None:
    """Under a memory alarm RabbitMQ closes the session window: a publish waits unsent and times out;
    after the alarm, a publish goes through and the timed-out one never arrives."""
    queue = await amqp1_node.queue("alarm")
    async with Publisher(amqp1_node.url, routing_key=queue, timeout=30, serializer="raw") as publisher:
        assert (await publisher.publish(b"before")).status == "confirmed"
        await amqp1_node.node.set_memory_alarm(True)
        try:
            with pytest.raises(PublishTimeout):
                await publisher.publish(b"during the alarm", timeout=2)
        finally:
            await amqp1_node.node.set_memory_alarm(False)
        assert (await publisher.publish(b"after")).status == "confirmed"
    assert [m.body for m in await _take_all(amqp1_node, queue)] == [b"before", b"after"]


async def test_a_vhost_the_user_may_not_use_is_an_authentication_error(amqp1_node: Amqp1Node) -> None:
    """RabbitMQ drops an AMQP 1.0 open for a vhost without rights silently; asked over 0-9-1 it says why:
    AuthenticationError as for amqp://, never retried."""
    vhost = f"{amqp1_node.prefix}-closed"
    await amqp1_node.node.ctl("add_vhost", vhost)
    url = amqp1_node.url.rstrip("/") + "/" + vhost
    started = time.monotonic()
    with pytest.raises(AuthenticationError, match="access to vhost") as raised:
        async with Publisher(url, timeout=60, retry=True) as publisher:
            await publisher.publish(b"x", routing_key="q")
    assert "guest:guest" not in str(raised.value)
    assert time.monotonic() - started < 30, "retried: an AuthenticationError is final"


async def _take_all(node: Amqp1Node, queue: str) -> list[aiormq.abc.DeliveredMessage]:
    """Every message in the queue, in order, consumed (basic.get: the queues here hold a few hundred)."""
    connection = await aiormq.connect(node.classic_url)
    try:
        channel = await connection.channel()
        messages = []
        while True:
            message = await channel.basic_get(queue, no_ack=True)
            if isinstance(message.delivery, aiormq.spec.Basic.GetEmpty):
                return messages
            messages.append(message)
    finally:
        await connection.close()
