"""The SQLite outbox: its own transactions, one relay per file, rows that outlive the process; and the spool."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from aiopublish import Publisher
from aiopublish.outbox import Outbox
from tests.broker import Broker
from tests.faults.proxy import TcpProxy
from tests.internals import spool_relay
from tests.test_outbox_support import message_ids


@pytest.mark.slow
async def test_sqlite_outbox_relays_and_moves_a_poison_message_aside(
    tmp_path: Path, broker: Broker, amqp_url: str
) -> None:
    """1,000 good messages and one to a missing exchange: the 1,000 arrive in order, the poison one is failed."""
    queue = await broker.queue()
    missing = broker.name("missing")
    outbox = Outbox(f"sqlite:///{tmp_path}/outbox.db", routing_key=queue)
    good = []
    for n in range(1000):
        if n == 700:
            poison = await outbox.add("poison", exchange=missing)
        good.append(await outbox.add({"n": n}))
    async with Publisher(amqp_url) as publisher, outbox.relay(publisher, max_attempts=2) as relay:
        await relay.wait_idle()
    messages = await broker.get_all(queue)
    first_seen = list(dict.fromkeys(m.header.properties.message_id for m in messages))
    assert first_seen == good
    # The poison's channel error left the confirms of the 700 before it unsent: those went again, once.
    assert len(messages) - len(first_seen) <= 700
    assert {json.loads(m.body)["n"] for m in messages} == set(range(1000))
    failed = await outbox.failed()
    assert [(f.message_id, f.attempts, f.exchange) for f in failed] == [(poison, 2, missing)]
    assert "NotFound" in failed[0].error
    stats = await outbox.stats()
    assert (stats.pending, stats.failed) == (0, 1)
    await outbox.close()


async def test_sqlite_rows_outlive_the_outbox_object(tmp_path: Path, broker: Broker, amqp_url: str) -> None:
    """Rows added by one Outbox are relayed by a new one on the same file, with the ids add() gave them."""
    queue = await broker.queue()
    dsn = f"sqlite:///{tmp_path}/outbox.db"
    async with Outbox(dsn, routing_key=queue, serializer="json") as first:
        ids = [await first.add({"n": n}, correlation_id=f"c{n}") for n in range(20)]
        lag = (await first.stats()).lag
    assert lag >= 0
    async with Outbox(dsn) as second:
        assert (await second.stats()).pending == 20
        async with Publisher(amqp_url) as publisher, second.relay(publisher, keep_done=3600) as relay:
            await relay.wait_idle()
        assert relay.metrics.relayed == 20
    messages = await broker.get_all(queue)
    assert [(m.header.properties.message_id, m.header.properties.correlation_id) for m in messages] == [
        (message_id, f"c{n}") for n, message_id in enumerate(ids)
    ]


async def test_one_relay_per_sqlite_file(tmp_path: Path, broker: Broker, amqp_url: str) -> None:
    """A second relay on the same SQLite file waits while the first runs, then takes over: each message once."""
    queue = await broker.queue()
    dsn = f"sqlite:///{tmp_path}/outbox.db"
    first_outbox, second_outbox = Outbox(dsn, routing_key=queue), Outbox(dsn, routing_key=queue)
    async with Publisher(amqp_url) as publisher:
        first = first_outbox.relay(publisher, poll_interval=0.05)
        second = second_outbox.relay(publisher, poll_interval=0.05)
        first.start()
        await first.wait_idle()
        second.start()
        before = [await second_outbox.add(n) for n in range(100)]
        await first.wait_idle()
        await first.stop()
        after = [await second_outbox.add(n) for n in range(100)]
        await second.wait_idle()
        await second.stop()
    assert (first.metrics.relayed, second.metrics.relayed) == (100, 100)
    assert await message_ids(broker, queue) == dict.fromkeys(before + after, 1)
    await first_outbox.close()
    await second_outbox.close()


def test_bad_dsn_and_options_are_refused() -> None:
    """A DSN of another kind, a bad table name, an option the relay decides, a connection for SQLite: refused first."""
    with pytest.raises(ValueError, match="must start with postgresql:// or sqlite:///"):
        Outbox("mysql://db/x")
    with pytest.raises(ValueError, match="sqlite:///relative/path"):
        Outbox("sqlite://host/x.db")
    with pytest.raises(ValueError, match="table must be"):
        Outbox("sqlite:///x.db", table="drop table; --")
    with pytest.raises(TypeError, match="'retry_policy'"):
        Outbox("sqlite:///x.db", retry_policy={"max_retries": 1})
    with pytest.raises(ValueError, match="delivery_mode"):
        Outbox("sqlite:///x.db", delivery_mode=3)

    async def add_with_a_connection() -> None:
        connection = type("AsyncSession", (), {"__module__": "sqlalchemy.ext.asyncio.session"})()
        await Outbox("sqlite:///x.db").add("x", connection=connection)

    with pytest.raises(TypeError, match="SQLite outbox writes and commits each message itself"):
        asyncio.run(add_with_a_connection())
    with pytest.raises(TypeError, match=r"spool must be an aiopublish\.outbox\.Outbox"):
        Publisher("amqp://localhost/", spool="sqlite:///x.db")  # type: ignore[arg-type]


@pytest.mark.slow
async def test_spool_takes_publishes_while_the_broker_is_unreachable(
    tmp_path: Path, broker: Broker, tcp_proxy: TcpProxy
) -> None:
    """Broker unreachable (not known yet): 500 publishes try it, return "spooled" within their timeout; back, all
    are delivered and the next publish is confirmed after them."""
    queue = await broker.queue()
    tcp_proxy.refuse(True)
    loop = asyncio.get_running_loop()
    spool = Outbox(f"sqlite:///{tmp_path}/spool.db")
    publisher = Publisher(tcp_proxy.url(), spool=spool, routing_key=queue, timeout=1.5)
    try:
        started = loop.time()
        results = await asyncio.gather(*(publisher.publish({"n": n}) for n in range(500)))
        elapsed = loop.time() - started
        assert {result.status for result in results} == {"spooled"}
        assert elapsed < 1.5
        relay = spool_relay(publisher)
        assert (await spool.stats()).pending == 500
        tcp_proxy.refuse(False)
        await relay.wait_idle()
        after = await publisher.publish("after")
        assert after.status == "confirmed"
    finally:
        await publisher.close()
    arrived = [m.header.properties.message_id for m in await broker.get_all(queue)]
    # Concurrent publishes have no order among themselves; the one after them comes after them.
    assert sorted(arrived[:-1]) == sorted(r.message_id for r in results)
    assert arrived[-1] == after.message_id


async def test_a_broker_refusal_is_raised_not_spooled(tmp_path: Path, broker: Broker, amqp_url: str) -> None:
    """A publish to a missing exchange raises NotFound with a spool too: only an unreachable broker spools."""
    from aiopublish import NotFound

    spool = Outbox(f"sqlite:///{tmp_path}/spool.db")
    async with Publisher(amqp_url, spool=spool) as publisher:
        with pytest.raises(NotFound, match="no exchange"):
            await publisher.publish("x", exchange=broker.name("missing"))
        assert (await spool.stats()).pending == 0


def test_only_the_brokers_refusal_of_a_message_counts_an_attempt() -> None:
    """Returned, nacked, channel errors and wire errors count an attempt; connection trouble, timeouts,
    a closed publisher or a refused login leave the row for later."""
    from aiopublish import (
        AuthenticationError,
        ConnectionFailed,
        NotFound,
        PublisherClosed,
        PublishResult,
        PublishTimeout,
        UndeliverableMessage,
    )
    from aiopublish._blame import Bystander
    from aiopublish._options import Prepared
    from aiopublish.outbox._rows import Row, Verdicts

    returned = UndeliverableMessage("returned", exchange="", routing_key="k", message_id="m")
    outcomes: list[tuple[str, BaseException | None, str]] = [
        ("confirmed", None, "done"),
        ("returned", returned, "refused"),
        ("nacked", UndeliverableMessage("nacked", exchange="", routing_key="k", message_id="m"), "refused"),
        ("failed", NotFound(404, "NOT_FOUND - no exchange 'x'"), "refused"),
        ("failed", ValueError("larger than frame_max"), "refused"),
        ("failed", ConnectionFailed("connection reset"), "later"),
        ("failed", Bystander("another publish's channel error"), "later"),
        ("failed", PublishTimeout("did not complete within 5 s"), "later"),
        ("failed", PublisherClosed("closed"), "later"),
        ("failed", AuthenticationError("login refused"), "later"),
    ]
    message = Prepared("", "k", False, "m", None, b"", b"")
    rows = [Row(n, message, 0, 0.0) for n in range(len(outcomes))]
    results = [PublishResult(n, "m", status, error) for n, (status, error, _) in enumerate(outcomes)]  # type: ignore[arg-type]
    verdicts = Verdicts.of(rows, results)
    got = (
        {n: "done" for n in verdicts.done}
        | {n: "refused" for n in verdicts.refused}
        | {n: "later" for n in verdicts.later}
    )
    assert [got[n] for n in range(len(outcomes))] == [expected for _, _, expected in outcomes]
    assert verdicts.refused[3] == "NotFound: 404 NOT_FOUND - no exchange 'x'"


async def test_wait_idle_is_not_answered_by_a_look_that_began_before_it(
    tmp_path: Path, broker: Broker, amqp_url: str
) -> None:
    """Rows committed while the relay's claim was under way (its query had already found none): wait_idle()
    returns only once they are relayed, not on that stale empty look (a race CI met under load)."""
    queue = await broker.queue()
    outbox = Outbox(f"sqlite:///{tmp_path}/outbox.db", routing_key=queue)
    store = outbox._store
    real_claim = store.claim
    looked_empty, go_on = asyncio.Event(), asyncio.Event()

    async def claim(limit: int) -> Any:
        batch = await real_claim(limit)
        if not looked_empty.is_set():  # the first look: hold its empty answer until the rows are in
            assert batch.rows == []
            looked_empty.set()
            await go_on.wait()
        return batch

    store.claim = claim  # type: ignore[method-assign]
    async with Publisher(amqp_url) as publisher, outbox.relay(publisher) as relay:
        await looked_empty.wait()
        ids = [await outbox.add({"n": n}) for n in range(5)]
        waiting = asyncio.ensure_future(relay.wait_idle())
        await asyncio.sleep(0)  # one turn of the loop (FIFO, no timing): wait_idle() has asked before the look ends
        go_on.set()
        async with asyncio.timeout(30):
            await waiting
        assert (await outbox.stats()).pending == 0
    assert await message_ids(broker, queue) == dict.fromkeys(ids, 1)
    await outbox.close()
