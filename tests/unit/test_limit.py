"""The in-flight limit: memory follows what waits (not the timeout), FIFO order, and mass timeouts without a stall.

Without RabbitMQ (the in-memory broker at most); the same through the real broker is in tests/test_limit.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aiopublish import Publisher, PublishTimeout
from aiopublish._limit import _SLACK, InFlightLimit
from tests.internals import slots_of

HOUR = 3600.0


def bound(limit: InFlightLimit) -> int:
    """The most entries a structure may hold: the waiters plus as many dead ones, plus a small slack."""
    return 2 * limit.waiting + _SLACK


def assert_compact(limit: InFlightLimit) -> None:
    assert limit._deadline_entries <= bound(limit), (limit._deadline_entries, limit.waiting)
    assert limit._queue_entries <= bound(limit), (limit._queue_entries, limit.waiting)


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic GC: a full collection pauses for every object alive, whatever the limit does.

    With 40,000 tasks alive one such collection takes about 100 ms here; it is not work of the
    limit's, and it would make the bound depend on the machine's load rather than on the algorithm.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Ticker:
    """A task that wakes every loop turn and records the longest gap between two of its turns."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.longest = 0.0
        self._stop = False
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> float:
        self._stop = True
        assert self._task is not None
        await self._task
        return self.longest

    async def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(0)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now


async def gather_timed(tasks: list[asyncio.Task[Any]]) -> tuple[list[Any], float, float]:
    """Gather `tasks` (exceptions returned) with the GC paused: (results, longest loop turn, idle turn).

    The idle turn is the longest of the same loop's turns with nothing due, measured just
    before, as a baseline for this machine at this moment.
    """
    ticker = Ticker()
    ticker.start()
    await asyncio.sleep(0.2)
    baseline = await ticker.stop()
    with no_gc():
        ticker.start()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        stall = await ticker.stop()
    return results, stall, baseline


async def test_steady_waiting_with_hour_timeouts_keeps_the_heap_at_what_waits() -> None:
    """50,000 acquisitions past the limit with 1 h deadlines: heap and line never exceed twice the waiters."""
    limit = InFlightLimit(8)
    loop = asyncio.get_running_loop()
    waited = 0
    worst = 0

    async def worker(rounds: int) -> None:
        nonlocal waited, worst
        for _ in range(rounds):
            if not limit.try_acquire():
                waited += 1
                await limit.acquire(loop.time() + HOUR)
            await asyncio.sleep(0)  # hold the slot across a loop turn, as a publish awaiting its confirm does
            worst = max(worst, limit._deadline_entries)
            assert_compact(limit)
            limit.release()

    await asyncio.gather(*(worker(500) for _ in range(100)))
    assert waited > 40_000  # nearly every acquisition queued: the old heap would hold one entry for each
    assert 92 - _SLACK <= worst <= 2 * 92 + _SLACK  # about 92 wait at any time
    assert limit.used == 0
    assert limit.waiting == 0
    assert limit._deadline_entries <= _SLACK


async def test_cancelled_and_timed_out_waiters_are_dropped() -> None:
    """10,000 waiters cancelled and 10,000 timed out while every slot is held leave a near-empty heap and line."""
    limit = InFlightLimit(1)
    loop = asyncio.get_running_loop()
    assert limit.try_acquire()
    tasks = [asyncio.create_task(limit.acquire(loop.time() + HOUR)) for _ in range(10_000)]
    await asyncio.sleep(0)
    assert limit.waiting == 10_000
    assert limit._deadline_entries == 10_000
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert limit.waiting == 0
    assert_compact(limit)

    soon = loop.time() + 0.05
    timed = [asyncio.create_task(limit.acquire(soon)) for _ in range(10_000)]
    results = await asyncio.gather(*timed, return_exceptions=True)
    assert all(isinstance(r, TimeoutError) for r in results)
    assert limit.waiting == 0
    assert_compact(limit)
    # The slot still held is handed on normally once released: the line is empty, so it is freed.
    limit.release()
    assert limit.used == 0
    assert limit.try_acquire()


async def test_line_order_survives_rebuilds() -> None:
    """With every second waiter cancelled (forcing rebuilds), the others get their slots in arrival order."""
    limit = InFlightLimit(1)
    loop = asyncio.get_running_loop()
    assert limit.try_acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        await limit.acquire(loop.time() + HOUR if i % 3 else None)  # some without a deadline
        order.append(i)
        limit.release()

    tasks = [asyncio.create_task(wait(i)) for i in range(2_000)]
    await asyncio.sleep(0)
    for i in range(0, 2_000, 2):
        tasks[i].cancel()
    await asyncio.sleep(0)
    assert limit.waiting == 1_000
    assert_compact(limit)
    limit.release()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == list(range(1, 2_000, 2))
    assert limit.used == 0


async def test_mixed_deadlines_expire_in_deadline_order_and_no_earlier() -> None:
    """Waiters with random deadlines time out no earlier than their deadline; the one without never does."""
    limit = InFlightLimit(1)
    loop = asyncio.get_running_loop()
    assert limit.try_acquire()
    start = loop.time()
    deadlines = [start + random.uniform(0.01, 0.2) for _ in range(300)]
    fired: list[tuple[float, float]] = []

    async def wait(deadline: float) -> None:
        with pytest.raises(TimeoutError):
            await limit.acquire(deadline)
        fired.append((deadline, loop.time()))

    forever = asyncio.create_task(limit.acquire(None))
    await asyncio.gather(*(wait(d) for d in deadlines))
    assert len(fired) == 300
    assert all(at >= deadline for deadline, at in fired)
    assert not forever.done()
    limit.release()  # the slot goes to the waiter without a deadline
    await forever
    assert limit.used == 1
    assert_compact(limit)


async def test_40000_waiters_timing_out_together_all_time_out_and_leave_nothing() -> None:
    """40,000 waiters with one deadline all time out and leave the limit compact (stall: benchmarks/loop_stalls.py)."""
    limit = InFlightLimit(1)
    loop = asyncio.get_running_loop()
    assert limit.try_acquire()
    outcomes: list[BaseException] = []

    async def wait(deadline: float) -> None:
        try:
            await limit.acquire(deadline)
        except TimeoutError as exc:
            outcomes.append(exc)

    deadline = loop.time() + 1.0
    tasks = [asyncio.create_task(wait(deadline)) for _ in range(40_000)]
    await asyncio.sleep(0)  # all of them waiting now
    assert limit.waiting == 40_000
    _, stall, baseline = await gather_timed(tasks)
    print(f"\nlongest loop turn: {stall * 1e3:.1f} ms with 40,000 timeouts, {baseline * 1e3:.1f} ms idle")
    assert len(outcomes) == 40_000
    assert all(isinstance(exc, TimeoutError) for exc in outcomes)
    assert limit.waiting == 0
    assert_compact(limit)


async def test_40000_publishes_timing_out_for_a_slot_all_raise_publish_timeout() -> None:
    """40,000 publish() calls waiting for a slot all raise PublishTimeout (stall: benchmarks/loop_stalls.py)."""
    publisher = Publisher("memory://", max_in_flight=1, timeout=1.0)
    try:
        await publisher.publish({"warm": "up"})  # connected; then take the only slot, as a stuck publish would
        slots = slots_of(publisher)
        assert slots.try_acquire()
        tasks = [asyncio.create_task(publisher.publish({"id": i})) for i in range(40_000)]
        await asyncio.sleep(0)
        assert slots.waiting == 40_000
        results, stall, baseline = await gather_timed(tasks)
        print(f"\nlongest loop turn: {stall * 1e3:.1f} ms with 40,000 PublishTimeouts, {baseline * 1e3:.1f} ms idle")
        assert all(isinstance(r, PublishTimeout) for r in results), {type(r).__name__ for r in results}
        assert "in-flight slot" in str(results[-1])
        assert_compact(slots)
        slots.release()
    finally:
        await publisher.close()


async def test_abandoning_a_pending_waiter_gives_it_no_slot() -> None:
    """abandon() on a waiter still pending drops it: the next release goes to the waiter behind it."""
    limit = InFlightLimit(1)
    assert limit.try_acquire()
    first = limit.reserve(None)
    second = limit.reserve(None)
    assert first is not None and second is not None
    limit.abandon(first)
    assert first.cancelled()
    assert limit.waiting == 1
    limit.release()
    assert second.done() and second.exception() is None
    assert limit.used == 1
