"""What the outbox stores and reports: a claimed row, a failed message, the outbox's figures, the store contract."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from .._options import Prepared
from .._result import PublishResult

__all__ = ["Batch", "FailedMessage", "OutboxStats", "Row", "Store", "Verdicts"]

#: The columns a message is stored as, in the order the SQL of both stores names them.
COLUMNS = ("message_id", "exchange", "routing_key", "mandatory", "user_id", "expiration", "properties", "body")


def row_values(message: Prepared) -> tuple[object, ...]:
    """A Prepared message as the values of COLUMNS."""
    return (
        message.message_id,
        message.exchange,
        message.routing_key,
        message.mandatory,
        message.user_id,
        message.expiration,
        message.properties,
        message.body,
    )


@dataclass(slots=True)
class Row:
    """A pending message claimed by a relay: the row's id, the message as add() encoded it, its past attempts."""

    id: int
    message: Prepared
    attempts: int
    created_at: float  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class FailedMessage:
    """A message moved aside after `attempts` refusals by the broker; `error` is the last refusal's text."""

    message_id: str
    exchange: str
    routing_key: str
    attempts: int
    error: str
    created_at: float  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """The outbox now: messages waiting (`pending`), moved aside (`failed`), and the age in seconds of
    the oldest waiting one (`lag`, 0.0 when none waits)."""

    pending: int
    failed: int
    lag: float


@dataclass(slots=True)
class Verdicts:
    """How the broker answered a batch: rows confirmed, rows refused (id -> error text), rows to try later."""

    done: list[int]
    refused: dict[int, str]
    later: list[int]

    @classmethod
    def of(cls, rows: Sequence[Row], results: Sequence[PublishResult]) -> Verdicts:
        """Sort a batch's results: only the broker's refusal of the message itself counts an attempt.

        Refused: returned, nacked, a channel error blamed on the message (NotFound,
        PreconditionFailed, AccessRefused), or a message that cannot go on this broker's wire
        (TypeError/ValueError, e.g. larger than frame_max). Anything else (the connection lost or
        refused, a timeout, a closed publisher, a refused login) is the relay's trouble, not the
        message's: the row waits for the next batch with its attempts unchanged.
        """
        from .._exceptions import ChannelError

        verdicts = cls([], {}, [])
        for row, result in zip(rows, results, strict=True):
            error = result.error
            if error is None:
                verdicts.done.append(row.id)
            elif result.status in ("returned", "nacked") or isinstance(error, (ChannelError, TypeError, ValueError)):
                verdicts.refused[row.id] = f"{type(error).__name__}: {error}"
            else:
                verdicts.later.append(row.id)
        return verdicts


class Batch(Protocol):
    """Rows a relay holds until it settles them (or aborts: they stay pending)."""

    rows: list[Row]

    async def settle(self, verdicts: Verdicts, max_attempts: int, keep_done: bool) -> list[int]:
        """Record the verdicts, end the claim; the ids of rows moved aside as failed."""
        ...

    async def abort(self) -> None: ...


class Store(Protocol):
    """Where one Outbox keeps its rows (PostgreSQL or SQLite)."""

    table: str

    async def setup(self) -> None: ...

    async def insert(self, messages: Sequence[Prepared]) -> None: ...

    def caller_insert(self, style: str) -> str: ...

    async def claim(self, limit: int) -> Batch: ...

    async def wait(self, seconds: float) -> None: ...

    def wake(self) -> None: ...

    async def failed(self) -> list[FailedMessage]: ...

    async def requeue(self, message_ids: Sequence[str] | None) -> int: ...

    async def stats(self) -> OutboxStats: ...

    async def purge_done(self, older_than: float) -> int: ...

    def relay_lock(self) -> AbstractAsyncContextManager[None]: ...

    async def close(self) -> None: ...
