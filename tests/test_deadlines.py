"""ConfirmDeadlines on a silent network: each publish's confirm deadline ends it at its own time (real broker).

The deadline heap itself, without a broker, is in tests/unit/test_deadlines.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from aiopublish import Publisher, PublishTimeout
from tests.broker import Broker
from tests.faults.proxy import TcpProxy


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
