"""Where tests reach inside a Publisher: the private access of the suite, in one place.

A test reads what the Publisher shows (`publisher.state`, `publisher.metrics`) wherever that
says what it checks: a reconnect is `state.connections_opened` growing, not a new connection
object. What is here is what no public view gives and a test still needs: the connection or
channel itself, to wait for a fault to close it, read its socket, or drive its confirm
bookkeeping by hand; and the in-flight limit, a background task or the spool's relay, to
check or wait on the implementation. Each helper fails the test when the publisher is not in
the state it needs (not connected, not over AMQP 0-9-1), rather than return None.
"""

from __future__ import annotations

import asyncio

from aiopublish import Publisher
from aiopublish._channel import ConfirmChannel
from aiopublish._connection import AmqpConnection
from aiopublish._declarations import Entity
from aiopublish._limit import InFlightLimit
from aiopublish._link import Link
from aiopublish._transports import DeferredLink
from aiopublish.outbox._relay import Relay
from aiopublish.outbox._spool import Spool


def link_of(publisher: Publisher) -> Link:
    """The AMQP 0-9-1 link behind the publisher (its DeferredLink resolves to it at first use)."""
    deferred = publisher._link
    assert isinstance(deferred, DeferredLink), deferred
    link = deferred.current
    assert isinstance(link, Link), f"not an AMQP 0-9-1 link: {link!r}"
    return link


def connection_of(publisher: Publisher) -> AmqpConnection:
    """The connection the publisher holds now: to await its `closing` after a fault, read its socket
    (TLS, the client port the broker lists) or what it negotiated."""
    connection = link_of(publisher).connection
    assert connection is not None, "the publisher has no connection"
    return connection


def channel_of(publisher: Publisher) -> ConfirmChannel:
    """The channel publishes go on now (confirm mode): to send on it, settle by hand or watch it close."""
    channel = link_of(publisher).ready_channel()
    assert channel is not None, "the publisher has no open channel"
    return channel


def unconfirmed_channel_of(publisher: Publisher) -> ConfirmChannel | None:
    """The channel use_confirms=False publishes go on, or None while none is open (state shows only the other)."""
    return link_of(publisher).ready_unconfirmed_channel()


def declared_on_channel(publisher: Publisher) -> list[Entity]:
    """What the link has declared on its current channel, in the order it declared it."""
    return list(link_of(publisher)._declared)


def liveness_probe(publisher: Publisher) -> asyncio.Task[None] | None:
    """The round trip a timed-out publish started to check the connection still answers (None if none)."""
    return link_of(publisher)._liveness_task


def slots_of(publisher: Publisher) -> InFlightLimit:
    """The in-flight limit: to hold a slot as a stuck publish would, or count what waits for one."""
    return publisher._engine.slots


def spool_relay(publisher: Publisher) -> Relay:
    """The relay a `Publisher(spool=...)` started, to wait until it has drained the spool."""
    spool = publisher._spool
    assert isinstance(spool, Spool), f"the publisher has no spool: {spool!r}"
    assert spool.relay is not None, "the spool's relay has not started"
    return spool.relay
