"""Self-tests of the fault-injection harness (tests/faults): each control does what it says."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aiormq
import pytest
from aiormq.abc import AbstractConnection

from tests.broker import until
from tests.faults import proxy as proxy_module
from tests.faults.proxy import TcpProxy
from tests.faults.rabbit_node import RabbitNode, epmd_names

# Registered here until tests/conftest.py imports them; registering twice is harmless.
pytest_plugins = ["tests.faults.fixtures"]

PERSISTENT = aiormq.spec.Basic.Properties(delivery_mode=2)


def _runs_in(task: asyncio.Task[object], filename: str) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and code.co_filename == filename


def unique(what: str = "q") -> str:
    return f"t-fault-{what}-{uuid.uuid4().hex[:10]}"


async def closed_within(connection: AbstractConnection, seconds: float) -> None:
    """Wait for the connection's `closing` future (it may end with an error); fail if it takes longer."""
    try:
        async with asyncio.timeout(seconds):
            await connection.closing
    except TimeoutError:
        pytest.fail(f"connection not closed within {seconds}s")
    except Exception:
        pass  # closed with an error: what a dropped connection does
    assert connection.is_closed


@pytest.fixture
async def connections() -> AsyncIterator[Callable[[str], Awaitable[AbstractConnection]]]:
    """Open aiormq connections that are closed (or abandoned if dead) after the test."""
    opened: list[AbstractConnection] = []

    async def connect(url: str) -> AbstractConnection:
        async with asyncio.timeout(10):
            connection = await aiormq.connect(url)
        opened.append(connection)
        return connection

    yield connect
    for connection in opened:
        await connection.close(timeout=3)


# -- TcpProxy ---------------------------------------------------------------------------


async def test_proxy_forwards_amqp(tcp_proxy: TcpProxy, connections) -> None:
    """Through the proxy an AMQP connection opens and a channel can declare and delete a queue."""
    connection = await connections(tcp_proxy.url())
    channel = await connection.channel()
    name = unique()
    declared = await channel.queue_declare(name, auto_delete=True)
    assert declared.queue == name
    await channel.queue_delete(name)
    assert tcp_proxy.connections_total == 1
    assert tcp_proxy.active_connections == 1
    await connection.close()
    await until(lambda: tcp_proxy.active_connections == 0, within=5, what="proxy sees the close")


async def test_proxy_forwards_large_bodies_both_ways(tcp_proxy: TcpProxy, connections) -> None:
    """Multi-megabyte bodies cross the proxy intact in both directions (flow control works)."""
    connection = await connections(tcp_proxy.url())
    channel = await connection.channel(publisher_confirms=True)
    name = unique()
    await channel.queue_declare(name, auto_delete=True)
    bodies = [os.urandom(3 * 1024 * 1024) for _ in range(3)]
    for body in bodies:
        await channel.basic_publish(body, routing_key=name)
    for body in bodies:
        message = await channel.basic_get(name, no_ack=True)
        assert message.body == body
    await channel.queue_delete(name)


async def test_drop_all_closes_open_connection(tcp_proxy: TcpProxy, connections) -> None:
    """drop_all() makes an open aiormq connection close within a second; new connections still work."""
    connection = await connections(tcp_proxy.url())
    await connection.channel()
    tcp_proxy.drop_all()
    assert tcp_proxy.active_connections == 0
    await closed_within(connection, 2.0)  # vs. 60 s of heartbeat without the reset

    again = await connections(tcp_proxy.url())
    channel = await again.channel()
    await channel.queue_declare(unique(), auto_delete=True, exclusive=True)
    assert tcp_proxy.connections_total == 2


async def test_refuse_makes_connect_fail_fast(tcp_proxy: TcpProxy, connections) -> None:
    """refuse() makes new connects fail at once with a real refusal, keeps open ones, and is undone."""
    survivor = await connections(tcp_proxy.url())
    channel = await survivor.channel()

    tcp_proxy.refuse()
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", tcp_proxy.port)
    with pytest.raises(ConnectionError):
        await aiormq.connect(tcp_proxy.url())
    assert time.monotonic() - started < 2.0
    assert tcp_proxy.connections_total == 1

    # An open connection is unaffected.
    await channel.queue_declare(unique(), auto_delete=True, exclusive=True)

    tcp_proxy.refuse(False)
    again = await connections(tcp_proxy.url())
    await (await again.channel()).queue_declare(unique(), auto_delete=True, exclusive=True)
    assert tcp_proxy.connections_total == 2
    assert not survivor.is_closed


@pytest.mark.slow
async def test_go_silent_stalls_rpc_without_closing(tcp_proxy: TcpProxy, connections) -> None:
    """go_silent() makes an RPC time out while the connection stays open; later connections work again."""
    connection = await connections(tcp_proxy.url())
    channel = await connection.channel()

    tcp_proxy.go_silent()
    with pytest.raises(TimeoutError):
        await channel.queue_declare(unique(), auto_delete=True, timeout=1)
    assert not connection.is_closed
    assert tcp_proxy.active_connections == 1

    # A connection made while silent is accepted but the AMQP handshake never completes.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1):
            await aiormq.connect(tcp_proxy.url())
    assert tcp_proxy.connections_total == 2

    tcp_proxy.go_silent(False)
    fresh = await connections(tcp_proxy.url())
    await (await fresh.channel()).queue_declare(unique(), auto_delete=True, exclusive=True)
    # The frozen connection stays frozen until it is dropped.
    assert not connection.is_closed
    tcp_proxy.drop_all()
    await closed_within(connection, 1.0)


async def test_proxy_stop_leaves_no_task_or_connection(connections) -> None:
    """stop() aborts forwarding, frozen and never-forwarded connections and leaves no task behind."""
    before = asyncio.all_tasks()
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    forwarding = await connections(proxy.url())
    proxy.go_silent()
    proxy.go_silent(False)
    proxy.go_silent()
    _, silent_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    await until(lambda: proxy.active_connections == 2, within=5, what="both connections accepted")
    proxy.refuse()
    proxy.refuse(False)  # leaves a server start in flight for stop() to handle

    await proxy.stop()
    leftovers = [task for task in asyncio.all_tasks() - before if _runs_in(task, proxy_module.__file__)]
    assert leftovers == []
    assert proxy.active_connections == 0
    await closed_within(forwarding, 1.0)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)
    silent_writer.close()
    await silent_writer.wait_closed()


# -- RabbitNode ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_private_node_kill_and_restart_keeps_durable_message(private_rabbit: RabbitNode, connections) -> None:
    """kill() takes the node down (connects fail), restart() brings it back with a persistent message."""
    node = private_rabbit
    name = unique("durable")
    body = uuid.uuid4().bytes
    connection = await connections(node.url())
    channel = await connection.channel(publisher_confirms=True)
    await channel.queue_declare(name, durable=True)
    confirmation = await channel.basic_publish(body, routing_key=name, properties=PERSISTENT)
    assert isinstance(confirmation, aiormq.spec.Basic.Ack)

    await node.flush_metadata()
    old_pid = node.beam_pid
    assert old_pid is not None
    await node.kill()
    assert not node.running
    await closed_within(connection, 5.0)
    with pytest.raises(FileNotFoundError):
        os.stat(f"/proc/{old_pid}")
    with pytest.raises(ConnectionError):
        await aiormq.connect(node.url())

    await node.restart()
    assert node.beam_pid not in (None, old_pid)
    reopened = await connections(node.url())
    channel = await reopened.channel()
    message = await channel.basic_get(name, no_ack=True)
    assert message.body == body
    await channel.queue_delete(name)

    # The shared node was never touched.
    shared = await connections(os.environ.get("AIOPUBLISH_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    assert not shared.is_closed


@pytest.mark.slow
async def test_memory_alarm_blocks_confirms_until_cleared(private_rabbit: RabbitNode, connections) -> None:
    """With the memory alarm set a confirmed publish stays unconfirmed for 2 s; clearing it confirms it."""
    node = private_rabbit
    connection = await connections(node.url())
    channel = await connection.channel(publisher_confirms=True)
    name = unique("alarm")
    await channel.queue_declare(name, auto_delete=True)

    await node.set_memory_alarm(True)
    publish = asyncio.create_task(channel.basic_publish(b"blocked", routing_key=name))
    try:
        done, _ = await asyncio.wait({publish}, timeout=2)
        assert not done, "publish was confirmed despite the memory alarm"
        await node.set_memory_alarm(False)
        async with asyncio.timeout(10):
            confirmation = await publish
    finally:
        if not publish.done():
            publish.cancel()
        await asyncio.gather(publish, return_exceptions=True)
        if node.memory_alarm_set:
            await node.set_memory_alarm(False)
    assert isinstance(confirmation, aiormq.spec.Basic.Ack)
    message = await channel.basic_get(name, no_ack=True)
    assert message.body == b"blocked"
    await channel.queue_delete(name)


@pytest.mark.slow
async def test_private_node_cleanup_leaves_nothing_behind(rabbit_node: RabbitNode, tcp_proxy_to, connections) -> None:
    """A proxied connection to a private node works, and cleanup() removes its process, epmd name and dir."""
    node = rabbit_node
    proxy = await tcp_proxy_to("127.0.0.1", node.port)
    connection = await connections(proxy.url())
    await (await connection.channel()).queue_declare(unique(), exclusive=True)
    assert node.nodename in await node.ctl("-q", "eval", "node().")  # ctl reaches this node
    assert node.name in await epmd_names()
    pid, base_dir = node.beam_pid, node.base_dir
    assert pid is not None and base_dir is not None and base_dir.exists()

    await node.cleanup()
    await closed_within(connection, 5.0)
    with pytest.raises(FileNotFoundError):
        os.stat(f"/proc/{pid}")
    names = await epmd_names()
    assert node.name not in names
    assert "rabbit" in names  # the shared node is still registered
    assert not base_dir.exists()
    await node.cleanup()  # idempotent
