"""The PostgreSQL outbox: rows claimed with FOR UPDATE SKIP LOCKED, relays woken by LISTEN/NOTIFY.

A relay holds its batch's rows locked in one transaction from the SELECT to the
DELETE after the confirms, so two relays never publish the same row at once; a relay
that dies rolls back and its rows go to the next relay (published again: the same
bytes, the same message id). The table is created on first use under an advisory
lock (several processes may start at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from .._options import Prepared
from ._rows import COLUMNS, FailedMessage, OutboxStats, Row, Verdicts, row_values

if TYPE_CHECKING:
    import asyncpg

__all__ = ["PostgresStore", "schema"]

log = logging.getLogger("aiopublish.outbox")

# aiopublish is installed from a clone, not the package index: say so, as the CLI's extras hints do.
_MISSING_ASYNCPG = (
    "the PostgreSQL outbox needs asyncpg, which is not installed: "
    'pip install ".[outbox-postgres]" in a clone of aiopublish (or pip install asyncpg)'
)


def schema(table: str) -> str:
    """The DDL of the outbox table (what setup() runs, and what docs/guides/outbox.md documents)."""
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    id          bigserial PRIMARY KEY,
    message_id  text NOT NULL,
    exchange    text NOT NULL,
    routing_key text NOT NULL,
    mandatory   boolean NOT NULL,
    user_id     text,
    expiration  text,
    properties  bytea NOT NULL,
    body        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    state       text NOT NULL DEFAULT 'pending',
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    done_at     timestamptz
);
CREATE INDEX IF NOT EXISTS {table}_pending ON {table} (id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS {table}_state ON {table} (state) WHERE state <> 'pending';
"""


def _asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError:
        raise ImportError(_MISSING_ASYNCPG) from None
    return asyncpg


def _connection_errors(asyncpg: Any) -> tuple[type[BaseException], ...]:
    """What asyncpg raises for a connection the server closed (an idle pooled one included)."""
    return (
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        asyncpg.exceptions.PostgresConnectionError,
        asyncpg.AdminShutdownError,
        OSError,
    )


class _PostgresBatch:
    def __init__(self, connection: asyncpg.Connection, release: Any, transaction: Any, rows: list[Row], table: str):
        self.rows = rows
        self._connection = connection
        self._release = release
        self._transaction = transaction
        self._table = table

    async def settle(self, verdicts: Verdicts, max_attempts: int, keep_done: bool) -> list[int]:
        table, connection = self._table, self._connection
        failed: list[int] = []
        try:
            if verdicts.done:
                if keep_done:
                    await connection.execute(
                        f"UPDATE {table} SET state = 'done', done_at = now() WHERE id = ANY($1::bigint[])",
                        verdicts.done,
                    )
                else:
                    await connection.execute(f"DELETE FROM {table} WHERE id = ANY($1::bigint[])", verdicts.done)
            if verdicts.refused:
                records = await connection.fetch(
                    f"""UPDATE {table} AS t SET attempts = t.attempts + 1, last_error = e.error,
                            state = CASE WHEN t.attempts + 1 >= $3 THEN 'failed' ELSE t.state END
                        FROM unnest($1::bigint[], $2::text[]) AS e(id, error)
                        WHERE t.id = e.id RETURNING t.id, t.state""",
                    list(verdicts.refused),
                    list(verdicts.refused.values()),
                    max_attempts,
                )
                failed = [record["id"] for record in records if record["state"] == "failed"]
            await self._transaction.commit()
        except BaseException:
            await self.abort()
            raise
        await self._release()
        return failed

    async def abort(self) -> None:
        try:
            if not self._connection.is_closed():
                await self._transaction.rollback()
        finally:
            await self._release()


class PostgresStore:
    """The outbox table in PostgreSQL, through asyncpg (a small pool of the store's own connections)."""

    def __init__(self, dsn: str, table: str) -> None:
        _asyncpg()
        self.dsn = dsn
        self.table = table
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._listener: asyncpg.Connection | None = None
        self._woken = asyncio.Event()

    async def _connections(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await _asyncpg().create_pool(self.dsn, min_size=1, max_size=4)
        assert self._pool is not None
        return self._pool

    async def setup(self) -> None:
        # A connection of its own, closed after: a process that only add()s holds no pool.
        connection = await _asyncpg().connect(self.dsn)
        try:
            async with connection.transaction():
                # CREATE ... IF NOT EXISTS races with itself across processes: take turns.
                await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.table)
                await connection.execute(schema(self.table))
        finally:
            await connection.close()

    def caller_insert(self, style: str) -> str:
        columns = ", ".join(COLUMNS)
        if style == "named":
            values = ", ".join(f":{name}" for name in COLUMNS)
        else:
            values = ", ".join(f"${n}" for n in range(1, len(COLUMNS) + 1))
        # One statement, one round trip: the notification goes out when the caller commits.
        return (
            f"WITH added AS (INSERT INTO {self.table} ({columns}) VALUES ({values}) RETURNING id) "
            f"SELECT pg_notify('{self.table}', '') FROM added"
        )

    async def insert(self, messages: Sequence[Prepared]) -> None:
        pool = await self._connections()
        statement = self.caller_insert("asyncpg")
        rows = [row_values(message) for message in messages]
        asyncpg = _asyncpg()
        for attempt in (1, 2):
            try:
                async with pool.acquire() as connection, connection.transaction():
                    await connection.executemany(statement, rows)
                return
            except _connection_errors(asyncpg):
                # A pooled connection the server closed meanwhile: nothing was committed, try a fresh one once.
                if attempt == 2:
                    raise
                await pool.expire_connections()

    async def claim(self, limit: int) -> _PostgresBatch:
        pool = await self._connections()
        connection = await pool.acquire()
        transaction = connection.transaction()
        try:
            await transaction.start()
            records = await connection.fetch(
                f"""SELECT id, {", ".join(COLUMNS)}, attempts, extract(epoch FROM created_at)::float8 AS created
                    FROM {self.table} WHERE state = 'pending' ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
                limit,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await transaction.rollback()
            await pool.release(connection)
            raise
        rows = [
            Row(
                r["id"],
                Prepared(
                    r["exchange"],
                    r["routing_key"],
                    r["mandatory"],
                    r["message_id"],
                    r["user_id"],
                    r["properties"],
                    r["body"],
                    r["expiration"],
                ),
                r["attempts"],
                r["created"],
            )
            for r in records
        ]

        async def release() -> None:
            await pool.release(connection)

        return _PostgresBatch(connection, release, transaction, rows, self.table)

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            self._listener = await _asyncpg().connect(self.dsn)
            await self._listener.add_listener(self.table, self._on_notify)
        except Exception as exc:  # the relay polls until LISTEN works again
            log.warning("outbox: LISTEN %s failed (%s); polling instead", self.table, exc)
            self._listener = None

    def _on_notify(self, *_: object) -> None:
        self._woken.set()

    def wake(self) -> None:
        self._woken.set()

    async def wait(self, seconds: float) -> None:
        """Until a NOTIFY (or wake()) arrives, at most `seconds`."""
        await self._listen()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._woken.wait()
        self._woken.clear()

    async def failed(self) -> list[FailedMessage]:
        pool = await self._connections()
        records = await pool.fetch(
            f"""SELECT message_id, exchange, routing_key, attempts, coalesce(last_error, '') AS error,
                       extract(epoch FROM created_at)::float8 AS created
                FROM {self.table} WHERE state = 'failed' ORDER BY id"""
        )
        return [
            FailedMessage(r["message_id"], r["exchange"], r["routing_key"], r["attempts"], r["error"], r["created"])
            for r in records
        ]

    async def requeue(self, message_ids: Sequence[str] | None) -> int:
        pool = await self._connections()
        update = f"UPDATE {self.table} SET state = 'pending', attempts = 0 WHERE state = 'failed'"
        if message_ids is None:
            status = await pool.execute(update)
        else:
            status = await pool.execute(update + " AND message_id = ANY($1)", list(message_ids))
        await pool.execute(f"SELECT pg_notify('{self.table}', '')")
        return int(status.split()[-1])

    async def stats(self) -> OutboxStats:
        pool = await self._connections()
        record = await pool.fetchrow(
            f"""SELECT count(*) FILTER (WHERE state = 'pending') AS pending,
                       count(*) FILTER (WHERE state = 'failed') AS failed,
                       coalesce(extract(epoch FROM clock_timestamp()
                                        - min(created_at) FILTER (WHERE state = 'pending')), 0)::float8 AS lag
                FROM {self.table} WHERE state IN ('pending', 'failed')"""
        )
        assert record is not None
        return OutboxStats(record["pending"], record["failed"], record["lag"])

    async def purge_done(self, older_than: float) -> int:
        pool = await self._connections()
        status = await pool.execute(
            f"DELETE FROM {self.table} WHERE state = 'done' AND done_at < now() - make_interval(secs => $1)",
            older_than,
        )
        return int(status.split()[-1])

    def relay_lock(self) -> AbstractAsyncContextManager[None]:
        return _no_lock()  # SKIP LOCKED lets several relays share the table

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


@contextlib.asynccontextmanager
async def _no_lock() -> AsyncIterator[None]:
    yield
