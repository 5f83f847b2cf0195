"""The Outbox: messages encoded at add() time, written in the caller's transaction, published later by a relay."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .._options import NAMED_OPTIONS, PUBLISH_OPTIONS, Options, Prepared, check_publish_kwargs
from ._caller import connection_kind, insert_on
from ._rows import FailedMessage, OutboxStats, Store

if TYPE_CHECKING:
    from .._engine import Engine
    from .._publisher import Publisher
    from ._relay import Relay
    from ._spool import Spool

__all__ = ["ADD_OPTIONS", "Outbox"]

# What the relay's publisher decides, not the message: refused by Outbox() and add().
_RELAY_OPTIONS = frozenset({"declare", "retry", "retry_policy", "timeout", "use_confirms"})
#: The publish() keywords add() takes: everything that goes into the message's bytes.
ADD_OPTIONS = PUBLISH_OPTIONS - _RELAY_OPTIONS
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,54}")


def _store_for(dsn: str, table: str) -> Store:
    if not isinstance(dsn, str):
        raise TypeError(f"dsn must be a str, not {type(dsn).__name__}")
    scheme = dsn.partition(":")[0].lower()
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        from ._postgres import PostgresStore

        return PostgresStore("postgresql" + dsn[len(scheme) :], table)
    if scheme == "sqlite":
        parts = urlsplit(dsn)
        path = unquote(parts.path[1:])  # SQLAlchemy's convention: sqlite:///relative, sqlite:////absolute
        if parts.netloc or not path:
            raise ValueError(f"a SQLite outbox DSN is sqlite:///relative/path or sqlite:////absolute/path, not {dsn!r}")
        from ._sqlite import SqliteStore

        return SqliteStore(path, table)
    raise ValueError(f"dsn must start with postgresql:// or sqlite:///, not {dsn.partition(':')[0]!r}")


class Outbox:
    """A table of messages waiting to be published, in PostgreSQL or SQLite.

    `Outbox("postgresql://user@host/db")` (asyncpg: the `outbox-postgres` extra) or
    `Outbox("sqlite:///path/to/file.db")` (the standard library; four slashes for an
    absolute path). The table (`table`, default "aiopublish_outbox") is created on first
    use. Other keywords are publish() defaults for every message added (exchange,
    routing_key, serializer, headers, delivery_mode, ...): `add()` encodes with them, as
    `Publisher.publish()` would. Raises TypeError/ValueError for a bad DSN or option.
    """

    def __init__(self, dsn: str, *, table: str = "aiopublish_outbox", **publish_defaults: Any) -> None:
        if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
            raise ValueError(f"table must be a lower-case SQL identifier (letters, digits, _), not {table!r}")
        check_publish_kwargs(publish_defaults, ADD_OPTIONS, "Outbox()")
        from .._publisher import Publisher

        named = {name: publish_defaults.pop(name, getattr(Publisher, name)) for name in NAMED_OPTIONS}
        self._defaults = Options.build(named, publish_defaults)
        self._store = _store_for(dsn, table)
        self.dsn = dsn
        self.table = table
        self._ready: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Outbox {self._store.__class__.__name__[:-5].lower()} table {self.table}>"

    @property
    def kind(self) -> str:
        """ "postgresql" or "sqlite"."""
        return "sqlite" if self.dsn.lower().startswith("sqlite") else "postgresql"

    async def setup(self) -> None:
        """Create the table if it does not exist (done by itself on first use)."""
        if self._ready is None or (self._ready.done() and self._ready.exception() is not None):
            self._ready = asyncio.ensure_future(self._store.setup())
        await asyncio.shield(self._ready)

    def encode(self, payload: Any, options: dict[str, Any]) -> Prepared:
        """The message as add() stores it (TypeError/ValueError/SerializationError for bad input)."""
        check_publish_kwargs(options, ADD_OPTIONS, "Outbox.add()")
        resolved = self._defaults.override(options) if options else self._defaults
        return resolved.prepare(payload)

    async def add(self, payload: Any, *, connection: Any = None, **publish_options: Any) -> str:
        """Write one message into the outbox; return its message id.

        With `connection` (PostgreSQL: an asyncpg connection in a transaction, or an
        SQLAlchemy AsyncConnection/AsyncSession), the row is written in the caller's
        transaction: published if and only if the caller commits. Without it (always on
        SQLite), the outbox writes and commits the row itself. The message is encoded now with the outbox's defaults and
        `publish_options` (the keywords of publish(), but not timeout, retry, retry_policy,
        declare, use_confirms: the relay's publisher decides those); a bad payload or option
        raises TypeError/ValueError/SerializationError here, and nothing is written.
        """
        kind = None if connection is None else connection_kind(connection)
        if kind is not None and self.kind == "sqlite":
            raise TypeError("a SQLite outbox writes and commits each message itself: call add() without connection")
        message = self.encode(payload, publish_options)
        await self.setup()
        if kind is None:
            await self._store.insert([message])
        else:
            await insert_on(connection, kind, self._store, message)
        self._store.wake()  # a relay in this process looks at once (PostgreSQL: NOTIFY at commit wakes the rest)
        return message.message_id

    async def add_prepared(self, messages: Sequence[Prepared]) -> None:
        """Write encoded messages in the outbox's own transaction (the spool)."""
        await self.setup()
        await self._store.insert(messages)
        self._store.wake()

    def relay(self, publisher: Publisher, **options: Any) -> Relay:
        """A relay publishing this outbox through `publisher`: `async with outbox.relay(publisher): ...` (see Relay)."""
        from ._relay import Relay

        return Relay(self, publisher, **options)

    def spool_layer(self, publisher: Publisher, engine: Callable[[], Engine]) -> Spool:
        """The layer `Publisher(spool=outbox)` puts over its engine (see aiopublish.outbox._spool)."""
        from ._spool import Spool

        return Spool(self, publisher, engine)

    async def failed(self) -> list[FailedMessage]:
        """The messages moved aside after the broker refused them `max_attempts` times, oldest first."""
        await self.setup()
        return await self._store.failed()

    async def requeue(self, message_ids: Sequence[str] | None = None) -> int:
        """Put failed messages (all, or those with these ids) back in line with their attempts reset; how many."""
        if isinstance(message_ids, str):
            raise TypeError("message_ids must be a list of message ids, not a str")
        await self.setup()
        return await self._store.requeue(message_ids)

    async def stats(self) -> OutboxStats:
        """How many messages wait and failed, and the age in seconds of the oldest waiting one."""
        await self.setup()
        return await self._store.stats()

    async def close(self) -> None:
        """Close the outbox's own connections (a caller's connection is never touched)."""
        await self._store.close()

    async def __aenter__(self) -> Outbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
