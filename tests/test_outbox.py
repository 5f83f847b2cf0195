"""The PostgreSQL outbox in one process: add() in the caller's transaction, the relay, poison messages."""

from __future__ import annotations

import asyncio
import json
import random

import asyncpg
import pytest

from aiopublish import Publisher
from aiopublish.outbox import Outbox
from tests.broker import Broker
from tests.test_outbox_support import message_ids, pg_dsn, unique_table

__all__ = ["pg_dsn"]


@pytest.mark.slow
async def test_only_committed_messages_are_published(pg_dsn: str, broker: Broker, amqp_url: str) -> None:
    """10,000 transactions (business row + outbox message), 10% rolled back: exactly the committed ids arrive."""
    queue = await broker.queue()
    outbox = Outbox(pg_dsn, table=unique_table(), routing_key=queue)
    pool = await asyncpg.create_pool(pg_dsn, min_size=8, max_size=8)
    await pool.execute("CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, ref text NOT NULL)")
    committed: set[str] = set()
    rolled_back: set[str] = set()
    rng = random.Random(15)
    slots = asyncio.Semaphore(16)

    class Rollback(Exception):
        pass

    async def order(n: int) -> None:
        async with slots:
            roll_back = rng.random() < 0.1
            message_id = None
            try:
                async with pool.acquire() as connection, connection.transaction():
                    await connection.execute("INSERT INTO orders (ref) VALUES ($1)", f"order-{n}")
                    message_id = await outbox.add({"order": n}, connection=connection)
                    if roll_back:
                        raise Rollback
            except Rollback:
                rolled_back.add(message_id or "")
                return
            committed.add(message_id)

    try:
        async with Publisher(amqp_url) as publisher, outbox.relay(publisher) as relay:
            await asyncio.gather(*(order(n) for n in range(10_000)))
            await relay.wait_idle()
        arrived = await message_ids(broker, queue)
        print(
            f"\n10,000 transactions: {len(committed)} committed, {len(rolled_back)} rolled back, {len(arrived)} arrived"
        )
        assert len(committed) + len(rolled_back) == 10_000
        assert 800 < len(rolled_back) < 1200
        assert set(arrived) == committed
        assert max(arrived.values()) == 1  # no crash here: no duplicates either
        assert await pool.fetchval("SELECT count(*) FROM orders") == len(committed)
        assert (await outbox.stats()).pending == 0
        assert relay.metrics.relayed == len(committed)
    finally:
        await pool.execute("DROP TABLE orders")
        await pool.close()
        await outbox.close()


async def test_poison_message_is_moved_aside_and_the_rest_flow(pg_dsn: str, broker: Broker, amqp_url: str) -> None:
    """A message to a missing exchange among 1,000 good ones: the 1,000 arrive, it ends in failed() with NotFound."""
    queue = await broker.queue()
    missing = broker.name("missing")
    outbox = Outbox(pg_dsn, table=unique_table(), routing_key=queue)
    good: list[str] = []
    async with Publisher(amqp_url) as publisher:
        pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
        try:
            async with pool.acquire() as connection, connection.transaction():
                for n in range(1000):
                    if n == 500:
                        poison = await outbox.add("poison", connection=connection, exchange=missing)
                    good.append(await outbox.add({"n": n}, connection=connection))
            async with outbox.relay(publisher, max_attempts=3, batch_size=100) as relay:
                await relay.wait_idle()
        finally:
            await pool.close()
        arrived = await message_ids(broker, queue)
        failed = await outbox.failed()
        assert set(arrived) == set(good)
        # Its first refusal closed the channel with the confirms of up to 99 others unsent (published again);
        # its later attempts went alone.
        assert sum(arrived.values()) - len(arrived) < 100
        assert [(f.message_id, f.attempts) for f in failed] == [(poison, 3)]
        assert "NotFound" in failed[0].error and missing in failed[0].error
        assert relay.metrics.failed == 1
        stats = await outbox.stats()
        assert (stats.pending, stats.failed) == (0, 1)
        # Requeued once the exchange exists, it goes through: same message id.
        await broker.exchange("fanout", name=missing)
        await broker.bind(queue, missing)
        assert await outbox.requeue() == 1
        async with outbox.relay(publisher) as relay:
            await relay.wait_idle()
        assert await message_ids(broker, queue) == {poison: 1}
        assert await outbox.failed() == []
    await outbox.close()


async def test_sqlalchemy_session_and_connection(pg_dsn: str, broker: Broker, amqp_url: str) -> None:
    """add() through an SQLAlchemy AsyncSession and AsyncConnection follows their commit and rollback."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    queue = await broker.queue()
    outbox = Outbox(pg_dsn, table=unique_table(), routing_key=queue, serializer="json")
    engine = create_async_engine(pg_dsn.replace("postgresql://", "postgresql+asyncpg://"))
    kept: list[str] = []
    try:
        async with AsyncSession(engine) as session:
            kept.append(await outbox.add({"via": "session"}, connection=session))
            await session.commit()
            await outbox.add({"via": "session, rolled back"}, connection=session)
            await session.rollback()
        async with engine.connect() as connection:
            kept.append(await outbox.add({"via": "connection"}, connection=connection))
            await connection.commit()
            await outbox.add({"via": "connection, rolled back"}, connection=connection)
            await connection.execute(text("SELECT 1"))
            await connection.rollback()
        async with engine.begin() as connection:
            kept.append(await outbox.add({"via": "begin"}, connection=connection, correlation_id="c-1"))
        async with Publisher(amqp_url) as publisher, outbox.relay(publisher) as relay:
            await relay.wait_idle()
        messages = await broker.get_all(queue)
        assert [m.header.properties.message_id for m in messages] == kept
        assert [json.loads(m.body)["via"] for m in messages] == ["session", "connection", "begin"]
        assert messages[2].header.properties.correlation_id == "c-1"
    finally:
        await engine.dispose()
        await outbox.close()


async def test_bad_payload_or_option_raises_inside_the_transaction(pg_dsn: str) -> None:
    """A payload the serializer refuses or a bad option raises in add(), and nothing is written."""
    outbox = Outbox(pg_dsn, table=unique_table(), serializer="json")
    connection = await asyncpg.connect(pg_dsn)
    try:
        async with connection.transaction():
            with pytest.raises(ValueError, match="serializ"):
                await outbox.add({"when": object()}, connection=connection)
            with pytest.raises(ValueError, match="priority"):
                await outbox.add("x", connection=connection, priority=300)
            with pytest.raises(TypeError, match="'timeout'"):
                await outbox.add("x", connection=connection, timeout=3)  # type: ignore[call-arg]
        with pytest.raises(ValueError, match="not in a transaction"):
            await outbox.add("x", connection=connection)
        with pytest.raises(TypeError, match="asyncpg connection or an SQLAlchemy"):
            await outbox.add("x", connection=object())
        assert (await outbox.stats()).pending == 0
    finally:
        await connection.close()
        await outbox.close()


async def test_claimed_rows_are_invisible_to_other_relays_until_settled(pg_dsn: str) -> None:
    """Two relays' claims never share a row (SKIP LOCKED); an aborted claim's rows go to the next, settled never."""
    from aiopublish.outbox._rows import Verdicts

    first_outbox, second_outbox = Outbox(pg_dsn, table=(table := unique_table())), Outbox(pg_dsn, table=table)
    try:
        ids = [await first_outbox.add(n) for n in range(30)]
        first = await first_outbox._store.claim(10)
        second = await second_outbox._store.claim(10)
        held = [row.message.message_id for row in first.rows]
        assert held == ids[:10]
        assert [row.message.message_id for row in second.rows] == ids[10:20]
        await first.abort()  # a relay that died: its rows are free again
        await second.settle(Verdicts([row.id for row in second.rows], {}, []), 5, False)
        third = await second_outbox._store.claim(30)
        assert [row.message.message_id for row in third.rows] == ids[:10] + ids[20:]
        await third.abort()
    finally:
        await first_outbox.close()
        await second_outbox.close()


async def test_keep_done_keeps_confirmed_rows_then_deletes_them(pg_dsn: str, broker: Broker, amqp_url: str) -> None:
    """keep_done=3600 leaves confirmed rows as 'done'; keep_done=0 deletes them when the relay is idle."""
    queue = await broker.queue()
    outbox = Outbox(pg_dsn, table=(table := unique_table()), routing_key=queue)
    connection = await asyncpg.connect(pg_dsn)
    try:
        for _ in range(3):
            await outbox.add("x")
        async with Publisher(amqp_url) as publisher:
            async with outbox.relay(publisher, keep_done=3600) as relay:
                await relay.wait_idle()
            states = await connection.fetch(f"SELECT state, done_at IS NOT NULL AS done FROM {table}")
            assert [(r["state"], r["done"]) for r in states] == [("done", True)] * 3
            assert (await outbox.stats()).pending == 0
            async with outbox.relay(publisher, keep_done=0) as relay:
                await relay.wait_idle()
        assert await connection.fetchval(f"SELECT count(*) FROM {table}") == 0
        assert len(await broker.get_all(queue)) == 3
    finally:
        await connection.close()
        await outbox.close()


async def test_relay_survives_its_database_connections_being_killed(pg_dsn: str, broker: Broker, amqp_url: str) -> None:
    """The relay's pool and LISTEN connections terminated by the server: it reconnects and relays what comes next."""
    queue = await broker.queue()
    outbox = Outbox(pg_dsn, table=unique_table(), routing_key=queue)
    admin = await asyncpg.connect(pg_dsn)
    try:
        async with Publisher(amqp_url) as publisher, outbox.relay(publisher, poll_interval=0.2) as relay:
            before = [await outbox.add(n) for n in range(10)]
            await relay.wait_idle()
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert killed >= 2  # the relay's pooled connection and its listener
            after = [await outbox.add(n) for n in range(5)]  # on the outbox's own pool, killed too
            async with admin.transaction():  # the application's own connection, which was spared
                after += [await outbox.add(n, connection=admin) for n in range(5)]
            async with asyncio.timeout(30):
                await relay.wait_idle()
        assert await message_ids(broker, queue) == dict.fromkeys(before + after, 1)
    finally:
        await admin.close()
        await outbox.close()
