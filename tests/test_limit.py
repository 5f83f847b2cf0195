"""The in-flight limit against the real broker: the heap stays at what waits, and mass timeouts do not stall the loop.

The limit itself, without RabbitMQ (the in-memory broker at most), is in tests/unit/test_limit.py.
"""

from __future__ import annotations

import asyncio

import pytest

from aiopublish import Publisher, PublishTimeout
from aiopublish._limit import _SLACK
from tests.broker import Broker, until
from tests.faults.proxy import TcpProxy
from tests.internals import slots_of
from tests.unit.test_limit import HOUR, gather_timed


@pytest.mark.slow
async def test_steady_publishing_past_the_limit_for_60s_keeps_the_heap_at_what_waits(
    amqp_url: str, broker: Broker
) -> None:
    """60 s of 2,000 publishers against max_in_flight=64 with timeout=3600: the heap stays near what waits."""
    queue = await broker.queue(**{"x-max-length": 10_000})  # the broker keeps the newest 10,000 only
    publisher = Publisher(amqp_url, max_in_flight=64, timeout=HOUR, routing_key=queue)
    slots = slots_of(publisher)
    stop = asyncio.Event()
    done = 0
    samples: list[tuple[int, int, int]] = []

    async def worker() -> None:
        nonlocal done
        while not stop.is_set():
            await publisher.publish({"n": done, "body": "x" * 120})
            done += 1

    async def sampler() -> None:
        while not stop.is_set():
            samples.append((slots.waiting, slots._deadline_entries, slots._queue_entries))
            await asyncio.sleep(0.1)

    try:
        await publisher.connect()
        workers = [asyncio.create_task(worker()) for _ in range(2_000)]
        watch = asyncio.create_task(sampler())
        await asyncio.sleep(60)
        stop.set()
        await asyncio.gather(*workers, watch)
    finally:
        await publisher.close()
    waits = [w for w, _, _ in samples]
    heaps = [h for _, h, _ in samples]
    print(f"\n{done:,} publishes in 60 s; waiting {min(waits)}-{max(waits)}; heap at most {max(heaps)}")
    assert done > 100_000  # far more than ever waited at once: the old heap kept an entry for every one
    assert len(samples) > 300
    assert max(waits) > 1_000  # the test did queue publishes past the limit
    for waiting, heap, line in samples:
        assert heap <= 2 * waiting + _SLACK, (waiting, heap)
        assert line <= 2 * waiting + _SLACK, (waiting, line)
    assert await broker.depth(queue) == 10_000


@pytest.mark.slow
async def test_40000_publishes_timing_out_on_a_silent_network_all_raise_publish_timeout(
    broker: Broker, tcp_proxy: TcpProxy
) -> None:
    """40,000 written publishes timing out together on a silent network all raise PublishTimeout."""
    queue = await broker.queue()
    publisher = Publisher(tcp_proxy.url(), routing_key=queue, max_in_flight=50_000, timeout=8.0)
    try:
        await publisher.connect()
        tcp_proxy.go_silent(True)
        tasks = [asyncio.create_task(publisher.publish({"id": i})) for i in range(40_000)]
        await until(lambda: publisher.in_flight == 40_000)
        results, stall, baseline = await gather_timed(tasks)
    finally:
        tcp_proxy.go_silent(False)
        await publisher.close()
    print(f"\nlongest loop turn: {stall * 1e3:.1f} ms with 40,000 timeouts in flight, {baseline * 1e3:.1f} ms idle")
    assert all(isinstance(r, PublishTimeout) for r in results), {type(r).__name__ for r in results}
