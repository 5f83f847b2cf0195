"""Shared fixtures: the broker's URL, a Broker probe per test, a check that a broker answers (not for tests/unit)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from yarl import URL

from tests.broker import Broker, test_url
from tests.rabbitmq_chroots import SetupError, announced_version, private_node_chroot

pytest_plugins = ["tests.faults.fixtures", "tests.faults.fixtures_tls_cluster", "tests.amqp1.private_node"]


# Tests here need no broker: a run of only these (`pytest tests/unit`) must pass with none listening.
UNIT = Path(__file__).parent / "unit"


# The AMQP 1.0 tests against a broker need a RabbitMQ 4.x node (CI starts one; see .ci/run).
AMQP1_URL = "AIOPUBLISH_AMQP1_TEST_URL"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a RabbitMQ 4.x node for the AMQP 1.0 tests, leave them out of a local run, saying so.

    In CI (CI set) they stay in and fail with a sentence naming the variable: never a silent gap.
    """
    if os.environ.get(AMQP1_URL) or os.environ.get("CI"):
        return
    left_out = [item for item in items if item.get_closest_marker("amqp1") is not None]
    if not left_out:
        return
    config.hook.pytest_deselected(items=left_out)
    items[:] = [item for item in items if item.get_closest_marker("amqp1") is None]
    config.stash[_AMQP1_LEFT_OUT] = len(left_out)


_AMQP1_LEFT_OUT = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    left_out = config.stash.get(_AMQP1_LEFT_OUT, 0)
    if left_out:
        terminalreporter.write_line(
            f"{left_out} AMQP 1.0 tests left out: set {AMQP1_URL}=amqp1://guest:guest@HOST:PORT/ "
            "(a RabbitMQ 4.x node, e.g. `python3 -m tests.rabbitmq_chroots start 4.3`) to run them"
        )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Stop the run at once, with a sentence, when a selected test needs RabbitMQ and none answers.

    After collection and `-k`/`-m` deselection, so that a run of tests/unit alone is never stopped.
    """
    if all(item.path.is_relative_to(UNIT) for item in session.items):
        return
    url = URL(test_url())
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5672), timeout=3):
            pass
    except OSError:
        pytest.exit(
            f"No RabbitMQ answers at {url.host}:{url.port}. Start one (Debian: "
            "`apt-get install rabbitmq-server && rabbitmq-server -detached`) or set AIOPUBLISH_TEST_URL.",
            returncode=3,
        )


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which RabbitMQ the run tests: the broker under test as it announces itself, and the private nodes'."""
    url = test_url()
    try:
        version = announced_version(url)
    except OSError as exc:
        version = f"? ({exc})"
    try:
        chroot = private_node_chroot()
    except SetupError as exc:
        private = str(exc)
    else:
        private = "the machine's" if chroot is None else f"{chroot.version} (chroot {chroot.root})"
    parts = URL(url)
    return [f"RabbitMQ under test: {version} at {parts.host}:{parts.port}; private test nodes: RabbitMQ {private}"]


@pytest.fixture
def amqp_url() -> str:
    return test_url()


@pytest_asyncio.fixture
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    probe = Broker(amqp_url)
    try:
        yield probe
    finally:
        await asyncio.shield(probe.cleanup())
