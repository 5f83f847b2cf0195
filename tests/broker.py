"""A test-side view of the real broker: unique names, reading messages back, cleaning up.

Tests never trust the publisher to tell them what arrived: they read the queue
with a separate aiormq connection.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from typing import Any

import aiormq
import pytest
from aiormq.abc import DeliveredMessage

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


def test_url() -> str:
    return os.environ.get("AIOPUBLISH_TEST_URL", DEFAULT_URL)


class Broker:
    """Reads what reached the broker and removes everything a test created."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"t-{uuid.uuid4().hex[:10]}"
        self._queues: list[str] = []
        self._exchanges: list[str] = []
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None

    async def channel(self) -> aiormq.abc.AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            if self._connection is None or self._connection.is_closed:
                self._connection = await aiormq.connect(self.url)
            self._channel = await self._connection.channel()
        return self._channel

    def name(self, what: str = "q") -> str:
        """A name no other test uses, removed (as queue and exchange) at teardown."""
        name = f"{self.prefix}-{what}-{uuid.uuid4().hex[:6]}"
        self._queues.append(name)
        self._exchanges.append(name)
        return name

    async def queue(self, name: str | None = None, **arguments: Any) -> str:
        """Declare a durable queue (unique name unless given) and return its name."""
        name = name or self.name("q")
        channel = await self.channel()
        await channel.queue_declare(name, durable=True, arguments=arguments or None)
        if name not in self._queues:
            self._queues.append(name)
        return name

    async def exchange(self, type: str = "direct", name: str | None = None) -> str:
        name = name or self.name("x")
        channel = await self.channel()
        await channel.exchange_declare(name, exchange_type=type, durable=True)
        return name

    async def bind(self, queue: str, exchange: str, routing_key: str = "", arguments: Any = None) -> None:
        channel = await self.channel()
        await channel.queue_bind(queue, exchange, routing_key=routing_key, arguments=arguments)

    async def get(self, queue: str) -> DeliveredMessage:
        """The next message in `queue`. A confirmed publish is in the queue already: no waiting."""
        channel = await self.channel()
        message = await channel.basic_get(queue, no_ack=True)
        assert not isinstance(message.delivery, aiormq.spec.Basic.GetEmpty), f"queue {queue} is empty"
        return message

    async def get_all(self, queue: str) -> list[DeliveredMessage]:
        """Every message now in `queue`, in order (the queue is left empty)."""
        channel = await self.channel()
        out = []
        while True:
            message = await channel.basic_get(queue, no_ack=True)
            if isinstance(message.delivery, aiormq.spec.Basic.GetEmpty):
                return out
            out.append(message)

    async def depth(self, queue: str) -> int:
        channel = await self.channel()
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)

    async def exists(self, queue: str) -> bool:
        """Whether the queue exists (a passive declare on a throwaway channel)."""
        connection = await aiormq.connect(self.url)
        try:
            channel = await connection.channel()
            try:
                await channel.queue_declare(queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return False
            return True
        finally:
            await connection.close()

    async def cleanup(self) -> None:
        try:
            for queue in self._queues:
                channel = await self.channel()
                await channel.queue_delete(queue)
            for exchange in self._exchanges:
                channel = await self.channel()
                await channel.exchange_delete(exchange)
        finally:
            if self._connection is not None:
                await self._connection.close()


async def until(
    condition: Callable[[], bool],
    *,
    within: float = 10.0,
    what: str = "the condition",
    every: float = 0.0,
    fail: bool = True,
) -> bool:
    """Re-check `condition` each time the event loop has run (or every `every` s) until it holds.

    The one polling helper of the suite: for state that no event announces (a counter, a
    proxy's connection count, a node's status). With `every` = 0 the check runs as soon as
    the other tasks have handled what the loop delivered; give a positive `every` when the
    condition waits for another process, to leave it the CPU. After `within` seconds the
    test fails naming `what` (or, with fail=False, the result is False).
    """
    try:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 - no event announces these conditions
                await asyncio.sleep(every)
    except TimeoutError:
        if fail:
            pytest.fail(f"{what} not reached within {within} s")
        return False
    return True
