"""DeadlineHeap's one early-wake rule: an entry never expires before its deadline, and an early timer never spins.

Driven by a hand-cranked loop: the test sets the clock and runs the timer, so "the loop ran
the timer 0.4 ms early" (what uvloop's millisecond clock does) is a statement, not a race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from aiopublish._deadline_heap import _TICK, DeadlineHeap


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
