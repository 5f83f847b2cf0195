"""Shared by the outbox tests (no tests here): a PostgreSQL database of their own, counting message ids."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.broker import Broker

PG_ADMIN_DSN = os.environ.get("AIOPUBLISH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _admin(statement: str) -> None:
    import asyncpg

    async def run() -> None:
        try:
            connection = await asyncpg.connect(PG_ADMIN_DSN)
        except OSError as exc:
            pytest.fail(
                f"the outbox tests need PostgreSQL at {PG_ADMIN_DSN} ({exc}); start it (.ci/run does) "
                "or set AIOPUBLISH_TEST_PG"
            )
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    """A PostgreSQL database created for one test module, dropped after it."""
    name = f"aiopublish_outbox_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        _admin(f"DROP DATABASE {name} WITH (FORCE)")


def unique_table() -> str:
    return f"outbox_{uuid.uuid4().hex[:10]}"


async def message_ids(broker: Broker, queue: str) -> Counter[str]:
    """How many times each message id is in `queue` now (the queue is emptied)."""
    return Counter(message.header.properties.message_id or "" for message in await broker.get_all(queue))


async def fill(outbox: object, count: int, chunk: int = 5000) -> list[str]:
    """Commit `count` messages ({"n": i}) to the outbox in chunks; their message ids in order."""
    from aiopublish.outbox import Outbox

    assert isinstance(outbox, Outbox)
    ids: list[str] = []
    for start in range(0, count, chunk):
        messages = [outbox.encode({"n": n}, {}) for n in range(start, min(count, start + chunk))]
        await outbox.add_prepared(messages)
        ids.extend(message.message_id for message in messages)
    return ids


def relay_command(dsn: str, table: str, url: str, *extra: str) -> list[str]:
    """The command line of a relay process."""
    import sys

    return [sys.executable, "-m", "aiopublish", "relay", "--outbox", dsn, "--table", table, "--url", url, *extra]
