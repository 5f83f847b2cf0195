"""The spool across processes: 5,000 publishes spooled while the broker is unreachable, the process killed -9,
a new process with the same spool file delivers them all."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from tests.broker import Broker
from tests.faults.proxy import TcpProxy
from tests.test_outbox_support import message_ids

pytestmark = pytest.mark.slow

TIMEOUT = 3.0

_SCRIPT = r"""
import asyncio, json, sys
from aiopublish import Publisher
from aiopublish.outbox import Outbox

async def main(url, path, queue, mode, count, timeout):
    spool = Outbox(f"sqlite:///{path}")
    publisher = Publisher(url, spool=spool, routing_key=queue, timeout=timeout)
    await publisher.connect()
    if mode == "publish":
        loop = asyncio.get_running_loop()

        async def one(n):
            started = loop.time()
            result = await publisher.publish({"n": n})
            return result.message_id, result.status, loop.time() - started

        results = await asyncio.gather(*(one(n) for n in range(count)))
        with open(path + ".results", "w") as file:
            json.dump(results, file)
        print("spooled", flush=True)
        await asyncio.Event().wait()  # killed -9 here, the spool's relay still trying
    while (await spool.stats()).pending:
        await asyncio.sleep(0.05)
    print("drained", flush=True)
    await publisher.close()

url, path, queue, mode, count, timeout = sys.argv[1:]
asyncio.run(main(url, path, queue, mode, int(count), float(timeout)))
"""


async def _run(log: Path, *args: str) -> asyncio.subprocess.Process:
    """The script as a process; its log (a warning per retry while the broker is away) goes to a file, not a pipe."""
    with log.open("ab") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SCRIPT, *args, stdout=asyncio.subprocess.PIPE, stderr=stderr
        )


@pytest.mark.timeout(180)
async def test_spooled_messages_survive_kill_9(tmp_path: Path, broker: Broker, tcp_proxy: TcpProxy) -> None:
    """Broker unreachable: 5,000 publishes return "spooled" within their timeout; killed -9; a new process delivers
    all 5,000 once the broker is back: lost 0."""
    queue = await broker.queue()
    spool = str(tmp_path / "spool.db")
    tcp_proxy.refuse(True)
    log = tmp_path / "log"
    first = await _run(log, tcp_proxy.url(), spool, queue, "publish", "5000", str(TIMEOUT))
    assert first.stdout is not None
    try:
        line = await asyncio.wait_for(first.stdout.readline(), 120)
    finally:
        first.kill()
        await first.wait()
    assert first.returncode == -signal.SIGKILL
    assert line == b"spooled\n", log.read_text()[-2000:]
    results = json.loads(Path(spool + ".results").read_text())  # noqa: ASYNC240 - a small file, once
    assert len(results) == 5000
    assert {status for _, status, _ in results} == {"spooled"}
    slowest = max(elapsed for _, _, elapsed in results)
    assert slowest < TIMEOUT
    tcp_proxy.refuse(False)
    second = await _run(log, tcp_proxy.url(), spool, queue, "drain", "0", str(TIMEOUT))
    out, _ = await asyncio.wait_for(second.communicate(), 120)
    assert second.returncode == 0 and out == b"drained\n", log.read_text()[-2000:]
    arrived = await message_ids(broker, queue)
    print(f"\nspool: 5,000 spooled (slowest publish {slowest:.2f} s), killed -9, lost {5000 - len(arrived)}")
    assert set(arrived) == {message_id for message_id, _, _ in results}
