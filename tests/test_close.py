"""close() drains: publishes called before it are sent and confirmed, concurrent closes share one drain."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from aiopublish import ConnectionFailed, Publisher, PublisherClosed
from tests.broker import Broker, until
from tests.faults.proxy import TcpProxy
from tests.internals import connection_of, slots_of


async def test_two_closes_drain_2000_publishes(amqp_url: str, broker: Broker) -> None:
    """2,000 publishes started (976 waiting for a slot), close() from two tasks: all confirmed, all in the queue."""
    queue = await broker.queue()
    publisher = Publisher(amqp_url, routing_key=queue, max_in_flight=1024)
    await publisher.connect()
    publishes = [asyncio.create_task(publisher.publish(i)) for i in range(2000)]
    await asyncio.sleep(0)  # every publish task has begun: it holds a slot or waits in line for one
    slots = slots_of(publisher)
    assert slots.used == 1024 and len(slots._waiters) == 976
    connection = connection_of(publisher)
    seen_open: list[bool] = []

    async def close() -> None:
        await publisher.close()
        seen_open.append(not connection.is_closed)

    closers = [asyncio.create_task(close()), asyncio.create_task(close())]
    await until(lambda: publisher.is_closed)  # both close() calls have begun
    assert not any(closer.done() for closer in closers)
    in_flight_during_close = publisher.in_flight
    with pytest.raises(PublisherClosed, match="closed"):
        await publisher.publish("called after close()")
    await asyncio.gather(*closers)
    assert seen_open == [False, False]  # neither close() returned before the connection was closed
    assert in_flight_during_close > 0 and publisher.metrics.in_flight == 0
    results = await asyncio.gather(*publishes, return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    bodies = sorted(int(m.body) for m in await broker.get_all(queue))
    assert bodies == list(range(2000))


async def test_close_waits_for_a_publish_still_connecting(amqp_url: str, broker: Broker) -> None:
    """A first publish that is still connecting when close() is called is sent and confirmed, not refused."""
    queue = await broker.queue()
    publisher = Publisher(amqp_url, routing_key=queue)
    task = asyncio.create_task(publisher.publish("connecting"))
    await asyncio.sleep(0)
    await publisher.close()
    await task
    assert (await broker.get(queue)).body == b'"connecting"'


async def test_close_timeout_bounds_the_drain(broker: Broker, tcp_proxy: TcpProxy) -> None:
    """On a silent network close() gives up after close_timeout; the unconfirmed publish fails, not PublisherClosed."""
    queue = await broker.queue()
    publisher = Publisher(tcp_proxy.url(), routing_key=queue, close_timeout=0.5)
    await publisher.publish("warm up")
    tcp_proxy.go_silent(True)
    stuck = asyncio.create_task(publisher.publish("stuck", timeout=30))
    await until(lambda: publisher.in_flight == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await publisher.close()
    # On the loop's clock: not before close_timeout, and far from the publish's own 30 s timeout.
    assert 0.5 <= loop.time() - started < 10
    with pytest.raises(ConnectionFailed, match=r"closed \(close_timeout 0.5 s passed\) before message"):
        await stuck


@pytest.mark.parametrize(
    ("bad", "error"),
    [(-1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), ("10", TypeError), (True, TypeError)],
)
def test_close_timeout_is_checked(bad: object, error: type[Exception]) -> None:
    """close_timeout must be a finite number of seconds >= 0 (or a timedelta): a wrong value or type names it."""
    with pytest.raises(error, match="close_timeout must be"):
        Publisher("amqp://localhost/", close_timeout=bad)  # type: ignore[arg-type]


def test_close_timeout_takes_a_timedelta() -> None:
    """close_timeout=timedelta(seconds=3) is 3.0 s; the class default stays 10 s."""
    assert Publisher("amqp://localhost/", close_timeout=timedelta(seconds=3)).close_timeout == 3.0
    assert Publisher("amqp://localhost/").close_timeout == 10.0
