"""How long the event loop stalls while 40,000 publishes time out together (a measurement, not a test).

The tests check that every one of them ends with its TimeoutError / PublishTimeout and that the
structures are left compact; how long the loop's longest turn is while that happens depends on
the machine and its load, so it is measured here, beside the same loop's idle turn:

    python benchmarks/loop_stalls.py            # in-flight limit waiters, publish() waiting for a slot
    python benchmarks/loop_stalls.py --silent   # also 40,000 written publishes on a silent network (needs RabbitMQ)

Before this moved here, the tests required the longest turn to stay under 0.2 s plus the idle turn
(the cyclic GC paused, as below).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiopublish import Publisher
from aiopublish._limit import InFlightLimit
from tests.broker import until
from tests.unit.test_limit import gather_timed

COUNT = 40_000


async def limit_waiters() -> tuple[float, float]:
    limit = InFlightLimit(1)
    assert limit.try_acquire()
    deadline = asyncio.get_running_loop().time() + 1.0

    async def wait() -> None:
        await limit.acquire(deadline)

    tasks = [asyncio.create_task(wait()) for _ in range(COUNT)]
    await asyncio.sleep(0)
    _, stall, idle = await gather_timed(tasks)
    return stall, idle


async def publishes_waiting_for_a_slot() -> tuple[float, float]:
    publisher = Publisher("memory://", max_in_flight=1, timeout=1.0)
    try:
        await publisher.publish({"warm": "up"})
        assert publisher._engine.slots.try_acquire()
        tasks = [asyncio.create_task(publisher.publish({"id": i})) for i in range(COUNT)]
        await asyncio.sleep(0)
        _, stall, idle = await gather_timed(tasks)
        publisher._engine.slots.release()
        return stall, idle
    finally:
        await publisher.close()


async def publishes_on_a_silent_network(url: str) -> tuple[float, float]:
    from tests.faults.proxy import TcpProxy

    async with TcpProxy("127.0.0.1", 5672) as proxy:
        publisher = Publisher(proxy.url(), routing_key="aiopublish-loop-stalls", max_in_flight=50_000, timeout=8.0)
        try:
            await publisher.connect()
            proxy.go_silent(True)
            tasks = [asyncio.create_task(publisher.publish({"id": i})) for i in range(COUNT)]
            await until(lambda: publisher.in_flight == COUNT, within=60, what="every publish written")
            _, stall, idle = await gather_timed(tasks)
            return stall, idle
        finally:
            proxy.go_silent(False)
            await publisher.close()


async def main(silent: bool) -> None:
    scenarios = [("40,000 limit waiters timing out", limit_waiters()),
                 ("40,000 publish() timing out for a slot", publishes_waiting_for_a_slot())]  # fmt: skip
    if silent:
        url = os.environ.get("AIOPUBLISH_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/")
        scenarios.append(("40,000 written publishes timing out, silent network", publishes_on_a_silent_network(url)))
    print("| scenario | longest loop turn (ms) | idle turn (ms) |\n| --- | ---: | ---: |")
    for name, scenario in scenarios:
        stall, idle = await scenario
        print(f"| {name} | {stall * 1e3:.1f} | {idle * 1e3:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--silent", action="store_true", help="also the silent-network scenario (RabbitMQ on 5672)")
    asyncio.run(main(parser.parse_args().silent))
