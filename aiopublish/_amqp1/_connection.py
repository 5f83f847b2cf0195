"""One AMQP 1.0 connection with one session and its sender links, over asyncio streams.

The connection is opened by _handshake; from then on the Session reads every frame.
A sender link is attached per address the first time a message goes there, and kept
for the connection's life (RabbitMQ's management link pair too, see _management).

Sending is synchronous (`Session.send`): a delivery is queued on its link and written
as soon as the link has credit and the session's remote incoming window has room
for all of its frames; what one event-loop turn writes goes to the socket in one
write. A delivery waits on its link otherwise (credit exhausted: the broker's flow
control), and its publish waits with it, within its own timeout.

Each unsettled delivery is matched to its publish by delivery-id when the broker's
disposition arrives; `on_outcome` is called with the outcome. When the connection
ends (a lost socket, the broker's close) every delivery still waiting gets
`on_lost`; when a link is refused or detached, its deliveries get `on_link_error`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from .._blame import describe
from . import _performatives as p
from ._codec import NULL, DecodeError, Described, encode_bool, encode_described, encode_fields, encode_uint
from ._frames import FrameReader, InFrame, frame

__all__ = ["Delivery", "SenderLink", "Session"]

log = logging.getLogger("aiopublish")

# What we announce: frames up to this size from the broker, this many unsettled incoming transfers.
_MAX_FRAME_SIZE = 1024 * 1024
_INCOMING_WINDOW = 0xFFFF
_OUTGOING_WINDOW = 0xFFFFFFFF
_HANDLE_MAX = 0xFFFF
_READ_SIZE = 256 * 1024
# The broker's conditions for an attach it refuses (a missing queue or exchange, no permission).
_REFUSALS = ("amqp:not-found", "amqp:unauthorized-access")


def _refusal_names(address: str) -> tuple[str, ...]:
    """How RabbitMQ's refusals name what a v2 address goes to: its kind and name, and for a queue the
    default exchange it goes through (``/queues/q`` -> ``queue 'q'``, ``exchange 'amq.default'``;
    ``/exchanges/x/key`` -> ``exchange 'x'``). The kind too: a queue named as a missing exchange
    is not the one refused."""
    parts = address.split("/")
    if len(parts) > 2 and parts[1] == "queues":
        return (f"queue '{unquote(parts[2])}'", "exchange 'amq.default'")
    if len(parts) > 2 and parts[1] == "exchanges":
        return (f"exchange '{unquote(parts[2])}'",)
    return (f"'{address}'",)


class Delivery:
    """One message on its way: queued on its link, then unsettled until its disposition is read."""

    __slots__ = (
        "address",
        "batch",
        "delivery_id",
        "future",
        "index",
        "message",
        "payload",
        "seq",
        "settled",
        "written",
    )

    def __init__(self, seq: int, payload: bytes, message: Any, future: Any, batch: Any, index: int, settled: bool):
        self.seq = seq
        self.payload = payload
        self.message = message
        self.future = future
        self.batch = batch
        self.index = index
        self.settled = settled  # pre-settled (confirms off): no outcome will come
        self.delivery_id = -1
        self.written = False
        self.address = ""


class SenderLink:
    """A sender link to one address: its credit and the deliveries waiting for it."""

    __slots__ = ("address", "attached", "credit", "delivery_count", "error", "handle", "waiting")

    def __init__(self, handle: int, address: str) -> None:
        self.handle = handle
        self.address = address
        self.attached = False
        self.credit = 0
        self.delivery_count = 0
        self.waiting: collections.deque[Delivery] = collections.deque()
        self.error: tuple[str, str] | None = None


OutcomeHandler = Callable[[Delivery, Any], None]
LossHandler = Callable[[Delivery, str], None]
LinkErrorHandler = Callable[[Delivery, str, str], None]


class Session:
    """The connection's one session: sender links by address, deliveries by id, the socket's writes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frames: FrameReader) -> None:
        self.reader = reader
        self.writer = self.stream_writer = writer
        self.transport = writer.transport
        self.loop = asyncio.get_running_loop()
        self._frames = frames
        self.remote_max_frame = 512
        self.links: dict[str, SenderLink] = {}
        self._by_handle: dict[int, SenderLink] = {}
        self.unsettled: dict[int, Delivery] = {}
        self.next_outgoing_id = 0  # our transfer-id counter
        self.remote_incoming_window = 0
        self.next_delivery_id = 0
        self.closed = False
        self.closing: asyncio.Future[str] = self.loop.create_future()
        self._outbox: list[bytes] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._reader_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._close_ok = self.loop.create_future()
        self._closing_by_us = False
        self.next_incoming_id = 0
        self._handles = 0
        self._free_handles: list[int] = []
        #: Loop time of the last bytes read from the broker (liveness).
        self.last_received = self.loop.time()
        #: Set by the reader when bytes arrive, while a liveness check waits on it (else None).
        self.heard: asyncio.Event | None = None
        self._receivers: dict[int, Callable[[bytes], None]] = {}
        self._pair_receiver = -1
        self._receiver_count = 0
        self._incoming = bytearray()
        self.on_outcome: OutcomeHandler = lambda delivery, state: None
        self.on_lost: LossHandler = lambda delivery, text: None
        self.on_link_error: LinkErrorHandler = lambda delivery, condition, text: None
        #: Called when a pre-settled delivery (confirms off) is handed to the socket.
        self.on_written: Callable[[Delivery], None] = lambda delivery: None

    # -- writing -----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if not self._outbox:
            self.loop.call_soon(self.flush)
        self._outbox.append(data)

    def flush(self) -> None:
        """Hand what this turn queued to the socket in one write."""
        if not self._outbox:
            return
        data = b"".join(self._outbox)
        self._outbox.clear()
        if not self.closed and not self.transport.is_closing():
            self.transport.write(data)

    def send(self, delivery: Delivery, address: str) -> None:
        """Queue `delivery` on the link to `address` (attaching it first if needed) and write what may go."""
        link = self.links.get(address)
        if link is None:
            link = self._attach(address)
        delivery.address = address
        link.waiting.append(delivery)
        if link.attached:
            self._pump(link)

    def withdraw(self, batch: object) -> list[Delivery]:
        """Take `batch`'s deliveries still waiting for credit off their links: they will never be written."""
        taken: list[Delivery] = []
        for link in self.links.values():
            if any(delivery.batch is batch for delivery in link.waiting):
                kept: collections.deque[Delivery] = collections.deque()
                for delivery in link.waiting:
                    (taken if delivery.batch is batch else kept).append(delivery)
                link.waiting = kept
        return taken

    def _new_handle(self) -> int:
        # A detached link's handle is reused: refused attaches (a missing queue, retried) must not
        # run the handles up to the broker's handle-max.
        if self._free_handles:
            return self._free_handles.pop()
        handle = self._handles
        self._handles += 1
        return handle

    def _attach(self, address: str) -> SenderLink:
        handle = self._new_handle()
        link = SenderLink(handle, address)
        self.links[address] = link
        self._by_handle[handle] = link
        name = f"aiopublish-{handle}-{uuid.uuid4().hex[:8]}"
        self._write(frame(0, p.attach(name, handle, address)))
        return link

    def _pump(self, link: SenderLink) -> None:
        """Write the link's waiting deliveries while it has credit and the session window has room."""
        waiting = link.waiting
        while waiting and link.credit > 0 and not self.closed:
            delivery = waiting[0]
            if delivery.future is not None and delivery.future.done():
                waiting.popleft()  # forgotten (cancelled or timed out) before it was written
                continue
            delivery_id = self.next_delivery_id
            frames = self._transfer_frames(link.handle, delivery, delivery_id)
            if len(frames) > self.remote_incoming_window:
                return  # the session's flow control: the broker's next flow makes room
            waiting.popleft()
            self.next_delivery_id = (delivery_id + 1) & 0xFFFFFFFF
            delivery.delivery_id = delivery_id
            for item in frames:
                self._write(item)
            self.remote_incoming_window -= len(frames)
            self.next_outgoing_id = (self.next_outgoing_id + len(frames)) & 0xFFFFFFFF
            link.credit -= 1
            link.delivery_count = (link.delivery_count + 1) & 0xFFFFFFFF
            delivery.written = True
            delivery.payload = b""
            if not delivery.settled:
                self.unsettled[delivery.delivery_id] = delivery
                self._idle.clear()
            elif delivery.seq:
                self.on_written(delivery)

    def _transfer_frames(self, handle: int, delivery: Delivery, delivery_id: int) -> list[bytes]:
        """The frames of one delivery, split to the broker's max-frame-size."""
        payload = delivery.payload
        first = p.first_transfer(handle, delivery_id, delivery.settled, False)
        room = self.remote_max_frame - 8 - len(first)
        if len(payload) <= room:
            return [frame(0, first + payload)]
        frames = [frame(0, p.first_transfer(handle, delivery_id, delivery.settled, True) + payload[:room])]
        rest = memoryview(payload)[room:]
        continuation = p.transfer(handle, None, None, False, True)
        last = p.transfer(handle, None, None, False, False)
        room = self.remote_max_frame - 8 - len(continuation)
        while len(rest) > room:
            frames.append(frame(0, continuation + bytes(rest[:room])))
            rest = rest[room:]
        frames.append(frame(0, last + bytes(rest)))
        return frames

    def ask_for_flow(self) -> None:
        """Send a session flow with echo set: the broker must answer with its own (a round trip)."""
        body = encode_described(
            p.FLOW,
            encode_fields(
                [
                    encode_uint(self.next_incoming_id),
                    encode_uint(_INCOMING_WINDOW),
                    encode_uint(self.next_outgoing_id),
                    encode_uint(_OUTGOING_WINDOW),
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    encode_bool(True),  # echo
                ]
            ),
        )
        self._write(frame(0, body))

    async def wait_idle(self) -> None:
        await self._idle.wait()

    # -- reading -----------------------------------------------------------------------------

    def start(self, idle_timeout: float | None) -> None:
        self._reader_task = self.loop.create_task(self._read_loop())
        if idle_timeout:
            self._heartbeat_task = self.loop.create_task(self._heartbeats(idle_timeout / 2))

    async def _heartbeats(self, interval: float) -> None:
        # The broker drops a connection silent for its idle-time-out: an empty frame keeps it alive.
        while not self.closed:
            await asyncio.sleep(interval)
            self._write(frame(0, b""))

    async def _read_loop(self) -> None:
        reason = "the broker closed the connection"
        try:
            while True:
                data = await self.reader.read(_READ_SIZE)
                if not data:
                    reason = "the connection was closed by the broker or the network (EOF)"
                    break
                self.last_received = self.loop.time()
                if self.heard is not None:
                    self.heard.set()
                for item in self._frames.feed(data):
                    if self._handle(item):
                        return
        except DecodeError as exc:
            reason = f"the broker sent a frame that cannot be decoded ({exc})"
        except (OSError, ConnectionError) as exc:
            reason = f"the connection was lost ({describe(exc)})"
        except asyncio.CancelledError:
            reason = "the connection was closed"
            raise
        finally:
            self._lost(reason)

    def _handle(self, item: InFrame) -> bool:
        """Act on one frame; True when it ends the connection."""
        performative = item.performative
        if performative is None:
            return False  # an empty frame: the broker's heartbeat
        code = p.descriptor_code(performative)
        if code == p.DISPOSITION:
            self._on_disposition(performative)
        elif code == p.TRANSFER:
            self._on_transfer(performative, item.payload)
        elif code == p.FLOW:
            self._on_flow(performative)
        elif code == p.ATTACH:
            self._on_attach(performative)
        elif code == p.DETACH:
            self._on_detach(performative)
        elif code == p.END and self._closing_by_us:
            return False  # the broker's answer to our end: its close follows
        elif code in (p.END, p.CLOSE):
            condition, description = p.error_text(p.field(performative, 0))
            if code == p.CLOSE and not self._close_ok.done():
                self._close_ok.set_result(None)
            text = f"{condition}: {description}" if condition else "the broker ended the session"
            if code == p.CLOSE and not condition:
                text = "the broker closed the connection"
            if condition in _REFUSALS:
                self._refuse_pending(condition, description)
            self._lost(text)
            return True
        return False

    def _refuse_pending(self, condition: str, description: str) -> None:
        """The broker ended the session for an attach it refused: that link's deliveries get the error.

        RabbitMQ 4.0 refuses an attach to a missing queue or exchange by ending the whole session
        (``amqp:not-found: no queue 'q' in vhost '/'``) where 4.1+ detaches the link alone; 4.0
        and 4.3 alike end it for an attach to a /queues/ address the user may not write
        (``amqp:unauthorized-access: write access to exchange 'amq.default' ...``). The refusal
        belongs to a link still waiting for its attach whose queue or exchange the description
        names (its kind and name); every other delivery is lost with the session, as on any loss.
        """
        for address, link in list(self.links.items()):
            # A /queues/ address is also refused by name of the default exchange, which a write
            # refusal names (4.0 and 4.3 end the session for it: "write access to exchange 'amq.default'").
            if link.attached or not any(name in description for name in _refusal_names(address)):
                continue
            del self.links[address]
            for delivery in link.waiting:
                self.on_link_error(delivery, condition, description)
            link.waiting.clear()

    def _on_flow(self, performative: Described) -> None:
        next_incoming = p.field(performative, 0)
        incoming_window = p.field(performative, 1, 0)
        if next_incoming is not None:
            self.remote_incoming_window = (next_incoming + incoming_window - self.next_outgoing_id) & 0xFFFFFFFF
        else:
            self.remote_incoming_window = incoming_window
        handle = p.field(performative, 4)
        if handle is None:
            for each in self.links.values():
                if each.waiting and each.attached:
                    self._pump(each)
            return
        link = self._by_handle.get(handle)
        if link is None:
            return
        receiver_count = p.field(performative, 5, 0)
        link_credit = p.field(performative, 6, 0)
        link.credit = (receiver_count + link_credit - link.delivery_count) & 0xFFFFFFFF
        if link.credit > 0x7FFFFFFF:  # the broker counted fewer deliveries than we sent: no credit
            link.credit = 0
        self._pump(link)
        if p.field(performative, 8, False) and link.credit > 0 and not link.waiting:
            # drain: nothing to send, so use up the credit and say so
            link.delivery_count = (link.delivery_count + link.credit) & 0xFFFFFFFF
            link.credit = 0
            self._write(frame(0, self._link_flow(link, drain=True)))
        elif p.field(performative, 9, False):  # echo
            self._write(frame(0, self._link_flow(link, drain=False)))
        for other in self.links.values():  # a session window that grew may let other links go on
            if other is not link and other.waiting and other.attached:
                self._pump(other)

    def _link_flow(self, link: SenderLink, *, drain: bool) -> bytes:
        return p.link_flow(
            self.next_incoming_id,
            _INCOMING_WINDOW,
            self.next_outgoing_id,
            _OUTGOING_WINDOW,
            link.handle,
            link.delivery_count,
            link.credit,
            drain=drain,
        )

    # -- the management link pair's receiving half ----------------------------------------------

    def attach_pair(self, address: str, on_message: Callable[[bytes], None]) -> SenderLink:
        """Attach RabbitMQ's management link pair; `on_message` gets each response's payload."""
        name = f"aiopublish-management-{uuid.uuid4().hex[:8]}"
        sender = SenderLink(self._new_handle(), address)
        self.links[address] = sender
        self._by_handle[sender.handle] = sender
        receiver = self._new_handle()
        self._receivers[receiver] = on_message
        self._write(frame(0, p.management_attach(name, sender.handle, receiver=False)))
        self._write(frame(0, p.management_attach(name, receiver, receiver=True)))
        self._pair_receiver = receiver
        return sender

    def grant_receiver(self, credit: int) -> None:
        """Let the broker send `credit` more responses on the management pair's receiving link."""
        body = p.link_flow(
            self.next_incoming_id,
            _INCOMING_WINDOW,
            self.next_outgoing_id,
            _OUTGOING_WINDOW,
            self._pair_receiver,
            self._receiver_count,
            credit,
        )
        self._write(frame(0, body))

    def _on_transfer(self, performative: Described, payload: bytes) -> None:
        self.next_incoming_id = (self.next_incoming_id + 1) & 0xFFFFFFFF
        handle = p.field(performative, 0, -1)
        on_message = self._receivers.get(handle)
        if on_message is None:
            return
        self._incoming += payload
        if p.field(performative, 5, False):
            return  # more frames of this message follow
        if p.field(performative, 1) is not None:
            self._receiver_count = (self._receiver_count + 1) & 0xFFFFFFFF
        message, self._incoming = bytes(self._incoming), bytearray()
        on_message(message)

    def _on_attach(self, performative: Described) -> None:
        handle = p.field(performative, 1, -1)
        if handle in self._receivers:
            self._receiver_count = p.field(performative, 9, 0)
            return
        link = self._by_handle.get(handle)
        if link is None:
            return
        target = p.field(performative, 6)
        if target is None:
            return  # refused: the detach that follows says why
        link.attached = True
        self._pump(link)

    def _on_detach(self, performative: Described) -> None:
        handle = p.field(performative, 0, -1)
        link = self._by_handle.get(handle)
        if link is None:
            return
        condition, description = p.error_text(p.field(performative, 2))
        link.attached = False
        if self.links.get(link.address) is link:
            del self.links[link.address]  # the next message to this address attaches again
        del self._by_handle[handle]
        self._write(frame(0, p.detach(handle, True)))  # our answer: the handle is free again after it
        self._free_handles.append(handle)
        # Its waiting deliveries never left; its unsettled ones may or may not have been stored.
        for delivery in link.waiting:
            self.on_link_error(delivery, condition or "amqp:link:detach-forced", description)
        link.waiting.clear()
        for delivery_id, delivery in list(self.unsettled.items()):
            if delivery.address == link.address:
                del self.unsettled[delivery_id]
                self.on_lost(delivery, f"the broker detached the link to {link.address} ({condition}: {description})")
        if not self.unsettled:
            self._idle.set()

    def _on_disposition(self, performative: Described) -> None:
        if not p.field(performative, 0, False):
            return  # from a sender: not about our deliveries
        first = p.field(performative, 1, 0)
        last = p.field(performative, 2, first)
        state = p.field(performative, 4)
        settled = p.field(performative, 3, False)
        unsettled = self.unsettled
        span = (last - first) & 0xFFFFFFFF
        for offset in range(span + 1):
            delivery = unsettled.pop((first + offset) & 0xFFFFFFFF, None)
            if delivery is not None:
                self.on_outcome(delivery, state)
        if not settled and state is not None:
            # The broker waits for us to settle too (rcv-settle-mode second): do so.
            body = encode_described(
                p.DISPOSITION,
                encode_fields([encode_bool(False), encode_uint(first), encode_uint(last), encode_bool(True)]),
            )
            self._write(frame(0, body))
        if not unsettled:
            self._idle.set()

    def _lost(self, text: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._outbox.clear()
        if not self.closing.done():
            self.closing.set_result(text)
        if not self._close_ok.done():
            self._close_ok.set_result(None)
        with contextlib.suppress(Exception):
            self.transport.abort()
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        if self.heard is not None:
            self.heard.set()
        deliveries = list(self.unsettled.values())
        self.unsettled.clear()
        for link in list(self.links.values()):
            deliveries.extend(link.waiting)
            link.waiting.clear()
        self.links.clear()
        for delivery in deliveries:
            self.on_lost(delivery, text)
        self._idle.set()

    # -- closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Close cleanly (end, close, the broker's close), then the socket; abort on any failure."""
        if self.closed:
            return
        self._closing_by_us = True
        try:
            self._write(frame(0, p.end()))
            self._write(frame(0, p.close()))
            self.flush()
            async with asyncio.timeout(5):
                await asyncio.shield(self._close_ok)
        except (TimeoutError, Exception):
            pass
        finally:
            self._lost("the connection was closed by the publisher")
            if self._reader_task is not None:
                self._reader_task.cancel()
                with contextlib.suppress(BaseException):
                    await self._reader_task

    def abort(self) -> None:
        self._lost("the connection was closed by the publisher")
        if self._reader_task is not None:
            self._reader_task.cancel()
