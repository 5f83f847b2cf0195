"""Test your publishing code without a RabbitMQ: an in-memory broker behind ``memory://`` URLs.

A ``Publisher("memory://", ...)`` publishes into an `InMemoryBroker` that routes with
RabbitMQ's rules and refuses what RabbitMQ refuses (a missing exchange, a foreign
user_id, an inequivalent redeclaration), raising the same exceptions at the same
moments, so the code under test runs as it would against the real broker::

    from aiopublish import Publisher, Queue
    from aiopublish.testing import get_broker

    async with Publisher("memory://", declare=[Queue("orders")], routing_key="orders") as publisher:
        await publisher.publish({"order": 42})
    get_broker().assert_published_once(queue="orders", payload={"order": 42})

Every Publisher on the same URL shares one broker (``memory://`` and ``memory://other``
are two brokers). It imitates RabbitMQ 4.3 (the newest version aiopublish is tested
against) unless the URL says which when the broker is first used
(``memory://?rabbitmq=3.10``): the version's default body limit, least frame_max and
denied deprecated features. `patch_publisher` points every Publisher first used inside it at the
in-memory broker, whatever URL the code passes (module-level publishers included).
With aiopublish installed, pytest gets the fixtures ``memory_broker``, ``patched_broker``
and ``instant_retries``.

Not simulated: consumers, connection loss and reconnection, blocking (connection.blocked),
message TTL, priorities, dead-lettering and plugin exchange types.

The package, one idea per module: `_routing` (the exchange types' rules, pure functions),
`_vhost` (exchanges, queues, bindings, refusals), `_records` (recorded messages and the
expectations of the assertions), `_decoding` (properties and payloads back from bytes),
`_broker` (`InMemoryBroker`), `_registry` (brokers by URL) and `_adapter` (the link and
channel a Publisher uses). Importing it registers the ``memory`` scheme with
`aiopublish._transports`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from .._connection import ConnectionParams
from .._declarations import Exchange, Queue
from .._link import LinkLike
from .._metrics import Metrics
from .._transports import override_links, register_link_factory
from ..retry import RetryPolicy
from ._adapter import MemoryChannel, MemoryLink, memory_link
from ._broker import InMemoryBroker
from ._decoding import decode_payload, register_decoder, register_decompressor
from ._records import Outcome, RecordedMessage
from ._registry import broker_key, get_broker, reset
from ._routing import headers_match, topic_matches

__all__ = [
    "InMemoryBroker",
    "MemoryChannel",
    "MemoryLink",
    "Outcome",
    "RecordedMessage",
    "decode_payload",
    "get_broker",
    "headers_match",
    "memory_link",
    "patch_publisher",
    "register_decoder",
    "register_decompressor",
    "reset",
    "topic_matches",
]


def _memory_scheme_link(
    params: ConnectionParams, declare: Iterable[Exchange | Queue], policy: RetryPolicy, metrics: Metrics
) -> LinkLike:
    return MemoryLink(params, declare, metrics)


register_link_factory("memory", _memory_scheme_link)


def _detach(link: LinkLike) -> None:
    if isinstance(link, MemoryLink):
        link.abandon()


@contextlib.contextmanager
def patch_publisher(url: str = "memory://") -> Iterator[InMemoryBroker]:
    """Inside this block every Publisher publishes to the in-memory broker at `url`, whatever its URL.

    For application code that builds its own ``Publisher("amqp://...")``, at import time or
    later: a Publisher's link is chosen when it is first used (connect or first publish),
    so any Publisher first used inside the block is caught, and after the block it forgets
    the in-memory link (its next use connects as its URL says). A Publisher already
    connected to a real broker when the block begins is left alone; if nothing is recorded,
    the broker's assertion failures say how many were. The login the broker checks
    user_id against is the user of the URL the code passed. Yields the broker.
    """
    broker_key(url)  # a URL that is not memory:// fails here, not at the first publish

    def factory(
        params: ConnectionParams, declare: Iterable[Exchange | Queue], policy: RetryPolicy, metrics: Metrics
    ) -> LinkLike:
        return MemoryLink(params, declare, metrics, broker_url=url)

    with override_links(factory, on_forget=_detach) as override:
        broker = get_broker(url)
        notes = []
        if override.bypassed:
            notes.append(
                f"{override.bypassed} Publisher(s) created before the patch were already connected to a real "
                "broker: they publish there, not to this in-memory broker."
            )
        broker.notes += notes
        try:
            yield broker
        finally:
            for note in notes:
                broker.notes.remove(note)
