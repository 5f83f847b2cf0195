"""Deadlines for confirms being waited for, with one timer for all of them.

`asyncio.timeout_at()` around every publish costs a Timeout object, a TimerHandle
pushed on the loop's heap, its cancellation and the heap's later clean-up: about a
tenth of a publish's client work at 512 in flight. A publish that was written at
once and only waits for its confirm needs less: its confirm's future must fail
when the deadline passes. Each such future gets an entry in a DeadlineHeap (see
_deadline_heap.py for when an entry expires and how settled entries are dropped).
"""

from __future__ import annotations

from ._deadline_heap import DeadlineHeap

__all__ = ["ConfirmDeadlines", "DeadlinePassed"]


class DeadlinePassed(Exception):
    """Set on a confirm's future when its publish's deadline passed before the confirm came."""


class ConfirmDeadlines(DeadlineHeap):
    """Fail each registered future with DeadlinePassed at its deadline (loop time) if it is still pending.

    add(deadline, future) registers one; close() stops the timer and fails nothing (the
    channel fails its futures when it closes).
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(DeadlinePassed)
