"""Faults: dropped connections, a killed broker, a silent network, a memory alarm, a broker down at start.

The promise under test: with confirms on, a publish that returns normally is in the
queue (lost = 0); a publish that cannot succeed raises within its timeout; none hangs.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiormq
import pytest

from aiopublish import ConnectionFailed, Publisher, PublishTimeout, Queue, RetryPolicy
from aiopublish.retry import stop_after_delay, wait_exponential
from tests.broker import Broker, until
from tests.faults.proxy import TcpProxy
from tests.faults.rabbit_node import RabbitNode
from tests.faults.scenario import Report, count_queue, every, publish_continuously
from tests.internals import connection_of

# Quick reconnects for tests: up to 20 s of retrying, waits from 50 ms growing to 500 ms.
FAST_RETRY = RetryPolicy(stop=stop_after_delay(20), wait=wait_exponential(multiplier=0.05, max=0.5))


@pytest.mark.slow
async def test_connection_drops_every_300ms_lose_nothing(broker: Broker, tcp_proxy: TcpProxy) -> None:
    """50 workers publish (>= 3,000 messages, >= 10 drops) while every connection drops every 0.3 s: lost = 0."""
    queue = await broker.queue()
    stop = asyncio.Event()
    drops = 0

    def drop() -> None:
        nonlocal drops
        drops += 1
        tcp_proxy.drop_all()

    async with Publisher(tcp_proxy.url(), retry_policy=FAST_RETRY) as publisher:
        dropper = asyncio.create_task(every(0.3, drop, stop))
        report = Report()
        await publish_continuously(
            publisher,
            queue,
            report=report,
            count=None,
            concurrency=50,
            publish_timeout=15,
            until=lambda: drops >= 10 and report.attempted >= 3000,
        )
        stop.set()
        await dropper
        reconnects = publisher.metrics.reconnects
    await count_queue(broker.url, queue, report)
    print(f"\n{drops} drops, {reconnects} reconnects: {report.summary()}")
    assert drops >= 10 and reconnects >= 5
    assert report.lost == set()
    assert report.overruns == [] or max(report.overruns) < 1.0
    assert len(report.confirmed) >= 0.95 * report.attempted  # with 20 s of retries nearly all get through


@pytest.mark.slow
async def test_broker_killed_and_restarted_loses_nothing(rabbit_node: RabbitNode) -> None:
    """Publishing while the broker is killed with -9 and restarted: every confirmed message survives."""
    queue = Queue("resilience-kill", durable=True)
    report = Report()
    async with Publisher(rabbit_node.url(), declare=[queue], retry_policy=FAST_RETRY) as publisher:
        await rabbit_node.flush_metadata()  # the queue declared on connect survives the kill
        work = asyncio.create_task(
            publish_continuously(publisher, queue.name, count=3000, concurrency=50, publish_timeout=30, report=report)
        )
        await until(lambda: len(report.confirmed) >= 500, within=60)
        await rabbit_node.kill()
        await rabbit_node.start()
        await work
        assert publisher.metrics.reconnects >= 1
    await count_queue(rabbit_node.url(), queue.name, report)
    print(f"\nkill -9 + restart: {report.summary()}")
    assert report.lost == set()
    assert report.overruns == [] or max(report.overruns) < 1.0
    assert len(report.confirmed) > 500


@pytest.mark.slow
async def test_silent_network_times_out_then_recovers(broker: Broker, tcp_proxy: TcpProxy) -> None:
    """A silent network makes publish raise PublishTimeout within timeout + 1 s; publishing resumes after."""
    queue = await broker.queue()
    async with Publisher(tcp_proxy.url(), routing_key=queue, transport_options={"connect_timeout": 2}) as publisher:
        await publisher.publish("before")
        tcp_proxy.go_silent(True)
        started = time.monotonic()
        with pytest.raises(PublishTimeout, match="did not complete within 2"):
            await publisher.publish("into the void", timeout=2)
        assert time.monotonic() - started < 3.0
        tcp_proxy.go_silent(False)
        await publisher.publish("after", timeout=20)
    bodies = [m.body for m in await broker.get_all(queue)]
    assert bodies[0] == b'"before"' and bodies[-1] == b'"after"'


async def test_broker_down_at_start_with_retry_waits(broker: Broker, tcp_proxy: TcpProxy) -> None:
    """With the broker unreachable at first, a publish with retry on waits and succeeds once it answers."""
    queue = await broker.queue()
    tcp_proxy.refuse(True)
    publisher = Publisher(tcp_proxy.url(), routing_key=queue, retry_policy=FAST_RETRY)
    task = asyncio.create_task(publisher.publish("eventually"))
    await until(lambda: publisher.metrics.retried >= 2)
    assert not task.done()
    tcp_proxy.refuse(False)
    await task
    await publisher.close()
    assert (await broker.get(queue)).body == b'"eventually"'


async def test_broker_down_with_retry_off_fails_at_once(tcp_proxy: TcpProxy) -> None:
    """With retry off, an unreachable broker is a ConnectionFailed at once (well under a second)."""
    tcp_proxy.refuse(True)
    publisher = Publisher(tcp_proxy.url(), retry=False)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        await publisher.publish("x")
    assert time.monotonic() - started < 1.0
    await publisher.close()


async def test_redeclare_on_reconnect(broker: Broker, tcp_proxy: TcpProxy) -> None:
    """A declared queue deleted while connected is declared again on the next connection, in order."""
    exchange_name, queue_name = broker.name("x"), broker.name("q")
    from aiopublish import Exchange

    exchange = Exchange(exchange_name, "direct")
    queue = Queue(queue_name, exchange, "rk")
    async with Publisher(tcp_proxy.url(), declare=[queue], exchange=exchange, routing_key="rk") as publisher:
        await publisher.publish("one")
        channel = await broker.channel()
        await channel.queue_delete(queue_name)
        assert not await broker.exists(queue_name)
        opened = publisher.state.connections_opened
        first = connection_of(publisher)
        tcp_proxy.drop_all()
        await asyncio.wait([first.closing])
        await publisher.publish("two", mandatory=True)  # would be returned if the binding were missing
        assert publisher.state.connections_opened > opened  # on a new connection
    assert [m.body for m in await broker.get_all(queue_name)] == [b'"two"']


async def test_background_reconnect_restores_declarations(broker: Broker, tcp_proxy: TcpProxy) -> None:
    """After a drop, the publisher reconnects and re-declares by itself, before any new publish."""
    queue = Queue(broker.name("q"))
    async with Publisher(tcp_proxy.url(), declare=[queue], retry_policy=FAST_RETRY) as publisher:
        channel = await broker.channel()
        await channel.queue_delete(queue.name)
        tcp_proxy.drop_all()
        await until(lambda: publisher.metrics.reconnects == 1 and publisher.state.connected)
        assert await broker.exists(queue.name)


async def test_cancelled_close_still_releases_the_socket(broker: Broker, tcp_proxy: TcpProxy) -> None:
    """close() cancelled while it waits for confirms (silent network) still closes the socket."""
    queue = await broker.queue()
    publisher = Publisher(tcp_proxy.url(), routing_key=queue)
    await publisher.publish("warm up")
    connection = connection_of(publisher)
    tcp_proxy.go_silent(True)
    stuck = asyncio.create_task(publisher.publish("stuck", timeout=30))
    await until(lambda: publisher.in_flight == 1)
    closing = asyncio.create_task(publisher.close())
    # close() waits for the unconfirmed publish to finish (it began that wait as it became "closing")
    await until(lambda: publisher.state.lifecycle == "closing")
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert connection.stream_writer.transport.is_closing()
    # Its channel died with the socket; the retry finds the publisher closed.
    with pytest.raises(ConnectionFailed, match="the publisher closed"):
        await stuck


async def test_logs_say_what_happened_without_the_password(
    broker: Broker, tcp_proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Connect, disconnect with its reason, reconnect and retries are logged; the password never is."""
    queue = await broker.queue()
    secret_url = tcp_proxy.url()
    caplog.set_level(logging.INFO, logger="aiopublish")
    async with Publisher(secret_url, routing_key=queue, retry_policy=FAST_RETRY) as publisher:
        await publisher.publish("1")
        first = connection_of(publisher)
        tcp_proxy.drop_all()
        await asyncio.wait([first.closing])
        await publisher.publish("2")
    text = caplog.text
    assert "connected to" in text
    assert "disconnected from" in text
    assert "reconnected to" in text
    # The shared broker's only login is guest/guest, so look for the password where a URL would hold it.
    password = tcp_proxy.password
    assert f":{password}@" not in text
    assert "******@" in text


async def test_publish_waits_out_a_reconnect_window(broker: Broker, tcp_proxy: TcpProxy) -> None:
    """Publishes issued right after a drop (while the link is down) all succeed with retry on."""
    queue = await broker.queue()
    async with Publisher(tcp_proxy.url(), routing_key=queue, retry_policy=FAST_RETRY) as publisher:
        await publisher.publish("warm")
        tcp_proxy.drop_all()
        results = await asyncio.gather(*(publisher.publish(i) for i in range(200)), return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    bodies = {m.body for m in await broker.get_all(queue)}
    assert {str(i).encode() for i in range(200)} <= bodies


@pytest.mark.slow
async def test_memory_alarm_blocks_then_resumes(rabbit_node: RabbitNode, caplog: pytest.LogCaptureFixture) -> None:
    """Under a memory alarm is_blocked is true and a publish times out naming the block; clearing it resumes."""
    queue = Queue("resilience-blocked")
    caplog.set_level(logging.WARNING, logger="aiopublish")
    async with Publisher(rabbit_node.url(), declare=[queue], routing_key=queue.name) as publisher:
        await publisher.publish("before")
        assert not publisher.is_blocked
        await rabbit_node.set_memory_alarm(True)
        with pytest.raises(PublishTimeout, match="blocking publishers"):
            await publisher.publish("blocked", timeout=2)
        assert publisher.is_blocked
        pending = asyncio.create_task(publisher.publish("waits", timeout=60))
        await rabbit_node.set_memory_alarm(False)
        await pending
        assert not publisher.is_blocked
    assert caplog.text.count("the broker is blocking publishers") == 1
    assert "stopped blocking" in caplog.text
    connection = await aiormq.connect(rabbit_node.url())
    try:
        channel = await connection.channel()
        bodies = []
        while True:
            message = await channel.basic_get(queue.name, no_ack=True)
            if isinstance(message.delivery, aiormq.spec.Basic.GetEmpty):
                break
            bodies.append(message.body)
    finally:
        await connection.close()
    assert bodies[0] == b'"before"' and bodies[-1] == b'"waits"'
