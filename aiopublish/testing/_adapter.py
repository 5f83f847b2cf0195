"""The link and channel a Publisher uses on an in-memory broker (`LinkLike` and `PublishChannel`).

The channel decodes nothing itself: it hands the encoded properties and body to the
broker, so what is recorded is exactly what would be on the wire, and settles each
publish at once (an ack, a return, a nack or a channel error, as RabbitMQ would
settle it). Publishers do not await anything in here, so the result of a publish
never depends on timing.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from urllib.parse import unquote

from yarl import URL

from .._amqp1 import _performatives as p
from .._amqp1._codec import Described, Symbol
from .._amqp1._link import outcome_error
from .._amqp1._message import encode_message
from .._blame import Bystander, ChannelInterrupted, facts_of
from .._channel import Batch, PublishChannel
from .._connection import ConnectionParams
from .._declarations import Entity, Exchange, Queue, expand
from .._exceptions import ChannelError, NotFound, PublisherClosed, UndeliverableMessage, UnsupportedByBroker
from .._metrics import Metrics
from .._options import Prepared
from ._broker import InMemoryBroker
from ._records import RecordedMessage
from ._registry import broker_key, get_broker
from ._vhost import DEFAULT_LOGIN

__all__ = ["MemoryChannel", "MemoryLink", "memory_link"]


class MemoryChannel:
    """A `PublishChannel` that hands each publish to an InMemoryBroker and settles it at once.

    With `amqp1`, publishes are settled as RabbitMQ 4.x settles them over AMQP 1.0 (see
    aiopublish._amqp1): an address with no queue or exchange is refused with NotFound
    (the channel stays open), a full reject-publish queue rejects, an unroutable mandatory
    publish is released; options AMQP 1.0 cannot carry are refused before anything is sent.
    """

    def __init__(self, broker: InMemoryBroker, number: int, login: str, *, amqp1: bool = False) -> None:
        self.broker = broker
        self.number = number
        self.login = login
        self.amqp1 = amqp1
        #: The channel error the broker closed this channel with, if it did.
        self.closed_by: ChannelError | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MemoryChannel {self.number} on {self.broker.url} {state}>"

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        return 0  # every publish is settled before send() returns

    def close(self, error: ChannelError | None = None) -> None:
        self._closed = True
        if error is not None and self.closed_by is None:
            self.closed_by = error

    def send(
        self, message: Prepared, *, track: bool, batch: Batch | None = None, index: int = 0
    ) -> asyncio.Future[None] | None:
        """Publish now and settle the confirm at once: a done future when `track` (or entry `index` of `batch`).

        After the broker closed this channel for an error, later publishes on it (a
        publish_many streaming on) are dropped unseen, as frames already on the wire when
        the close arrives: each fails with the channel's error if it would cause it too
        (see aiopublish._blame), else with a retriable Bystander.
        """
        if message.broker_limit and len(message.body) > self.broker.rabbitmq.max_message_size:
            raise self.broker.rabbitmq.body_too_large(len(message.body))  # as the real channel, before sending
        return _settle(self._deliver(message), track, batch, index)

    def _deliver(self, message: Prepared) -> BaseException | None:
        """Hand one publish to the broker; the error its confirm fails with, or None for an ack."""
        if self.closed_by is not None:
            return _blame(self.closed_by, message)
        if self._closed:
            raise ChannelInterrupted("the channel is closed; nothing was sent")
        if self.amqp1:
            encode_message(message)  # what AMQP 1.0 cannot carry is refused here, as on the wire
            missing = _missing_address(self.broker, message)
            if missing is not None:
                return missing
        recorded = self.broker.receive(
            exchange=message.exchange,
            routing_key=message.routing_key,
            mandatory=message.mandatory,
            properties=message.properties,
            body=message.body,
            login=self.login,
        )
        if recorded.error is not None:
            # RabbitMQ closes the channel; the publisher opens (and declares on) a new one.
            self.close(recorded.error)
            return _copy(recorded.error)
        if self.amqp1 and recorded.outcome in ("returned", "nacked"):
            return outcome_error(_AMQP1_STATES[recorded.outcome], message)
        if recorded.outcome in ("returned", "nacked"):
            return _undeliverable(recorded, message.message_id)
        return None

    @property
    def backed_up(self) -> bool:
        return False  # nothing is buffered: send() delivers at once

    async def wait_writable(self) -> None:
        return None

    @property
    def last_delivery_tag(self) -> int:
        return 0  # every publish is settled before send() returns: nothing to forget

    def forget(self, future: asyncio.Future[None], tag: int = 0) -> None:
        return None

    def withdraw(self, batch: Batch) -> None:
        return None  # nothing waits: send() delivers at once

    def flush(self) -> int:
        return sys.maxsize  # every publish reached the broker within send()


# What RabbitMQ 4.x settles these publishes with over AMQP 1.0.
_AMQP1_STATES = {
    "returned": Described(p.RELEASED, []),
    "nacked": Described(
        p.REJECTED,
        [
            Described(
                0x1D,
                [Symbol("amqp:resource-limit-exceeded"), "a queue it was routed to exceeded its maximum length"],
            )
        ],
    ),
}


def _missing_address(broker: InMemoryBroker, message: Prepared) -> NotFound | None:
    """NotFound for a v2 address with no queue or exchange behind it, as RabbitMQ refuses its link."""
    vhost = unquote(URL(broker.url).raw_path[1:]) or "/"
    if not message.exchange:
        if message.routing_key not in broker.queues:
            return NotFound(404, f"amqp:not-found: no queue '{message.routing_key}' in vhost '{vhost}'")
    elif message.exchange not in broker.exchanges:
        return NotFound(404, f"amqp:not-found: no exchange '{message.exchange}' in vhost '{vhost}'")
    return None


def _settle(error: BaseException | None, track: bool, batch: Batch | None, index: int) -> asyncio.Future[None] | None:
    """The confirm of one publish, already settled: nothing untracked, a batch entry, or a done future."""
    if not track:
        return None
    if batch is not None:
        batch.remaining += 1
        batch.settle(index, error)
        return None
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
    return future


def _undeliverable(message: RecordedMessage, message_id: str) -> UndeliverableMessage:
    returned = message.outcome == "returned"
    return UndeliverableMessage(
        message.outcome,
        exchange=message.exchange,
        routing_key=message.routing_key,
        message_id=message_id,
        reply_code=312 if returned else None,
        reply_text="NO_ROUTE" if returned else None,
    )


def _copy(error: ChannelError) -> ChannelError:
    return type(error)(error.reply_code, error.reply_text)


def _blame(error: ChannelError, message: Prepared) -> BaseException:
    """The error of a publish sent on a channel the broker already closed: its own if it would cause it.

    The same judgement as the real channel's (aiopublish._blame), on what the error names.
    """
    facts = facts_of(error)
    if facts is None or facts.could_cause(message):
        return _copy(error)
    return Bystander(
        f"the broker closed the channel for another publish ({type(error).__name__}: {error}) "
        "before confirming this message; it may or may not have been stored"
    )


class MemoryLink:
    """A `LinkLike` on an in-memory broker: declares like the real link, never blocks or disconnects.

    The broker is looked up by URL whenever a channel is needed, so a publisher that
    outlives `reset()` (a module-level one) declares everything again on the new broker.
    """

    def __init__(
        self,
        params: ConnectionParams,
        declare: Iterable[Exchange | Queue],
        metrics: Metrics,
        *,
        broker_url: str | None = None,
    ) -> None:
        self.params = params
        self.metrics = metrics
        self.broker_url: str = broker_url or params.url
        broker_key(self.broker_url)  # a bad URL fails here, in the Publisher's constructor
        # What the broker takes as the login: the URL's user, "guest" when it names none (as aiormq).
        self.login: str = URL(params.url).user or DEFAULT_LOGIN
        #: ``memory://...?protocol=amqp1``: settle publishes as RabbitMQ 4.x does over AMQP 1.0.
        self.amqp1: bool = URL(params.url).query.get("protocol") == "amqp1"
        self._steps: list[Entity] = expand(declare)
        self._declared: list[Entity] = []
        self._channel: MemoryChannel | None = None
        self._channels_opened = 0
        #: Brokers connected to: one, and one more each time the broker at the URL was replaced (reset()).
        self.connections_opened: int = 0
        self.node: str | None = None
        self.closed: bool = False

    def __repr__(self) -> str:
        return f"<MemoryLink {self.broker_url}>"

    @property
    def broker(self) -> InMemoryBroker:
        return get_broker(self.broker_url)

    @property
    def is_blocked(self) -> bool:
        return False

    @property
    def blocked_reason(self) -> str | None:
        return None

    def ready_channel(self) -> MemoryChannel | None:
        channel = self._channel
        if channel is not None and not channel.is_closed and channel.broker is self.broker:
            return channel
        return None

    async def channel(self) -> MemoryChannel:
        channel = self.ready_channel()
        if channel is not None:
            return channel
        if self.closed:
            raise PublisherClosed("the publisher is closed")
        broker = self.broker
        frame_max = dict(self.params.transport_options).get("frame_max")
        if frame_max is not None:
            broker.rabbitmq.check_frame_max(frame_max)  # RabbitMQ 4.1+ refuses the connection
        if self._channel is None or self._channel.broker is not broker:
            self.connections_opened += 1
        self._channels_opened += 1
        channel = MemoryChannel(broker, self._channels_opened, self.login, amqp1=self.amqp1)
        self._declared = []
        for step in self._steps:
            broker.declare_step(step, owner=self)
            self._declared.append(step)
        self._channel = channel
        self.node = broker.url
        return channel

    async def ensure_declared(self, channel: PublishChannel, entities: Iterable[Exchange | Queue]) -> None:
        steps = [step for step in expand(entities) if step not in self._declared]
        if not steps:
            return
        if not isinstance(channel, MemoryChannel) or channel.is_closed:
            raise ChannelInterrupted("the channel is closed; nothing was declared")
        for step in steps:
            if step in self._declared:
                continue
            try:
                channel.broker.declare_step(step, owner=self)
            except ChannelError as exc:
                channel.close(exc)
                raise
            except UnsupportedByBroker:
                channel.close()  # RabbitMQ closes the whole connection: the next publish opens a new one
                raise
            self._declared.append(step)
            if step not in self._steps:
                self._steps.append(step)

    async def probe(self, message: Prepared) -> None:
        """Publish `message` again on a fresh channel (the in-memory broker blames exactly: rarely used)."""
        future = (await self.channel()).send(message, track=True)
        if future is not None:
            await future

    async def wait_unblocked(self) -> None:
        return None

    def check_alive(self, since: float) -> None:
        return None  # an in-memory link is always alive

    async def close(self, drain_timeout: float | None) -> None:
        self.abandon()

    def abandon(self) -> None:
        """Close at once (nothing is ever in flight): the broker drops this connection's exclusive queues."""
        self.closed = True
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()
            channel.broker.release(self)


def memory_link(
    params: ConnectionParams,
    declare: Iterable[Exchange | Queue],
    metrics: Metrics,
    *,
    broker_url: str | None = None,
) -> MemoryLink:
    """The link a Publisher uses for a memory:// URL (or, with `broker_url`, for any URL)."""
    return MemoryLink(params, declare, metrics, broker_url=broker_url)
