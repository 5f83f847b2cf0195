"""The confirm-mode channel: writes publish frames directly and matches each confirm to its publish.

aiormq's own basic_publish takes a lock, queues frames for a writer task and
matches returns to publishes by message_id alone. Here a publish is one
synchronous step (take the next delivery tag, write the frames), so tags always
follow wire order, and every publish owns its pending record:

- basic.ack settles the record (a `multiple` ack settles every tag up to it);
- basic.return arrives before the ack of the same message and marks the record,
  matched by message_id, exchange and routing key, oldest first;
- basic.nack fails it with UndeliverableMessage("nacked");
- a channel or connection close fails every open record with an error that
  says whether the broker refused that very message or the outcome is unknown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from . import _wire
from ._connection import AmqpConnection
from ._exceptions import (
    AccessRefused,
    ChannelError,
    ConnectionFailed,
    NotFound,
    PreconditionFailed,
    UndeliverableMessage,
    channel_error,
    from_channel_closed,
)

__all__ = ["Batch", "ChannelInterrupted", "ConfirmChannel", "Pending", "PublishChannel"]

log = logging.getLogger("aiopublish")


class ChannelInterrupted(ConnectionFailed):
    """The channel closed before this message was confirmed; the broker may or may not have it."""


class PublishChannel(Protocol):
    """What a Publisher needs from a channel; the in-memory test broker provides the same."""

    number: int

    @property
    def is_closed(self) -> bool: ...

    @property
    def in_flight(self) -> int: ...

    def send(
        self,
        method_frame: bytes,
        properties: bytes,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        message_id: str,
        mandatory: bool,
        user_id: str | None,
        track: bool,
        batch: Batch | None = None,
        index: int = 0,
    ) -> asyncio.Future[None] | None: ...

    async def wait_writable(self) -> None: ...

    def forget(self, future: asyncio.Future[None]) -> None: ...


class Batch:
    """The confirms of many publishes at once, without a future per message (publish_many)."""

    __slots__ = ("_on_settle", "_sealed", "done", "errors", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_settle: Callable[[], None]) -> None:
        self.errors: dict[int, BaseException] = {}
        self.remaining = 0
        self.done: asyncio.Future[None] = loop.create_future()
        self._on_settle = on_settle
        self._sealed = False

    def settle(self, index: int, error: BaseException | None) -> None:
        if error is not None:
            self.errors[index] = error
        self._on_settle()
        self.remaining -= 1
        if self.remaining == 0 and self._sealed and not self.done.done():
            self.done.set_result(None)

    def seal(self) -> None:
        """No more publishes join; `done` resolves when the last one settles."""
        self._sealed = True
        if self.remaining == 0 and not self.done.done():
            self.done.set_result(None)


class Pending:
    """One publish waiting for its confirm: a future to resolve, or a slot in a Batch."""

    __slots__ = ("batch", "exchange", "future", "index", "message_id", "returned", "routing_key", "user_id")

    def __init__(
        self,
        future: asyncio.Future[None] | None,
        batch: Batch | None,
        index: int,
        exchange: str,
        routing_key: str,
        message_id: str,
        user_id: str | None,
    ) -> None:
        self.future = future
        self.batch = batch
        self.index = index
        self.exchange = exchange
        self.routing_key = routing_key
        self.message_id = message_id
        self.user_id = user_id
        self.returned: tuple[int, str] | None = None


class ConfirmChannel(aiormq.Channel):
    """A channel in confirm mode whose publishes are tracked by aiopublish, not aiormq."""

    connection: AmqpConnection

    def __init__(self, connection: AmqpConnection, number: int) -> None:
        super().__init__(connection, number, publisher_confirms=True, on_return_raises=False)
        self._pending: dict[int, Pending] = {}
        # message_id -> delivery tags of mandatory publishes that may still come back
        self._returnable: dict[str, list[int]] = {}
        self._next_tag = 1
        self._lowest = 1  # no open record has a tag below this
        self._idle = asyncio.Event()
        self._idle.set()
        self._transport = connection.stream_writer.transport
        self._frame_max = connection.connection_tune.frame_max or 131072
        self._outbox: list[bytes] = []
        # When the broker last showed progress on this channel (a confirm or return), or when
        # it went from idle to busy: a busy channel with no progress for long is likely dead.
        self._last_progress = self.loop.time()
        self._confirmed_upto = 0  # the highest delivery tag the broker answered
        self.opened_at = self.loop.time()
        # Set by a basic.nack: the link replaces a channel the broker nacks on (see Link.ready_channel).
        self.nacked = False
        self._closing.add_done_callback(self._on_closed)

    @classmethod
    async def open_on(cls, connection: AmqpConnection) -> ConfirmChannel:
        """Open a new confirm-mode channel on `connection`."""
        number = 1
        while number in connection.channels:
            number += 1
        channel = cls(connection, number)
        connection.channels[number] = channel
        await channel.open()
        return channel

    @property
    def in_flight(self) -> int:
        """Publishes written and not yet confirmed, returned or failed."""
        return len(self._pending)

    def send(
        self,
        method_frame: bytes,
        properties: bytes,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        message_id: str,
        mandatory: bool,
        user_id: str | None,
        track: bool,
        batch: Batch | None = None,
        index: int = 0,
    ) -> asyncio.Future[None] | None:
        """Write one publish now; return the future of its confirm when `track` is true.

        With a `batch`, the confirm settles entry `index` of the batch instead and
        nothing is returned.

        Synchronous on purpose: taking the delivery tag and writing the frames cannot
        be interleaved with another publish, so tags match the broker's count.
        """
        _wire.check_content_header(properties, self._frame_max)  # ValueError before anything is written
        if self.is_closed or self._transport.is_closing():
            raise ChannelInterrupted("the channel is closed; nothing was sent")
        tag = self._next_tag
        self._next_tag = tag + 1
        if not self._outbox:
            self.loop.call_soon(self._flush)
        self._outbox.append(method_frame)
        self._outbox.append(_wire.content_frames(self.number, properties, body, self._frame_max))
        if not track:
            return None
        future: asyncio.Future[None] | None = None
        if batch is None:
            future = self.loop.create_future()
        else:
            batch.remaining += 1
        if self._next_tag - 2 <= self._confirmed_upto:  # this is the only unanswered publish
            self._last_progress = self.loop.time()
        if not self._pending:
            self._idle.clear()
        self._pending[tag] = Pending(future, batch, index, exchange, routing_key, message_id, user_id)
        if mandatory:
            self._returnable.setdefault(message_id, []).append(tag)
        return future

    def _flush(self) -> None:
        # One write per event-loop turn for every publish made in it: far fewer syscalls.
        data = b"".join(self._outbox)
        self._outbox.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    async def wait_writable(self) -> None:
        """Wait while the socket's send buffer is over its high-water mark (slow or blocked broker)."""
        if self._transport.get_write_buffer_size() > 4 * 1024 * 1024:
            await self.connection.stream_writer.drain()

    def forget(self, future: asyncio.Future[None]) -> None:
        """Drop the record of a publish whose caller stopped waiting (cancelled or timed out)."""
        for tag, pending in self._pending.items():
            if pending.future is future:
                self._settle_tag(tag)
                return

    def stalled_for(self) -> float:
        """Seconds this channel has waited for confirms without any arriving (0 when idle)."""
        # Counted by delivery tags, not by open records: a timed-out publish forgets its record.
        if self._next_tag - 1 <= self._confirmed_upto:
            return 0.0
        return self.loop.time() - self._last_progress

    async def wait_idle(self) -> None:
        """Return when no publish waits for a confirm."""
        await self._idle.wait()

    # -- frames from the broker -------------------------------------------------------------

    async def _on_confirm_frame(self, frame: spec.Basic.Ack | spec.Basic.Nack | spec.Basic.Reject) -> None:
        self._last_progress = self.loop.time()
        if not isinstance(frame, spec.Basic.Ack):
            self.nacked = True
        last = frame.delivery_tag or 0
        if last > self._confirmed_upto:
            self._confirmed_upto = last
        if getattr(frame, "multiple", False):
            for tag in range(self._lowest, last + 1):
                self._settle_tag(tag, frame)
        else:
            self._settle_tag(last, frame)

    def _settle_tag(self, tag: int, frame: spec.Basic.Ack | spec.Basic.Nack | spec.Basic.Reject | None = None) -> None:
        pending = self._pending.pop(tag, None)
        if pending is None:
            return
        if pending.message_id in self._returnable:
            self._unindex_return(pending.message_id, tag)
        if tag == self._lowest:
            while self._lowest < self._next_tag and self._lowest not in self._pending:
                self._lowest += 1
        if not self._pending:
            self._idle.set()
        if frame is None:
            return
        if not isinstance(frame, spec.Basic.Ack):
            _deliver(
                pending,
                UndeliverableMessage(
                    "nacked",
                    exchange=pending.exchange,
                    routing_key=pending.routing_key,
                    message_id=pending.message_id,
                ),
            )
        elif pending.returned is not None:
            code, text = pending.returned
            _deliver(
                pending,
                UndeliverableMessage(
                    "returned",
                    exchange=pending.exchange,
                    routing_key=pending.routing_key,
                    message_id=pending.message_id,
                    reply_code=code,
                    reply_text=text,
                ),
            )
        else:
            _deliver(pending, None)

    def _unindex_return(self, message_id: str, tag: int) -> None:
        tags = self._returnable.get(message_id)
        if tags is None:
            return
        if tag in tags:
            tags.remove(tag)
        if not tags:
            del self._returnable[message_id]

    async def _on_return_frame(self, frame: spec.Basic.Return) -> None:
        header = await self._Channel__get_content_header()  # type: ignore[attr-defined]
        message: DeliveredMessage = await self._read_content(frame, header)
        message_id = message.header.properties.message_id
        for tag in self._returnable.get(message_id or "", ()):
            pending = self._pending.get(tag)
            if (
                pending is not None
                and pending.returned is None
                and pending.exchange == frame.exchange
                and pending.routing_key == frame.routing_key
            ):
                pending.returned = (frame.reply_code or 0, frame.reply_text or "")
                return
        # A return for a publish that did not wait for its confirm (confirms off).
        log.debug("basic.return for untracked message %s: %s", message_id, frame.reply_text)

    # -- closing ---------------------------------------------------------------------------

    def _on_closed(self, closing: asyncio.Future[Any]) -> None:
        reason = None if closing.cancelled() else closing.exception()
        broker_error = _broker_channel_error(reason)
        for tag in list(self._pending):
            pending = self._pending[tag]
            self._settle_tag(tag)
            if broker_error is not None and _blames(broker_error, pending):
                error: Exception = channel_error(broker_error.reply_code, broker_error.reply_text)
            else:
                error = ChannelInterrupted(
                    "the channel closed before the broker confirmed the message "
                    f"({_describe(reason)}); it may or may not have been stored"
                )
            _deliver(pending, error)
        self._returnable.clear()
        self._outbox.clear()


def _deliver(pending: Pending, error: BaseException | None) -> None:
    """Hand a publish its outcome: None for confirmed, else the exception to raise."""
    if pending.batch is not None:
        pending.batch.settle(pending.index, error)
        return
    future = pending.future
    if future is None or future.done():  # the caller stopped waiting (cancelled, timed out)
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _broker_channel_error(reason: BaseException | None) -> ChannelError | None:
    # ChannelClosed(None, None) is aiormq's own close-ok: not a broker error.
    if isinstance(reason, aiormq.exceptions.ChannelClosed) and any(reason.args):
        return from_channel_closed(reason)
    return None


def _blames(error: ChannelError, pending: Pending) -> bool:
    """Whether the broker's channel error was caused by this publish, judged by the reply text."""
    text = error.reply_text or ""
    if isinstance(error, (NotFound, AccessRefused)):
        return f"exchange '{pending.exchange}'" in text
    if isinstance(error, PreconditionFailed) and "user_id" in text:
        return pending.user_id is not None and f"'{pending.user_id}'" in text
    return True


def _describe(reason: BaseException | None) -> str:
    if reason is None:
        return "closed"
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
