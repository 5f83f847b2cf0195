"""`aiopublish relay --show-failed / --requeue-failed` and its usage errors, as a user runs them."""

from __future__ import annotations

import asyncio

from aiopublish import Publisher
from aiopublish.outbox import Outbox
from tests.broker import Broker
from tests.test_outbox_support import pg_dsn, relay_command, unique_table

__all__ = ["pg_dsn"]


async def _run(*argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_show_and_requeue_failed(pg_dsn: str, broker: Broker, amqp_url: str) -> None:
    """--show-failed lists the poison message with its error; --requeue-failed puts it back in line."""
    table = unique_table()
    missing = broker.name("missing")
    async with Outbox(pg_dsn, table=table) as outbox:
        poison = await outbox.add("poison", exchange=missing, routing_key="k")
        async with Publisher(amqp_url) as publisher, outbox.relay(publisher, max_attempts=1) as relay:
            await relay.wait_idle()
        status, out, err = await _run(*relay_command(pg_dsn, table, amqp_url, "--show-failed"))
        assert status == 0, err
        lines = out.splitlines()
        assert lines[-1] == "1 failed message(s)"
        assert lines[0].startswith(poison + "\t")
        assert f"exchange={missing!r}" in lines[0] and "attempts=1" in lines[0] and "NotFound" in lines[0]
        status, out, err = await _run(*relay_command(pg_dsn, table, amqp_url, "--requeue-failed"))
        assert (status, out) == (0, "requeued 1 failed message(s)\n"), err
        stats = await outbox.stats()
        assert (stats.pending, stats.failed) == (1, 0)


async def test_relay_usage_errors(amqp_url: str) -> None:
    """No --outbox, or a DSN of another kind: exit status 2 and one line saying what is wrong."""
    import sys

    status, _, err = await _run(sys.executable, "-m", "aiopublish", "relay", "--url", amqp_url)
    assert status == 2 and "--outbox DSN is required" in err
    status, _, err = await _run(sys.executable, "-m", "aiopublish", "relay", "--outbox", "mysql://x/y")
    assert status == 2 and "must start with postgresql:// or sqlite:///" in err
