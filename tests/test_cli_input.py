"""How the command reads its input: pipes, terminals, regular files and /dev/null, on both event loops.

Pipes and terminals go through the event loop, regular files and devices through plain reads
(the loop refuses them as pipes; uvloop aborts the process on one). The lines loop hands the
lines to publish_many in batches and, when cancelled, still waits for what it handed out.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aiopublish import PublishResult, SerializationError
from aiopublish.cli._console import Console, Stats
from aiopublish.cli._input import LineReader
from aiopublish.cli._lines import LinePublisher
from tests.broker import Broker
from tests.test_cli import ROOT, SUMMARY

#: The command on each event loop: uvloop (installed with the test extra) and asyncio's own.
ON_LOOP = {
    "uvloop": ["-m", "aiopublish"],
    "asyncio": ["-c", "import sys; sys.modules['uvloop'] = None; from aiopublish.cli import main; sys.exit(main())"],
}


async def cli(loop: str, *argv: str, stdin: Any) -> tuple[int, str, str]:
    """Run the command on `loop` with `stdin` (a file descriptor or file), 60 s at most."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *ON_LOOP[loop],
        *argv,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def counts(out: str) -> tuple[int, ...]:
    match = SUMMARY.search(out)
    assert match, out
    return tuple(map(int, match.groups()))


# -- line batches ----------------------------------------------------------------------------


class Chunks:
    """An Input that returns the given chunks, one per read, then b""."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    async def read(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def close(self) -> None:
        pass


async def batches(*chunks: bytes, size: int = 10) -> list[list[tuple[int, bytes]]]:
    return [batch async for batch in LineReader(Chunks(*chunks), batch_size=size)]


async def test_a_batch_is_what_one_read_brought() -> None:
    """The complete lines of one read make one batch; a line split between reads is joined; numbers count all."""
    assert await batches(b"a\nb\nc", b"d\n\ne\n", b"f") == [
        [(1, b"a"), (2, b"b")],
        [(3, b"cd"), (4, b""), (5, b"e")],
        [(6, b"f")],
    ]


async def test_batches_hold_at_most_batch_size_lines() -> None:
    """2500 lines in one read come out as batches of at most `batch_size`, in order."""
    data = b"".join(b"%d\n" % n for n in range(2500))
    result = await batches(data, size=1000)
    assert [len(batch) for batch in result] == [1000, 1000, 500]
    assert [int(line) for batch in result for _, line in batch] == list(range(2500))


async def test_a_long_line_over_many_reads() -> None:
    """A line longer than many reads is one line; an empty input has no batch."""
    assert await batches(b"x" * 10, b"y" * 10, b"z\nnext") == [[(1, b"x" * 10 + b"y" * 10 + b"z")], [(2, b"next")]]
    assert await batches() == []


class HeldPublisher:
    """publish_many that waits for `release`; it refuses (as the real one does) a batch holding `bad`."""

    def __init__(self, bad: Any = None) -> None:
        self.bad = bad
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.calls: list[list[Any]] = []

    async def publish_many(self, payloads: list[Any]) -> list[PublishResult]:
        self.calls.append(payloads)
        if self.bad is not None and self.bad in payloads:
            raise SerializationError(f"payload {payloads.index(self.bad)}: cannot encode")
        self.started.set()
        await self.release.wait()
        return [PublishResult(i, f"id-{i}", "confirmed") for i in range(len(payloads))]


async def open_stdin(*lines: bytes) -> AsyncIterator[list[tuple[int, bytes]]]:
    """A batch of lines, then an input that never ends (a pipe whose writer is still there)."""
    yield list(enumerate(lines, 1))
    await asyncio.Event().wait()


async def test_cancelled_lines_loop_waits_for_what_it_handed_out() -> None:
    """Cancelled while a batch awaits its confirms (Ctrl-C, SIGTERM): the loop waits for them and counts them."""
    publisher = HeldPublisher()
    stats = Stats()
    loop = LinePublisher(publisher, Console(sys.stdout, sys.stderr), stats)  # type: ignore[arg-type]
    task = asyncio.get_running_loop().create_task(loop.run(open_stdin(b"1", b"2", b"3")))
    await publisher.started.wait()
    task.cancel()
    publisher.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (stats.sent, stats.confirmed, stats.failed) == (3, 3, 0)


async def test_a_payload_publish_many_refuses_fails_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """A batch publish_many refuses for one payload is published one by one: only that line fails."""
    publisher = HeldPublisher(bad=2)
    publisher.release.set()
    stats = Stats()
    loop = LinePublisher(publisher, Console(sys.stdout, sys.stderr), stats)  # type: ignore[arg-type]

    async def lines() -> AsyncIterator[list[tuple[int, bytes]]]:
        yield [(1, b"1"), (2, b"2"), (3, b"3")]

    await loop.run(lines())
    assert (stats.sent, stats.confirmed, stats.failed) == (3, 2, 1)
    assert loop.failures == [2]
    assert loop.stopped is None
    assert "line 2: payload 0: cannot encode" in capsys.readouterr().err


async def test_msgpack_value_it_cannot_encode_fails_alone(amqp_url: str, broker: Broker, tmp_path: Path) -> None:
    """With -s msgpack a line holding an int beyond 64 bits fails by its number; the other 99 are delivered."""
    queue = await broker.queue()
    lines = [json.dumps({"n": n}) for n in range(100)]
    lines[41] = json.dumps({"n": 2**70})
    path = tmp_path / "lines.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with path.open("rb") as stdin:
        argv = ("publish", "--lines", "-s", "msgpack", "--url", amqp_url, "-k", queue)
        code, out, err = await cli("uvloop", *argv, stdin=stdin)
    assert code == 1
    assert counts(out) == (100, 99, 0, 0, 1)
    assert "aiopublish: line 42: " in err
    assert err.rstrip().endswith("aiopublish: 1 line failed: 42")
    assert await broker.depth(queue) == 99


# -- what stdin can be -----------------------------------------------------------------------


@pytest.mark.parametrize("loop", list(ON_LOOP))
async def test_lines_from_a_regular_file_on_stdin(loop: str, amqp_url: str, broker: Broker, tmp_path: Path) -> None:
    """`< file.jsonl`: stdin is a regular file, which the loop cannot read as a pipe; every line is delivered."""
    queue = await broker.queue()
    path = tmp_path / "in.jsonl"
    path.write_text("".join(f'{{"n": {n}}}\n' for n in range(300)))
    with path.open("rb") as stdin:
        code, out, err = await cli(loop, "publish", "--lines", "--url", amqp_url, "-k", queue, stdin=stdin)
    assert code == 0, err
    assert counts(out) == (300, 300, 0, 0, 0)
    assert sorted(json.loads(m.body)["n"] for m in await broker.get_all(queue)) == list(range(300))


@pytest.mark.parametrize("loop", list(ON_LOOP))
async def test_body_from_a_regular_file_on_stdin(loop: str, amqp_url: str, broker: Broker, tmp_path: Path) -> None:
    """`publish - < file`: the body is the file's bytes, unchanged."""
    queue = await broker.queue()
    path = tmp_path / "body.bin"
    path.write_bytes(bytes(range(256)) * 1000)
    with path.open("rb") as stdin:
        code, _, err = await cli(loop, "publish", "-", "--url", amqp_url, "-k", queue, stdin=stdin)
    assert code == 0, err
    assert (await broker.get(queue)).body == bytes(range(256)) * 1000


@pytest.mark.parametrize("loop", list(ON_LOOP))
async def test_dev_null_on_stdin(loop: str, amqp_url: str, broker: Broker) -> None:
    """`< /dev/null` (a device, not a pipe): no line, nothing sent, exit 0; the event loop is never handed it."""
    queue = await broker.queue()
    argv = ("publish", "--lines", "--url", amqp_url, "-k", queue)
    code, out, err = await cli(loop, *argv, stdin=asyncio.subprocess.DEVNULL)  # /dev/null
    assert code == 0, err
    assert counts(out) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize("loop", list(ON_LOOP))
async def test_lines_from_a_terminal(loop: str, amqp_url: str, broker: Broker) -> None:
    """stdin a terminal: lines typed are published, Ctrl-D ends; the terminal is left blocking as it was."""
    queue = await broker.queue()
    master, slave = pty.openpty()
    try:
        os.write(master, b'{"n": 1}\n{"n": 2}\n\x04')  # \x04: Ctrl-D at the start of a line, the end of input
        code, out, err = await cli(loop, "publish", "--lines", "--url", amqp_url, "-k", queue, stdin=slave)
        assert os.get_blocking(slave)
    finally:
        os.close(master)
        os.close(slave)
    assert code == 0, err
    assert counts(out) == (2, 2, 0, 0, 0)
    assert [json.loads(m.body) for m in await broker.get_all(queue)] == [{"n": 1}, {"n": 2}]


@pytest.mark.parametrize("loop", list(ON_LOOP))
async def test_a_slow_writer_lines_go_out_as_they_come(loop: str, amqp_url: str, broker: Broker) -> None:
    """Through a pipe, the first line is delivered while the writer has not written the second yet."""
    queue = await broker.queue()
    process = await asyncio.create_subprocess_exec(
        sys.executable, *ON_LOOP[loop], "publish", "--lines", "--url", amqp_url, "-k", queue,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert process.stdin is not None
    process.stdin.write(b'{"n": 1}\n')
    await process.stdin.drain()
    async with asyncio.timeout(30):
        # The command says nothing per line: the queue is where to see it arrive.
        while await broker.depth(queue) < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        process.stdin.write(b'{"n": 2}\n')
        process.stdin.close()
        out, err = await process.communicate()
    assert process.returncode == 0, err
    assert counts(out.decode()) == (2, 2, 0, 0, 0)
    assert [json.loads(m.body) for m in await broker.get_all(queue)] == [{"n": 1}, {"n": 2}]
