"""Cancellation leaks nothing: publishers cancelled at any moment of their first publish, then closed."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from aiopublish import Publisher
from tests.admin import broker_admin
from tests.broker import Broker, until


def _broker_connections(amqp_url: str, name_prefix: str) -> list[str]:
    """The broker's own list of client-given connection names that start with `name_prefix`."""
    return [name for name in broker_admin(amqp_url).connection_names() if name.startswith(name_prefix)]


async def _cancel_at_a_random_moment(task: asyncio.Task[object], rng: random.Random) -> None:
    # Half by event-loop turns (lands between any two steps of connect/declare/write/confirm),
    # half by time (lands inside the socket and broker waits).
    if rng.random() < 0.5:
        for _ in range(rng.randrange(0, 120)):
            await asyncio.sleep(0)
    else:
        await asyncio.sleep(rng.uniform(0, 0.08))
    task.cancel()


@pytest.mark.slow
async def test_200_publishers_cancelled_at_random_moments_leak_nothing(amqp_url: str, broker: Broker) -> None:
    """200 publishers, each first publish cancelled at a random moment, then closed: 0 connections, 0 tasks left."""
    queue = await broker.queue()
    await broker.channel()  # the probe's own connection and tasks exist before we count
    prefix = f"t-cancel-{uuid.uuid4().hex[:8]}"
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    before = asyncio.all_tasks()
    publishers = [
        Publisher(
            amqp_url,
            routing_key=queue,
            declare=[],
            transport_options={"connection_name": f"{prefix}-{n}"},
        )
        for n in range(200)
    ]
    tasks = [asyncio.create_task(p.publish({"n": n})) for n, p in enumerate(publishers)]
    await asyncio.gather(*(_cancel_at_a_random_moment(t, rng) for t in tasks))
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = sum(isinstance(o, asyncio.CancelledError) for o in outcomes)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    open_before_close = await asyncio.to_thread(_broker_connections, amqp_url, prefix)
    await asyncio.gather(*(p.close() for p in publishers))
    assert errors == []
    assert len(open_before_close) >= 200 - cancelled  # the count does see this test's connections
    assert cancelled >= 100  # most were cancelled mid-publish, not after it
    # aiormq's reader/writer tasks end a few loop turns after their socket closes.
    await until(lambda: asyncio.all_tasks() - before - {asyncio.current_task()} == set(), within=10)
    leftover = await asyncio.to_thread(_broker_connections, amqp_url, prefix)
    for _ in range(50):  # the broker drops an aborted connection within a moment
        if not leftover:
            break
        await asyncio.sleep(0.2)
        leftover = await asyncio.to_thread(_broker_connections, amqp_url, prefix)
    print(
        f"\nseed {seed}, 200 publishers: {cancelled} cancelled, {200 - cancelled} completed; "
        f"leftover connections {len(leftover)}"
    )
    assert leftover == []
    assert all(p.metrics.in_flight == 0 for p in publishers)
