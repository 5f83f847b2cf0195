"""The publisher's link to the broker: one connection and one confirm channel, (re)opened on demand.

A new channel (after a connection loss, or after the broker closed the channel
for an error) declares the publisher's entities again, in their original order,
before anyone publishes on it: the constructor's list first, then every per-call
declaration already made, so a queue deleted meanwhile comes back.

With several node URLs the link connects to the first that answers and, after
losing a node, starts with the next one (failover). A lost connection is
reopened in the background with the retry policy's waits, so publishes find a
ready channel again without paying for the reconnect themselves.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from typing import Protocol

from ._blame import ChannelInterrupted, describe
from ._channel import ConfirmChannel, PublishChannel
from ._connection import AmqpConnection, ConnectionParams, mask_url
from ._declarations import Entity, Exchange, Queue, declare, expand
from ._exceptions import (
    AuthenticationError,
    ConnectionFailed,
    PublisherClosed,
    is_retriable,
    mapped_errors,
)
from ._metrics import Metrics
from ._options import Prepared
from .retry import RetryPolicy

__all__ = ["Link", "LinkLike"]

log = logging.getLogger("aiopublish")

# A nacked channel is replaced only once it is this old (seconds), so replacements stay rare.
_NACKED_CHANNEL_MIN_AGE = 1.0
# How long a replaced channel may wait for its outstanding confirms before it is closed.
_RETIRED_CHANNEL_DRAIN = 30.0


class LinkLike(Protocol):
    """What a Publisher needs from its link; the in-memory test broker provides the same (see _transports)."""

    @property
    def node(self) -> str | None: ...

    @property
    def is_blocked(self) -> bool: ...

    @property
    def blocked_reason(self) -> str | None: ...

    def ready_channel(self) -> PublishChannel | None: ...

    async def channel(self) -> PublishChannel: ...

    async def ensure_declared(self, channel: PublishChannel, entities: Iterable[Exchange | Queue]) -> None: ...

    async def wait_unblocked(self) -> None: ...

    async def probe(self, message: Prepared) -> None: ...

    def check_stalled(self, timeout: float) -> None: ...

    async def close(self, drain_timeout: float | None) -> None: ...


class Link:
    """Owns the connection and channel; every publish asks it for a ready channel."""

    def __init__(
        self,
        params: ConnectionParams,
        declare: Iterable[Exchange | Queue],
        reconnect_policy: RetryPolicy,
        metrics: Metrics,
    ) -> None:
        self.params = params
        self.reconnect_policy = reconnect_policy
        self.metrics = metrics
        self._steps: list[Entity] = expand(declare)
        self._connection: AmqpConnection | None = None
        self._channel: ConfirmChannel | None = None
        self._probe_channel: ConfirmChannel | None = None
        self._probe_lock: asyncio.Lock | None = None
        self._declared: list[Entity] = []  # steps declared on the current channel
        self._open_lock = asyncio.Lock()
        self._declare_lock = asyncio.Lock()
        self._unblocked = asyncio.Event()
        self._unblocked.set()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._nodes = list(params.urls)
        if params.shuffle_nodes:
            random.shuffle(self._nodes)
        self._next_node = 0
        self.node: str | None = None
        self.closed = False
        self.connections_opened = 0

    # -- state -------------------------------------------------------------------------------

    @property
    def is_blocked(self) -> bool:
        return not self._unblocked.is_set()

    @property
    def blocked_reason(self) -> str | None:
        connection = self._connection
        return connection.blocked_reason if connection is not None else None

    @property
    def connection(self) -> AmqpConnection | None:
        return self._connection

    def ready_channel(self) -> ConfirmChannel | None:
        """The open channel, or None when one must be opened first (no await on the hot path)."""
        channel = self._channel
        if channel is not None and not channel.refused:
            if channel.nacked and channel.loop.time() - channel.opened_at >= _NACKED_CHANNEL_MIN_AGE:
                self._retire(channel)
                return None
            return channel
        return None

    def _retire(self, channel: ConfirmChannel) -> None:
        """Stop publishing on a channel the broker nacked on; close it once its confirms are in.

        RabbitMQ can keep nacking every publish on a channel opened while a quorum queue had
        no leader (its node was just killed) while a channel opened later works: replacing the
        channel after nacks is cheap, and at most once a second so a queue that rejects
        publishes on purpose (x-overflow) does not make the link churn.
        """
        self._channel = None
        log.info("the broker nacked publishes on channel %d: opening a new channel", channel.number)
        task = asyncio.get_running_loop().create_task(self._close_when_idle(channel))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close_when_idle(self, channel: ConfirmChannel) -> None:
        try:
            async with asyncio.timeout(_RETIRED_CHANNEL_DRAIN):
                await channel.wait_idle()
        except TimeoutError:
            pass
        await channel.close()

    async def wait_unblocked(self) -> None:
        await self._unblocked.wait()

    def check_stalled(self, timeout: float) -> None:
        """After a publish timed out: drop the connection if no confirm came for `timeout` seconds.

        A network that went silent closes nothing: without this the link would keep
        writing into it until heartbeats notice (about three heartbeat intervals). A
        blocked connection is not dead, so it is left alone.
        """
        channel, connection = self.ready_channel(), self._connection
        if channel is None or connection is None or self.is_blocked:
            return
        stalled = channel.stalled_for()
        if stalled >= timeout * 0.9:
            log.warning(
                "no confirm from %s for %.1f s: dropping the connection as dead", mask_url(self.node or ""), stalled
            )
            connection.stream_writer.transport.abort()

    # -- opening -----------------------------------------------------------------------------

    async def channel(self) -> ConfirmChannel:
        """A ready channel, connecting and declaring first if needed. Raises ConnectionFailed."""
        channel = self.ready_channel()
        if channel is not None:
            return channel
        async with self._open_lock:
            channel = self.ready_channel()
            if channel is not None:
                return channel
            if self.closed:
                raise PublisherClosed("the publisher is closed")
            with mapped_errors(self.params.mask):
                return await self._open()

    async def _connect_any_node(self) -> AmqpConnection:
        """Try each node once, starting after the one last used; raise when none answers."""
        errors: list[ConnectionFailed] = []
        count = len(self._nodes)
        for offset in range(count):
            index = (self._next_node + offset) % count
            node = self._nodes[index]
            try:
                connection = await self.params.connect(node)
            except AuthenticationError:
                raise
            except ConnectionFailed as exc:
                errors.append(exc)
                if count > 1:
                    log.warning("node %s did not answer: %s", mask_url(node), exc)
                continue
            self.node = node
            # After losing this node, start with the next one.
            self._next_node = (index + 1) % count
            return connection
        if len(errors) == 1:
            raise errors[0]
        raise ConnectionFailed(f"none of the {count} nodes answered: " + "; ".join(str(e) for e in errors))

    async def _open(self) -> ConfirmChannel:
        connection = self._connection
        if connection is None or connection.is_closed:
            connection = await self._connect_any_node()
            self._connection = connection
            self.connections_opened += 1
            if self.connections_opened > 1:
                self.metrics.reconnects += 1
            log.info(
                "%s to %s",
                "reconnected" if self.connections_opened > 1 else "connected",
                mask_url(self.node or ""),
            )
            connection.on_blocked.append(self._on_blocked_changed)
            connection.closing.add_done_callback(self._on_connection_closed)
        self._unblocked.set()
        channel = await ConfirmChannel.open_on(connection)
        self._declared = []
        for step in self._steps:
            await declare(channel, step)
            self._declared.append(step)
        self._channel = channel
        return channel

    async def ensure_declared(self, channel: PublishChannel, entities: Iterable[Exchange | Queue]) -> None:
        """Declare what a publish names and this channel has not declared yet; remember it for reconnects."""
        assert isinstance(channel, ConfirmChannel)
        steps = [step for step in expand(entities) if step not in self._declared]
        if not steps:
            return
        async with self._declare_lock:
            for step in steps:
                if step in self._declared:
                    continue
                with mapped_errors(self.params.mask):
                    await declare(channel, step)
                self._declared.append(step)
                if step not in self._steps:
                    self._steps.append(step)

    async def probe(self, message: Prepared) -> None:
        """Publish `message` alone on an isolated channel and wait for its confirm.

        For a publish that was in flight when the broker closed the channel for an error
        that several publishes could have caused (see _blame): alone on its channel, an
        error can only be its own, so it raises that error or returns once confirmed.
        Probes take turns; the isolated channel is reopened after each error.
        """
        if self._probe_lock is None:
            self._probe_lock = asyncio.Lock()
        async with self._probe_lock:
            channel = self._probe_channel
            if channel is None or channel.refused:
                connection = self._connection
                if connection is None or connection.is_closed:
                    raise ChannelInterrupted("the connection closed before the message could be published again")
                with mapped_errors(self.params.mask):
                    channel = self._probe_channel = await ConfirmChannel.open_on(connection, isolated=True)
            future = channel.send(message, track=True)
            assert future is not None
            try:
                await future
            except asyncio.CancelledError:
                channel.forget(future)
                raise

    # -- events ------------------------------------------------------------------------------

    def _on_blocked_changed(self, connection: AmqpConnection) -> None:
        if connection is not self._connection:
            return
        if connection.is_blocked:
            if self._unblocked.is_set():
                log.warning("the broker is blocking publishers: %s", connection.blocked_reason)
            self._unblocked.clear()
        else:
            if not self._unblocked.is_set():
                log.warning("the broker stopped blocking publishers")
            self._unblocked.set()

    def _on_connection_closed(self, closing: asyncio.Future[object]) -> None:
        reason = None if closing.cancelled() else closing.exception()
        # A connection that is gone cannot be blocked; waiters then fail on the closed channel.
        self._unblocked.set()
        if self.closed:
            return
        log.warning("disconnected from %s: %s", mask_url(self.node or ""), self.params.mask(describe(reason)))
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Reopen the channel in the background, waiting between tries as the retry policy says."""

        def on_retry(state: object) -> None:
            log.info("reconnect attempt failed: %s", getattr(state, "exception", "?"))

        try:
            await self.reconnect_policy.run(self.channel, retry=is_retriable, on_retry=on_retry)
        except PublisherClosed:
            pass
        except Exception as exc:
            log.warning("gave up reconnecting for now (%s); the next publish tries again", exc)

    # -- closing -----------------------------------------------------------------------------

    async def close(self, drain_timeout: float | None) -> None:
        """Wait (up to drain_timeout) for in-flight confirms, then close; always releases the socket."""
        self.closed = True
        channel, connection = self._channel, self._connection
        self._channel = self._probe_channel = None
        task, self._reconnect_task = self._reconnect_task, None
        try:
            background = [t for t in (task, *self._retiring) if t is not None and not t.done()]
            for pending in background:
                pending.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if channel is not None and not channel.is_closed and drain_timeout != 0:
                try:
                    async with asyncio.timeout(drain_timeout):
                        await channel.wait_idle()
                except TimeoutError:
                    log.warning("closing with %d publishes still unconfirmed", channel.in_flight)
            if connection is not None and not connection.is_closed:
                await connection.close()
        except BaseException:
            # Cancelled or failed mid-close: drop the socket so nothing leaks.
            if connection is not None:
                writer = connection.factory.writer
                if writer is not None:
                    writer.transport.abort()
            raise
        finally:
            self._connection = None
            if connection is not None:
                log.info("closed the connection to %s", mask_url(self.node or ""))
