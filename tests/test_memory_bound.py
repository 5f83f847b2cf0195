"""Bounded memory: 100,000 publishes started at once stay within a fixed memory budget, all confirmed.

Two bounds, both on peak RSS (VmHWM) of a fresh process that imported aiopublish and
connected a Publisher: an absolute one, and one per publish above the floor, the same
100,000 coroutines (same payloads, same keywords) run as bare tasks that each wait for
a future of their own, released in arrival order a window at a time as slots are. The
floor is what asyncio and the workload cost without aiopublish; the second bound holds
on any machine whose Python allocates alike, whatever its baseline RSS. The floor runs
in a fresh process of its own rather than after the publishes in the same one: what a
first phase leaves behind (pymalloc arenas a few live objects keep) moved a second
phase's peak by 0.6-10 MB here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest

from tests.broker import Broker

COUNT = 100_000
# Peak RSS of the publishes, MB. Measured here (Python 3.11, RabbitMQ 3.10): 181 MB; the floor 167 MB
# (30 MB of it before publishing); 191-193 MB with a heap entry per queued publish's deadline.
PEAK_MB = 195
# Peak RSS above the floor's, per publish, bytes. Measured here: about 145 (the publish coroutine's
# larger frame and its deadline); 245 with a heap entry per queued publish's deadline.
ABOVE_FLOOR_BYTES = 200

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from aiopublish import Publisher

    def peak_kb():
        # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's RSS at fork (pytest's).
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    async def floor(count, queue, window):
        waiting = []

        async def bare(payload, **kwargs):
            future = asyncio.get_running_loop().create_future()
            waiting.append(future)
            await future

        everything = asyncio.gather(*(bare({"id": i, "body": "x" * 120}, routing_key=queue) for i in range(count)))
        while len(waiting) < count:
            await asyncio.sleep(0)
        for start in range(0, count, window):
            for future in waiting[start : start + window]:
                future.set_result(None)
            await asyncio.sleep(0)
        return await everything

    async def main(url, queue, count, mode):
        async with Publisher(url) as publisher:
            before = peak_kb()
            if mode == "floor":
                results = await floor(count, queue, publisher.max_in_flight)
            else:
                results = await asyncio.gather(
                    *(publisher.publish({"id": i, "body": "x" * 120}, routing_key=queue) for i in range(count)),
                    return_exceptions=True,
                )
        peak = peak_kb()
        errors = sum(isinstance(r, BaseException) for r in results)
        print(json.dumps({"before_mb": before / 1024, "peak_mb": peak / 1024, "errors": errors}))

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    """
)


async def run(amqp_url: str, queue: str, mode: str) -> dict[str, float]:
    command = [sys.executable, "-c", SCRIPT, amqp_url, queue, str(COUNT), mode]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.slow
async def test_100k_concurrent_publishes_stay_under_budget(amqp_url: str, broker: Broker) -> None:
    """100,000 concurrent publish() calls (in a fresh process) peak below 195 MB RSS, at most 200 bytes
    per publish above bare tasks doing the same waiting, and all are confirmed."""
    queue = await broker.queue()
    floor = await run(amqp_url, queue, "floor")
    report = await run(amqp_url, queue, "publish")
    above = (report["peak_mb"] - floor["peak_mb"]) * 1024 * 1024 / COUNT
    print(f"\n100,000 concurrent publishes: {report}; floor: {floor}; {above:.0f} bytes per publish above the floor")
    assert floor["errors"] == 0
    assert report["errors"] == 0
    assert report["peak_mb"] < PEAK_MB
    assert above < ABOVE_FLOOR_BYTES
    assert await broker.depth(queue) == COUNT
