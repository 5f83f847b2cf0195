"""The SQLite outbox (and spool): the standard library's sqlite3 in one thread of its own, off the event loop.

Every statement runs in that one thread, on one connection in WAL mode with
synchronous=FULL: a message add() wrote survives a crash of the process and of the
machine. Adds made at the same moment share one transaction (one fsync), so a burst
of spooled publishes costs a few commits, not one each. SQLite has no SKIP LOCKED:
one relay per file, which a lock file next to the database enforces (a second
relay waits for the first to end).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from .._options import Prepared
from ._rows import COLUMNS, FailedMessage, OutboxStats, Row, Verdicts, row_values

__all__ = ["SqliteStore", "schema"]

T = TypeVar("T")


def schema(table: str) -> str:
    """The DDL of the outbox table in SQLite (what setup() runs, and what the README documents)."""
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  TEXT NOT NULL,
    exchange    TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    mandatory   INTEGER NOT NULL,
    user_id     TEXT,
    expiration  TEXT,
    properties  BLOB NOT NULL,
    body        BLOB NOT NULL,
    created_at  REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    state       TEXT NOT NULL DEFAULT 'pending',
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    done_at     REAL
);
CREATE INDEX IF NOT EXISTS {table}_pending ON {table} (id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS {table}_state ON {table} (state) WHERE state <> 'pending';
"""


class _SqliteBatch:
    def __init__(self, store: SqliteStore, rows: list[Row]) -> None:
        self.store = store
        self.rows = rows

    async def settle(self, verdicts: Verdicts, max_attempts: int, keep_done: bool) -> list[int]:
        return await self.store._run(self.store._settle_sync, verdicts, max_attempts, keep_done)

    async def abort(self) -> None:
        pass  # nothing was changed: the rows are still pending


class SqliteStore:
    """The outbox table in one SQLite file."""

    def __init__(self, path: str, table: str) -> None:
        self.path = path
        self.table = table
        self._thread: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._woken = asyncio.Event()
        # Group commit: messages waiting for the next transaction, with their adders' futures.
        self._queued: list[tuple[Sequence[Prepared], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self._thread is None:  # one thread, so one statement at a time on the one connection
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiopublish-outbox")
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._db = db
        return self._db

    async def setup(self) -> None:
        await self._run(lambda: self._connection().executescript(schema(self.table)))

    def caller_insert(self, style: str) -> str:
        return f"INSERT INTO {self.table} ({', '.join(COLUMNS)}) VALUES ({', '.join(f':{name}' for name in COLUMNS)})"

    async def insert(self, messages: Sequence[Prepared]) -> None:
        future = asyncio.get_running_loop().create_future()
        self._queued.append((messages, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        await asyncio.shield(future)  # a cancelled add() may still be written: at least once, never lost

    async def _flush(self) -> None:
        while self._queued:
            queued, self._queued = self._queued, []
            rows = [row_values(message) for messages, _ in queued for message in messages]
            try:
                await self._run(self._insert_sync, rows)
            except BaseException as exc:
                for _, future in queued:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("outbox closed"))
                if not isinstance(exc, Exception):
                    raise
                continue
            for _, future in queued:
                if not future.done():
                    future.set_result(None)
            self._woken.set()

    def _insert_sync(self, rows: list[tuple[object, ...]]) -> None:
        db = self._connection()
        statement = f"INSERT INTO {self.table} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        with _transaction(db):
            db.executemany(statement, rows)

    async def claim(self, limit: int) -> _SqliteBatch:
        return _SqliteBatch(self, await self._run(self._claim_sync, limit))

    def _claim_sync(self, limit: int) -> list[Row]:
        cursor = self._connection().execute(
            f"""SELECT id, {", ".join(COLUMNS)}, attempts, created_at FROM {self.table}
                WHERE state = 'pending' ORDER BY id LIMIT ?""",
            (limit,),
        )
        return [
            Row(r[0], Prepared(r[2], r[3], bool(r[4]), r[1], r[5], bytes(r[7]), bytes(r[8]), r[6]), r[9], r[10])
            for r in cursor.fetchall()
        ]

    def _settle_sync(self, verdicts: Verdicts, max_attempts: int, keep_done: bool) -> list[int]:
        db, table = self._connection(), self.table
        failed: list[int] = []
        with _transaction(db):
            done = [(row_id,) for row_id in verdicts.done]
            if keep_done:
                db.executemany(
                    f"UPDATE {table} SET state = 'done', done_at = ? WHERE id = ?", [(time.time(), *d) for d in done]
                )
            else:
                db.executemany(f"DELETE FROM {table} WHERE id = ?", done)
            for row_id, error in verdicts.refused.items():
                db.execute(
                    f"""UPDATE {table} SET attempts = attempts + 1, last_error = ?,
                        state = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE state END WHERE id = ?""",
                    (error, max_attempts, row_id),
                )
                (state,) = db.execute(f"SELECT state FROM {table} WHERE id = ?", (row_id,)).fetchone()
                if state == "failed":
                    failed.append(row_id)
        return failed

    def wake(self) -> None:
        self._woken.set()

    async def wait(self, seconds: float) -> None:
        """Until an add() of this process (or wake()) commits, at most `seconds` (other processes: polled)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._woken.wait()
        self._woken.clear()

    async def failed(self) -> list[FailedMessage]:
        def read() -> list[FailedMessage]:
            cursor = self._connection().execute(
                f"""SELECT message_id, exchange, routing_key, attempts, coalesce(last_error, ''), created_at
                    FROM {self.table} WHERE state = 'failed' ORDER BY id"""
            )
            return [FailedMessage(*r) for r in cursor.fetchall()]

        return await self._run(read)

    async def requeue(self, message_ids: Sequence[str] | None) -> int:
        def update() -> int:
            db = self._connection()
            with _transaction(db):
                if message_ids is None:
                    sql = f"UPDATE {self.table} SET state = 'pending', attempts = 0 WHERE state = 'failed'"
                    return db.execute(sql).rowcount
                sql = (
                    f"UPDATE {self.table} SET state = 'pending', attempts = 0 WHERE state = 'failed' AND message_id = ?"
                )
                return sum(db.execute(sql, (message_id,)).rowcount for message_id in message_ids)

        count = await self._run(update)
        self._woken.set()
        return count

    async def stats(self) -> OutboxStats:
        def read() -> OutboxStats:
            pending, failed, oldest = (
                self._connection()
                .execute(
                    f"""SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'failed'),
                           min(created_at) FILTER (WHERE state = 'pending')
                    FROM {self.table} WHERE state IN ('pending', 'failed')"""
                )
                .fetchone()
            )
            return OutboxStats(pending, failed, 0.0 if oldest is None else max(0.0, time.time() - oldest))

        return await self._run(read)

    async def purge_done(self, older_than: float) -> int:
        def delete() -> int:
            db = self._connection()
            with _transaction(db):
                sql = f"DELETE FROM {self.table} WHERE state = 'done' AND done_at < ?"
                return db.execute(sql, (time.time() - older_than,)).rowcount

        return await self._run(delete)

    def relay_lock(self) -> AbstractAsyncContextManager[None]:
        return self._relay_lock()

    @contextlib.asynccontextmanager
    async def _relay_lock(self) -> AsyncIterator[None]:
        descriptor = os.open(self.path + "-relay.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.5)  # another process relays this file: take over when it ends
            yield
        finally:
            os.close(descriptor)  # releases the lock

    async def close(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        db, self._db = self._db, None
        if db is not None:
            await self._run(db.close)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=False)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Any:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
