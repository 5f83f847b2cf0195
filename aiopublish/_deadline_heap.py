"""Many deadlines, one timer: futures in a heap by deadline, each failed when its deadline passes.

A timer per waiting future (`asyncio.timeout_at`, or `call_at` per entry) costs a
TimerHandle on the loop's heap, its cancellation and the loop's later clean-up, for
every publish. Here each future gets a heap entry, and one timer is armed for the
earliest deadline. Used by ConfirmDeadlines (publishes waiting for their confirm) and
InFlightLimit (publishes waiting for a slot).

When an entry expires (the one early-wake rule). An entry expires once the loop's
clock has reached its deadline, never before: a timeout raised earlier than it says
would be untrue. A loop may run a timer before its time by up to its clock's
granularity (uvloop's clock counts whole milliseconds), and then the top entry is not
due yet; re-arming for that same deadline would make the loop spin until its clock
moves. So after each expiry pass the timer is armed no sooner than `_TICK` later:
an entry expires at its deadline or at most `_TICK` after it, and deadlines closer
together than that expire in one pass.

Entries are not removed when their future settles (that would cost a search). Each
add first drops settled entries from the top, and as confirms and slots come roughly
in deadline order those are most of them. An entry stuck at the top would let
settled ones pile up behind it, so the heap is rebuilt with the live entries only
when it has doubled since the last rebuild: memory stays proportional to what is
live, and each rebuild is paid for by the adds that grew it. An owner that knows
more (InFlightLimit counts its live waiters) calls compact() sooner.

DeadlineBuckets is the same contract for many futures whose deadlines bunch together
(a hundred thousand publishes queued for a slot within a second): futures whose
deadlines fall in the same `_TICK` share one bucket, so each future costs a slot in
its bucket's list (8 bytes) instead of a heap entry (a tuple, a tie-breaking int and
the heap's slot: about 100 bytes). A bucket expires at the latest deadline in it, so
the rule above holds for every future in it: never before its deadline, at most one
tick after it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable

__all__ = ["DeadlineBuckets", "DeadlineHeap"]

# Entries tolerated before the first rebuild: small heaps are never rebuilt.
_MIN_REBUILD = 1024
# The least time between two expiry passes (see the module docstring): the coarsest loop clock's step.
_TICK = 1e-3


class _OneTimer:
    """The one loop timer of a deadline structure, armed for its earliest deadline."""

    __slots__ = ("_timer", "_timer_at")

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._expire, loop)
        self._timer_at = when

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        raise NotImplementedError


class DeadlineHeap(_OneTimer):
    """Fail each added future with `error()` once its deadline (loop time) passes, if it is still pending.

    `on_expired(n)` is called after an expiry pass that failed n > 0 futures. A deadline
    of math.inf never expires (an entry kept only so that the owner can count entries).
    """

    __slots__ = ("_entries", "_error", "_on_expired", "_order", "_rebuild_at")

    def __init__(self, error: Callable[[], BaseException], on_expired: Callable[[int], None] | None = None) -> None:
        self._entries: list[tuple[float, int, asyncio.Future[None]]] = []
        self._error = error
        self._on_expired = on_expired
        super().__init__()
        self._order = itertools.count()  # ties between equal deadlines: never compare futures
        self._rebuild_at = _MIN_REBUILD

    def __len__(self) -> int:
        """Entries held, live or settled."""
        return len(self._entries)

    def add(self, deadline: float, future: asyncio.Future[None]) -> None:
        """Fail `future` at `deadline` (loop time) unless it is done by then."""
        entries = self._entries
        while entries and entries[0][2].done():
            heapq.heappop(entries)
        heapq.heappush(entries, (deadline, next(self._order), future))
        if len(entries) >= self._rebuild_at:
            self.compact()
        if deadline < self._timer_at:
            self._arm(future.get_loop(), deadline)

    def compact(self) -> None:
        """Drop every settled entry (in place)."""
        entries = self._entries
        entries[:] = [entry for entry in entries if not entry[2].done()]
        heapq.heapify(entries)
        self._rebuild_at = max(_MIN_REBUILD, 2 * len(entries))

    def close(self) -> None:
        """Stop the timer and forget every entry; the futures are left as they are."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf
        self._entries.clear()

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._timer_at = math.inf
        entries = self._entries
        now = loop.time()
        expired = 0
        while entries and (entries[0][0] <= now or entries[0][2].done()):
            _, _, future = heapq.heappop(entries)
            if not future.done():
                future.set_exception(self._error())
                expired += 1
        if entries and entries[0][0] != math.inf:
            self._arm(loop, max(entries[0][0], now + _TICK))
        if expired and self._on_expired is not None:
            self._on_expired(expired)


class _Bucket:
    """The futures whose deadlines fall in one tick, and the latest of those deadlines."""

    __slots__ = ("due", "futures")

    def __init__(self, due: float, future: asyncio.Future[None]) -> None:
        self.due = due
        self.futures = [future]


class DeadlineBuckets(_OneTimer):
    """DeadlineHeap's contract (see its docstring) with one heap entry per tick of deadlines, not per future.

    `on_expired(n)` is called after an expiry pass that failed n > 0 futures. Settled
    futures stay in their bucket until it expires or compact() drops them.
    """

    __slots__ = ("_buckets", "_entries", "_error", "_on_expired", "_ticks")

    def __init__(self, error: Callable[[], BaseException], on_expired: Callable[[int], None] | None = None) -> None:
        self._buckets: dict[int, _Bucket] = {}
        self._ticks: list[int] = []  # a heap of the buckets' keys: the earliest tick first
        self._entries = 0
        self._error = error
        self._on_expired = on_expired
        super().__init__()

    def __len__(self) -> int:
        """Futures held, live or settled."""
        return self._entries

    def add(self, deadline: float, future: asyncio.Future[None]) -> None:
        """Fail `future` at `deadline` (loop time) unless it is done by then; math.inf: never (not held)."""
        if deadline == math.inf:
            return
        tick = int(deadline / _TICK)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = _Bucket(deadline, future)
            heapq.heappush(self._ticks, tick)
        else:
            bucket.futures.append(future)
            if deadline > bucket.due:
                bucket.due = deadline  # a timer armed for the old due finds it not due yet and re-arms
        self._entries += 1
        if bucket.due < self._timer_at:
            self._arm(future.get_loop(), bucket.due)

    def compact(self) -> None:
        """Drop every settled future, and every bucket left empty."""
        buckets: dict[int, _Bucket] = {}
        entries = 0
        for tick, bucket in self._buckets.items():
            live = [future for future in bucket.futures if not future.done()]
            if live:
                bucket.futures = live
                buckets[tick] = bucket
                entries += len(live)
        self._buckets = buckets
        self._ticks = list(buckets)
        heapq.heapify(self._ticks)
        self._entries = entries

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._timer_at = math.inf
        ticks, buckets = self._ticks, self._buckets
        now = loop.time()
        expired = 0
        while ticks and buckets[ticks[0]].due <= now:
            bucket = buckets.pop(heapq.heappop(ticks))
            self._entries -= len(bucket.futures)
            for future in bucket.futures:
                if not future.done():
                    future.set_exception(self._error())
                    expired += 1
        if ticks:
            self._arm(loop, max(buckets[ticks[0]].due, now + _TICK))
        if expired and self._on_expired is not None:
            self._on_expired(expired)
