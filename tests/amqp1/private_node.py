"""A private RabbitMQ 4.x node for the AMQP 1.0 tests that kill, suspend or reconfigure a broker.

The standing 4.x nodes are shared with every other test run, so these tests start their own
node (tests/faults/rabbit_node.py) from a chroot of tests/rabbitmq_chroots.py. Which series:
``$AIOPUBLISH_TEST_RABBITMQ`` when it names one (CI's 4.0 run), else the series of the node
``$AIOPUBLISH_AMQP1_TEST_URL`` points at (4.3 in CI). Without such a chroot the tests are
skipped with a sentence saying so, except in CI, where they fail: never a silent gap.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import aiormq
import pytest
import pytest_asyncio
from yarl import URL

from tests.faults.rabbit_node import RabbitNode
from tests.rabbitmq_chroots import VERSIONS, Chroot, chroot_for_url

__all__ = ["Amqp1Node", "amqp1_node", "amqp1_node_module", "node_chroot"]


def node_chroot() -> Chroot:
    """The chroot whose RabbitMQ the private AMQP 1.0 nodes run (see the module's docstring)."""
    chosen = os.environ.get("AIOPUBLISH_TEST_RABBITMQ", "")
    chroot: Chroot | None = None
    if chosen in VERSIONS:
        chroot = Chroot(chosen)
    else:
        amqp1_url = os.environ.get("AIOPUBLISH_AMQP1_TEST_URL", "")
        chroot = chroot_for_url(amqp1_url) if amqp1_url else None
    if chroot is None or not chroot.ready or os.geteuid() != 0:
        reason = (
            "a private RabbitMQ 4.x node needs a chroot of tests/rabbitmq_chroots.py and root: set "
            "AIOPUBLISH_AMQP1_TEST_URL to a standing chroot node (`python3 -m tests.rabbitmq_chroots start 4.3`) "
            "or AIOPUBLISH_TEST_RABBITMQ to 4.0 or 4.3"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return chroot


class Amqp1Node:
    """A private node with its amqp1:// URL, and 0-9-1 helpers to declare and read queues on it."""

    def __init__(self, node: RabbitNode) -> None:
        self.node = node
        self.prefix = f"a1p-{uuid.uuid4().hex[:8]}"

    @property
    def url(self) -> str:
        """The amqp1:// URL of the node (same port as 0-9-1)."""
        return str(URL(self.node.url()).with_scheme("amqp1"))

    @property
    def classic_url(self) -> str:
        return self.node.url()

    async def queue(self, name: str, arguments: dict[str, object] | None = None) -> str:
        """Declare a durable queue (over 0-9-1) named after the test; its full name."""
        full = f"{self.prefix}-{name}"
        connection = await aiormq.connect(self.classic_url)
        try:
            channel = await connection.channel()
            await channel.queue_declare(full, durable=True, arguments=arguments)
        finally:
            await connection.close()
        return full

    async def count(self, queue: str) -> int:
        connection = await aiormq.connect(self.classic_url)
        try:
            channel = await connection.channel()
            declared = await channel.queue_declare(queue, passive=True)
        finally:
            await connection.close()
        return declared.message_count or 0

    async def eval(self, expression: str) -> str:
        """Evaluate an Erlang expression on the node (rabbitmqctl eval)."""
        return (await self.node.ctl("eval", expression)).strip()

    async def suspend_queue(self, queue: str, *, suspended: bool) -> None:
        """Suspend (or resume) a classic queue's process: it takes no message and confirms none meanwhile."""
        await self.eval(
            f'{{ok, Q}} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<"{queue}">>)), '
            f"sys:{'suspend' if suspended else 'resume'}(amqqueue:get_pid(Q))."
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def amqp1_node_module() -> AsyncIterator[RabbitNode]:
    # RabbitNode holds no loop-bound state, so function-loop tests may drive it.
    node = RabbitNode(rabbitmq=node_chroot())
    try:
        await node.start(timeout=120)
        yield node
    finally:
        await node.cleanup()


@pytest_asyncio.fixture
async def amqp1_node(amqp1_node_module: RabbitNode) -> AsyncIterator[Amqp1Node]:
    """The module's private node, running and without memory alarm (an earlier test may have killed it)."""
    node = amqp1_node_module
    if not node.running:
        await node.start(timeout=120)
    elif node.memory_alarm_set:
        await node.set_memory_alarm(False)
    yield Amqp1Node(node)
