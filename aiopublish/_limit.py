"""The in-flight limit: at most N publishes are under way at once; the rest queue up, first come first served.

asyncio.Semaphore in Python 3.11 scans its waiters on every release and on every
`locked()` check, which costs O(waiters) per publish when thousands queue up.
This keeps a counter and a FIFO of futures instead: O(1) per acquire and release.

Waiting for a slot is bounded by each waiter's deadline without a timer per
waiter: the deadlines are DeadlineBuckets (one timer for the earliest; see
_deadline_heap.py for when an entry expires). Publishes queued together have
deadlines within a few milliseconds of each other, so a hundred thousand of them
cost a future and a slot in a bucket's list each, not a timeout object and a
timer handle (nor a heap entry of ~100 bytes). A waiter without a deadline has no
entry at all.

Memory follows what waits, not how long deadlines are. A waiter that gets its
slot, times out or is cancelled leaves its entries behind (removing an entry from
the middle of a bucket or a deque costs O(n)); the limit counts the live waiters
and rebuilds both structures, keeping only the live, once the dead outnumber
them. Each rebuild is paid for by as many deaths as it scans, so a waiter costs
O(1) amortised (O(log n) per bucket) and a one-hour timeout holds no more memory
than a 30 s one.

Deadlines that pass together are expired in one pass over the earliest buckets
(O(k) for k of them): 40,000 at once take a few tens of milliseconds.
"""

from __future__ import annotations

import asyncio
from collections import deque

from ._deadline_heap import DeadlineBuckets

__all__ = ["InFlightLimit"]

# Dead entries tolerated beyond the live count before a rebuild: keeps small queues from rebuilding often.
_SLACK = 32


class InFlightLimit:
    """A counting limit with an O(1) synchronous fast path and bucketed deadlines."""

    __slots__ = ("_deadlines", "_free", "_live", "_waiters", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Only waiters with a deadline have an entry: the dead entries in each structure are
        # at least its length minus the live count, which is all _compact_if_sparse needs.
        self._deadlines = DeadlineBuckets(TimeoutError, self._timed_out)
        self._live = 0  # waiters still waiting: not yet handed a slot, timed out or cancelled

    @property
    def used(self) -> int:
        return self.limit - self._free

    @property
    def waiting(self) -> int:
        """Publishes waiting for a slot."""
        return self._live

    @property
    def _deadline_entries(self) -> int:
        """Entries in the deadline buckets, live or dead (for tests: bounded by about twice `waiting`)."""
        return len(self._deadlines)

    @property
    def _queue_entries(self) -> int:
        """Entries in the FIFO of waiters, live or dead (for tests)."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody queues before us."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self, deadline: float | None = None) -> None:
        """Take a slot, waiting in line for one; TimeoutError once `deadline` (loop time) passes."""
        waiter = self.reserve(deadline)
        if waiter is None:
            return
        try:
            await waiter
        except asyncio.CancelledError:
            self.abandon(waiter)
            raise

    def reserve(self, deadline: float | None = None) -> asyncio.Future[None] | None:
        """Take a free slot now (None), or join the line: the future resolves when the slot is ours.

        The future fails with TimeoutError once `deadline` (loop time) passes. A caller
        that stops waiting on it must call abandon(). Used directly by publish() so a
        queued publish holds no coroutine frame beyond its own.
        """
        if self.try_acquire():
            return None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        self._live += 1
        if deadline is not None:
            self._deadlines.add(deadline, waiter)
        return waiter

    def abandon(self, waiter: asyncio.Future[None]) -> None:
        """The waiter was cancelled: if the slot had just been handed to it, pass the slot on."""
        if not waiter.done():
            waiter.cancel()  # its caller stopped waiting without cancelling it: no slot may go to it
        if waiter.cancelled():
            # Still in the line and its bucket: counted dead now, dropped by a later pop or rebuild.
            self._live -= 1
            self._compact_if_sparse()
        elif waiter.exception() is None:
            self.release()

    def release(self) -> None:
        """Give a slot back, straight to the first live waiter if there is one."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._live -= 1
                self._compact_if_sparse()
                return
        self._free += 1

    def _compact_if_sparse(self) -> None:
        limit = 2 * self._live + _SLACK
        if len(self._deadlines) > limit or len(self._waiters) > limit:
            self._compact()

    def _compact(self) -> None:
        """Drop every settled waiter from the line (in place: callers may hold it) and the buckets."""
        waiters = self._waiters
        live = [waiter for waiter in waiters if not waiter.done()]
        waiters.clear()
        waiters.extend(live)
        self._deadlines.compact()

    def _timed_out(self, count: int) -> None:
        """The deadline buckets failed `count` waiters with TimeoutError: no longer live."""
        self._live -= count
        self._compact_if_sparse()
