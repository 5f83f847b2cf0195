"""ConfirmDeadlines: one timer for every confirm being waited for (the publish fast path's deadlines).

Without a broker; publishes timing out on a silent network are in tests/test_deadlines.py.
"""

from __future__ import annotations

import asyncio

import pytest

from aiopublish._deadlines import ConfirmDeadlines, DeadlinePassed


async def test_each_pending_future_fails_at_its_own_deadline_in_any_order() -> None:
    """Deadlines added out of order expire in deadline order; a settled future is left alone."""
    loop = asyncio.get_running_loop()
    deadlines = ConfirmDeadlines()
    now = loop.time()
    late, early, settled = loop.create_future(), loop.create_future(), loop.create_future()
    expired: list[str] = []
    late.add_done_callback(lambda _: expired.append("late"))
    early.add_done_callback(lambda _: expired.append("early"))
    deadlines.add(now + 0.2, late)
    deadlines.add(now + 0.05, early)  # earlier than the one before it: the timer is re-armed
    deadlines.add(now + 0.01, settled)
    settled.set_result(None)
    with pytest.raises(DeadlinePassed):
        await early
    assert not late.done()
    assert loop.time() - now >= 0.05 - 1e-3
    with pytest.raises(DeadlinePassed):
        await late
    assert loop.time() - now >= 0.2 - 1e-3
    assert expired == ["early", "late"]
    assert settled.result() is None
    assert len(deadlines) == 0


async def test_settled_entries_behind_a_stuck_one_do_not_pile_up() -> None:
    """100,000 confirms settled at once behind one that never settles: the heap stays near what is live."""
    loop = asyncio.get_running_loop()
    deadlines = ConfirmDeadlines()
    stuck = loop.create_future()
    deadlines.add(loop.time() + 3600, stuck)
    longest = 0
    live: list[asyncio.Future[None]] = []
    for i in range(100_000):
        future = loop.create_future()
        deadlines.add(loop.time() + 3600, future)
        live.append(future)
        if len(live) == 100:  # 100 in flight at a time, settled together
            for done in live:
                done.set_result(None)
            live.clear()
        longest = max(longest, len(deadlines))
        assert i < 2 or len(deadlines) <= 4096, len(deadlines)
    assert longest <= 4096
    deadlines.close()
    assert not stuck.done()  # close() stops the timer; it fails nothing


async def test_close_stops_the_timer() -> None:
    loop = asyncio.get_running_loop()
    deadlines = ConfirmDeadlines()
    future = loop.create_future()
    deadlines.add(loop.time() + 0.01, future)
    deadlines.close()
    await asyncio.sleep(0.05)
    assert not future.done()
