"""Writing a row on the caller's connection, inside the caller's transaction: asyncpg or SQLAlchemy.

The kind of connection is told from its class's module, so SQLAlchemy is imported
only when the caller passed one of its objects (it is then installed).
"""

from __future__ import annotations

from typing import Any

from .._options import Prepared
from ._rows import COLUMNS, Store, row_values

__all__ = ["connection_kind", "insert_on"]

_KINDS = {"asyncpg": "asyncpg", "sqlalchemy": "sqlalchemy"}


def connection_kind(connection: object) -> str:
    """ "asyncpg" or "sqlalchemy"; TypeError for anything else."""
    module = type(connection).__module__.partition(".")[0]
    kind = _KINDS.get(module)
    name = type(connection).__name__
    if kind == "sqlalchemy" and name not in ("AsyncConnection", "AsyncSession"):
        kind = None
    if kind is None:
        raise TypeError(
            f"connection must be an asyncpg connection or an SQLAlchemy AsyncConnection/AsyncSession, "
            f"not {type(connection).__module__}.{name}"
        )
    return kind


async def insert_on(connection: Any, kind: str, store: Store, message: Prepared) -> None:
    """Insert `message` with the caller's connection (its transaction, its commit or rollback)."""
    values = row_values(message)
    if kind == "asyncpg":
        if not connection.is_in_transaction():
            raise ValueError(
                "outbox.add(): the asyncpg connection is not in a transaction "
                "(add inside `async with connection.transaction():`)"
            )
        await connection.execute(store.caller_insert("asyncpg"), *values)
        return
    import sqlalchemy

    # An AsyncSession or AsyncConnection begins its transaction here if none is open (autobegin):
    # the row is then committed or rolled back with whatever the caller does next.
    await connection.execute(sqlalchemy.text(store.caller_insert("named")), dict(zip(COLUMNS, values, strict=True)))
