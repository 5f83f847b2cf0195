"""The AMQP 1.0 link and channel a Publisher uses for amqp1:// URLs (`LinkLike` and `PublishChannel`).

The engine drives them exactly as it drives the 0-9-1 ones: `send` is synchronous and
returns the future of the message's outcome, the engine's retry loop reconnects
through `channel()`. What differs is what settles a publish (see `outcome_error`):

- accepted: confirmed;
- released (RabbitMQ: no queue took it): `UndeliverableMessage("returned")` when the
  publish is `mandatory`; otherwise confirmed, as an unroutable 0-9-1 publish without
  `mandatory` is acked and dropped (RabbitMQ documents the same for AMQP 1.0);
- rejected: `UndeliverableMessage("rejected")` with the broker's condition and
  description (a full queue with ``x-overflow: reject-publish``...);
- modified: `UndeliverableMessage("modified")`;
- a link the broker refuses or detaches (a missing queue or exchange): the broker's
  error as a ChannelError (`NotFound` for ``amqp:not-found``), never retried;
- the connection lost: `ChannelInterrupted`, which the engine retries.

AMQP 1.0 has no connection.blocked: the broker stops granting link credit instead,
and a publish without credit waits (within its timeout) on its link.

Declarations (`declare=`, per-call `declare`) go through RabbitMQ's management node
(see _management), in the same order as over 0-9-1, and again after every reconnect.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import ssl as ssl_module
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote

from yarl import URL

from .._blame import ChannelInterrupted, describe
from .._channel import WRITE_BUFFER_HIGH, Batch
from .._connection import DEFAULT_CONNECT_TIMEOUT, ConnectionParams, mask_url
from .._declarations import Entity, Exchange, Queue, expand
from .._exceptions import (
    AccessRefused,
    AuthenticationError,
    ChannelError,
    ConnectionFailed,
    NotFound,
    PublisherClosed,
    TLSError,
    UndeliverableMessage,
    VhostNotFound,
)
from .._link import LIVENESS_PROBE_TIMEOUT
from .._metrics import Metrics
from .._options import Prepared
from ..retry import RetryPolicy
from . import _performatives as p
from ._connection import Delivery, Session
from ._handshake import OpenRefused, Sasl, open_session
from ._management import Management
from ._message import encode_message
from ._refusal import refusal_over_091

__all__ = ["Amqp1Channel", "Amqp1Link", "address_of", "amqp1_link"]

log = logging.getLogger("aiopublish")

_DEFAULT_PORTS = {"amqp1": 5672, "amqp1s": 5671}


@functools.lru_cache(maxsize=4096)
def address_of(exchange: str, routing_key: str) -> str:
    """RabbitMQ 4.x's v2 address for a publish: the queue itself for the default exchange."""
    if not exchange:
        return "/queues/" + quote(routing_key, safe="")
    if not routing_key:
        return "/exchanges/" + quote(exchange, safe="")
    return f"/exchanges/{quote(exchange, safe='')}/{quote(routing_key, safe='')}"


def _where(message: Prepared) -> dict[str, Any]:
    return {"exchange": message.exchange, "routing_key": message.routing_key, "message_id": message.message_id}


def outcome_error(state: Any, message: Prepared) -> BaseException | None:
    """The error a disposition's `state` means for `message`, None when it is confirmed."""
    code = p.descriptor_code(state)
    if code == p.ACCEPTED:
        return None
    if code == p.RELEASED:
        if not message.mandatory:
            return None  # as an unroutable 0-9-1 publish without mandatory: acked, dropped
        return UndeliverableMessage(
            "returned",
            reply_code=312,
            reply_text="NO_ROUTE (released: the broker routed it to no queue)",
            **_where(message),
        )
    if code == p.REJECTED:
        condition, description = p.error_text(p.field(state, 0))
        return UndeliverableMessage(
            "rejected", reply_text=f"{condition or 'rejected'}: {description}".rstrip(": "), **_where(message)
        )
    if code == p.MODIFIED:
        failed = bool(p.field(state, 0, False))
        here = bool(p.field(state, 1, False))
        return UndeliverableMessage(
            "modified",
            reply_text=f"modified (delivery-failed={failed}, undeliverable-here={here})",
            **_where(message),
        )
    return UndeliverableMessage(
        "modified", reply_text=f"settled without an outcome the publisher knows ({state!r})", **_where(message)
    )


def _link_error(condition: str, description: str) -> ChannelError:
    text = f"{condition}: {description}" if description else condition
    if condition == "amqp:not-found":
        return NotFound(404, text)
    if condition == "amqp:unauthorized-access":
        return AccessRefused(403, text)
    return ChannelError(None, text)


def _resolve(delivery: Delivery, error: BaseException | None) -> None:
    batch: Batch | None = delivery.batch
    if batch is not None:
        batch.settle(delivery.index, error)
        return
    future = delivery.future
    if future is None or future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class Amqp1Channel:
    """A `PublishChannel` over one AMQP 1.0 session: one sender link per address."""

    number = 0
    #: For OpenTelemetry's network.protocol.version (0-9-1 channels have none: their spans are unchanged).
    protocol_version = "1.0"

    def __init__(self, session: Session) -> None:
        self.session = session
        self.loop = session.loop
        self._seq = itertools.count(1)
        self._last = 0
        self._tracked: dict[int, Delivery] = {}
        # Confirms off: sends not yet handed to the socket (waiting for link credit), by sequence number.
        self._untracked_waiting: dict[int, Delivery] = {}
        self._untracked_written = asyncio.Event()
        self._untracked_written.set()
        session.on_outcome = self._on_outcome
        session.on_lost = self._on_lost
        session.on_link_error = self._on_link_error
        session.on_written = self._on_written

    @property
    def is_closed(self) -> bool:
        return self.session.closed

    @property
    def connection(self) -> Session:
        """The session (it has a `stream_writer`, as an aiormq connection: tracing reads the peer from it)."""
        return self.session

    @property
    def in_flight(self) -> int:
        return len(self._tracked)

    def send(
        self, message: Prepared, *, track: bool, batch: Batch | None = None, index: int = 0
    ) -> asyncio.Future[None] | None:
        """Queue one message on its address's link; the future of its outcome when `track`.

        Raises ValueError (an option AMQP 1.0 cannot carry) or ChannelInterrupted (the
        connection is gone) before anything is queued.
        """
        payload = encode_message(message)
        if self.session.closed:
            raise ChannelInterrupted("the connection is closed; nothing was sent")
        seq = next(self._seq)
        self._last = seq
        future: asyncio.Future[None] | None = None
        if track and batch is None:
            future = self.loop.create_future()
        elif batch is not None and track:
            batch.remaining += 1
        # An untracked delivery keeps its batch too (never settled through it): withdraw() finds it by it.
        delivery = Delivery(seq, payload, message, future, batch, index, not track)
        if track:
            self._tracked[seq] = delivery
        else:
            self._untracked_waiting[seq] = delivery
            self._untracked_written.clear()
        self.session.send(delivery, address_of(message.exchange, message.routing_key))
        if not track and batch is None and not delivery.written:
            # Confirms off, but the link has no credit (or is still attaching): "sent" means written,
            # not queued here, so the caller waits for the write; a time-out or cancel takes it back.
            future = delivery.future = self.loop.create_future()
            self._tracked[seq] = delivery
        return future

    @property
    def backed_up(self) -> bool:
        """The socket's buffer is over its high-water mark, or sends without confirms wait for link credit."""
        return bool(self._untracked_waiting) or self.session.transport.get_write_buffer_size() > WRITE_BUFFER_HIGH

    async def wait_writable(self) -> None:
        """Wait until the socket's buffer is below its high-water mark and every send without confirms
        is written (link credit is to a sender what socket buffer space is); ChannelInterrupted when lost."""
        if self.session.transport.get_write_buffer_size() > WRITE_BUFFER_HIGH:
            try:
                await self.session.writer.drain()
            except Exception as exc:
                raise ChannelInterrupted(
                    f"the connection was lost while writing ({describe(exc)}); "
                    "messages not yet settled may or may not have been stored"
                ) from None
        while self._untracked_waiting and not self.session.closed:
            await self._untracked_written.wait()
        if self._untracked_waiting:
            raise ChannelInterrupted(
                f"the connection closed before the messages were sent ({self.session.closing.result()})"
            )

    @property
    def last_delivery_tag(self) -> int:
        return self._last

    def withdraw(self, batch: Batch) -> None:
        """The attempt carrying `batch` ended (its time-out, a cancel, a failure): its messages still
        waiting for link credit are never written; each fails as not sent (and frees its in-flight slot).

        Without this they would go out when credit came back, after publish_many had reported them
        failed: a message reported PublishTimeout must not reach the queue later.
        """
        waiting = self._untracked_waiting
        unwritten: set[int] = set()
        error = ChannelInterrupted("publish_many stopped before the message was sent (it waited for link credit)")
        for delivery in self.session.withdraw(batch):
            if delivery.settled:
                # Confirms off: not "sent" (flush() no longer counts it as waiting, so take its tag out).
                waiting.pop(delivery.seq, None)
                unwritten.add(delivery.seq)
                batch.errors[delivery.index] = error
            elif self._tracked.pop(delivery.seq, None) is not None:
                batch.settle(delivery.index, error)
        if unwritten:
            batch.untracked = [(index, tag) for index, tag in batch.untracked if tag not in unwritten]
        if not waiting:
            self._untracked_written.set()

    def forget(self, future: asyncio.Future[None], tag: int = 0) -> None:
        """Drop the record of a publish whose caller stopped waiting; one not yet written never will be."""
        delivery = self._tracked.get(tag)
        if delivery is None or delivery.future is not future:
            for seq, other in self._tracked.items():
                if other.future is future:
                    tag, delivery = seq, other
                    break
            else:
                return
        del self._tracked[tag]
        if self._untracked_waiting.pop(tag, None) is not None and not self._untracked_waiting:
            self._untracked_written.set()
        if not future.done():
            future.cancel()  # a delivery still waiting for credit is skipped, never written

    def flush(self) -> int:
        """Write what this turn queued; the highest sequence number below which every untracked send was written."""
        self.session.flush()
        waiting = self._untracked_waiting
        if waiting:
            return min(waiting) - 1
        return self._last

    async def wait_idle(self) -> None:
        while self._tracked and not self.session.closed:
            await self.session.wait_idle()
            if self._tracked and not self.session.closed:
                await asyncio.sleep(0.05)  # deliveries still waiting for credit: poll gently

    # -- outcomes ----------------------------------------------------------------------------

    def _on_outcome(self, delivery: Delivery, state: Any) -> None:
        if self._tracked.pop(delivery.seq, None) is None:
            return
        _resolve(delivery, outcome_error(state, delivery.message))

    def _on_written(self, delivery: Delivery) -> None:
        waiting = self._untracked_waiting
        waiting.pop(delivery.seq, None)
        if not waiting:
            self._untracked_written.set()
        if delivery.future is not None and self._tracked.pop(delivery.seq, None) is not None:
            _resolve(delivery, None)  # a publish without confirms that waited for credit: now sent

    def _on_lost(self, delivery: Delivery, text: str) -> None:
        self._untracked_written.set()  # waiters look again: the session is closed
        if self._tracked.pop(delivery.seq, None) is None:
            return
        if delivery.written:
            error = ChannelInterrupted(
                f"the connection closed before the broker settled the message ({text}); "
                "it may or may not have been stored"
            )
        else:
            error = ChannelInterrupted(f"the connection closed before the message was sent ({text})")
        _resolve(delivery, error)

    def _on_link_error(self, delivery: Delivery, condition: str, description: str) -> None:
        if self._untracked_waiting.pop(delivery.seq, None) is not None and not self._untracked_waiting:
            self._untracked_written.set()
        if self._tracked.pop(delivery.seq, None) is None:
            return
        _resolve(delivery, _link_error(condition, description))


class Amqp1Link:
    """A `LinkLike` over AMQP 1.0: one connection and session, reopened on demand after a loss."""

    def __init__(
        self,
        params: ConnectionParams,
        declare: Iterable[Exchange | Queue],
        reconnect_policy: RetryPolicy,
        metrics: Metrics,
    ) -> None:
        self.params = params
        self.metrics = metrics
        self._steps: list[Entity] = expand(declare)
        self._declared: list[Entity] = []  # steps declared on the current connection
        self._management: Management | None = None
        self._declare_lock = asyncio.Lock()
        self._nodes = list(params.urls)
        self._next_node = 0
        self._channel: Amqp1Channel | None = None
        self._open_lock = asyncio.Lock()
        self.node: str | None = None
        self.closed = False
        self.connections_opened = 0
        self._liveness_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Amqp1Link {self.params.masked_url}>"

    @property
    def is_blocked(self) -> bool:
        return False  # AMQP 1.0 has no connection.blocked: the broker withholds credit instead

    @property
    def blocked_reason(self) -> str | None:
        return None

    @property
    def connection(self) -> Session | None:
        channel = self._channel
        return channel.session if channel is not None and not channel.is_closed else None

    def ready_channel(self) -> Amqp1Channel | None:
        channel = self._channel
        if channel is not None and not channel.is_closed:
            return channel
        return None

    async def channel(self) -> Amqp1Channel:
        channel = self.ready_channel()
        if channel is not None:
            return channel
        async with self._open_lock:
            channel = self.ready_channel()
            if channel is not None:
                return channel
            if self.closed:
                raise PublisherClosed("the publisher is closed")
            session = await self._connect_any_node()
            if self.closed:
                session.abort()
                raise PublisherClosed("the publisher is closed")
            self.connections_opened += 1
            if self.connections_opened > 1:
                self.metrics.reconnects += 1
            log.info(
                "%s to %s over AMQP 1.0",
                "reconnected" if self.connections_opened > 1 else "connected",
                mask_url(self.node or ""),
            )
            channel = Amqp1Channel(session)
            self._declared = []
            self._management = None
            try:
                for step in self._steps:  # again after every reconnect: a deleted queue comes back
                    await self._management_of(session).declare(step)
                    self._declared.append(step)
            except BaseException:
                session.abort()
                raise
            self._channel = channel
            return channel

    def _management_of(self, session: Session) -> Management:
        management = self._management
        if management is None or management.session is not session:
            timeout = dict(self.params.transport_options).get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
            management = self._management = Management(session, timeout)
        return management

    async def _connect_any_node(self) -> Session:
        errors: list[ConnectionFailed] = []
        count = len(self._nodes)
        for offset in range(count):
            index = (self._next_node + offset) % count
            node = self._nodes[index]
            try:
                session = await self._connect(node)
            except (AuthenticationError, VhostNotFound, TLSError):
                raise
            except ConnectionFailed as exc:
                errors.append(exc)
                continue
            self.node = node
            self._next_node = (index + 1) % count
            return session
        if len(errors) == 1:
            raise errors[0]
        raise ConnectionFailed(f"none of the {count} nodes answered: " + "; ".join(str(e) for e in errors))

    async def _connect(self, node: str) -> Session:
        url = URL(node)
        masked = mask_url(node)
        context = self._ssl_context(url)
        options = dict(self.params.ssl) if isinstance(self.params.ssl, tuple) else {}
        vhost = unquote(url.raw_path[1:]) if len(url.raw_path) > 1 else "/"
        transport = dict(self.params.transport_options)
        timeout = transport.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        sasl = Sasl(url.user, url.password, self.params.login_method)
        try:
            async with asyncio.timeout(timeout):
                return await open_session(
                    url.host or "localhost",
                    url.port or _DEFAULT_PORTS.get(url.scheme, 5672),
                    ssl=context,
                    server_hostname=options.get("server_hostname") or url.host,
                    sasl=sasl,
                    vhost=vhost,
                    container_id=str(transport.get("connection_name", "aiopublish")),
                )
        except TimeoutError:
            raise ConnectionFailed(f"timed out after {timeout} s connecting to {masked}") from None
        except ssl_module.SSLError as exc:
            raise TLSError(f"TLS failed connecting to {masked}: {self.params.mask(str(exc))}") from None
        except OpenRefused as exc:
            text = self.params.mask(str(exc))
            if exc.login:
                raise AuthenticationError(f"{text} (at {masked})") from None
            if exc.condition == "amqp:not-found":
                raise VhostNotFound(f"{text} (at {masked})", vhost=vhost) from None
            failed = f"cannot connect to {masked}: {text}"
            if exc.dropped:
                # No reason on the wire: 0-9-1 on the same listener gives one (see _refusal).
                refusal = await refusal_over_091(self.params, node, failed)
                if refusal is not None:
                    raise refusal from None
            raise ConnectionFailed(failed) from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise ConnectionFailed(f"cannot connect to {masked}: {self.params.mask(describe(exc))}") from None

    def _ssl_context(self, url: URL) -> ssl_module.SSLContext | None:
        ssl = self.params.ssl
        if url.scheme != "amqp1s" and not ssl:
            return None
        if isinstance(ssl, ssl_module.SSLContext):
            return ssl
        options = dict(ssl) if isinstance(ssl, tuple) else {}
        context = ssl_module.create_default_context(cafile=options.get("cafile"), capath=options.get("capath"))
        if options.get("certfile"):
            context.load_cert_chain(options["certfile"], options.get("keyfile"))
        if options.get("verify") is False:
            context.check_hostname = False
            context.verify_mode = ssl_module.CERT_NONE
        return context

    async def ensure_declared(self, channel: Any, entities: Iterable[Exchange | Queue]) -> None:
        """Declare what a publish names and this connection has not declared yet; remember it for reconnects."""
        steps = [step for step in expand(entities) if step not in self._declared]
        if not steps:
            return
        if not isinstance(channel, Amqp1Channel) or channel.is_closed:
            raise ChannelInterrupted("the connection is closed; nothing was declared")
        async with self._declare_lock:
            for step in steps:
                if step in self._declared:
                    continue
                await self._management_of(channel.session).declare(step)
                self._declared.append(step)
                if step not in self._steps:
                    self._steps.append(step)

    async def wait_unblocked(self) -> None:
        return None

    async def probe(self, message: Prepared) -> None:
        """Publish `message` again and wait for its outcome (AMQP 1.0 settles each message alone)."""
        channel = await self.channel()
        future = channel.send(message, track=True)
        if future is None:
            return
        try:
            await future
        except asyncio.CancelledError:
            channel.forget(future, channel.last_delivery_tag)
            raise

    def check_alive(self, since: float) -> None:
        """A publish begun at loop time `since` timed out: make sure the connection still answers.

        As for 0-9-1 (see aiopublish._link): nothing is done if the broker sent anything since;
        else a flow with echo set asks for an answer, and the connection is dropped (and so
        reconnected by the next publish) when nothing at all arrives within a few seconds.
        """
        channel = self._channel
        if channel is None or channel.is_closed or self.closed:
            return
        if self._liveness_task is not None and not self._liveness_task.done():
            return
        if channel.session.last_received > since:
            return
        self._liveness_task = asyncio.get_running_loop().create_task(self._check_liveness(channel.session))

    async def _check_liveness(self, session: Session) -> None:
        heard = session.heard = asyncio.Event()
        session.ask_for_flow()
        try:
            async with asyncio.timeout(LIVENESS_PROBE_TIMEOUT):
                await heard.wait()
            return  # an answer, or anything else: alive (or closed meanwhile: its loss is handled)
        except TimeoutError:
            pass
        finally:
            session.heard = None
        if not session.closed and not self.closed:
            log.warning(
                "%s did not answer for %.0f s: dropping the connection as dead",
                mask_url(self.node or ""),
                LIVENESS_PROBE_TIMEOUT,
            )
            session.abort()

    def _stop_liveness(self) -> None:
        task, self._liveness_task = self._liveness_task, None
        if task is not None and not task.done():
            task.cancel()

    async def close(self, drain_timeout: float | None) -> None:
        self.closed = True
        self._stop_liveness()
        channel, self._channel = self._channel, None
        if channel is None:
            return
        try:
            if drain_timeout != 0 and channel.in_flight:
                try:
                    async with asyncio.timeout(drain_timeout):
                        await channel.wait_idle()
                except TimeoutError:
                    log.warning("closing with %d publishes still unsettled", channel.in_flight)
            await channel.session.close()
        except BaseException:
            channel.session.abort()
            raise

    def abandon(self) -> None:
        self.closed = True
        self._stop_liveness()
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.session.abort()


def amqp1_link(
    params: ConnectionParams, declare: Iterable[Exchange | Queue], policy: RetryPolicy, metrics: Metrics
) -> Amqp1Link:
    """The link a Publisher uses for amqp1:// and amqp1s:// URLs."""
    return Amqp1Link(params, declare, policy, metrics)
