"""Retry on publish: attempt counts of nameko's dict policy, retry off, reconnecting a stale connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from aiopublish import ConnectionFailed, Publisher, RetryPolicy
from aiopublish.retry import set_testing, stop_after_attempt, wait_fixed
from tests.broker import Broker
from tests.internals import connection_of


class SlammingServer:
    """Accepts TCP connections and closes them at once: every connect attempt fails, and is counted."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"amqp://guest:guest@127.0.0.1:{port}/"


@pytest_asyncio.fixture
async def slamming() -> AsyncIterator[tuple[SlammingServer, str]]:
    server = SlammingServer()
    url = await server.start()
    yield server, url
    assert server.server is not None
    server.server.close()
    await server.server.wait_closed()


@pytest.mark.parametrize(
    ("policy", "attempts"), [({"max_retries": 0}, 1), ({"max_retries": 3}, 4), ({"max_retries": 5}, 6)]
)
async def test_dict_policy_attempt_counts(
    slamming: tuple[SlammingServer, str], policy: dict[str, int], attempts: int
) -> None:
    """retry_policy max_retries=N makes N+1 attempts, then the connection error surfaces."""
    server, url = slamming
    with set_testing(True):
        async with asyncio.timeout(10):
            publisher = Publisher(url, retry_policy=policy)
            with pytest.raises(ConnectionFailed):
                await publisher.publish("x")
            await publisher.close()
    assert server.accepted == attempts


async def test_default_policy_makes_four_attempts(slamming: tuple[SlammingServer, str]) -> None:
    """The default policy is nameko's {"max_retries": 3}: four attempts in all."""
    server, url = slamming
    with set_testing(True):
        publisher = Publisher(url)
        with pytest.raises(ConnectionFailed):
            await publisher.publish("x")
        await publisher.close()
    assert server.accepted == 4


async def test_retry_off_makes_one_attempt(slamming: tuple[SlammingServer, str]) -> None:
    """retry=False raises the first connection error without trying again."""
    server, url = slamming
    publisher = Publisher(url, retry=False, retry_policy={"max_retries": 5})
    with pytest.raises(ConnectionFailed):
        await publisher.publish("x")
    await publisher.close()
    assert server.accepted == 1


async def test_per_call_retry_settings_win(slamming: tuple[SlammingServer, str]) -> None:
    """retry and retry_policy given to publish() override the constructor's for that call only."""
    server, url = slamming
    with set_testing(True):
        publisher = Publisher(url, retry=False)
        with pytest.raises(ConnectionFailed):
            await publisher.publish("x", retry=True, retry_policy={"max_retries": 2})
        assert server.accepted == 3
        with pytest.raises(ConnectionFailed):
            await publisher.publish("x")
        assert server.accepted == 4
        policy = RetryPolicy(stop=stop_after_attempt(2), wait=wait_fixed(0))
        with pytest.raises(ConnectionFailed):
            await publisher.publish("x", retry=True, retry_policy=policy)
        assert server.accepted == 6
        await publisher.close()


async def test_stale_connection_reconnects_transparently(broker: Broker, tcp_proxy: object) -> None:
    """After the proxy drops the connection, the next publish reconnects and succeeds (retry on or off)."""
    queue = await broker.queue()
    async with Publisher(tcp_proxy.url(), routing_key=queue) as publisher:  # type: ignore[attr-defined]
        await publisher.publish("before")
        opened = publisher.state.connections_opened
        connection = connection_of(publisher)
        tcp_proxy.drop_all()  # type: ignore[attr-defined]
        await asyncio.wait([connection.closing])
        await publisher.publish("after, retry on")
        assert publisher.state.connections_opened > opened  # on a new connection
        second = connection_of(publisher)
        tcp_proxy.drop_all()  # type: ignore[attr-defined]
        await asyncio.wait([second.closing])
        await publisher.publish("after, retry off", retry=False)
    bodies = [m.body for m in await broker.get_all(queue)]
    assert bodies == [b'"before"', b'"after, retry on"', b'"after, retry off"']
