"""Deadlines for confirms being waited for, with one timer for all of them.

`asyncio.timeout_at()` around every publish costs a Timeout object, a TimerHandle
pushed on the loop's heap, its cancellation and the heap's later clean-up: about a
tenth of a publish's client work at 512 in flight. A publish that was written at
once and only waits for its confirm needs less: its confirm's future must fail
when the deadline passes. Here each such future gets a heap entry, and one timer
is armed for the earliest deadline.

Entries are not removed when their confirm arrives (that would cost a search):
each add first drops settled entries from the top, and since confirms come
roughly in publish order those are most of them. A publish stuck at the top
(its confirm lost with a dead connection, say) would let settled entries pile up
behind it, so the heap is rebuilt with the live entries only when it has doubled
since the last rebuild: memory stays proportional to what is in flight, and each
rebuild is paid for by the adds that grew it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["ConfirmDeadlines", "DeadlinePassed"]

# Entries tolerated before the first rebuild: small heaps are never rebuilt.
_MIN_REBUILD = 1024
# The loop runs a timer up to its clock resolution early; a deadline this close counts as passed
# (else the timer would be re-armed for the same instant over and over).
_EARLY = 1e-3


class DeadlinePassed(Exception):
    """Set on a confirm's future when its publish's deadline passed before the confirm came."""


class ConfirmDeadlines:
    """Fail each registered future with DeadlinePassed at its deadline (loop time) if it is still pending."""

    __slots__ = ("_heap", "_order", "_rebuild_at", "_timer", "_timer_at")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # ties between equal deadlines: never compare futures
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._rebuild_at = _MIN_REBUILD

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, deadline: float, future: asyncio.Future[None]) -> None:
        """Fail `future` with DeadlinePassed at `deadline` unless it is done by then."""
        heap = self._heap
        while heap and heap[0][2].done():
            heapq.heappop(heap)
        heapq.heappush(heap, (deadline, next(self._order), future))
        if len(heap) >= self._rebuild_at:
            self._rebuild()
        if deadline < self._timer_at:
            self._arm(future.get_loop(), deadline)

    def close(self) -> None:
        """Stop the timer; the futures are left as they are (their channel fails them when it closes)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = float("inf")
        self._heap.clear()

    def _rebuild(self) -> None:
        self._heap = [entry for entry in self._heap if not entry[2].done()]
        heapq.heapify(self._heap)
        self._rebuild_at = max(_MIN_REBUILD, 2 * len(self._heap))

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._expire, loop)
        self._timer_at = when

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._timer_at = float("inf")
        heap = self._heap
        now = loop.time() + _EARLY
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            _, _, future = heapq.heappop(heap)
            if not future.done():
                future.set_exception(DeadlinePassed())
        if heap:
            self._arm(loop, heap[0][0])
