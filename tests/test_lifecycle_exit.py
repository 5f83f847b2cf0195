"""Unclosed publishers are quiet at exit: nothing on stderr, one ResourceWarning when warnings are on."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.broker import test_url as broker_url

# Publishes, keeps a publish in flight and a connection open, and ends its loop without close().
SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from aiopublish import Publisher

    publisher = Publisher(sys.argv[1], routing_key="t-exit-nobody-listens")

    async def main(leave_in_flight):
        await publisher.publish("one")
        results = await publisher.publish_many(["two", "three"])
        assert all(r.ok for r in results)
        if leave_in_flight:
            asyncio.get_running_loop().create_task(publisher.publish("left in flight"))
            await asyncio.sleep(0)

    asyncio.run(main(False))
    asyncio.run(main(True))  # a second loop: the publisher reconnects, then is left unclosed again
    print("done")
    """
)


def _run(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *flags, "-c", SCRIPT, broker_url()], capture_output=True, text=True, timeout=60
    )


def test_unclosed_publisher_prints_nothing_at_exit() -> None:
    """Without warnings enabled: no 'Task was destroyed', no 'never awaited', no disconnect log, nothing."""
    result = _run()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert result.stderr == ""


@pytest.mark.parametrize("flag", ["-Walways", "-Xdev"])
def test_unclosed_publisher_gives_one_resource_warning(flag: str) -> None:
    """With warnings on (-W always or -X dev) the only output is one ResourceWarning naming the publisher."""
    result = _run(flag)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    warnings = [line for line in lines if "ResourceWarning" in line]
    assert len(warnings) == 1, result.stderr
    assert "unclosed <Publisher amqp://" in warnings[0]
    # -X dev also reports any loop step over 0.1 s ("Executing <Task ...> took 0.105 seconds"):
    # a busy machine's timing, not something the publisher left behind.
    noise = [
        line
        for line in lines
        if "ResourceWarning" not in line
        and "close it with" not in line
        and not line.startswith("  ")
        and not (line.startswith("Executing <") and " took " in line)
    ]
    assert noise == [], result.stderr
