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
are two brokers). `patch_publisher` points every Publisher created inside it at the
in-memory broker, whatever URL the code passes. With aiopublish installed, pytest gets
the fixtures ``memory_broker``, ``patched_broker`` and ``instant_retries``.

Not simulated: consumers, connection loss and reconnection, blocking (connection.blocked),
message TTL, priorities, dead-lettering and plugin exchange types.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from ._connection import ConnectionParams
from ._declarations import Exchange, Queue
from ._link import LinkLike
from ._memory import (
    InMemoryBroker,
    MemoryChannel,
    MemoryLink,
    Outcome,
    RecordedMessage,
    broker_key,
    decode_payload,
    get_broker,
    headers_match,
    register_decoder,
    register_decompressor,
    reset,
    topic_matches,
)
from ._metrics import Metrics

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


def memory_link(
    params: ConnectionParams,
    declare: Iterable[Exchange | Queue],
    metrics: Metrics,
    *,
    broker_url: str | None = None,
) -> LinkLike:
    """The link a Publisher uses for a memory:// URL (or, with `broker_url`, for any URL)."""
    return MemoryLink(params, declare, metrics, broker_url=broker_url)


@contextlib.contextmanager
def patch_publisher(url: str = "memory://") -> Iterator[InMemoryBroker]:
    """Inside this block every new Publisher publishes to the in-memory broker at `url`, whatever its URL.

    For application code that builds its own ``Publisher("amqp://...")``. The login the
    broker checks user_id against is still the user of the URL the code passed. Publishers
    created before the block keep their real connection. Yields the broker.
    """
    from ._publisher import Publisher

    broker_key(url)  # a URL that is not memory:// fails here, not at the first publish
    original = Publisher.__dict__["_make_link"]

    def _make_link(publisher: Publisher) -> LinkLike:
        return memory_link(publisher._params, publisher._defaults.declare, publisher._metrics, broker_url=url)

    setattr(Publisher, "_make_link", _make_link)  # noqa: B010 - mypy refuses assigning to a method
    try:
        yield get_broker(url)
    finally:
        setattr(Publisher, "_make_link", original)  # noqa: B010
