"""Any event loop: one Publisher across asyncio.run() calls, pytest's loop per test, threads, close() elsewhere."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import aiormq
import pytest

from aiopublish import Publisher
from tests.broker import test_url as broker_url
from tests.internals import connection_of

# One publisher for this whole module, created at import time (outside any event loop); every
# async test below runs in its own event loop (pytest-asyncio's function scope).
QUEUE = f"t-loops-{uuid.uuid4().hex[:8]}"
MODULE_PUBLISHER = Publisher(broker_url(), routing_key=QUEUE)


async def _declare(queue: str) -> None:
    connection = await aiormq.connect(broker_url())
    try:
        await (await connection.channel()).queue_declare(queue)
    finally:
        await connection.close()


async def _drain(queue: str, delete: bool = True) -> list[bytes]:
    connection = await aiormq.connect(broker_url())
    try:
        channel = await connection.channel()
        bodies = []
        while True:
            message = await channel.basic_get(queue, no_ack=True)
            if isinstance(message.delivery, aiormq.spec.Basic.GetEmpty):
                break
            bodies.append(message.body)
        if delete:
            await channel.queue_delete(queue)
        return bodies
    finally:
        await connection.close()


@pytest.fixture(scope="module", autouse=True)
def module_queue() -> Iterator[None]:
    asyncio.run(_declare(QUEUE))
    yield
    asyncio.run(MODULE_PUBLISHER.close())
    asyncio.run(_drain(QUEUE))


async def test_module_publisher_in_a_first_test_loop() -> None:
    """The module-level publisher publishes in this test's loop."""
    await MODULE_PUBLISHER.publish("first test")
    assert MODULE_PUBLISHER.in_flight == 0


async def test_module_publisher_in_a_second_test_loop() -> None:
    """In the next test's loop (the first one is closed) it reconnects and publishes, with and without timeout."""
    await MODULE_PUBLISHER.publish("second test")
    await asyncio.wait_for(MODULE_PUBLISHER.publish("no timeout", timeout=None), timeout=10)
    assert MODULE_PUBLISHER.metrics.reconnects == 0  # a new loop's connection is a first connection again


async def test_module_publisher_in_a_third_test_loop() -> None:
    """And again: every message of the three tests is in the queue."""
    await MODULE_PUBLISHER.publish("third test")
    assert await _drain(QUEUE, delete=False) == [b'"first test"', b'"second test"', b'"no timeout"', b'"third test"']


def test_three_asyncio_run_calls_with_one_publisher() -> None:
    """One Publisher created outside any loop works in three asyncio.run() calls; every message arrives."""
    queue = f"t-loops-{uuid.uuid4().hex[:8]}"
    asyncio.run(_declare(queue))
    publisher = Publisher(broker_url(), routing_key=queue)

    async def publish(n: int) -> None:
        await publisher.publish(n)
        results = await publisher.publish_many([n * 10, n * 10 + 1])
        assert all(result.ok for result in results)

    async def publish_no_timeout(n: int) -> None:
        await asyncio.wait_for(publisher.publish(n, timeout=None), timeout=10)

    asyncio.run(publish(1))
    asyncio.run(publish_no_timeout(2))
    asyncio.run(publish(3))
    asyncio.run(publisher.close())  # a fourth loop: the connection of the third is gone with it
    assert publisher.is_closed
    assert asyncio.run(_drain(queue)) == [b"1", b"10", b"11", b"2", b"3", b"30", b"31"]


def test_close_in_a_later_loop_after_the_first_ended() -> None:
    """close() in a new loop after the publisher's loop ended closes it without touching the dead loop."""
    publisher = Publisher(broker_url())
    asyncio.run(publisher.connect())
    asyncio.run(publisher.close())
    assert publisher.is_closed


async def test_two_running_loops_at_once_is_a_clear_error(amqp_url: str) -> None:
    """Used from a loop while its own loop runs in another thread: a RuntimeError saying so; close() works from here."""
    publisher = Publisher(amqp_url)
    connected = threading.Event()
    release = threading.Event()
    other_loop: list[asyncio.AbstractEventLoop] = []

    async def hold() -> None:
        await publisher.connect()
        other_loop.append(asyncio.get_running_loop())
        connected.set()
        await asyncio.to_thread(release.wait, 10)  # keep this loop running until the test closed the publisher

    thread = threading.Thread(target=asyncio.run, args=(hold(),))
    thread.start()
    try:
        assert await asyncio.to_thread(connected.wait, 10)
        with pytest.raises(RuntimeError, match="in use by another event loop that is still running"):
            await publisher.publish("from the wrong loop")
        connection = connection_of(publisher)
        await publisher.close()  # runs the close in the publisher's own loop
        assert publisher.is_closed
        assert connection.is_closed
    finally:
        release.set()
        await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()
