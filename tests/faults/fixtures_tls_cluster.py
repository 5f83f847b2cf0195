"""pytest fixtures for the TLS and cluster tests.

Register them in a conftest (``pytest_plugins = [..., "tests.faults.fixtures_tls_cluster"]``):

``tls_pki``
    Session-scoped :class:`TestPki` (tests/faults/tls.py): a CA, a server
    certificate for ``localhost``/``127.0.0.1``, a client certificate whose CN is
    the user ``aiopublish-cert-user``, and an unrelated CA. Its folder is removed
    at the end of the session.
``tls_rabbit``
    A :class:`TlsRabbit`: a private node shared by a module's tests (started once,
    about 6 s) with a TLS listener (client certificates verified when sent, not
    required), the plugin ``rabbitmq_auth_mechanism_ssl``, the login methods
    PLAIN, AMQPLAIN and EXTERNAL (user from the certificate's CN), and two users
    besides guest: the certificate's user (no password: EXTERNAL only) and
    ``tls_rabbit.user`` with the distinctive ``tls_rabbit.password``. Started
    again if an earlier test stopped it.
``rabbit_cluster``
    A 3-node :class:`RabbitCluster` shared by a module's tests (formed once, about
    20 s), handed to each test with every member running and clustered: members an
    earlier test stopped or killed are started again (they rejoin with their data;
    queues left by earlier tests remain, so use unique names). At the end of the
    module all members are killed and their directories removed, whatever the
    tests did to them.
``rabbit_cluster_module``
    The module-scoped cluster behind ``rabbit_cluster`` (no per-test restart).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_asyncio

from tests.faults.cluster import RabbitCluster
from tests.faults.rabbit_node import RabbitNode
from tests.faults.tls import TestPki, make_test_pki

__all__ = ["TlsRabbit", "rabbit_cluster", "rabbit_cluster_module", "tls_pki", "tls_rabbit", "tls_rabbit_module"]

CERT_USER = "aiopublish-cert-user"
TLS_NODE_CONFIG = (
    "auth_mechanisms.1 = PLAIN",
    "auth_mechanisms.2 = AMQPLAIN",
    "auth_mechanisms.3 = EXTERNAL",
    "ssl_cert_login_from = common_name",
)


@dataclass
class TlsRabbit:
    """A private node with a TLS listener, the test certificates, and a user with a distinctive password."""

    node: RabbitNode
    pki: TestPki
    user: str
    password: str

    @property
    def cert_user(self) -> str:
        """The user EXTERNAL logs in as: the client certificate's CN."""
        return self.pki.client.common_name

    def url(self, user: str = "guest", password: str | None = "guest", host: str = "localhost") -> str:
        """``amqps://`` URL of the TLS listener (``password=None``: no password, for EXTERNAL)."""
        return self.node.tls_url(user=user, password=password, host=host)

    def secret_url(self) -> str:
        """The TLS URL with `user` and its distinctive password."""
        return self.url(self.user, self.password)

    @property
    def password_spellings(self) -> tuple[str, ...]:
        """Every spelling of the password that must never show up in logs or errors."""
        return tuple({self.password, quote(self.password, safe="")})


_PKI_PREFIX = "aiopublish-pki-"


def _sweep_stale_pki_dirs() -> None:
    """Remove certificate folders left by test processes that were killed (named after their pid)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_PKI_PREFIX}*"):
        try:
            pid = int(folder.name[len(_PKI_PREFIX) :].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


@pytest.fixture(scope="session")
def tls_pki() -> Iterator[TestPki]:
    _sweep_stale_pki_dirs()
    folder = Path(tempfile.mkdtemp(prefix=f"{_PKI_PREFIX}{os.getpid()}-"))
    try:
        yield make_test_pki(folder, client_user=CERT_USER)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tls_rabbit_module(tls_pki: TestPki) -> AsyncIterator[TlsRabbit]:
    # RabbitNode holds no loop-bound state, so function-loop tests may drive it.
    node = RabbitNode(tls=tls_pki.server, plugins=["rabbitmq_auth_mechanism_ssl"], config=TLS_NODE_CONFIG)
    # Characters that URLs must quote (@ # / %), so both spellings are checked for leaks.
    password = f"Pw@{secrets.token_hex(6)}#sec/ret%"
    try:
        await node.start()
        await node.add_user(tls_pki.client.common_name, None)
        await node.add_user("aiopublish-secret-user", password)
        yield TlsRabbit(node=node, pki=tls_pki, user="aiopublish-secret-user", password=password)
    finally:
        await node.cleanup()


@pytest_asyncio.fixture
async def tls_rabbit(tls_rabbit_module: TlsRabbit) -> AsyncIterator[TlsRabbit]:
    if not tls_rabbit_module.node.running:
        await tls_rabbit_module.node.start()
    yield tls_rabbit_module


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rabbit_cluster_module() -> AsyncIterator[RabbitCluster]:
    # RabbitNode holds no loop-bound state, so function-loop tests may drive the members.
    cluster = RabbitCluster(3)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.cleanup()


@pytest_asyncio.fixture
async def rabbit_cluster(rabbit_cluster_module: RabbitCluster) -> AsyncIterator[RabbitCluster]:
    await rabbit_cluster_module.restart_stopped()
    yield rabbit_cluster_module
