"""Soak: publish continuously for N minutes while a TCP proxy drops every connection every 0.3 s.

    python examples/soak.py --minutes 1 [--url amqp://guest:guest@127.0.0.1:5672/] [--workers 50]

Prints published, confirmed, raised (by exception type), lost (confirmed but not in
the queue), duplicated (in the queue more than once) and p50/p99 publish latency.
Uses the test suite's fault harness (tests/faults), so run it from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

import aiormq
from yarl import URL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiopublish import Publisher, RetryPolicy
from aiopublish.retry import stop_after_delay, wait_exponential
from tests.faults.proxy import TcpProxy
from tests.faults.scenario import Report, count_queue, every, publish_continuously


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--drop-every", type=float, default=0.3, help="seconds between connection drops")
    parser.add_argument("--timeout", type=float, default=15.0, help="per-publish timeout, seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    url = URL(args.url)
    queue = f"aiopublish-soak-{int(time.time())}"
    setup = await aiormq.connect(args.url)
    channel = await setup.channel()
    await channel.queue_declare(queue, durable=True)

    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5672, user=url.user or "guest", password=url.password or "")
    await proxy.start()
    policy = RetryPolicy(stop=stop_after_delay(args.timeout), wait=wait_exponential(multiplier=0.05, max=0.5))
    stop = asyncio.Event()
    report = Report()
    ends_at = time.monotonic() + args.minutes * 60
    started = time.monotonic()
    try:
        async with Publisher(proxy.url(), retry_policy=policy) as publisher:
            dropper = asyncio.create_task(every(args.drop_every, proxy.drop_all, stop))
            await publish_continuously(
                publisher,
                queue,
                count=None,
                concurrency=args.workers,
                publish_timeout=args.timeout,
                until=lambda: time.monotonic() >= ends_at,
                report=report,
            )
            stop.set()
            drops = await dropper
            reconnects = publisher.metrics.reconnects
    finally:
        await proxy.stop()
    elapsed = time.monotonic() - started
    await count_queue(args.url, queue, report)
    await channel.queue_delete(queue)
    await setup.close()
    print(
        f"soak: {elapsed:.0f} s, {args.workers} workers, a drop every {args.drop_every} s "
        f"({drops} drops, {reconnects} reconnects)\n{report.summary()}\n"
        f"overruns past the timeout: {len(report.overruns)}"
    )
    return 1 if report.lost else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
