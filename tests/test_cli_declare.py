"""The command on an empty broker: declaring exchanges, queues and bindings; --timeout; SIGTERM; missing extras."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator

import aiormq
import pytest
import pytest_asyncio

from tests.broker import Broker
from tests.test_cli import ROOT, Result, Runner, run, subprocess_cli

__all__ = ["run"]  # the fixture, shared with test_cli


async def test_declare_exchange_queue_and_bindings(run: Runner, amqp_url: str, broker: Broker) -> None:
    """--declare-exchange X:topic, --declare-queue Q -e X: Q is bound with the routing key and each --bind-key."""
    exchange, queue = broker.name("x"), broker.name("q")
    first = await run(
        "publish", '{"n": 1}', "-s", "json", "--url", amqp_url, "-e", exchange, "-k", "orders.paid",
        "--declare-exchange", f"{exchange}:topic", "--declare-queue", queue,
        "--bind-key", "refunds.*", "--bind-key", "audit.#",
    )  # fmt: skip
    assert first.code == 0, first.err
    # No declarations now: routed by the bindings made above, topic patterns included.
    for key, n in (("orders.paid", 2), ("refunds.eu", 3), ("audit.a.b", 4)):
        result = await run("publish", json.dumps({"n": n}), "-s", "json", "--url", amqp_url, "-e", exchange, "-k", key)
        assert result.code == 0, (key, result.err)
    unroutable = await run("publish", "x", "--url", amqp_url, "-e", exchange, "-k", "refunds.eu.late")
    assert unroutable.code == 1
    assert [json.loads(m.body)["n"] for m in await broker.get_all(queue)] == [1, 2, 3, 4]


async def test_declare_queue_with_exchange_declares_a_direct_one(run: Runner, amqp_url: str, broker: Broker) -> None:
    """--declare-queue Q -e X -k K with X missing: X is declared (durable direct), Q bound with K, the message in Q."""
    exchange, queue = broker.name("x"), broker.name("q")
    result = await run("publish", "hi", "--url", amqp_url, "-e", exchange, "-k", "key", "--declare-queue", queue)
    assert result.code == 0, result.err
    assert [m.body for m in await broker.get_all(queue)] == [b"hi"]
    channel = await broker.channel()
    await channel.exchange_declare(exchange, exchange_type="direct", durable=True)  # equivalent: no 406


async def test_declare_exchange_is_repeatable(run: Runner, amqp_url: str, broker: Broker) -> None:
    """Two --declare-exchange declare both, each with its type (a redeclare with another type is refused)."""
    fanout, direct, queue = broker.name("x"), broker.name("x"), await broker.queue()
    argv = ("--declare-exchange", f"{fanout}:fanout", "--declare-exchange", direct)
    result = await run("publish", "x", "--url", amqp_url, "-k", queue, *argv)
    assert result.code == 0, result.err
    channel = await broker.channel()
    await channel.exchange_declare(fanout, exchange_type="fanout", durable=True)
    await channel.exchange_declare(direct, exchange_type="direct", durable=True)
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="inequivalent arg 'type'"):
        await channel.exchange_declare(fanout, exchange_type="direct", durable=True)


async def test_binding_to_an_existing_exchange_of_another_type(run: Runner, amqp_url: str, broker: Broker) -> None:
    """--declare-queue Q -e X where X is a topic exchange: one line saying so and how to give the type; exit 1."""
    exchange = await broker.exchange("topic")
    queue = broker.name("q")
    result = await run("publish", "x", "--url", amqp_url, "-e", exchange, "-k", "a", "--declare-queue", queue)
    assert result.code == 1
    assert result.err.count("\n") == 1, result.err
    assert "inequivalent arg 'type'" in result.err
    assert "--declare-exchange NAME:TYPE" in result.err
    ok = await run(
        "publish", "x", "--url", amqp_url, "-e", exchange, "-k", "a", "--declare-queue", queue,
        "--declare-exchange", f"{exchange}:topic",
    )  # fmt: skip
    assert ok.code == 0, ok.err
    assert [m.body for m in await broker.get_all(queue)] == [b"x"]


@pytest.mark.parametrize(
    ("argv", "extra", "module"),
    [(["-s", "msgpack"], "msgpack", "msgpack"), (["-z", "zstd"], "zstd", "zstandard")],
)
async def test_codec_of_a_missing_extra_names_it(
    run: Runner, monkeypatch: pytest.MonkeyPatch, argv: list[str], extra: str, module: str
) -> None:
    """-s msgpack / -z zstd without the extra: exit 2 naming the extra and the install command from a clone."""
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    result = await run("publish", "1", *argv, "--url", "amqp://guest:guest@127.0.0.1:1/")
    assert result.code == 2
    assert f'needs the {extra} extra, which is not installed: pip install ".[{extra}]"' in result.err


# -- time limits and signals -----------------------------------------------------------------


class SilentListener:
    """A TCP server that accepts connections and never says a word (a broker that hangs)."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self.accepted.set()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"


@pytest_asyncio.fixture
async def silent() -> AsyncIterator[SilentListener]:
    listener = SilentListener()
    server = await asyncio.start_server(listener._serve, "127.0.0.1", 0)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        server.close()
        for writer in listener._writers:
            writer.transport.abort()
        await server.wait_closed()


async def test_timeout_bounds_connecting(silent: SilentListener) -> None:
    """A broker that accepts and never answers: --timeout 1 gives up after about 1 s, in one line, exit 1."""
    started = time.monotonic()
    result = await subprocess_cli("publish", "x", "-k", "q", "--url", silent.url, "--timeout", "1")
    elapsed = time.monotonic() - started
    assert result.code == 1
    assert result.err.count("\n") == 1, result.err
    assert "timed out after 1 s connecting to" in result.err
    assert elapsed < 8  # startup included; the connect timeout used to be 10 s whatever --timeout said


@pytest.mark.slow
async def test_timeout_longer_than_the_old_connect_cap(silent: SilentListener) -> None:
    """--timeout 12 against a silent broker waits the 12 s it was given, not aiopublish's 10 s connect default."""
    started = time.monotonic()
    result = await subprocess_cli("publish", "x", "-k", "q", "--url", silent.url, "--timeout", "12")
    assert result.code == 1
    assert time.monotonic() - started >= 12
    assert "timed out after 12 s connecting to" in result.err


async def test_sigterm_while_connecting(silent: SilentListener) -> None:
    """SIGTERM while connecting (to a broker that never answers): exit 143 and one line, at once."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiopublish", "publish", "x", "-k", "q", "--url", silent.url, "--timeout", "60",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        await silent.accepted.wait()
        process.send_signal(signal.SIGTERM)
        out, err = await process.communicate()
    assert process.returncode == 143, err
    assert err.decode() == "aiopublish: interrupted by SIGTERM\n"
    assert out == b""


async def test_sigterm_drains_and_prints_the_summary(amqp_url: str, broker: Broker) -> None:
    """SIGTERM during --json-lines (stdin still open): the summary of what was confirmed, then exit 143."""
    queue = await broker.queue()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "aiopublish", "publish", "--lines", "--url", amqp_url, "-k", queue),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    process.stdin.write(b"1\n2\n3\n4\n")
    await process.stdin.drain()
    async with asyncio.timeout(30):
        # Until the four lines are in the queue (the command then waits for more): no event tells, so poll.
        while await broker.depth(queue) < 4:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.gather(process.stdout.read(), process.stderr.read())
        code = await process.wait()
    process.stdin.close()
    assert code == 143, err
    assert Result(code, out.decode(), err.decode()).summary() == {
        "sent": 4, "confirmed": 4, "returned": 0, "nacked": 0, "failed": 0,
    }  # fmt: skip
    assert err.decode().splitlines() == ["aiopublish: interrupted after line 4", "aiopublish: interrupted by SIGTERM"]
