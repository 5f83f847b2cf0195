"""Shared fixtures: the real broker's URL, a Broker probe per test, and a check that a broker answers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from yarl import URL

from tests.broker import Broker, test_url
from tests.rabbitmq_chroots import SetupError, announced_version, private_node_chroot

pytest_plugins = ["tests.faults.fixtures", "tests.faults.fixtures_tls_cluster"]


def pytest_configure(config: pytest.Config) -> None:
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
