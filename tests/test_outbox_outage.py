"""The broker (a private node) stopped for 30 s while the application keeps committing to its outbox."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from aiopublish import Publisher, PublishTimeout
from aiopublish.outbox import Outbox
from tests.broker import Broker
from tests.faults.rabbit_node import RabbitNode
from tests.test_outbox_support import message_ids, pg_dsn, unique_table

__all__ = ["pg_dsn"]

OUTAGE = 30.0


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_broker_outage_loses_nothing_and_never_blocks_the_application(
    pg_dsn: str, private_rabbit: RabbitNode
) -> None:
    """Node stopped 30 s mid-stream: every committed message arrives after; no transaction waited on the broker."""
    rabbit_node = private_rabbit
    broker = Broker(rabbit_node.url())
    queue = await broker.queue()
    outbox = Outbox(pg_dsn, table=unique_table(), routing_key=queue)
    pool = await asyncpg.create_pool(pg_dsn, min_size=2, max_size=2)
    await pool.execute("CREATE TABLE IF NOT EXISTS outage_orders (id bigserial PRIMARY KEY, n int NOT NULL)")
    committed: list[str] = []
    slowest = 0.0
    stop = asyncio.Event()

    async def application() -> None:
        nonlocal slowest
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute("INSERT INTO outage_orders (n) VALUES ($1)", n)
                message_id = await outbox.add({"n": n}, connection=connection)
            committed.append(message_id)
            slowest = max(slowest, time.monotonic() - started)
            n += 1
            await asyncio.sleep(0.01)  # about 100 orders a second

    publisher = Publisher(rabbit_node.url(), timeout=5)
    try:
        async with outbox.relay(publisher, retry_wait=0.5) as relay:
            app = asyncio.create_task(application())
            await relay.wait_idle()
            while len(committed) < 200:  # noqa: ASYNC110 - the application's own pace
                await asyncio.sleep(0.05)
            await rabbit_node.stop()
            during = len(committed)
            await asyncio.sleep(OUTAGE)  # the outage itself: the application goes on committing
            during = len(committed) - during
            await rabbit_node.start()
            await asyncio.sleep(1.0)
            stop.set()
            await app
            async with asyncio.timeout(60):
                await relay.wait_idle()
        arrived = await message_ids(broker, queue)
        duplicates = sum(arrived.values()) - len(arrived)
        print(
            f"\noutage {OUTAGE:.0f} s: {len(committed)} committed ({during} during the outage), "
            f"lost {len(set(committed) - set(arrived))}, duplicates {duplicates}, slowest transaction {slowest:.3f} s"
        )
        assert set(arrived) == set(committed)
        assert during > 1000  # the application kept committing all along
        assert slowest < 1.0  # ... and never waited on the broker
    finally:
        await publisher.close()
        await pool.execute("DROP TABLE outage_orders")
        await pool.close()
        await outbox.close()
        await broker.cleanup()


@pytest.mark.slow
async def test_a_blocked_broker_is_not_spooled(tmp_path: Path, private_rabbit: RabbitNode) -> None:
    """A broker blocking publishers (memory alarm) is reachable: the publish raises PublishTimeout, nothing spooled."""
    broker = Broker(private_rabbit.url())
    queue = await broker.queue()
    spool = Outbox(f"sqlite:///{tmp_path}/spool.db")
    publisher = Publisher(private_rabbit.url(), spool=spool, routing_key=queue, timeout=1.5)
    try:
        await publisher.connect()
        await private_rabbit.set_memory_alarm(True)
        with pytest.raises(PublishTimeout, match="blocking publishers"):
            await publisher.publish("held back")
        assert (await spool.stats()).pending == 0
        await private_rabbit.set_memory_alarm(False)
        assert (await publisher.publish("through")).status == "confirmed"
    finally:
        await publisher.close()
        await broker.cleanup()
