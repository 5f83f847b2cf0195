"""Errors in one line: the `aiopublish` command and examples/quickstart.py, run as programs.

Each case is a real failure: a closed port (a free port nobody listens on), a wrong password
on the real broker, a virtual host that does not exist (a unique name), TLS spoken to the
broker's plain AMQP port, and (for the command, which can name one) a missing exchange.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from pathlib import Path

import pytest
from yarl import URL

from tests.broker import Broker

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-" + uuid.uuid4().hex[:8]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def failing_url(case: str, amqp_url: str) -> str:
    base = URL(amqp_url)
    if case == "closed port":
        return str(base.with_host("127.0.0.1").with_port(free_port()).with_password(SECRET))
    if case == "wrong password":
        return str(base.with_password(SECRET))
    if case == "missing vhost":
        return str(base.with_path(f"/aiopublish-no-such-vhost-{uuid.uuid4().hex[:8]}"))
    assert case == "TLS failure"
    return str(base.with_scheme("amqps").with_port(base.port or 5672))


async def run(*argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={key: value for key, value in os.environ.items() if key != "AIOPUBLISH_URL"},
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def assert_one_line(err: str) -> None:
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert "Traceback" not in err
    assert SECRET not in err


#: What the one line must say, per case.
SAYS = {
    "closed port": ("cannot connect to", "No RabbitMQ answered"),
    "wrong password": ("refused the login", "refused the login"),
    "missing vhost": ("aiopublish-no-such-vhost-", "aiopublish-no-such-vhost-"),
    "TLS failure": ("TLS failed", "TLS failed"),
}


@pytest.mark.parametrize("case", list(SAYS))
async def test_cli_connection_errors_are_one_line(case: str, amqp_url: str) -> None:
    """`aiopublish publish` against each failure: exit 1, nothing on stdout, exactly one line on stderr saying it."""
    code, out, err = await run("-m", "aiopublish", "publish", "x", "-k", "q", "--url", failing_url(case, amqp_url))
    assert code == 1
    assert out == ""
    assert_one_line(err)
    assert err.startswith("aiopublish: error: ")
    assert SAYS[case][0] in err
    if case != "closed port":
        assert "cannot connect" not in err  # the broker answered: it refused, it is not missing


@pytest.mark.parametrize("case", list(SAYS))
async def test_quickstart_errors_are_one_line(case: str, amqp_url: str) -> None:
    """examples/quickstart.py against each failure: exit 1, one line on stderr; a refused login is not 'no answer'."""
    code, out, err = await run("examples/quickstart.py", failing_url(case, amqp_url))
    assert code == 1
    assert out == ""
    assert_one_line(err)
    assert SAYS[case][1] in err
    if case != "closed port":
        assert "No RabbitMQ answered" not in err


async def test_cli_missing_exchange_is_one_line(amqp_url: str, broker: Broker) -> None:
    """Publishing to an exchange that does not exist: exit 1 and one line naming it."""
    missing = broker.name("x")
    code, out, err = await run("-m", "aiopublish", "publish", "x", "-e", missing, "-k", "k", "--url", amqp_url)
    assert code == 1
    assert out == ""
    assert_one_line(err)
    assert f"404 NOT_FOUND - no exchange '{missing}'" in err


async def test_verbose_shows_aiormq_log_lines(amqp_url: str) -> None:
    """With -v aiormq's own log line of a failed connect is shown too (hidden without it, as above)."""
    url = failing_url("closed port", amqp_url)
    code, _, err = await run("-m", "aiopublish", "publish", "x", "-k", "q", "-v", "--url", url)
    assert code == 1
    assert "aiormq.connection: error: error when creating transport" in err
    assert err.count("\n") >= 2
    assert SECRET not in err
