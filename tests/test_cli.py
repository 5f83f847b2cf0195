"""The `aiopublish` command against the real broker, in-process (main(argv)) and as `python -m aiopublish`."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Protocol

import pytest

from aiopublish import cli
from aiopublish.cli import _console, main
from tests.broker import Broker

NOWHERE = ("--url", "amqp://guest:guest@127.0.0.1:1/")  # usage errors must be found before connecting
ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(
    r"^sent (\d+), confirmed (\d+), returned (\d+), nacked (\d+), failed (\d+) in [\d.]+ s \(\d+ msgs/s\)$", re.M
)


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    def summary(self) -> dict[str, int]:
        match = SUMMARY.search(self.out)
        assert match, f"no summary line in {self.out!r} (stderr: {self.err!r})"
        return dict(zip(("sent", "confirmed", "returned", "nacked", "failed"), map(int, match.groups()), strict=True))


class Runner(Protocol):
    def __call__(self, *argv: str, stdin: bytes = b"") -> Awaitable[Result]: ...


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Runner:
    """Run main(argv) in a thread of its own (it calls asyncio.run), with stdin given as bytes."""

    async def run(*argv: str, stdin: bytes = b"") -> Result:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(argv))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


async def subprocess_cli(*argv: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Result:
    """Run `python -m aiopublish ARGV` and wait for it (60 s at most)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiopublish",
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


# -- one message -----------------------------------------------------------------------------


async def test_body_argument(run: Runner, amqp_url: str, broker: Broker) -> None:
    """BODY is published as it is (raw, utf-8) and the printed message id is the message's."""
    queue = await broker.queue()
    result = await run("publish", "hello wörld", "--url", amqp_url, "-k", queue)
    assert result.code == 0, result.err
    message = await broker.get(queue)
    assert message.body == "hello wörld".encode()
    assert message.header.properties.content_type == "application/data"
    assert message.header.properties.content_encoding == "utf-8"
    assert message.header.properties.delivery_mode == 2
    assert f"confirmed message {message.header.properties.message_id} " in result.out
    assert result.err == ""


async def test_body_from_file(run: Runner, amqp_url: str, broker: Broker, tmp_path: Path) -> None:
    """--file PATH publishes the file's bytes unchanged, labelled binary."""
    queue = await broker.queue()
    path = tmp_path / "body.bin"
    path.write_bytes(b"\x00\xff binary\n")
    result = await run("publish", "--file", str(path), "--url", amqp_url, "--routing-key", queue)
    assert result.code == 0, result.err
    message = await broker.get(queue)
    assert message.body == b"\x00\xff binary\n"
    assert message.header.properties.content_encoding == "binary"


async def test_body_from_stdin_subprocess(amqp_url: str, broker: Broker) -> None:
    """`python -m aiopublish publish -` publishes stdin, with the URL from AIOPUBLISH_URL."""
    queue = await broker.queue()
    result = await subprocess_cli("publish", "-", "-k", queue, stdin=b"from stdin", env={"AIOPUBLISH_URL": amqp_url})
    assert result.code == 0, result.err
    assert (await broker.get(queue)).body == b"from stdin"


async def test_headers_and_properties_reach_the_message(run: Runner, amqp_url: str, broker: Broker) -> None:
    """Every --header and --property arrives on the message, typed as the broker stores it."""
    queue = await broker.queue(**{"x-max-priority": 10})
    result = await run(
        "publish", "body", "--url", amqp_url, "-k", queue, "--transient",
        "-H", "source=cli", "-H", "attempt:=3", "-H", "tags:=[\"a\", \"b\"]", "-H", "eq=a=b",
        "-p", "content_type=text/plain", "-p", "reply_to=replies", "-p", "correlation_id=corr-1",
        "-p", "message_id=msg-1", "-p", "type=greeting", "-p", "app_id=tests", "-p", "user_id=guest",
        "-p", "expiration=60", "-p", "priority=7", "-p", "timestamp=1700000000", "-p", "cluster-id=c1",
    )  # fmt: skip
    assert result.code == 0, result.err
    message = await broker.get(queue)
    props = message.header.properties
    assert props.headers == {"source": "cli", "attempt": 3, "tags": ["a", "b"], "eq": "a=b"}
    assert (props.content_type, props.content_encoding) == ("text/plain", "utf-8")
    assert (props.reply_to, props.correlation_id, props.message_id) == ("replies", "corr-1", "msg-1")
    assert (props.message_type, props.app_id, props.user_id, props.cluster_id) == ("greeting", "tests", "guest", "c1")
    assert (props.expiration, props.priority, props.delivery_mode) == ("60000", 7, 1)
    assert props.timestamp is not None and props.timestamp.timestamp() == 1700000000
    assert "confirmed message msg-1 " in result.out


async def test_json_serializer_reads_body_as_json(run: Runner, amqp_url: str, broker: Broker) -> None:
    """--serializer json decodes BODY as JSON and publishes the value as application/json."""
    queue = await broker.queue()
    result = await run("publish", '{"order": 42}', "--url", amqp_url, "-k", queue, "-s", "json")
    assert result.code == 0, result.err
    message = await broker.get(queue)
    assert message.header.properties.content_type == "application/json"
    assert json.loads(message.body) == {"order": 42}


async def test_declare_queue_routes_to_it(run: Runner, amqp_url: str, broker: Broker) -> None:
    """--declare-queue NAME declares a durable queue and, on the default exchange, routes to it."""
    name = broker.name("q")
    result = await run("publish", "x", "--url", amqp_url, "--declare-queue", name)
    assert result.code == 0, result.err
    assert [m.body for m in await broker.get_all(name)] == [b"x"]


async def test_unroutable_single_message_fails_by_default(run: Runner, amqp_url: str, broker: Broker) -> None:
    """Mandatory is the CLI's default: one message no queue takes is exit 1 and one line saying it was returned."""
    exchange = await broker.exchange("direct")
    result = await run("publish", "x", "--url", amqp_url, "-e", exchange, "-k", "nowhere")
    assert result.code == 1
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert "returned by the broker: 312 NO_ROUTE" in result.err


async def test_no_mandatory_lets_the_broker_drop_it(run: Runner, amqp_url: str, broker: Broker) -> None:
    """--no-mandatory: the broker confirms a message no queue takes (and drops it); exit 0, as nameko would."""
    exchange = await broker.exchange("direct")
    queue = await broker.queue()
    await broker.bind(queue, exchange, "somewhere")
    result = await run("publish", "x", "--url", amqp_url, "-e", exchange, "-k", "nowhere", "--no-mandatory")
    assert result.code == 0, result.err
    assert "confirmed message " in result.out
    assert await broker.depth(queue) == 0


# -- JSON lines ------------------------------------------------------------------------------


async def test_json_lines_bad_line_fails_alone(run: Runner, amqp_url: str, broker: Broker, tmp_path: Path) -> None:
    """A line that is not JSON fails by its number (blank lines counted, not sent); the others are delivered."""
    queue = await broker.queue()
    path = tmp_path / "in.jsonl"
    path.write_text('{"n": 1}\n\n{"n": 2}\nnot json\n{"n": 3}\n[4]\n')
    result = await run("publish", "--json-lines", "--file", str(path), "--url", amqp_url, "-k", queue)
    assert result.code == 1
    assert result.summary() == {"sent": 4, "confirmed": 4, "returned": 0, "nacked": 0, "failed": 1}
    assert "aiopublish: line 4: invalid JSON" in result.err
    assert result.err.rstrip().endswith("aiopublish: 1 line failed: 4")
    messages = await broker.get_all(queue)
    assert sorted(json.dumps(json.loads(m.body)) for m in messages) == sorted(
        json.dumps(value) for value in ({"n": 1}, {"n": 2}, {"n": 3}, [4])
    )
    assert {m.header.properties.content_type for m in messages} == {"application/json"}


async def test_json_lines_from_stdin_subprocess(amqp_url: str, broker: Broker) -> None:
    """2000 lines piped to `python -m aiopublish publish --lines` are all confirmed; exit 0; no '\\r' off a TTY."""
    queue = await broker.queue()
    lines = b"".join(json.dumps({"n": n}).encode() + b"\n" for n in range(2000))
    result = await subprocess_cli(
        "publish", "--lines", "--url", amqp_url, "-k", queue, "--window", "64", "-H", "batch=b1", stdin=lines
    )
    assert result.code == 0, result.err
    assert result.summary() == {"sent": 2000, "confirmed": 2000, "returned": 0, "nacked": 0, "failed": 0}
    assert "\r" not in result.err
    messages = await broker.get_all(queue)
    assert sorted(json.loads(m.body)["n"] for m in messages) == list(range(2000))
    assert {(m.header.properties.headers or {}).get("batch") for m in messages} == {"b1"}


async def test_json_lines_mandatory_no_route(run: Runner, amqp_url: str, broker: Broker) -> None:
    """Lines no queue takes (mandatory by default) are counted as returned, listed by number, and exit 1."""
    exchange = await broker.exchange("direct")
    stdin = b'{"a": 1}\n{"a": 2}\n{"a": 3}\n'
    argv = ("publish", "--lines", "--url", amqp_url, "-e", exchange, "-k", "nowhere")
    result = await run(*argv, stdin=stdin)
    assert result.code == 1
    assert result.summary() == {"sent": 3, "confirmed": 0, "returned": 3, "nacked": 0, "failed": 0}
    assert "aiopublish: 3 lines failed: 1-3" in result.err
    assert result.err.count("returned by the broker: 312 NO_ROUTE") == 3


async def test_json_lines_nacked_are_counted(run: Runner, amqp_url: str, broker: Broker) -> None:
    """Into a full reject-publish queue of length 1, one line of three is confirmed and two are nacked."""
    queue = await broker.queue(**{"x-max-length": 1, "x-overflow": "reject-publish"})
    result = await run("publish", "--lines", "--url", amqp_url, "-k", queue, stdin=b"1\n2\n3\n")
    assert result.code == 1
    assert result.summary() == {"sent": 3, "confirmed": 1, "returned": 0, "nacked": 2, "failed": 0}
    assert result.err.count("nacked by the broker") == 2
    assert await broker.depth(queue) == 1


async def test_json_lines_stop_when_the_exchange_is_missing(run: Runner, amqp_url: str, broker: Broker) -> None:
    """A missing exchange fails the lines handed out (two windows at most) and stops reading: 'stopped after line N'."""
    missing = broker.name("x")
    stdin = b"".join(b"%d\n" % n for n in range(1000))
    result = await run("publish", "--lines", "--url", amqp_url, "-e", missing, "--window", "16", stdin=stdin)
    assert result.code == 1
    counts = result.summary()
    assert counts["confirmed"] == 0
    assert 1 <= counts["sent"] <= 2 * 16
    assert counts["failed"] == counts["sent"]
    assert "NotFound" in result.err
    assert re.search(r"stopped after line \d+", result.err)


async def test_interrupt_reports_what_was_confirmed(amqp_url: str, broker: Broker) -> None:
    """SIGINT during --json-lines (stdin still open): the summary of what was confirmed, then exit 130."""
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
    process.stdin.write(b"1\n2\n3\n")
    await process.stdin.drain()
    async with asyncio.timeout(30):
        # Until the three lines are confirmed (the command then waits for more): no event tells, so poll the depth.
        while await broker.depth(queue) < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.gather(process.stdout.read(), process.stderr.read())
        code = await process.wait()
    process.stdin.close()
    assert code == 130, err
    assert Result(code, out.decode(), err.decode()).summary() == {
        "sent": 3, "confirmed": 3, "returned": 0, "nacked": 0, "failed": 0,
    }  # fmt: skip
    assert "aiopublish: interrupted after line 3" in err.decode()
    assert "Traceback" not in err.decode()


# -- errors ----------------------------------------------------------------------------------


async def test_no_routing_key_on_default_exchange_warns(run: Runner, amqp_url: str) -> None:
    """The default exchange without a routing key: warned about, then returned (exit 1); --no-mandatory: exit 0."""
    result = await run("publish", "x", "--url", amqp_url)
    assert result.code == 1
    assert "warning: no --routing-key" in result.err
    assert "returned by the broker: 312 NO_ROUTE" in result.err
    dropped = await run("publish", "x", "--url", amqp_url, "--no-mandatory")
    assert dropped.code == 0, dropped.err
    assert "warning: no --routing-key" in dropped.err


async def test_unreachable_broker_is_one_masked_line() -> None:
    """With no broker at the URL: exit 1, one line on stderr, no traceback and no password."""
    result = await subprocess_cli("publish", "x", "-k", "q", "--url", "amqp://guest:s3cret-pw@127.0.0.1:1/")
    assert result.code == 1
    assert result.out == ""
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith("aiopublish: error: cannot connect to amqp://guest:******@127.0.0.1:1/")
    assert "s3cret-pw" not in result.err


async def test_unreachable_broker_json_lines(run: Runner) -> None:
    """--json-lines with no broker: exit 1 and one error line, the password masked."""
    result = await run("publish", "--lines", "-k", "q", "--url", "amqp://bob:s3cret-pw@127.0.0.1:1/", stdin=b"1\n")
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert "s3cret-pw" not in result.err + result.out
    assert "bob:******@" in result.err


async def test_refused_login_is_masked(run: Runner, amqp_url: str) -> None:
    """A wrong password: exit 1, one line naming the refused login, the password masked."""
    from yarl import URL

    url = str(URL(amqp_url).with_password("not-the-pw-42"))
    result = await run("publish", "x", "-k", "q", "--url", url)
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert "refused the login" in result.err
    assert "not-the-pw-42" not in result.err + result.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["publish", *NOWHERE], "no body"),
        (["publish", "x", "-p", "colour=red", *NOWHERE], "unknown property 'colour'"),
        (["publish", "x", "-p", "priority=high", *NOWHERE], "priority must be an integer"),
        (["publish", "x", "-p", "priority=300", *NOWHERE], "priority must be an int from 0 to 255"),
        (["publish", "x", "-H", "novalue", *NOWHERE], "--header takes K=V"),
        (["publish", "x", "-H", "n:=nope", *NOWHERE], "not JSON"),
        (["publish", "x", "--file", "body.txt", *NOWHERE], "BODY or --file, not both"),
        (["publish", "--lines", "-s", "raw", *NOWHERE], "decodes every line as JSON"),
        (["publish", "x", "-s", "yaml", *NOWHERE], "unknown serializer 'yaml'"),
        (["publish", "not json", "-s", "json", *NOWHERE], "the body is not JSON, which --serializer json needs"),
        (["publish", "x", "--bind-key", "a.*", "-e", "x", *NOWHERE], "give --declare-queue NAME too"),
        (["publish", "x", "--declare-queue", "q", "--bind-key", "a", *NOWHERE], "--bind-key needs --exchange"),
        (["publish", "x", "--declare-exchange", "shop:nope", *NOWHERE], "the type must be one of direct"),
        (["publish", "x", "--declare-exchange", ":topic", *NOWHERE], "takes NAME[:TYPE]"),
        (["publish", "x", "--persistent", "-p", "delivery_mode=1", *NOWHERE], "not both"),
        (["publish", "x", "--url", "http://u:pw-in-url@host/"], "must start with amqp://"),
        (["publish", "x", "--timeout", "0", *NOWHERE], "must be a number of seconds > 0"),
        (["publish", "--file", "/nonexistent/file", *NOWHERE], "cannot read /nonexistent/file"),
        (["publish", "x", "--transient", "--persistent", *NOWHERE], "not allowed with argument"),
        (["frobnicate"], "invalid choice"),
        ([], "usage: aiopublish"),
    ],
)
async def test_usage_errors_exit_2(run: Runner, argv: list[str], message: str) -> None:
    """A bad command line exits 2 with a message saying what is wrong, before connecting to anything."""
    result = await run(*argv)
    assert result.code == 2
    assert message in result.err
    assert "pw-in-url" not in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("argv", "usage", "hint"),
    [
        (["--routing_key", "orders"], "usage: aiopublish [-h]", "did you mean 'aiopublish publish --routing-key'?"),
        (["--routing_key"], "usage: aiopublish [-h]", "did you mean 'aiopublish publish --routing-key'?"),
        (
            ["publish", "--routing_key", "orders", "x", *NOWHERE],
            "usage: aiopublish publish",
            "did you mean --routing-key?",
        ),
        (
            ["publish", "x", "--declare_queue", "q", *NOWHERE],
            "usage: aiopublish publish",
            "did you mean --declare-queue?",
        ),
        (["publish", "x", "--exchnge=shop", *NOWHERE], "usage: aiopublish publish", "did you mean --exchange?"),
    ],
)
async def test_a_misspelt_option_gets_its_commands_usage_and_a_did_you_mean(
    run: Runner, argv: list[str], usage: str, hint: str
) -> None:
    """`aiopublish --routing_key`: exit 2, the usage of the command the option belongs to, and what was meant."""
    result = await run(*argv)
    assert result.code == 2
    assert result.err.startswith(usage), result.err
    assert "unrecognized arguments: " in result.err
    assert hint in result.err.replace("\n", " ")


async def test_an_option_like_no_other_gets_no_guess(run: Runner) -> None:
    """An unknown option that resembles none is reported with the subcommand's usage, and no guess."""
    result = await run("publish", "x", "--frobnicate", *NOWHERE)
    assert result.code == 2
    assert result.err.startswith("usage: aiopublish publish")
    assert "unrecognized arguments: --frobnicate" in result.err and "did you mean" not in result.err


async def test_help(run: Runner) -> None:
    """`aiopublish --help` and `aiopublish publish --help` exit 0 and describe every option; no password shown."""
    top = await run("--help")
    assert top.code == 0
    assert "publish" in top.out and "exit status" in top.out
    publish = await run("publish", "--help")
    assert publish.code == 0
    for option in (
        "--url", "--exchange", "--routing-key", "--header", "--property", "--persistent", "--transient",
        "--mandatory", "--no-mandatory", "--serializer", "--compression", "--declare-queue", "--declare-exchange",
        "--bind-key", "--timeout", "--file",
        "--json-lines", "--lines", "--window", "AIOPUBLISH_URL", "exit status",
    ):  # fmt: skip
        assert option in publish.out, option
    assert "guest:guest" not in publish.out


async def test_help_subprocess() -> None:
    """`python -m aiopublish publish --help` works as a program."""
    result = await subprocess_cli("publish", "--help")
    assert result.code == 0
    assert result.out.startswith("usage: aiopublish publish")


# -- output pieces ---------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line() -> None:
    """On a TTY progress is one line redrawn with '\\r'; a message clears it and takes a line of its own."""
    stream = FakeTerminal()
    stats = _console.Stats()
    progress = _console.Progress(stats, stream)
    progress.draw()
    stats.sent = stats.confirmed = 12
    progress.draw()
    progress.message("aiopublish: line 3: invalid JSON")
    text = stream.getvalue()
    assert text.startswith("\rsent 0, confirmed 0")
    assert "\rsent 12, confirmed 12" in text
    assert text.endswith("\raiopublish: line 3: invalid JSON\n")
    assert text.count("\n") == 1
    assert progress.interval == _console.TTY_PROGRESS_INTERVAL


def test_progress_off_a_terminal_prints_lines() -> None:
    """Off a TTY each progress update is a plain line, with no '\\r'."""
    stream = io.StringIO()
    progress = _console.Progress(_console.Stats(), stream)
    progress.draw()
    progress.draw()
    assert stream.getvalue().count("aiopublish: progress: sent 0,") == 2
    assert "\r" not in stream.getvalue()
    assert progress.interval == _console.PLAIN_PROGRESS_INTERVAL


def test_failing_lines_are_listed_as_ranges() -> None:
    """Failing line numbers are listed sorted, consecutive ones as a range."""
    assert _console.ranges([9, 1, 2, 3, 7, 10]) == "1-3, 7, 9-10"
    assert _console.ranges([5]) == "5"


def test_cli_runs_on_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command runs on uvloop when it is installed, and on asyncio's own loop when it is not."""
    seen: list[str] = []

    async def record() -> int:
        seen.append(type(asyncio.get_running_loop()).__module__)
        return 0

    assert cli._run_in_event_loop(record()) == 0
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail
    assert cli._run_in_event_loop(record()) == 0
    assert seen[0].startswith("uvloop") and seen[1].startswith("asyncio")


# -- subcommands -----------------------------------------------------------------------------


def test_a_subcommand_is_a_table_entry_and_a_module(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A module with add_arguments and async run, named in COMMANDS, is a subcommand: parsed, run, its status kept."""
    import argparse
    import types

    module = types.ModuleType("fake_subcommand")

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--name", required=True)

    async def run(args: argparse.Namespace, console: _console.Console) -> int:
        console.say(f"hello {args.name}")
        console.error("warned")
        return 7

    module.add_arguments = add_arguments  # type: ignore[attr-defined]
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_subcommand", module)
    monkeypatch.setitem(cli.COMMANDS, "hello", cli.Subcommand("fake_subcommand", "say hello"))
    assert main(["hello", "--name", "relay"]) == 7
    out, err = capsys.readouterr()
    assert (out, err) == ("hello relay\n", "aiopublish: warned\n")
    assert main(["--help"]) == 0
    assert "say hello" in capsys.readouterr().out
    assert main(["hello"]) == 2  # its own usage error
    assert "--name" in capsys.readouterr().err


async def test_top_level_help_imports_no_subcommand() -> None:
    """`aiopublish --help` builds the command list without importing any subcommand's module."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from aiopublish.cli import main; main(['--help']); "
        "print(sorted(m for m in sys.modules if m.startswith('aiopublish.cli.')))",
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    assert out.decode().splitlines()[-1] == "['aiopublish.cli._common', 'aiopublish.cli._console']"
