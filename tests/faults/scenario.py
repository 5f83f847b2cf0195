"""The continuous-fault scenario: many concurrent publishers while something breaks the link.

Used by the resilience tests and by examples/soak.py. Every publish either returns
(the broker confirmed it: its id must be in the queue afterwards) or raises; the
queue is then drained and counted by message id: lost = confirmed ids missing from
the queue, duplicates = ids seen more than once (allowed: at-least-once).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiormq

from aiopublish import Publisher


@dataclass
class Report:
    attempted: int = 0
    confirmed: set[str] = field(default_factory=set)
    raised: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    overruns: list[float] = field(default_factory=list)  # seconds a publish took past its timeout
    in_queue: Counter[str] = field(default_factory=Counter)

    @property
    def lost(self) -> set[str]:
        return self.confirmed - set(self.in_queue)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.in_queue.values() if count > 1)

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> str:
        raised = ", ".join(f"{name}={count}" for name, count in sorted(self.raised.items())) or "none"
        return (
            f"published {self.attempted}, confirmed {len(self.confirmed)}, raised {sum(self.raised.values())} "
            f"({raised}), lost {len(self.lost)}, duplicated {self.duplicates}, "
            f"p50 {self.percentile(0.5) * 1000:.1f} ms, p99 {self.percentile(0.99) * 1000:.1f} ms, "
            f"mean {statistics.fmean(self.latencies) * 1000 if self.latencies else 0:.1f} ms"
        )


async def publish_continuously(
    publisher: Publisher,
    queue: str,
    *,
    count: int | None,
    concurrency: int,
    publish_timeout: float,
    until: Callable[[], bool] | None = None,
    report: Report | None = None,
) -> Report:
    """`concurrency` workers publish persistent messages to `queue` until `count` are attempted (or `until()`)."""
    report = report or Report()
    counter = iter(range(count)) if count is not None else itertools.count()

    async def worker() -> None:
        for number in counter:
            if until is not None and until():
                return
            message_id = f"soak-{number}"
            report.attempted += 1
            started = time.monotonic()
            try:
                await publisher.publish(
                    {"n": number}, routing_key=queue, message_id=message_id, timeout=publish_timeout
                )
            except Exception as exc:
                report.raised[type(exc).__name__] += 1
            else:
                report.confirmed.add(message_id)
                report.latencies.append(time.monotonic() - started)
            elapsed = time.monotonic() - started
            if elapsed > publish_timeout:
                report.overruns.append(elapsed - publish_timeout)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return report


async def count_queue(url: str, queue: str, report: Report) -> Report:
    """Drain `queue` and count its messages by message_id into `report.in_queue`."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(queue, passive=True)
        expected = declared.message_count or 0
        done = asyncio.get_running_loop().create_future()
        received = 0

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            nonlocal received
            report.in_queue[message.header.properties.message_id or "?"] += 1
            received += 1
            if received >= expected and not done.done():
                done.set_result(None)

        if expected:
            await channel.basic_qos(prefetch_count=1000)
            await channel.basic_consume(queue, on_message, no_ack=True)
            await asyncio.wait_for(done, timeout=120)
    finally:
        await connection.close()
    return report


async def every(seconds: float, action: Callable[[], Awaitable[None] | None], stop: asyncio.Event) -> int:
    """Run `action` every `seconds` until `stop` is set; return how many times it ran."""
    runs = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        except TimeoutError:
            result = action()
            if result is not None:
                await result
            runs += 1
    return runs
