"""ConfirmDeadlines: one timer for every confirm being waited for (the publish fast path's deadlines)."""

from __future__ import annotations

import asyncio
import time

import pytest

from aiopublish import Publisher, PublishTimeout
from aiopublish._deadlines import ConfirmDeadlines, DeadlinePassed
from tests.broker import Broker
from tests.faults.proxy import TcpProxy


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


@pytest.mark.parametrize("count", [500])
async def test_interleaved_timeouts_on_a_silent_network_each_end_at_their_own(
    broker: Broker, tcp_proxy: TcpProxy, count: int
) -> None:
    """500 publishes written on a silent network, timeouts 0.5 s and 1.5 s alternating: each raises at its own.

    Every one is a PublishTimeout naming its own timeout, none before its deadline and none
    later than 1 s after it; then the publisher reconnects and publishes again.
    """
    queue = await broker.queue()
    async with Publisher(tcp_proxy.url(), routing_key=queue, max_in_flight=2 * count) as publisher:
        await publisher.publish("before")
        tcp_proxy.go_silent(True)
        ended: dict[int, float] = {}
        started = time.monotonic()

        async def publish(i: int) -> BaseException | None:
            try:
                await publisher.publish({"id": i}, timeout=0.5 if i % 2 else 1.5)
            except BaseException as exc:  # the outcome is what is tested
                return exc
            finally:
                ended[i] = time.monotonic() - started
            return None

        outcomes = await asyncio.gather(*(publish(i) for i in range(count)))
        tcp_proxy.go_silent(False)
        for i, outcome in enumerate(outcomes):
            timeout = 0.5 if i % 2 else 1.5
            assert isinstance(outcome, PublishTimeout), (i, outcome)
            assert f"within {timeout} s" in str(outcome)
            assert timeout - 0.01 <= ended[i] <= timeout + 1.0, (i, ended[i])
        await publisher.publish("after", timeout=10)
        assert publisher.metrics.reconnects == 1  # the liveness probe dropped the frozen connection
    bodies = [m.body for m in await broker.get_all(queue)]
    assert bodies[0] == b'"before"' and bodies[-1] == b'"after"'
