"""The outbox guide's FastAPI + SQLAlchemy example, run as written against PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import asyncpg
import pytest

from tests.broker import Broker
from tests.test_outbox_support import pg_dsn

__all__ = ["pg_dsn"]

ROOT = Path(__file__).resolve().parent.parent


def outbox_app_source() -> str:
    """The first python block of the outbox guide (docs/guides/outbox.md)."""
    page = (ROOT / "docs/guides/outbox.md").read_text()
    block = re.search(r"```python\n(.*?)```", page, re.S)
    assert block, "no python block in docs/guides/outbox.md"
    return block.group(1)


async def test_readme_fastapi_outbox_example(pg_dsn: str, amqp_url: str, broker: Broker) -> None:
    """The example's handler commits an order and its event; the lifespan's relay publishes the event once
    (to the broker under test: the example's URL names the machine's)."""
    source = outbox_app_source()
    assert 'DATABASE = "postgresql://postgres@127.0.0.1:5432/test"' in source
    assert '"amqp://guest:guest@localhost/"' in source
    source = source.replace('"amqp://guest:guest@localhost/"', repr(amqp_url))
    queue = await broker.queue()
    source = source.replace("postgresql://postgres@127.0.0.1:5432/test", pg_dsn)
    source = source.replace('routing_key="orders"', f"routing_key={queue!r}")
    connection = await asyncpg.connect(pg_dsn)
    await connection.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, body text NOT NULL)")
    namespace: dict[str, object] = {"__name__": "readme_outbox"}
    try:
        exec(compile(source, "docs/guides/outbox.md", "exec"), namespace)
        app, lifespan, create_order = namespace["app"], namespace["lifespan"], namespace["create_order"]
        async with lifespan(app) as _:  # type: ignore[operator]
            created = await create_order({"sku": "book", "qty": 2})  # type: ignore[operator]
            relay_outbox = namespace["outbox"]
            while (await relay_outbox.stats()).pending:  # type: ignore[attr-defined]  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # the relay runs inside the example's lifespan: watch the table
        messages = await broker.get_all(queue)
        assert [json.loads(m.body) for m in messages] == [{"id": created["id"], "sku": "book", "qty": 2}]
        assert messages[0].header.properties.message_type == "order.created"
        assert await connection.fetchval("SELECT count(*) FROM orders") == 1
    finally:
        await connection.execute("DROP TABLE orders")
        await connection.close()


def documented_ddl() -> str:
    """The ```sql block of the outbox guide: the table and indexes to create in your own migrations."""
    page = (ROOT / "docs/guides/outbox.md").read_text()
    block = re.search(r"```sql\n(.*?)```", page, re.S)
    assert block, "no sql block in docs/guides/outbox.md"
    return block.group(1)


def _statements(sql: str) -> list[str]:
    """`sql` without comments, each statement on one line with single spaces."""
    text = re.sub(r"--[^\n]*", "", sql)
    return [" ".join(statement.split()) for statement in text.split(";") if statement.strip()]


def test_the_guides_ddl_is_what_aiopublish_runs() -> None:
    """The guide's CREATE TABLE and CREATE INDEX are, statement for statement, those setup() runs."""
    from aiopublish.outbox._postgres import schema

    documented = _statements(documented_ddl())
    assert len(documented) == 3
    assert documented == _statements(schema("aiopublish_outbox"))


async def test_the_guides_ddl_runs_and_leaves_aiopublish_nothing_to_do(pg_dsn: str) -> None:
    """Run as a migration would, the DDL makes a table the outbox then uses as it is, adding nothing."""
    from aiopublish.outbox import Outbox

    connection = await asyncpg.connect(pg_dsn)
    try:
        await connection.execute("DROP TABLE IF EXISTS aiopublish_outbox")  # the example's, if it ran first
        await connection.execute(documented_ddl())
        before = await connection.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = 'aiopublish_outbox'")
        outbox = Outbox(pg_dsn)
        try:
            await outbox.add({"n": 1}, routing_key="nowhere")
            assert (await outbox.stats()).pending == 1
        finally:
            await outbox.close()
        after = await connection.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = 'aiopublish_outbox'")
        assert before == after == 3  # the primary key and the two indexes, none added
    finally:
        await connection.execute("DROP TABLE IF EXISTS aiopublish_outbox")
        await connection.close()


def test_a_missing_asyncpg_says_how_to_install_it_from_a_clone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without asyncpg the outbox names the extra and that it is installed from a clone, not the index."""
    import sys

    from aiopublish.outbox import _postgres

    monkeypatch.setitem(sys.modules, "asyncpg", None)  # `import asyncpg` now raises ImportError
    with pytest.raises(ImportError) as missing:
        _postgres._asyncpg()
    assert '".[outbox-postgres]" in a clone of aiopublish' in str(missing.value)
