"""The README's FastAPI + SQLAlchemy outbox example, run as written against PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import asyncpg

from tests.broker import Broker
from tests.test_outbox_support import pg_dsn

__all__ = ["pg_dsn"]

ROOT = Path(__file__).resolve().parent.parent


def outbox_app_source() -> str:
    """The first python block of the README's outbox section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Outbox and spool", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block, "no python block in the README's outbox section"
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
        exec(compile(source, "README.md", "exec"), namespace)
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
