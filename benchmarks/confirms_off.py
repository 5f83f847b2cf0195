"""use_confirms=False throughput: a channel without confirm mode against the confirm channel, in one run.

nameko publishes unconfirmed messages on a channel that is not in confirm mode. aiopublish
used to send them, untracked, on its confirm-mode channel, so the broker still sent (and
the client still read) one ack per message. This script times both in the same process,
alternating, so the machine's noise falls on both alike, and prints their ratio:

- ``confirm-channel``: the old way (the publisher's confirm-mode link for unconfirmed sends);
- ``plain-channel``: the channel without confirm mode (what Publisher does now).

Each run publishes N persistent ~150-byte JSON messages with ``use_confirms=False`` from
512 tasks to a durable queue; its clock stops when the broker holds all N (the queue's
depth, read over a second connection: with no confirms, nothing else says they arrived).

    python benchmarks/confirms_off.py [--n 20000] [--repeat 3] [--url amqp://...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import aiormq

from aiopublish import Publisher

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
PAYLOAD = {"order_id": 123456, "customer": "c-42", "items": [{"sku": "A-1", "qty": 2}] * 3, "note": "x" * 40}
CONCURRENCY = 512


async def depth(channel: aiormq.abc.AbstractChannel, queue: str) -> int:
    ok = await channel.queue_declare(queue, passive=True)
    return int(ok.message_count or 0)


async def run(url: str, queue: str, n: int, mode: str, probe: aiormq.abc.AbstractChannel) -> float:
    await probe.queue_purge(queue)
    async with Publisher(url, routing_key=queue, use_confirms=False) as publisher:
        if mode == "confirm-channel":
            publisher._unconfirmed = publisher._link  # the old path: untracked sends on the confirm channel
        await publisher.publish(PAYLOAD)  # connected and the channel open before the clock starts
        await probe.queue_purge(queue)
        per_task = n // CONCURRENCY

        async def worker(count: int) -> None:
            for _ in range(count):
                await publisher.publish(PAYLOAD)

        started = time.perf_counter()
        counts = [per_task + (1 if i < n % CONCURRENCY else 0) for i in range(CONCURRENCY)]
        await asyncio.gather(*(worker(count) for count in counts))
        while await depth(probe, queue) < n:  # noqa: ASYNC110 - the broker announces no depth
            await asyncio.sleep(0.005)
        return time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    connection = await aiormq.connect(args.url)
    probe = await connection.channel()
    queue = f"aiopublish-confirms-off-{os.getpid()}"
    await probe.queue_declare(queue, durable=True)
    times: dict[str, list[float]] = {"confirm-channel": [], "plain-channel": []}
    try:
        for _ in range(args.repeat):
            for mode in times:
                times[mode].append(await run(args.url, queue, args.n, mode, probe))
    finally:
        await probe.queue_delete(queue)
        await connection.close()
    rates = {mode: args.n / statistics.median(values) for mode, values in times.items()}
    for mode, rate in rates.items():
        print(f"{mode:16s} {rate:10,.0f} msgs/s (median of {args.repeat}: {[round(t, 3) for t in times[mode]]} s)")
    print(f"plain-channel / confirm-channel: {rates['plain-channel'] / rates['confirm-channel']:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--url", default=os.environ.get("AIOPUBLISH_BENCH_URL", DEFAULT_URL))
    asyncio.run(main(parser.parse_args()))
