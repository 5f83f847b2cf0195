"""Start-up retries like publishing: connect() and `async with` wait for a late broker under the retry policy."""

from __future__ import annotations

import asyncio
import time

import pytest

from aiopublish import AuthenticationError, ConnectionFailed, Publisher, RetryPolicy
from aiopublish.retry import stop_after_delay, stop_never, wait_exponential, wait_fixed
from tests.broker import Broker, until
from tests.faults.proxy import TcpProxy
from tests.faults.rabbit_node import RabbitNode

FAST_RETRY = RetryPolicy(stop=stop_after_delay(30), wait=wait_exponential(multiplier=0.05, max=0.5))


async def test_async_with_waits_for_a_broker_that_comes_up_late(broker: Broker, tcp_proxy: TcpProxy) -> None:
    """`async with Publisher(...)` retries while the broker refuses connections, then connects and publishes."""
    queue = await broker.queue()
    tcp_proxy.refuse(True)
    publisher = Publisher(tcp_proxy.url(), routing_key=queue, retry_policy=FAST_RETRY)

    async def run() -> None:
        async with publisher:
            await publisher.publish("after a late start")

    task = asyncio.create_task(run())
    await until(lambda: publisher.metrics.retried >= 3)
    assert not task.done()
    tcp_proxy.refuse(False)
    await task
    assert (await broker.get(queue)).body == b'"after a late start"'


async def test_connect_with_retry_off_fails_at_once(tcp_proxy: TcpProxy) -> None:
    """With retry=False, connect() to a refusing broker raises ConnectionFailed at once and closes nothing."""
    tcp_proxy.refuse(True)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        async with Publisher(tcp_proxy.url(), retry=False):
            pass
    assert time.monotonic() - started < 1.0


async def test_connect_is_bounded_by_the_publish_timeout(tcp_proxy: TcpProxy) -> None:
    """A retry policy that never stops still ends at `timeout`: ConnectionFailed naming it and the last error."""
    tcp_proxy.refuse(True)
    publisher = Publisher(tcp_proxy.url(), retry_policy=RetryPolicy(stop=stop_never, wait=wait_fixed(0.05)), timeout=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectionFailed, match=r"within 1.0 s; last error: cannot connect"):
        await publisher.connect()
    # On the loop's clock: not before the timeout; the policy itself never stops, so ending at all is the point.
    assert loop.time() - started >= 1.0
    assert publisher.metrics.retried >= 5
    await publisher.close()


async def test_refused_login_is_not_retried(tcp_proxy: TcpProxy) -> None:
    """A refused login fails connect() at once, although retry is on and the policy would wait 30 s."""
    publisher = Publisher(tcp_proxy.url(password="wrong-password"), retry_policy=FAST_RETRY)
    started = time.monotonic()
    with pytest.raises(AuthenticationError, match="refused the login"):
        await publisher.connect()
    assert time.monotonic() - started < 2.0
    assert publisher.metrics.retried == 0
    await publisher.close()


@pytest.mark.slow
async def test_private_broker_started_3_s_after_the_app(rabbit_node: RabbitNode) -> None:
    """A real node down at start-up and started 3 s later: `async with` waits for it, then publishes."""
    url = rabbit_node.url()
    await rabbit_node.stop()
    publisher = Publisher(url, retry_policy=FAST_RETRY, timeout=60)
    entered = asyncio.Event()

    async def app() -> None:
        async with publisher:
            entered.set()
            await publisher.publish("hello", routing_key="nobody-listens")

    task = asyncio.create_task(app())
    started = time.monotonic()
    await until(lambda: publisher.metrics.retried >= 3, within=10)
    await asyncio.sleep(3 - (time.monotonic() - started))  # the scenario: the broker starts 3 s after the app
    assert not entered.is_set()
    await rabbit_node.start()
    await asyncio.wait_for(task, timeout=30)
    assert entered.is_set()
