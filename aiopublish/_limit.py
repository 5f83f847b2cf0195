"""The in-flight limit: at most N publishes are under way at once; the rest queue up, first come first served.

asyncio.Semaphore in Python 3.11 scans its waiters on every release and on every
`locked()` check, which costs O(waiters) per publish when thousands queue up.
This keeps a counter and a FIFO of futures instead: O(1) per acquire and release.

Waiting for a slot is bounded by each waiter's deadline without a timer per
waiter: one timer is armed for the earliest deadline (a heap), so a hundred
thousand queued publishes cost a future and a heap entry each, not a timeout
object and a timer handle.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque

__all__ = ["InFlightLimit"]


class InFlightLimit:
    """A counting limit with an O(1) synchronous fast path and heap-ordered deadlines."""

    __slots__ = ("_deadlines", "_free", "_timer", "_waiters", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._deadlines: list[tuple[float, int, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None

    @property
    def used(self) -> int:
        return self.limit - self._free

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
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, id(waiter), waiter))
            if self._deadlines[0][2] is waiter:
                self._arm(loop)
        return waiter

    def abandon(self, waiter: asyncio.Future[None]) -> None:
        """The waiter was cancelled: if the slot had just been handed to it, pass the slot on."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self.release()

    def release(self) -> None:
        """Give a slot back, straight to the first live waiter if there is one."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(self._deadlines[0][0], self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        deadlines = self._deadlines
        now = loop.time()
        while deadlines and (deadlines[0][0] <= now or deadlines[0][2].done()):
            _, _, waiter = heapq.heappop(deadlines)
            if not waiter.done():
                waiter.set_exception(TimeoutError())
        if deadlines:
            self._arm(loop)
