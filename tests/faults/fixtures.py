"""pytest fixtures for fault-injection tests.

Import them into a conftest (``from tests.faults.fixtures import *`` or
``pytest_plugins = ["tests.faults.fixtures"]``):

``tcp_proxy``
    A started :class:`TcpProxy` in front of the shared broker (127.0.0.1:5672,
    or the host/port of ``AIOPUBLISH_TEST_URL``); ``tcp_proxy.url()`` carries
    that URL's credentials and vhost. Stopped after the test.
``tcp_proxy_to``
    A factory: ``proxy = await tcp_proxy_to(host, port)`` starts a proxy to any
    address (e.g. ``private_rabbit.port``); all are stopped after the test.
``rabbit_node``
    A fresh private :class:`RabbitNode` per test (about 4-6 s to start here),
    removed after the test whatever it did to the node.
``private_rabbit``
    A private node shared by the tests of one module (started once), handed to
    each test running and without memory alarm: if an earlier test killed or
    stopped it, it is started again on the same data dir; if it set the memory
    alarm through :meth:`RabbitNode.set_memory_alarm`, it is cleared. Queues
    and messages left by earlier tests in the module remain: use unique names.
``private_rabbit_module``
    The module-scoped node behind ``private_rabbit`` (no per-test reset).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import unquote, urlsplit

import pytest_asyncio

from tests.faults.proxy import TcpProxy
from tests.faults.rabbit_node import RabbitNode

__all__ = [
    "private_rabbit",
    "private_rabbit_module",
    "rabbit_node",
    "tcp_proxy",
    "tcp_proxy_to",
]

_DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"

ProxyFactory = Callable[[str, int], Awaitable[TcpProxy]]


def _shared_broker_proxy() -> TcpProxy:
    parts = urlsplit(os.environ.get("AIOPUBLISH_TEST_URL", _DEFAULT_URL))
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return TcpProxy(
        parts.hostname or "127.0.0.1",
        parts.port or 5672,
        user=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        vhost=vhost,
    )


@pytest_asyncio.fixture
async def tcp_proxy() -> AsyncIterator[TcpProxy]:
    async with _shared_broker_proxy() as proxy:
        yield proxy


@pytest_asyncio.fixture
async def tcp_proxy_to() -> AsyncIterator[ProxyFactory]:
    proxies: list[TcpProxy] = []

    async def factory(host: str, port: int) -> TcpProxy:
        proxy = TcpProxy(host, port)
        proxies.append(proxy)
        await proxy.start()
        return proxy

    try:
        yield factory
    finally:
        for proxy in proxies:
            await proxy.stop()


@pytest_asyncio.fixture
async def rabbit_node() -> AsyncIterator[RabbitNode]:
    node = RabbitNode()
    try:
        await node.start()
        yield node
    finally:
        await node.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def private_rabbit_module() -> AsyncIterator[RabbitNode]:
    # RabbitNode holds no loop-bound state, so function-loop tests may drive it.
    node = RabbitNode()
    try:
        await node.start()
        yield node
    finally:
        await node.cleanup()


@pytest_asyncio.fixture
async def private_rabbit(private_rabbit_module: RabbitNode) -> AsyncIterator[RabbitNode]:
    node = private_rabbit_module
    if not node.running:
        await node.start()
    elif node.memory_alarm_set:
        await node.set_memory_alarm(False)
    yield node
