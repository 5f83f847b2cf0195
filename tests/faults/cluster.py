"""A throw-away RabbitMQ cluster of private nodes on this machine, for failover tests.

Each member is a :class:`RabbitNode` (own name, ports, data dir and private
``HOME``), all with the same Erlang cookie; the first node is the seed and the
others join it with ``stop_app``/``join_cluster``/``start_app``. The shared node
(``rabbit@localhost``) is never contacted: ``rabbitmqctl`` always names a member
with ``-n``.

A member stopped, killed or restarted through its :class:`RabbitNode` methods
keeps its place in the cluster (its data dir, hence its cluster membership,
survives); :meth:`RabbitCluster.cleanup` kills every member (no graceful stop:
the data is thrown away) and removes all their directories, whatever state the
test left them in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import Sequence
from types import TracebackType

from yarl import URL

from tests.faults.rabbit_node import RabbitNode

__all__ = ["RabbitCluster"]


class RabbitCluster:
    """`size` private nodes forming one cluster; ``nodes[0]`` is the seed the others join."""

    def __init__(self, size: int = 3, *, plugins: Sequence[str] = (), config: Sequence[str] = ()) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        cookie = secrets.token_hex(16).upper()
        prefix = f"aiopub-{os.getpid()}-{secrets.token_hex(2)}"
        self.nodes = [
            RabbitNode(f"{prefix}-n{index + 1}", cookie=cookie, plugins=plugins, config=config) for index in range(size)
        ]
        self.formation_seconds: float | None = None

    async def __aenter__(self) -> RabbitCluster:
        try:
            await self.start()
        except BaseException:
            await self.cleanup()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.cleanup()

    # -- addresses -------------------------------------------------------------------

    def urls(self, user: str = "guest", password: str = "guest") -> list[str]:
        """One AMQP URL per member, in member order."""
        return [node.url(user=user, password=password) for node in self.nodes]

    def node_at(self, url: str) -> RabbitNode:
        """The member whose AMQP port `url` names (passwords may be masked: only the port counts)."""
        port = URL(url).port
        for node in self.nodes:
            if node.port == port:
                return node
        raise LookupError(f"no member of the cluster listens on port {port}")

    @property
    def running_members(self) -> list[RabbitNode]:
        return [node for node in self.nodes if node.running]

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, timeout: float = 120) -> None:  # noqa: ASYNC109 (documented API)
        """Start every member, join them to the first, and check that all see each other running."""
        started = time.monotonic()
        seed, *others = self.nodes
        await asyncio.gather(*(node.start(timeout=timeout) for node in self.nodes))
        for node in others:  # one at a time: concurrent joins race on the seed's cluster config
            await node.join_cluster(seed, timeout=timeout)
        await self.wait_running(self.nodes, timeout=timeout)
        self.formation_seconds = time.monotonic() - started

    async def cleanup(self) -> None:
        """Kill every member and remove every member's directory. Idempotent; never raises for one member."""
        results = await asyncio.gather(*(self._discard(node) for node in self.nodes), return_exceptions=True)
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            raise errors[0]

    @staticmethod
    async def _discard(node: RabbitNode) -> None:
        with contextlib.suppress(Exception):  # e.g. still booting, no pid file yet: cleanup() kills it anyway
            await node.kill()
        await node.cleanup()

    # -- state -----------------------------------------------------------------------

    async def restart_stopped(self, timeout: float = 120) -> None:  # noqa: ASYNC109 (documented API)
        """Start every member that is down (stopped or killed) and wait until all see each other running."""
        down = [node for node in self.nodes if not node.running]
        await asyncio.gather(*(node.start(timeout=timeout) for node in down))
        if down:
            await self.wait_running(self.nodes, timeout=timeout)

    async def wait_running(
        self,
        expected: Sequence[RabbitNode],
        *,
        via: RabbitNode | None = None,
        timeout: float = 60,  # noqa: ASYNC109
    ) -> None:
        """Wait until `via` (default: the first expected member) sees exactly `expected` running."""
        via = via or expected[0]
        want = sorted(node.nodename for node in expected)
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            seen = await via.running_nodes()
            if seen == want:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{via.nodename} sees {seen} running, expected {want}")
            await asyncio.sleep(0.2)

    async def quorum_status(self, queue: str, *, via: RabbitNode, vhost: str = "/") -> tuple[str, set[str], set[str]]:
        """A quorum queue's leader, its members, and those of them online, as `via` sees them."""
        out = await via.ctl(
            "-q", "list_queues", "-p", vhost, "name", "leader", "members", "online", "--formatter", "json"
        )  # fmt: skip
        for row in json.loads(out):
            if row["name"] == queue:
                return str(row["leader"]), set(row["members"]), set(row["online"])
        raise LookupError(f"no queue {queue!r} on {via.nodename}")

    async def wait_quorum_online(
        self,
        queue: str,
        members: Sequence[RabbitNode],
        *,
        via: RabbitNode,
        timeout: float = 60,  # noqa: ASYNC109
    ) -> None:
        """Wait until each of `members` has an online replica of the quorum queue `queue`."""
        want = {node.nodename for node in members}
        deadline = time.monotonic() + timeout
        while True:
            _, _, online = await self.quorum_status(queue, via=via)
            if want <= online:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"quorum queue {queue}: online {sorted(online)}, expected {sorted(want)}")
            await asyncio.sleep(0.2)
