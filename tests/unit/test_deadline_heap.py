"""The one early-wake rule of DeadlineHeap and DeadlineBuckets: no entry expires before its deadline, no timer spins.

Driven by a hand-cranked loop: the test sets the clock and runs the timer, so "the loop ran
the timer 0.4 ms early" (what uvloop's millisecond clock does) is a statement, not a race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from aiopublish._deadline_heap import _TICK, DeadlineBuckets, DeadlineHeap


class Crank:
    """The part of an event loop DeadlineHeap and a Future use, with a clock the test sets."""

    def __init__(self, now: float) -> None:
        self.now = now
        self._timers: list[tuple[asyncio.TimerHandle, Callable[..., object], tuple[Any, ...]]] = []

    def time(self) -> float:
        return self.now

    def get_debug(self) -> bool:
        return False

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, args, self)  # type: ignore[arg-type]
        self._timers.append((handle, callback, args))
        return handle

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        """Called by TimerHandle.cancel(); the handle is marked cancelled already."""

    @property
    def armed(self) -> list[float]:
        """When the timers not cancelled are due."""
        return [handle.when() for handle, _, _ in self._timers if not handle.cancelled()]

    def run_timer_at(self, now: float) -> float:
        """Run the one armed timer with the clock at `now`; its `when`."""
        (live,) = [timer for timer in self._timers if not timer[0].cancelled()]
        self._timers.remove(live)
        handle, callback, args = live
        self.now = now
        callback(*args)
        return handle.when()

    def future(self) -> asyncio.Future[None]:
        return asyncio.Future(loop=self)  # type: ignore[arg-type]


def test_a_timer_run_early_fails_nothing_early_and_is_armed_a_tick_later() -> None:
    """The loop runs the timer 0.4 ms before the deadline: the future stays pending, and the timer is armed
    again for a tick later (not for the same instant, which the loop would run again at once), then fails it."""
    loop = Crank(now=100.0)
    expired: list[int] = []
    heap = DeadlineHeap(TimeoutError, expired.append)
    future = loop.future()
    heap.add(100.010, future)
    assert loop.run_timer_at(100.0096) == 100.010
    assert not future.done()
    assert loop.armed == [pytest.approx(100.0096 + _TICK)]
    loop.run_timer_at(100.0096 + _TICK)
    assert isinstance(future.exception(), TimeoutError)
    assert expired == [1]
    assert loop.armed == [] and len(heap) == 0


def test_deadlines_within_a_tick_of_each_other_expire_in_one_pass_none_early() -> None:
    """After a pass, the next timer is a tick away at least: the deadlines it covers fail together, on time or
    up to a tick late, never before; a settled future is dropped, and one without a deadline never fails."""
    loop = Crank(now=0.0)
    expired: list[int] = []
    heap = DeadlineHeap(TimeoutError, expired.append)
    first, close_behind, settled, later, never = (loop.future() for _ in range(5))
    heap.add(1.0, first)
    heap.add(1.0004, close_behind)
    heap.add(1.0002, settled)
    heap.add(2.0, later)
    heap.add(float("inf"), never)
    settled.set_result(None)
    loop.run_timer_at(1.0)
    assert first.done() and not close_behind.done()  # 0.4 ms short of its deadline: not yet
    assert loop.armed == [pytest.approx(1.0 + _TICK)]
    loop.run_timer_at(1.0 + _TICK)
    assert isinstance(close_behind.exception(), TimeoutError)
    assert settled.result() is None and not later.done()
    assert loop.armed == [2.0]  # the next deadline is further than a tick: its own
    loop.run_timer_at(2.0)
    assert isinstance(first.exception(), TimeoutError) and isinstance(later.exception(), TimeoutError)
    assert not never.done() and loop.armed == []  # only math.inf is left: no timer
    assert expired == [1, 1, 1]
    never.cancel()


def test_buckets_hold_one_heap_entry_per_tick_and_expire_none_early() -> None:
    """DeadlineBuckets: a thousand deadlines within one tick are one bucket; it expires at the latest of them
    (none early, the earliest at most a tick late) in one pass; a settled future is not failed, a later tick
    gets its own timer, and math.inf is not held at all."""
    loop = Crank(now=0.0)
    expired: list[int] = []
    buckets = DeadlineBuckets(TimeoutError, expired.append)
    bunch = [loop.future() for _ in range(1_000)]
    for i, future in enumerate(bunch):
        buckets.add(5.0001 + i * 0.0000005, future)  # 5.0001 .. 5.0006: one tick
    later, never = loop.future(), loop.future()
    buckets.add(7.0, later)
    buckets.add(float("inf"), never)
    bunch[10].set_result(None)
    assert len(buckets) == 1_001 and len(buckets._ticks) == 2
    assert loop.armed == [5.0001]  # armed for the first deadline, not moved as the bucket's latest grows
    loop.run_timer_at(5.0001)
    assert not any(future.done() for future in bunch[11:])  # the bucket's latest deadline is not reached
    assert loop.armed == [pytest.approx(5.0001 + _TICK)]
    loop.run_timer_at(5.0001 + _TICK)
    assert all(isinstance(future.exception(), TimeoutError) for future in bunch if future is not bunch[10])
    assert bunch[10].result() is None
    assert expired == [999] and len(buckets) == 1
    assert loop.armed == [7.0]
    loop.run_timer_at(7.0)
    assert isinstance(later.exception(), TimeoutError)
    assert not never.done() and loop.armed == [] and len(buckets) == 0
    never.cancel()


def test_buckets_compact_keeps_only_pending_futures() -> None:
    """compact() drops settled futures and buckets left empty; the pending ones still expire."""
    loop = Crank(now=0.0)
    buckets = DeadlineBuckets(TimeoutError)
    futures = [loop.future() for _ in range(100)]
    for i, future in enumerate(futures):
        buckets.add(1.0 + i * 0.01, future)  # a bucket each
    for future in futures[:-1]:
        future.set_result(None)
    buckets.compact()
    assert len(buckets) == 1 and len(buckets._ticks) == 1
    loop.run_timer_at(1.0)  # armed for the first (settled, dropped) deadline: re-armed for the live one
    assert loop.armed == [pytest.approx(1.99)]
    loop.run_timer_at(1.99)
    assert isinstance(futures[-1].exception(), TimeoutError)
