"""The in-flight limit: at most N publishes wait for a confirm at once; the rest queue up, first come first served.

asyncio.Semaphore in Python 3.11 scans its waiters on every release and on every
`locked()` check, which costs O(waiters) per publish when thousands queue up.
This keeps a counter and a FIFO of futures instead: O(1) per acquire and release.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["InFlightLimit"]


class InFlightLimit:
    """A counting limit with an O(1) synchronous fast path."""

    __slots__ = ("_free", "_waiters", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def used(self) -> int:
        return self.limit - self._free

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody queues before us."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting in line for one when none is free."""
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed to us just as we were cancelled: pass it on.
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back, straight to the first live waiter if there is one."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
