"""The relay: publish an outbox's committed rows with confirms, and only then mark them done.

A loop of batches: claim up to `batch_size` pending rows in insertion order, publish
them all at once through the publisher's batch engine (many confirms in flight, the
retry policy for lost connections, the same bytes and message id every attempt; a
row the broker refused before goes alone, ahead of the rest), then settle them:
confirmed rows are deleted (or kept `keep_done` seconds), rows the broker refused
count an attempt and after `max_attempts` are moved aside as failed, rows whose
connection died stay pending for the next batch. When the outbox is empty the relay
deletes the done rows older than `keep_done`, then sleeps until an add() wakes it
(LISTEN/NOTIFY on PostgreSQL, the same process on SQLite) or `poll_interval` passes.

A crash between the publish and the settle publishes those rows again: at least
once, duplicates carrying the same message id, at most one batch per crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING

from .._durations import seconds
from .._result import PublishResult
from ._rows import Row, Verdicts

if TYPE_CHECKING:
    from .._publisher import Publisher
    from ._outbox import Outbox

__all__ = ["Relay", "RelayMetrics"]

log = logging.getLogger("aiopublish.outbox")

# Done rows older than keep_done are deleted when the relay finds the outbox empty, at most this often (seconds).
_PURGE_INTERVAL = 60.0


@dataclass(slots=True)
class RelayMetrics:
    """A relay's running totals: messages confirmed (`relayed`), moved aside (`failed`), refused
    once but to be tried again (`refused`), left for later after a lost connection (`deferred`),
    `batches` settled, and `lag`: the age in seconds of the oldest message of the last batch
    when its confirms were in (how far behind the application the relay runs)."""

    relayed: int = 0
    failed: int = 0
    refused: int = 0
    deferred: int = 0
    batches: int = 0
    lag: float = 0.0


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, not {value!r}")
    return value


class Relay:
    """Publishes an outbox through a publisher until stopped: `async with outbox.relay(publisher): ...`.

    batch_size (1000): rows claimed and published at once (the in-flight window, and
    the most a crash can publish twice); poll_interval (1.0 s): how long an idle relay
    sleeps when nothing wakes it; max_attempts (5): broker refusals before a message is
    moved aside; retry_wait (1.0 s): the pause after a batch the broker could not take
    at all (it is down); keep_done (None): seconds to keep confirmed rows (state 'done')
    before deleting them, None deletes at once; timeout (the publisher's): seconds a
    batch's publish may take.
    """

    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        *,
        batch_size: int = 1000,
        poll_interval: float | timedelta = 1.0,
        max_attempts: int = 5,
        retry_wait: float | timedelta = 1.0,
        keep_done: float | timedelta | None = None,
        timeout: float | timedelta | None = None,
    ) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self.batch_size: int = _positive_int("batch_size", batch_size)
        self.max_attempts: int = _positive_int("max_attempts", max_attempts)
        self.poll_interval: float = seconds(poll_interval, "poll_interval")
        self.retry_wait: float = seconds(retry_wait, "retry_wait")
        self.keep_done: float | None = None if keep_done is None else seconds(keep_done, "keep_done")
        overrides: dict[str, object] = {"use_confirms": True}  # a row is done only once the broker has it
        if timeout is not None:
            overrides["timeout"] = timeout
        self._options = publisher._defaults.override(overrides)
        self._metrics = RelayMetrics()
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        # Bumped by each wait_idle(): only a look that began after the latest one may report idle. A
        # claim already under way when rows were committed can come back empty (its query ran first).
        self._idle_asked = 0
        self._task: asyncio.Task[None] | None = None
        self._purged_at = -math.inf
        #: Whether the relay's last look found rows pending (False before its first look).
        self.has_work: bool = False

    @property
    def metrics(self) -> RelayMetrics:
        """A snapshot of this relay's counters."""
        return replace(self._metrics)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start relaying in a background task (what `async with` does)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"aiopublish relay {self.outbox.table}"
            )

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 (a grace period, then cancel)
        """Let the batch under way finish (at most `timeout` seconds), then stop. Idempotent."""
        self._stopping.set()
        self.outbox._store.wake()
        task = self._task
        if task is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Relay:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def wait(self) -> None:
        """Until the relay ends (after stop(), or with the error that ended it); cancelling this leaves it running."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def wait_idle(self) -> None:
        """Until the relay has found the outbox empty (every committed row so far is published or failed)."""
        self._idle_asked += 1
        self._idle.clear()
        self.outbox._store.wake()
        idle = asyncio.ensure_future(self._idle.wait())
        task = self._task
        try:
            if task is None:
                await idle
                return
            await asyncio.wait([idle, task], return_when=asyncio.FIRST_COMPLETED)
            if not idle.done():
                task.result()  # the relay ended: raise its error
                raise RuntimeError("the relay stopped before the outbox was empty")
        finally:
            idle.cancel()

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Relay until stop() (the foreground form of start())."""
        store = self.outbox._store
        async with store.relay_lock():
            await store.wait(0)  # LISTEN before the first look: no commit after it goes unnoticed
            while not self._stopping.is_set():
                if self.publisher.is_closed:
                    log.warning("outbox relay: its publisher is closed; the relay stops")
                    return
                asked = self._idle_asked
                try:
                    await self.outbox.setup()
                    published = await self._one_batch()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the database went away: try again later, never die
                    log.warning(
                        "outbox relay: %s: %s; trying again in %.1f s", type(exc).__name__, exc, self.poll_interval
                    )
                    await self._pause(self.poll_interval)
                    continue
                if published is None:
                    await self._purge()
                    if asked == self._idle_asked:  # else a wait_idle() came during the look: look again
                        self._idle.set()
                    await store.wait(self.poll_interval)
                elif not published:
                    await self._pause(self.retry_wait)

    async def _purge(self) -> None:
        """Delete done rows older than keep_done (when kept at all), at most every _PURGE_INTERVAL seconds."""
        if self.keep_done is None:
            return
        now = time.monotonic()
        if now - self._purged_at >= min(_PURGE_INTERVAL, self.keep_done):
            self._purged_at = now
            await self.outbox._store.purge_done(self.keep_done)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _one_batch(self) -> bool | None:
        """One batch: None if the outbox had nothing pending, else whether any row got the broker's verdict."""
        batch = await self.outbox._store.claim(self.batch_size)
        self.has_work = bool(batch.rows)
        if not batch.rows:
            await batch.abort()
            return None
        self._idle.clear()
        try:
            verdicts = Verdicts.of(batch.rows, await self._publish(batch.rows))
            failed = await batch.settle(verdicts, self.max_attempts, self.keep_done is not None)
        except BaseException:
            with contextlib.suppress(Exception):
                await batch.abort()
            raise
        self._count(batch.rows[0].created_at, verdicts, failed)
        return bool(verdicts.done or verdicts.refused)

    async def _publish(self, rows: list[Row]) -> list[PublishResult]:
        """Publish the rows, in order; one the broker refused before goes alone, ahead of the rest.

        A refusal by a channel error (NotFound, ...) closes the channel with the confirms of
        the messages before it unsent: those are published again (duplicates). Sent alone, a
        message refused before cannot do that to its batch twice.
        """
        publish = self.publisher._publish_prepared
        results: dict[int, PublishResult] = {}
        for row in rows:
            if row.attempts:
                (results[row.id],) = await publish([row.message], self._options)
        rest = [row for row in rows if not row.attempts]
        if rest:
            answers = await publish([row.message for row in rest], self._options)
            results.update(zip((row.id for row in rest), answers, strict=True))
        return [results[row.id] for row in rows]

    def _count(self, oldest: float, verdicts: Verdicts, failed: list[int]) -> None:
        metrics = self._metrics
        metrics.batches += 1
        metrics.relayed += len(verdicts.done)
        metrics.failed += len(failed)
        metrics.refused += len(verdicts.refused) - len(failed)
        metrics.deferred += len(verdicts.later)
        if verdicts.done:
            metrics.lag = max(0.0, time.time() - oldest)
        for row_id in failed:
            log.error("outbox relay: message of row %d moved aside as failed: %s", row_id, verdicts.refused[row_id])
