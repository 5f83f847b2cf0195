"""The confirm-mode channel: writes publish frames directly and matches each confirm to its publish.

aiormq's own basic_publish takes a lock, queues frames for a writer task and
matches returns to publishes by message_id alone. Here a publish is one
synchronous step (take the next delivery tag, queue the frames for this
event-loop turn's write), so tags always follow wire order, and every publish
owns its pending record:

- basic.ack settles the record (a `multiple` ack settles every tag up to it);
- basic.return arrives before the ack of the same message and marks the record,
  matched by message_id, exchange and routing key, oldest first;
- basic.nack fails it with UndeliverableMessage("nacked");
- a channel close fails every open record: the broker's error goes to the publish
  that caused it and only to it (see _blame); a connection close fails them all
  with a retriable ChannelInterrupted.

After the broker's channel.close nothing more is written on the channel (the
broker would answer a frame after our close-ok by closing the whole connection),
and its number is not reused before it wraps around (AmqpConnection.next_channel_number).
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
from ._blame import Bystander, ChannelInterrupted, Suspect, culprits, default_exchange, describe
from ._connection import AmqpConnection
from ._exceptions import ChannelError, UndeliverableMessage, channel_error, from_channel_closed
from ._options import Prepared

__all__ = ["Batch", "ChannelInterrupted", "ConfirmChannel", "Pending", "PublishChannel", "wait_confirm"]

log = logging.getLogger("aiopublish")

# Past this many bytes waiting in the socket's send buffer, publishes wait for it to drain.
WRITE_BUFFER_HIGH = 4 * 1024 * 1024


class PublishChannel(Protocol):
    """What a Publisher needs from a channel; the in-memory test broker provides the same."""

    number: int

    @property
    def is_closed(self) -> bool: ...

    @property
    def in_flight(self) -> int: ...

    def send(
        self, message: Prepared, *, track: bool, batch: Batch | None = None, index: int = 0
    ) -> asyncio.Future[None] | None: ...

    @property
    def backed_up(self) -> bool: ...

    async def wait_writable(self) -> None: ...

    @property
    def last_delivery_tag(self) -> int: ...

    def forget(self, future: asyncio.Future[None], tag: int = 0) -> None: ...

    def withdraw(self, batch: Batch) -> None: ...

    def flush(self) -> int: ...


class Batch:
    """The confirms of many publishes at once, without a future per message (publish_many).

    An ack is recorded as a fact, in `acked` (one byte per message of the whole batch,
    shared by its attempts): a message is confirmed because its ack was read, never
    because no error was recorded for it. An ack read late, after its attempt gave up
    on it, is still recorded: the broker has the message.
    """

    __slots__ = ("_on_settle", "_sealed", "acked", "done", "errors", "remaining", "untracked")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_settle: Callable[[], None], acked: bytearray) -> None:
        self.errors: dict[int, BaseException] = {}
        self.acked: bytearray = acked
        # Confirms off: (index, delivery tag) of each message sent, to learn which were written.
        self.untracked: list[tuple[int, int]] = []
        self.remaining: int = 0
        self.done: asyncio.Future[None] = loop.create_future()
        self._on_settle = on_settle
        self._sealed = False

    def settle(self, index: int, error: BaseException | None) -> None:
        if error is None:
            self.acked[index] = 1
        else:
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

    __slots__ = ("batch", "future", "index", "message", "returned")

    def __init__(self, future: asyncio.Future[None] | None, batch: Batch | None, index: int, message: Prepared) -> None:
        self.future = future
        self.batch = batch
        self.index = index
        self.message = message
        self.returned: tuple[int, str] | None = None


class ConfirmChannel(aiormq.Channel):
    """A channel in confirm mode whose publishes are tracked by aiopublish, not aiormq.

    An `isolated` channel carries one publish at a time (Link.probe): any channel
    error on it is that publish's own. With `confirms=False` the channel is not put in
    confirm mode (use_confirms=False publishes: the broker sends no ack per message) and
    takes only untracked sends.
    """

    connection: AmqpConnection

    def __init__(
        self, connection: AmqpConnection, number: int, *, isolated: bool = False, confirms: bool = True
    ) -> None:
        super().__init__(connection, number, publisher_confirms=confirms, on_return_raises=False)
        self.isolated = isolated
        self._pending: dict[int, Pending] = {}
        # message_id -> delivery tags of mandatory publishes that may still come back
        self._returnable: dict[str, list[int]] = {}
        self._next_tag = 1
        self._lowest = 1  # no open record has a tag below this
        self._written_upto = 0  # the highest delivery tag handed to the socket
        self._idle = asyncio.Event()
        self._idle.set()
        self._transport = connection.stream_writer.transport
        self._frame_max = connection.connection_tune.frame_max or 131072
        # The longest properties whose content header frame fits in frame_max (see _wire.check_content_header).
        self._properties_max = self._frame_max - _wire.CONTENT_HEADER_ROOM
        # The broker's default max_message_size, by its version (a body over it the broker would refuse).
        self._body_max = connection.broker.max_message_size
        self._outbox: list[bytes] = []
        # Set as soon as the broker's channel.close is read: from then on nothing is written.
        self._refused = False
        self._returning = False  # a basic.return's content is being read (see confirm_now)
        self.opened_at = self.loop.time()
        # Set by a basic.nack: the link replaces a channel the broker nacks on (see Link.ready_channel).
        self.nacked = False
        self._closing.add_done_callback(self._on_closed)

    @classmethod
    async def open_on(
        cls, connection: AmqpConnection, *, isolated: bool = False, confirms: bool = True
    ) -> ConfirmChannel:
        """Open a new channel on `connection`, in confirm mode unless `confirms` is false."""
        number = connection.next_channel_number()
        channel = cls(connection, number, isolated=isolated, confirms=confirms)
        connection.channels[number] = channel
        await channel.open()
        return channel

    @property
    def refused(self) -> bool:
        """True once the broker closed (or is closing) this channel: it takes no more publishes."""
        return self._refused or self.is_closed

    @property
    def in_flight(self) -> int:
        """Publishes written and not yet confirmed, returned or failed."""
        return len(self._pending)

    @property
    def last_delivery_tag(self) -> int:
        """The delivery tag of the latest send() on this channel (tracing records it), 0 before any."""
        return self._next_tag - 1

    def send(
        self, message: Prepared, *, track: bool, batch: Batch | None = None, index: int = 0
    ) -> asyncio.Future[None] | None:
        """Queue one publish for this turn's write; return the future of its confirm when `track` is true.

        With a `batch`, the confirm settles entry `index` of the batch instead and
        nothing is returned.

        Synchronous on purpose: taking the delivery tag and queueing the frames cannot
        be interleaved with another publish, so tags match the broker's count.
        """
        properties = message.properties
        if len(properties) > self._properties_max:
            _wire.check_content_header(properties, self._frame_max)  # ValueError before anything is written
        if len(message.body) > self._body_max and message.broker_limit:
            raise self.connection.broker.body_too_large(len(message.body))
        if self._refused or self._transport.is_closing() or self._closing.done():
            raise ChannelInterrupted("the channel is closed; nothing was sent")
        # Before the tag is taken: a destination that cannot be encoded leaves the count as it was.
        method = _wire.method_frame(self.number, message.exchange, message.routing_key, message.mandatory)
        tag = self._next_tag
        self._next_tag = tag + 1
        outbox = self._outbox
        if not outbox:
            self.loop.call_soon(self._flush)
        outbox.append(method)
        outbox += _wire.content_frames(self.number, properties, message.body, self._frame_max)
        if not track:
            return None
        future: asyncio.Future[None] | None = None
        if batch is None:
            future = self.loop.create_future()
        else:
            batch.remaining += 1
        pending = self._pending
        if not pending:
            self._idle.clear()
        pending[tag] = Pending(future, batch, index, message)
        if message.mandatory:
            self._returnable.setdefault(message.message_id, []).append(tag)
        return future

    def flush(self) -> int:
        """Hand what this turn queued to the socket now; the highest delivery tag ever handed to it.

        A publish whose tag is above it never reached the socket (the channel closed first).
        """
        if self._outbox:
            self._flush()
        return self._written_upto

    def _flush(self) -> None:
        # One write per event-loop turn for every publish made in it: far fewer syscalls.
        if self._refused or self._transport.is_closing():
            self._outbox.clear()
            return
        data = b"".join(self._outbox)
        self._outbox.clear()
        self._written_upto = self._next_tag - 1
        self._transport.write(data)

    @property
    def backed_up(self) -> bool:
        """Whether the socket's send buffer is over its high-water mark: wait_writable() would wait."""
        return self._transport.get_write_buffer_size() > WRITE_BUFFER_HIGH

    async def wait_writable(self) -> None:
        """Wait while the socket's send buffer is over its high-water mark (slow or blocked broker).

        Raises ChannelInterrupted when the connection is lost meanwhile: the write path's
        errors (a reset, a broken pipe, EOF) are aiopublish's own, retried like any other loss.
        """
        if self.backed_up:
            try:
                await self.connection.stream_writer.drain()
            except Exception as exc:
                raise ChannelInterrupted(
                    f"the connection was lost while writing ({describe(exc)}); "
                    "messages not yet confirmed may or may not have been stored"
                ) from None

    def forget(self, future: asyncio.Future[None], tag: int = 0) -> None:
        """Drop the record of a publish whose caller stopped waiting (cancelled or timed out).

        `tag` is its delivery tag (last_delivery_tag right after its send): found at once,
        so 40,000 publishes timing out together cost linear work, not a scan each.
        """
        pending = self._pending.get(tag)
        if pending is not None and pending.future is future:
            self._settle_tag(tag)
            return
        for other, pending in self._pending.items():
            if pending.future is future:
                self._settle_tag(other)
                return

    def withdraw(self, batch: Batch) -> None:
        """Nothing to take back: send() writes every publish at once (AMQP 1.0 may hold some for credit)."""

    async def wait_idle(self) -> None:
        """Return when no publish waits for a confirm."""
        await self._idle.wait()

    # -- frames from the broker -------------------------------------------------------------

    async def _on_confirm_frame(self, frame: spec.Basic.Ack | spec.Basic.Nack | spec.Basic.Reject) -> None:
        self._confirm(
            frame.delivery_tag or 0, bool(getattr(frame, "multiple", False)), isinstance(frame, spec.Basic.Ack)
        )

    def confirm_now(self, delivery_tag: int, multiple: bool, acked: bool) -> bool:
        """Settle a basic.ack/nack the connection just read, unless frames before it are still to be read here.

        Called by the connection's reader (_frames.ConfirmFrames) instead of queueing the frame for
        this channel's reader task; False when it must be queued after them (a basic.return
        being read, or frames waiting in the queue), so the channel sees its frames in order.
        """
        if self._returning or not self.frames.empty():
            return False
        if multiple or not acked:
            self._confirm(delivery_tag, multiple, acked)
        else:  # a single ack: RabbitMQ sends these one per message when a batch spans queues
            self._settle_tag(delivery_tag, True)
        return True

    def _confirm(self, last: int, multiple: bool, acked: bool) -> None:
        if not acked:
            self.nacked = True
        if not multiple:
            self._settle_tag(last, acked)
            return
        pending = self._pending
        if not acked or self._returnable:
            for tag in range(self._lowest, last + 1):
                self._settle_tag(tag, acked)
            return
        # The usual confirm: a multiple ack of publishes none of which can come back returned.
        if last < self._lowest:
            return
        for tag in range(self._lowest, last + 1):
            record = pending.pop(tag, None)
            if record is not None:
                _deliver(record, None)
        self._lowest = min(last + 1, self._next_tag)
        while self._lowest < self._next_tag and self._lowest not in pending:
            self._lowest += 1
        if not pending:
            self._idle.set()

    def _settle_tag(self, tag: int, acked: bool | None = None) -> None:
        """Drop the record of `tag`; give its publish the outcome of a confirm (`acked`), or none (None)."""
        pending = self._pending.pop(tag, None)
        if pending is None:
            return
        message = pending.message
        if message.mandatory:
            self._unindex_return(message.message_id, tag)
        if tag == self._lowest:
            while self._lowest < self._next_tag and self._lowest not in self._pending:
                self._lowest += 1
        if not self._pending:
            self._idle.set()
        if acked is None:
            return
        if not acked:
            _deliver(pending, _undeliverable("nacked", message))
        elif pending.returned is not None:
            code, text = pending.returned
            _deliver(pending, _undeliverable("returned", message, code, text))
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
        self._returning = True  # until the return is recorded, confirms wait in the queue behind it
        try:
            header = await self._Channel__get_content_header()  # type: ignore[attr-defined]
            delivered: DeliveredMessage = await self._read_content(frame, header)
        finally:
            self._returning = False
        message_id = delivered.header.properties.message_id
        exchange = default_exchange(frame.exchange or "")
        for tag in self._returnable.get(message_id or "", ()):
            pending = self._pending.get(tag)
            if (
                pending is not None
                and pending.returned is None
                and pending.message.exchange == exchange
                and pending.message.routing_key == frame.routing_key
            ):
                pending.returned = (frame.reply_code or 0, frame.reply_text or "")
                return
        # A return for a publish that did not wait for its confirm (confirms off).
        log.debug("basic.return for untracked message %s: %s", message_id, frame.reply_text)

    # -- closing ---------------------------------------------------------------------------

    async def _on_close_frame(self, frame: spec.Channel.Close) -> None:
        # Before aiormq queues our close-ok: a publish frame written after it would make the
        # broker close the whole connection (504 CHANNEL_ERROR - expected 'channel.open').
        self._refused = True
        await super()._on_close_frame(frame)

    def _on_closed(self, closing: asyncio.Future[Any]) -> None:
        self._refused = True
        reason = None if closing.cancelled() else closing.exception()
        broker_error = _broker_channel_error(reason)
        records = list(self._pending.items())
        for tag, _ in records:
            self._settle_tag(tag)
        # Publishes still in the write buffer never reached the broker: never the culprit.
        sent = [pending for tag, pending in records if tag <= self._written_upto]
        blamed: list[int] = []
        if broker_error is not None:
            blamed = culprits(broker_error, [pending.message for pending in sent], isolated=self.isolated)
        outcome: dict[int, BaseException] = {}
        if broker_error is not None and len(blamed) == 1:
            outcome[id(sent[blamed[0]])] = channel_error(broker_error.reply_code, broker_error.reply_text)
        elif broker_error is not None:
            for index in blamed:
                outcome[id(sent[index])] = Suspect(broker_error)
        for _, pending in records:
            error = outcome.get(id(pending))
            if error is None and broker_error is not None:
                error = Bystander(
                    f"the broker closed the channel for another publish ({describe(broker_error)}) "
                    "before confirming this message; it may or may not have been stored"
                )
            elif error is None:
                error = ChannelInterrupted(
                    f"the channel closed before the broker confirmed the message ({describe(reason)}); "
                    "it may or may not have been stored"
                )
            _deliver(pending, error)
        self._returnable.clear()
        self._outbox.clear()


async def wait_confirm(channel: PublishChannel, future: asyncio.Future[None], tag: int) -> None:
    """Await the confirm of the publish with delivery tag `tag` on `channel`.

    Cancelled (or timed out) while waiting, it leaves no record behind for a late confirm.
    """
    try:
        await future
    except asyncio.CancelledError:
        channel.forget(future, tag)
        raise


def _undeliverable(reason: str, message: Prepared, code: int | None = None, text: str | None = None) -> Exception:
    return UndeliverableMessage(
        reason,
        exchange=message.exchange,
        routing_key=message.routing_key,
        message_id=message.message_id,
        reply_code=code,
        reply_text=text,
    )


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
