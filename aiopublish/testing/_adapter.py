"""The link and channel a Publisher uses on an in-memory broker (`LinkLike` and `PublishChannel`).

The channel decodes nothing itself: it hands the encoded properties and body to the
broker, so what is recorded is exactly what would be on the wire, and settles each
publish at once (an ack, a return, a nack or a channel error, as RabbitMQ would
settle it). Publishers do not await anything in here, so the result of a publish
never depends on timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from yarl import URL

from .._channel import Batch, ChannelInterrupted, PublishChannel
from .._connection import ConnectionParams
from .._declarations import Entity, Exchange, Queue, expand
from .._exceptions import (
    AccessRefused,
    ChannelError,
    NotFound,
    PreconditionFailed,
    PublisherClosed,
    UndeliverableMessage,
)
from .._metrics import Metrics
from ._broker import InMemoryBroker
from ._records import RecordedMessage
from ._registry import broker_key, get_broker
from ._vhost import DEFAULT_LOGIN

__all__ = ["MemoryChannel", "MemoryLink", "memory_link"]


class MemoryChannel:
    """A `PublishChannel` that hands each publish to an InMemoryBroker and settles it at once."""

    def __init__(self, broker: InMemoryBroker, number: int, login: str) -> None:
        self.broker = broker
        self.number = number
        self.login = login
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
        """Publish now and settle the confirm at once: a done future when `track` (or entry `index` of `batch`).

        After the broker closed this channel for an error, later publishes on it (a
        publish_many streaming on) are dropped unseen, as frames already on the wire when
        the close arrives: each fails with the channel's error if that error concerns it
        (same exchange, same user_id), else with a retriable ChannelInterrupted.
        """
        # The only line that knows send()'s parameters (the method frame is not needed in memory).
        error = self._deliver(exchange, routing_key, mandatory, message_id, user_id, properties, body)
        return _settle(error, track, batch, index)

    def _deliver(
        self,
        exchange: str,
        routing_key: str,
        mandatory: bool,
        message_id: str,
        user_id: str | None,
        properties: bytes,
        body: bytes,
    ) -> BaseException | None:
        """Hand one publish to the broker; the error its confirm fails with, or None for an ack."""
        if self.closed_by is not None:
            return _blame(self.closed_by, exchange, user_id)
        if self._closed:
            raise ChannelInterrupted("the channel is closed; nothing was sent")
        message = self.broker.receive(
            exchange=exchange,
            routing_key=routing_key,
            mandatory=mandatory,
            properties=properties,
            body=body,
            login=self.login,
        )
        if message.error is not None:
            # RabbitMQ closes the channel; the publisher opens (and declares on) a new one.
            self.close(message.error)
            return _copy(message.error)
        if message.outcome in ("returned", "nacked"):
            return _undeliverable(message, message_id)
        return None

    async def wait_writable(self) -> None:
        return None

    def forget(self, future: asyncio.Future[None]) -> None:
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


def _blame(error: ChannelError, exchange: str, user_id: str | None) -> BaseException:
    """The error of a publish caught in a channel the broker closed: its own if the close concerns it.

    The same judgement as the real channel's (aiopublish._channel), by the reply text.
    """
    text = error.reply_text or ""
    if isinstance(error, (NotFound, AccessRefused)):
        concerned = f"exchange '{exchange}'" in text
    elif isinstance(error, PreconditionFailed) and "user_id" in text:
        concerned = user_id is not None and f"'{user_id}'" in text
    else:
        concerned = True
    if concerned:
        return _copy(error)
    return ChannelInterrupted(
        f"the channel closed before the broker confirmed the message ({type(error).__name__}: {error}); "
        "it may or may not have been stored"
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
        self.broker_url = broker_url or params.url
        broker_key(self.broker_url)  # a bad URL fails here, in the Publisher's constructor
        # What the broker takes as the login: the URL's user, "guest" when it names none (as aiormq).
        self.login = URL(params.url).user or DEFAULT_LOGIN
        self._steps: list[Entity] = expand(declare)
        self._declared: list[Entity] = []
        self._channel: MemoryChannel | None = None
        self._channels_opened = 0
        self.node: str | None = None
        self.closed = False

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
        self._channels_opened += 1
        channel = MemoryChannel(broker, self._channels_opened, self.login)
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
            self._declared.append(step)
            if step not in self._steps:
                self._steps.append(step)

    async def wait_unblocked(self) -> None:
        return None

    def check_stalled(self, timeout: float) -> None:
        return None  # nothing in memory stalls

    async def close(self, drain_timeout: float | None) -> None:
        self.detach()

    def detach(self) -> None:
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
