"""The publisher's link to the broker: one connection and one confirm channel, (re)opened on demand.

A new channel (after a connection loss, or after the broker closed the channel
for an error) declares the publisher's entities again, in their original order,
before anyone publishes on it: the constructor's list first, then every per-call
declaration already made, so a queue deleted meanwhile comes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from ._channel import ConfirmChannel
from ._connection import AmqpConnection, ConnectionParams
from ._declarations import Entity, Exchange, Queue, declare, expand
from ._exceptions import AiopublishError, PublisherClosed, translate

__all__ = ["Link"]

log = logging.getLogger("aiopublish")


class Link:
    """Owns the connection and channel; every publish asks it for a ready channel."""

    def __init__(self, params: ConnectionParams, declare: Iterable[Exchange | Queue]) -> None:
        self.params = params
        self._steps: list[Entity] = expand(declare)
        self._connection: AmqpConnection | None = None
        self._channel: ConfirmChannel | None = None
        self._declared: list[Entity] = []  # steps declared on the current channel
        self._open_lock = asyncio.Lock()
        self._declare_lock = asyncio.Lock()
        self._unblocked = asyncio.Event()
        self._unblocked.set()
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
        if channel is not None and not channel.is_closed:
            return channel
        return None

    async def wait_unblocked(self) -> None:
        await self._unblocked.wait()

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
            try:
                return await self._open()
            except AiopublishError:
                raise
            except Exception as exc:
                error = translate(exc, mask=self.params.mask)
                if error is exc:
                    raise
                raise error from exc

    async def _open(self) -> ConfirmChannel:
        connection = self._connection
        if connection is None or connection.is_closed:
            connection = await self.params.connect()
            self._connection = connection
            self.connections_opened += 1
            log.info(
                "connected to %s%s",
                self.params.masked_url,
                " (reconnected)" if self.connections_opened > 1 else "",
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

    async def ensure_declared(self, channel: ConfirmChannel, entities: Iterable[Exchange | Queue]) -> None:
        """Declare what a publish names and this channel has not declared yet; remember it for reconnects."""
        steps = [step for step in expand(entities) if step not in self._declared]
        if not steps:
            return
        async with self._declare_lock:
            for step in steps:
                if step in self._declared:
                    continue
                try:
                    await declare(channel, step)
                except Exception as exc:
                    error = translate(exc, mask=self.params.mask)
                    if error is exc:
                        raise
                    raise error from exc
                self._declared.append(step)
                if step not in self._steps:
                    self._steps.append(step)

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
        log.warning("disconnected from %s: %s", self.params.masked_url, self.params.mask(_reason(reason)))

    # -- closing -----------------------------------------------------------------------------

    async def close(self, drain_timeout: float | None) -> None:
        """Wait (up to drain_timeout) for in-flight confirms, then close; always releases the socket."""
        self.closed = True
        channel, connection = self._channel, self._connection
        self._channel = None
        try:
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
            log.info("closed the connection to %s", self.params.masked_url)


def _reason(reason: BaseException | None) -> str:
    if reason is None:
        return "closed"
    text = str(reason)
    return f"{type(reason).__name__}: {text}" if text else type(reason).__name__
