"""Outbox benchmark: the relay's throughput and what add() costs a transaction.

    python benchmarks/outbox.py [--n 20000] [--transactions 2000] [--batch-size 1000] [--repeat 3]

Needs PostgreSQL (--pg, default postgresql://postgres@127.0.0.1:5432/test: a database
named aiopublish_bench_<pid> is created there and dropped at the end) and RabbitMQ
(--url). Figures, medians of --repeat runs:

- relay msgs/s: `--n` messages committed to the outbox first, then one in-process relay
  publishes them (confirms, batch of --batch-size) until the outbox is empty: rows
  committed -> confirmed -> deleted. Run for PostgreSQL and for SQLite.
- add() overhead: --transactions sequential transactions on one asyncpg connection,
  each inserting a business row, without and with `outbox.add()` in it; the difference
  per transaction in microseconds (the INSERT, the encoding, the NOTIFY at commit).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

import aiormq
import asyncpg

from aiopublish import Publisher
from aiopublish.outbox import Outbox


async def relay_throughput(dsn: str, url: str, queue: str, n: int, batch_size: int) -> float:
    async with Outbox(dsn, table="bench_outbox", routing_key=queue) as outbox:
        for start in range(0, n, 5000):
            await outbox.add_prepared(
                [outbox.encode({"id": i, "body": "x" * 120}, {}) for i in range(start, min(n, start + 5000))]
            )
        async with Publisher(url) as publisher:
            await publisher.connect()
            started = time.perf_counter()
            async with outbox.relay(publisher, batch_size=batch_size) as relay:
                await relay.wait_idle()
            elapsed = time.perf_counter() - started
            assert relay.metrics.relayed == n, relay.metrics
    return n / elapsed


async def add_overhead(dsn: str, transactions: int) -> tuple[float, float]:
    """Microseconds per transaction without and with an outbox.add() in it."""
    outbox = Outbox(dsn, table="bench_outbox_add", routing_key="nowhere")
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS bench_orders (id bigserial PRIMARY KEY, body text)")
        await outbox.setup()
        # Interleaved, so that the disk's and the machine's drift hits both kinds alike.
        timings = [0.0, 0.0]
        for i in range(2 * transactions):
            with_add = i % 2
            started = time.perf_counter()
            async with connection.transaction():
                await connection.execute("INSERT INTO bench_orders (body) VALUES ($1)", f"order {i}")
                if with_add:
                    await outbox.add({"order": i, "body": "x" * 120}, connection=connection)
            timings[with_add] += time.perf_counter() - started
        timings = [total / transactions * 1e6 for total in timings]
        return timings[0], timings[1]
    finally:
        await connection.close()
        await outbox.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--url", default=os.environ.get("AIOPUBLISH_BENCH_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--transactions", type=int, default=2_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    database = f"aiopublish_bench_{os.getpid()}"
    admin = await asyncpg.connect(args.pg)
    await admin.execute(f"CREATE DATABASE {database}")
    dsn = args.pg.rsplit("/", 1)[0] + "/" + database
    queue = f"aiopublish-outbox-bench-{os.getpid()}"
    amqp = await aiormq.connect(args.url)
    channel = await amqp.channel()
    await channel.queue_declare(queue, durable=True)
    results: dict[str, list[float]] = {"postgresql": [], "sqlite": [], "without": [], "with": []}
    try:
        with tempfile.TemporaryDirectory() as folder:
            for run in range(args.repeat):
                results["postgresql"].append(await relay_throughput(dsn, args.url, queue, args.n, args.batch_size))
                await channel.queue_purge(queue)
                sqlite = f"sqlite:///{folder}/outbox-{run}.db"
                results["sqlite"].append(await relay_throughput(sqlite, args.url, queue, args.n, args.batch_size))
                await channel.queue_purge(queue)
                without, with_add = await add_overhead(dsn, args.transactions)
                results["without"].append(without)
                results["with"].append(with_add)
    finally:
        await channel.queue_delete(queue)
        await amqp.close()
        await admin.execute(f"DROP DATABASE {database} WITH (FORCE)")
        await admin.close()
    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"| figure (median of {args.repeat}) | value |")
    print("|---|---|")
    print(f"| relay, PostgreSQL, {args.n:,} rows committed -> confirmed | {median['postgresql']:,.0f} msgs/s |")
    print(f"| relay, SQLite, {args.n:,} rows committed -> confirmed | {median['sqlite']:,.0f} msgs/s |")
    print(f"| transaction with one INSERT | {median['without']:,.0f} µs |")
    print(f"| the same with `outbox.add()` in it | {median['with']:,.0f} µs |")
    print(f"| add() overhead per transaction | {median['with'] - median['without']:,.0f} µs |")


if __name__ == "__main__":
    asyncio.run(main())
