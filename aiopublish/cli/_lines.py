"""The publishing loop of `--json-lines`: batches of lines through `publish_many`, two at a time.

The Publisher's own `max_in_flight` (the `--window`) bounds what waits for a confirm: while
one batch waits for its confirms the next is already queued behind it and goes out as slots
free up. Nothing else limits the publishing; reading stops after two batches ahead, so memory
stays bounded however long the input is.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._exceptions import SerializationError, UndeliverableMessage
from .._publisher import Publisher, PublishResult
from ._console import Console, Stats

__all__ = ["LinePublisher"]

#: Failures described one by one on stderr; the line numbers of all of them are listed at the end.
MAX_DETAILED_FAILURES = 20
#: Batches handed to publish_many at once: one waiting for its confirms, the next queued behind it.
BATCHES_AHEAD = 2


@dataclass(frozen=True)
class _Outcome:
    status: str  # confirmed, returned, nacked, failed
    error: BaseException | None = None


async def _publish_batch(publisher: Publisher, payloads: list[Any]) -> list[_Outcome]:
    """Each payload's outcome; a payload that cannot be encoded fails alone."""
    try:
        return [_Outcome(r.status, r.error) for r in await publisher.publish_many(payloads)]
    except (TypeError, ValueError):
        # publish_many encodes the whole batch first and sends nothing if one payload is refused:
        # publish these one by one so only that one fails (rare: a value the serializer refuses).
        results = await asyncio.gather(*(publisher.publish_many([p]) for p in payloads), return_exceptions=True)
        return [_single(result) for result in results]


def _single(result: list[PublishResult] | BaseException) -> _Outcome:
    if isinstance(result, BaseException):
        if not isinstance(result, Exception):
            raise result
        return _Outcome("failed", result)
    return _Outcome(result[0].status, result[0].error)


class LinePublisher:
    """Publishes lines of JSON, counts what became of each in `stats`, reports failures by line number."""

    def __init__(self, publisher: Publisher, console: Console, stats: Stats) -> None:
        self.publisher = publisher
        self.console = console
        self.stats = stats
        self.failures: list[int] = []
        #: Why the loop stopped before the end of the input, if it did.
        self.stopped: str | None = None
        self._pending: deque[tuple[list[int], asyncio.Task[list[_Outcome]]]] = deque()

    async def run(self, batches: Any) -> None:
        """Publish every batch of `(line_number, bytes)` from `batches` (an async iterator).

        Returns at the end of the input or at the first error every later line would hit too
        (a missing exchange, a refused permission, the broker lost for good, a timeout); the
        batches already handed to the publisher are waited for in every case, cancellation too.
        """
        try:
            async for batch in batches:
                self._start(batch)
                while self._pending and (len(self._pending) >= BATCHES_AHEAD or self._pending[0][1].done()):
                    await self._settle_first()
                if self.stopped is not None:
                    break
        except OSError as exc:
            self.stopped = f"cannot read the input: {exc.strerror or exc}"
        finally:
            while self._pending:
                await self._settle_first()

    def _start(self, batch: Sequence[tuple[int, bytes]]) -> None:
        numbers: list[int] = []
        payloads: list[Any] = []
        for number, line in batch:
            if not line.strip():
                continue
            try:
                payloads.append(json.loads(line))
            except (ValueError, RecursionError) as exc:
                self.stats.failed += 1
                self._failed(number, f"invalid JSON: {exc}")
                continue
            numbers.append(number)
        if payloads:
            self.stats.sent += len(payloads)
            task = asyncio.get_running_loop().create_task(_publish_batch(self.publisher, payloads))
            self._pending.append((numbers, task))

    async def _settle_first(self) -> None:
        numbers, task = self._pending[0]
        # asyncio.wait, not `await task`: a Ctrl-C cancels this wait, never the publishes under way.
        await asyncio.wait({task})
        self._pending.popleft()
        for number, outcome in zip(numbers, task.result(), strict=True):
            self._count(number, outcome)

    def _count(self, number: int, outcome: _Outcome) -> None:
        stats = self.stats
        error = outcome.error
        if error is None:
            stats.confirmed += 1
        elif isinstance(error, UndeliverableMessage) and error.reason == "returned":
            stats.returned += 1
            self._failed(number, f"returned by the broker: {error.reply_code} {error.reply_text}")
        elif isinstance(error, UndeliverableMessage):
            stats.nacked += 1
            self._failed(number, "nacked by the broker")
        elif isinstance(error, SerializationError):
            stats.failed += 1
            self._failed(number, str(error))
        else:
            # The broker refused the destination or went away, or a timeout: later lines would fare no better.
            stats.failed += 1
            self._failed(number, f"{type(error).__name__}: {error}")
            if self.stopped is None:
                self.stopped = f"{type(error).__name__}: {error}"

    def _failed(self, number: int, reason: str) -> None:
        self.failures.append(number)
        if len(self.failures) <= MAX_DETAILED_FAILURES:
            self.console.error(f"line {number}: {reason}")
        elif len(self.failures) == MAX_DETAILED_FAILURES + 1:
            self.console.error("more lines failed; their numbers follow at the end")
