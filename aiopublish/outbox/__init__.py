"""The transactional outbox and the spool: messages written to a database first, published by a relay.

    outbox = Outbox("postgresql://app@db/shop", exchange="shop")
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("INSERT INTO orders ...")
        await outbox.add({"order": 42}, connection=connection, routing_key="order.created")
    ...
    async with Publisher(url) as publisher, outbox.relay(publisher):
        ...  # committed messages are published, with confirms, until the block ends

See Outbox, Relay, and the README's "Outbox" section for the guarantees.
"""

from ._outbox import ADD_OPTIONS, Outbox
from ._relay import Relay, RelayMetrics
from ._rows import FailedMessage, OutboxStats

__all__ = ["ADD_OPTIONS", "FailedMessage", "Outbox", "OutboxStats", "Relay", "RelayMetrics"]
