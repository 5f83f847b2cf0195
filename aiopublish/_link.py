"""The publisher's link to the broker: one connection and one confirm channel, (re)opened on demand.

A new channel (after a connection loss, or after the broker closed the channel
for an error) declares the publisher's entities again, in their original order,
before anyone publishes on it: the constructor's list first, then every per-call
declaration already made, so a queue deleted meanwhile comes back.

With several node URLs the link connects to the first that answers and, after
losing a node, starts with the next one (failover). A lost connection is
reopened in the background with the retry policy's waits, so publishes find a
ready channel again without paying for the reconnect themselves.

Liveness: when a publish times out, the link asks whether the connection itself
is alive rather than guessing from one publish: if nothing arrived on it since
that publish began, it opens and closes a spare channel (a round trip the broker
must answer) and drops the connection only when nothing at all arrives within a
few seconds.
A slow broker busy with big messages keeps sending confirms and is left alone; a
silent network (nothing closes, nothing answers) is dropped and reconnected.

A link belongs to the event loop it first ran in. When that loop ends, its
connection's tasks are cancelled by the loop's shutdown: the link then starts no
reconnect (a task created during shutdown would be destroyed pending) and logs
nothing above debug; the Publisher makes a new link for the next loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import socket
from collections.abc import Iterable
from typing import Protocol

from ._blame import ChannelInterrupted, describe
from ._channel import ConfirmChannel, PublishChannel, wait_confirm
from ._connection import AmqpConnection, ConnectionParams, mask_url, wait_discarded
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
from .retry import RetryPolicy, RetryState

__all__ = ["CALL_CONNECT_RETRY", "Link", "LinkLike"]

log = logging.getLogger("aiopublish")

# A nacked channel is replaced only once it is this old (seconds), so replacements stay rare.
_NACKED_CHANNEL_MIN_AGE = 1.0
# How long a replaced channel may wait for its outstanding confirms before it is closed.
_RETIRED_CHANNEL_DRAIN = 30.0
# How long the liveness round trip may take before the connection counts as dead, unless
# other frames arrived meanwhile (a busy broker that is still answering).
LIVENESS_PROBE_TIMEOUT = 5.0


#: A publish's own connection-establishment retries (its `transport_options`), while it runs; None: the link's.
CALL_CONNECT_RETRY: contextvars.ContextVar[RetryPolicy | None] = contextvars.ContextVar(
    "aiopublish_call_connect_retry", default=None
)


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

    def check_alive(self, since: float) -> None: ...

    async def close(self, drain_timeout: float | None) -> None: ...

    def abandon(self) -> None: ...


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
        # The channel without confirm mode that use_confirms=False publishes go on (opened on demand).
        self._unconfirmed: ConfirmChannel | None = None
        self._probe_lock: asyncio.Lock | None = None
        self._declared: list[Entity] = []  # steps declared on the current channel
        self._open_lock = asyncio.Lock()
        self._declare_lock = asyncio.Lock()
        self._unblocked = asyncio.Event()
        self._unblocked.set()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._liveness_task: asyncio.Task[None] | None = None
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

    def check_alive(self, since: float) -> None:
        """A publish begun at loop time `since` timed out: make sure the connection still answers.

        One publish's short timeout says nothing about the connection (a 5 ms timeout
        behind 50 MB of writes is simply too short): if the broker sent anything since the
        publish began, the connection is alive; else a round trip on it is tried in the
        background, and the connection is dropped only when neither its answer nor any other
        frame arrives within a few seconds. A blocked
        connection is not dead (and the broker stops reading it), so it is left alone.
        """
        connection = self._connection
        if connection is None or connection.is_closed or self.is_blocked or self.closed:
            return
        if self._liveness_task is not None and not self._liveness_task.done():
            return
        if connection.last_received > since:
            return  # the broker sent something while this publish waited: alive
        self._liveness_task = asyncio.get_running_loop().create_task(self._check_liveness(connection))

    async def _check_liveness(self, connection: AmqpConnection) -> None:
        started = connection.loop.time()
        try:
            async with asyncio.timeout(LIVENESS_PROBE_TIMEOUT):
                await connection.round_trip()
            return
        except TimeoutError:
            if connection.last_received > started:
                return  # no answer yet, but the broker is sending: busy, not dead
        except Exception:  # the connection closed meanwhile: its close callback reconnects
            return
        if connection is self._connection and not connection.is_closed and not self.closed:
            log.warning(
                "%s did not answer for %.0f s: dropping the connection as dead",
                mask_url(self.node or ""),
                LIVENESS_PROBE_TIMEOUT,
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

    def ready_unconfirmed_channel(self) -> ConfirmChannel | None:
        """The open channel without confirm mode, or None when one must be opened first."""
        channel = self._unconfirmed
        if channel is not None and not channel.refused and self._channel is not None:
            return channel
        return None

    async def unconfirmed_channel(self) -> ConfirmChannel:
        """A channel NOT in confirm mode (nameko's use_confirms=False producer), opened after the confirm
        channel so the publisher's declarations are made first. Raises ConnectionFailed."""
        channel = self.ready_unconfirmed_channel()
        if channel is not None:
            return channel
        await self.channel()
        async with self._open_lock:
            channel = self.ready_unconfirmed_channel()
            if channel is not None:
                return channel
            connection = self._connection
            if self.closed or connection is None or connection.is_closed:
                raise ChannelInterrupted("the connection closed before a channel could be opened; nothing was sent")
            with mapped_errors(self.params.mask):
                channel = self._unconfirmed = await ConfirmChannel.open_on(connection, confirms=False)
            return channel

    async def _establish(self) -> AmqpConnection:
        """Connect to a node, retrying as kombu's transport options say (max_retries, interval_*), if set."""
        policy = CALL_CONNECT_RETRY.get() or self.params.connect_retry
        if policy is None:
            return await self._connect_any_node()

        def on_retry(state: RetryState) -> None:
            log.warning(
                "connecting to %s failed on try %d (%s); trying again in %.2f s (transport options)",
                self.params.masked_url,
                state.attempt,
                self.params.mask(str(state.exception)),
                state.next_wait,
            )

        return await policy.run(self._connect_any_node, retry=is_retriable, on_retry=on_retry)

    async def _open(self) -> ConfirmChannel:
        connection = self._connection
        if connection is None or connection.is_closed:
            connection = await self._establish()
            if self.closed:  # close() ran while this connected: it could not see the connection
                await connection.close()
                raise PublisherClosed("the publisher is closed")
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
            await wait_confirm(channel, future, channel.last_delivery_tag)

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
        connection = self._connection
        if (
            isinstance(reason, asyncio.CancelledError)
            and connection is not None
            and not connection.is_connection_was_stuck
        ):
            # Its reader was cancelled from outside: the event loop is shutting down (an
            # unclosed publisher). A reconnect now would be a task destroyed pending.
            log.debug("the connection to %s ended with its event loop", mask_url(self.node or ""))
            self.closed = True
            return
        log.warning("disconnected from %s: %s", mask_url(self.node or ""), self.params.mask(describe(reason)))
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Reopen the channel in the background, waiting between tries as the retry policy says."""

        def on_retry(state: object) -> None:
            log.info("reconnect attempt failed: %s", getattr(state, "exception", "?"))

        CALL_CONNECT_RETRY.set(None)  # this task's own context: the link's transport options, not a publish's
        try:
            await self.reconnect_policy.run(self.channel, retry=is_retriable, on_retry=on_retry)
        except PublisherClosed:
            pass
        except Exception as exc:
            log.warning("gave up reconnecting for now (%s); the next publish tries again", exc)

    # -- closing -----------------------------------------------------------------------------

    def abandon(self) -> None:
        """Close now without awaiting anything: close() was cancelled, or the link's event loop ended.

        Background tasks are cancelled and the socket aborted. Nothing of a finished loop
        can be scheduled any more (its shutdown has already cancelled every task, aiormq's
        reader and writer included, which closes the connection); a socket still open
        then is shut down directly.
        """
        self.closed = True
        connection = self._connection
        self._connection = self._channel = self._probe_channel = self._unconfirmed = None
        tasks = [self._reconnect_task, self._liveness_task, *self._retiring]
        self._reconnect_task = self._liveness_task = None
        self._retiring = set()
        for task in tasks:
            if task is not None and not task.done():
                with contextlib.suppress(RuntimeError):  # its loop is closed
                    task.cancel()
        writer = connection.factory.writer if connection is not None else None
        if writer is not None and not writer.transport.is_closing():
            sock = writer.transport.get_extra_info("socket")
            try:
                writer.transport.abort()
            except RuntimeError:  # the loop is closed: end the TCP connection ourselves
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    async def close(self, drain_timeout: float | None) -> None:
        """Wait (up to drain_timeout) for in-flight confirms, then close; always releases the socket."""
        self.closed = True
        channel, connection = self._channel, self._connection
        self._channel = self._probe_channel = self._unconfirmed = None
        background = [self._reconnect_task, self._liveness_task, *self._retiring]
        self._reconnect_task = self._liveness_task = None
        try:
            await wait_discarded()
            await _cancel_all(background)
            if channel is not None:
                await _drain(channel, connection, drain_timeout)
            if connection is not None and not connection.is_closed:
                await connection.close()
        except BaseException:
            # Cancelled or failed mid-close: drop the socket so nothing leaks.
            writer = connection.factory.writer if connection is not None else None
            if writer is not None:
                writer.transport.abort()
            raise
        finally:
            self._connection = None
            if connection is not None:
                log.info("closed the connection to %s", mask_url(self.node or ""))


async def _cancel_all(tasks: list[asyncio.Task[None] | None]) -> None:
    running = [task for task in tasks if task is not None and not task.done()]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


async def _drain(channel: ConfirmChannel, connection: AmqpConnection | None, drain_timeout: float | None) -> None:
    """Wait up to drain_timeout for the channel's confirms; with none left to wait, drop a silent socket."""
    if not channel.is_closed and drain_timeout != 0:
        try:
            async with asyncio.timeout(drain_timeout):
                await channel.wait_idle()
        except TimeoutError:
            log.warning("closing with %d publishes still unconfirmed", channel.in_flight)
    if channel.in_flight and drain_timeout == 0 and connection is not None:
        # Nothing more will be waited for: a broker that did not confirm in time may not
        # answer a close handshake either (a silent network), so drop the socket first.
        connection.stream_writer.transport.abort()
