"""The publish engine: one object that owns what every publish needs, and the one retry loop.

An Engine holds the link (connection and channel), the in-flight slots, the confirm
deadlines, the metrics and the secret mask; `publish()`, `publish_many()`, the outbox
relay and start-up `connect()` all run their attempts through `Engine.run`, so they
share one rule for everything around an attempt:

- each attempt's error is aiopublish's own: an error from below (a socket's reset at a
  write or a drain, an aiormq or pamqp error) is translated where it leaves the attempt
  (the one error boundary), and is then retried like any other connection loss;
- with `retry`, the retry policy decides what is tried again and how long to wait
  (with `retry_nacked`, nacks too);
- everything happens inside one deadline (`timeout`); when it passes, the caller gets
  `Expired` with the last attempt's error and says what that means for it (a
  PublishTimeout naming it, the nack itself, per-message timeouts, ConnectionFailed).

An attempt at one message takes the ready channel (opening one if needed), declares
what the call names, waits while the broker blocks publishers, writes the message and
waits for its confirm. A Bystander (the channel closed for another publish's error)
is published again at once, up to BYSTANDER_REPUBLISHES times, without spending an
attempt; a Suspect (it may have caused that error) is published again alone
(Link.probe). Most publishes need none of that: the first attempt is made without
the retry policy and without a timer of its own (`publish`'s fast path), and only one
that fails goes on, from its error, under the policy.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from ._batch import BatchRun
from ._blame import BYSTANDER_REPUBLISHES, Bystander, Suspect
from ._channel import PublishChannel, wait_confirm
from ._deadlines import ConfirmDeadlines, DeadlinePassed
from ._exceptions import (
    ConnectionFailed,
    PublisherClosed,
    PublishTimeout,
    is_nack,
    is_retriable,
    is_retriable_or_nack,
    translate,
)
from ._limit import InFlightLimit
from ._link import LinkLike
from ._metrics import Metrics
from ._options import Options, Prepared
from ._result import PublishResult
from ._tracing import NO_SPAN, NoRecord
from .retry import DEFAULT_RETRY_POLICY, RetryState

__all__ = ["Engine", "Expired", "SpoolLayer", "SpoolSource"]

log = logging.getLogger("aiopublish")
# Start-up connect retries have a logger of their own: a command line that prints its own one-line
# error can leave them out, while an application sees at WARNING why its start is slow.
connect_log = logging.getLogger("aiopublish.connect")


# At most one retry line per this many seconds; the next one counts the retries in between.
_RETRY_LOG_INTERVAL = 1.0


class LogGate:
    """Lets one log line through per `interval` seconds and counts the ones held back."""

    __slots__ = ("_held", "_interval", "_next")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next = 0.0
        self._held = 0

    def let_through(self) -> int | None:
        """None: hold this line back; else log it, saying it stands for this many more."""
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return None
        self._next = now + self._interval
        held, self._held = self._held, 0
        return held


class Expired(Exception):
    """Internal: the deadline of Engine.run passed; `last` is the last attempt's error, if one was made."""

    def __init__(self, last: BaseException | None) -> None:
        super().__init__("deadline passed")
        self.last = last


class Engine:
    """The link, slots, deadlines, metrics and mask of one Publisher in one event loop, and its attempts."""

    __slots__ = (
        "close_timeout",
        "deadlines",
        "link",
        "log_gate",
        "mask",
        "masked_url",
        "metrics",
        "slots",
        "unconfirmed",
    )

    def __init__(
        self,
        link: LinkLike,
        max_in_flight: int,
        metrics: Metrics,
        mask: Callable[[str], str],
        masked_url: str,
        close_timeout: float,
        *,
        unconfirmed: LinkLike | None = None,
    ) -> None:
        """`unconfirmed`: the link's view for use_confirms=False publishes (a channel not in confirm mode)."""
        self.link = link
        self.slots = InFlightLimit(max_in_flight)
        # The confirm deadlines of publishes that wait only for their confirm (the fast path).
        self.deadlines = ConfirmDeadlines()
        self.metrics = metrics
        self.mask = mask
        self.masked_url = masked_url
        self.close_timeout = close_timeout
        self.log_gate = LogGate(_RETRY_LOG_INTERVAL)
        #: The same engine (slots, deadlines, metrics shared) over the unconfirmed view of the link.
        self.unconfirmed: Engine | None = None
        if unconfirmed is not None:
            sibling = copy.copy(self)
            sibling.link = unconfirmed
            self.unconfirmed = sibling

    # -- the one retry loop ------------------------------------------------------------------

    async def run(
        self,
        attempt: Callable[[], Awaitable[None]],
        options: Options,
        deadline: float | None,
        on_retry: Callable[[RetryState], None],
        retry: Callable[[BaseException], bool] = is_retriable,
        started: float | None = None,
    ) -> None:
        """Run `attempt` under `options`' retry policy (once without `retry`) until it succeeds, by `deadline`.

        Raises the last attempt's error (translated to aiopublish's exception for it), or
        Expired when `deadline` (loop time, None: no limit) passed first. `started`: the
        time.monotonic() of a first attempt made before entering, so the policy's clock
        counts it.
        """
        last: BaseException | None = None
        mask = self.mask

        async def tracked() -> None:
            nonlocal last
            try:
                await attempt()
            except Exception as exc:
                # The error boundary: nothing from below reaches a caller untranslated.
                error = translate(exc, mask=mask)
                last = error
                if error is exc:
                    raise
                raise error from None

        try:
            async with asyncio.timeout_at(deadline) as timer:
                if options.retry:
                    policy = options.retry_policy or DEFAULT_RETRY_POLICY
                    start = time.monotonic() if started is None else started
                    await policy.resume(tracked, start, retry=retry, on_retry=on_retry)
                else:
                    await tracked()
        except TimeoutError:
            if not timer.expired():
                raise
            raise Expired(last) from None

    def retry_hook(
        self,
        what: str,
        which: object,
        span: NoRecord = NO_SPAN,
        logger: logging.Logger = log,
        gate: LogGate | None = None,
    ) -> Callable[[RetryState], None]:
        """The retry policy's hook: count the retry and log it (attempt, error, wait) with secrets masked.

        A lost connection makes every publish waiting on it retry at once: one line per second
        says so, with how many retries it stands for, not one line per message.
        """
        metrics, mask = self.metrics, self.mask
        gate = self.log_gate if gate is None else gate

        def on_retry(state: RetryState) -> None:
            metrics.retried += 1
            error = mask(str(state.exception))
            span.retried(state, error)
            others = gate.let_through()
            if others is None:
                return
            logger.warning(
                "%s %s failed on attempt %d (%s: %s); retrying in %.2f s%s",
                what,
                which,
                state.attempt,
                type(state.exception).__name__,
                error,
                state.next_wait,
                f" (and {others} more retries since the last line)" if others else "",
            )

        return on_retry

    # -- connecting --------------------------------------------------------------------------

    async def connect(self, options: Options) -> None:
        """Open the channel (declaring what the publisher lists) under the retry policy, within `timeout`."""
        link = self.link

        async def attempt() -> None:
            await link.channel()

        deadline = None if options.timeout is None else asyncio.get_running_loop().time() + options.timeout
        # Its own gate: one connect's retries are a line each, apart from the publishes' summary.
        on_retry = self.retry_hook("connect to", self.masked_url, logger=connect_log, gate=LogGate(0.0))
        try:
            await self.run(attempt, options, deadline, on_retry)
        except Expired as expired:
            text = f"could not connect to {self.masked_url} within {options.timeout} s"
            if expired.last is not None:
                text += f"; last error: {expired.last}"
            raise ConnectionFailed(text) from None

    # -- one message ---------------------------------------------------------------------------

    async def publish(self, message: Prepared, options: Options, deadline: float | None, span: NoRecord) -> None:
        """Publish `message` under `options` by `deadline` (loop time); raise what ended it.

        The usual publish (the channel open, nothing to declare, the broker not blocking, the
        socket keeping up) is written at once and only waits for its confirm: its deadline is a
        ConfirmDeadlines entry, not a timer of its own, and the retry policy is not entered
        unless the attempt fails. Everything else takes the full path (_publish_retrying).
        """
        if not options.use_confirms and self.unconfirmed is not None:
            return await self.unconfirmed.publish(message, options, deadline, span)
        link = self.link
        channel = link.ready_channel()
        if channel is None or options.call_declare or link.is_blocked or channel.backed_up:
            return await self._publish_retrying(message, options, deadline, span)
        started = time.monotonic()
        failed: Exception
        try:
            future = channel.send(message, track=options.use_confirms)
        except Exception as exc:
            failed = exc
        else:
            # _write's work, inline: one call less per publish (instructions guard).
            self.metrics.published += 1
            if span is not NO_SPAN:
                span.sent(link, channel)
            if future is None:
                return
            tag = channel.last_delivery_tag
            if deadline is not None:
                self.deadlines.add(deadline, future)
            # wait_confirm's work, inline (one coroutine less per publish), and the deadline's.
            try:
                await future
            except asyncio.CancelledError:
                channel.forget(future, tag)  # leave no record behind for a late confirm
                raise
            except DeadlinePassed:
                channel.forget(future, tag)
                raise self._timed_out(message, options, deadline, None) from None
            except Exception as exc:
                failed = exc
            else:
                if options.use_confirms:  # else an AMQP 1.0 send that waited for link credit
                    self.metrics.confirmed += 1
                return
        # The attempt failed (a lost connection, a channel closed for another publish, a nack...):
        # the full path goes on from its error as if it had made the attempt itself.
        await self._publish_retrying(message, options, deadline, span, failed, started)

    async def _publish_retrying(
        self,
        message: Prepared,
        options: Options,
        deadline: float | None,
        span: NoRecord,
        failed: Exception | None = None,
        started: float | None = None,
    ) -> None:
        """Attempts under the retry policy inside `deadline`; `failed`: the first attempt's error, if made already."""
        first = [failed] if failed is not None else []

        async def attempt() -> None:
            republished = 0
            while True:
                try:
                    if first:
                        await self._after_failure(message, first.pop())
                    else:
                        await self._attempt(message, options, span)
                    return
                except Bystander:
                    # Another publish's error closed the channel: publish again at once, no attempt spent.
                    republished += 1
                    if not options.retry or republished > BYSTANDER_REPUBLISHES:
                        raise

        retry = is_retriable_or_nack if options.retry_nacked else is_retriable
        on_retry = self.retry_hook("publish of message", message.message_id, span=span)
        try:
            await self.run(attempt, options, deadline, on_retry, retry, started)
        except Expired as expired:
            last = expired.last
            if last is not None and is_nack(last):
                raise last from None  # retry_nacked: the broker kept refusing it until the deadline
            raise self._timed_out(message, options, deadline, last) from last
        except PublisherClosed:
            # Called before close(), still unconfirmed when close_timeout ran out.
            raise ConnectionFailed(
                f"the publisher closed (close_timeout {self.close_timeout} s passed) "
                f"before message {message.message_id} was confirmed"
            ) from None

    async def _attempt(self, message: Prepared, options: Options, span: NoRecord) -> None:
        link = self.link
        channel = link.ready_channel() or await link.channel()
        if options.call_declare:
            await link.ensure_declared(channel, options.call_declare)
        if link.is_blocked:
            await link.wait_unblocked()
        if channel.backed_up:
            await channel.wait_writable()
        future = self._write(channel, message, options, span)
        if future is None:
            return
        try:
            await wait_confirm(channel, future, channel.last_delivery_tag)
        except Suspect as exc:
            # Another publish's channel error may be this one's: publish it again alone to know.
            await self._after_failure(message, exc)
            return
        if options.use_confirms:  # else an AMQP 1.0 send that waited for link credit
            self.metrics.confirmed += 1

    async def _after_failure(self, message: Prepared, error: Exception) -> None:
        """Go on from a first attempt's error as _attempt would have: probe a Suspect, else raise it."""
        if not isinstance(error, Suspect):
            raise error
        self.metrics.published += 1
        await self.link.probe(message)
        self.metrics.confirmed += 1

    def _write(
        self, channel: PublishChannel, message: Prepared, options: Options, span: NoRecord
    ) -> asyncio.Future[None] | None:
        """Queue the message's frames on `channel` and count it; the future of its confirm (None without confirms)."""
        future = channel.send(message, track=options.use_confirms)
        self.metrics.published += 1
        if span is not NO_SPAN:
            span.sent(self.link, channel)
        return future

    def _timed_out(
        self, message: Prepared, options: Options, deadline: float | None, last: BaseException | None
    ) -> PublishTimeout:
        """The PublishTimeout of a publish whose deadline passed; checks that the connection still answers."""
        link = self.link
        if deadline is not None and options.timeout is not None:
            link.check_alive(deadline - options.timeout)
        text = f"publish of message {message.message_id} did not complete within {options.timeout} s"
        if link.is_blocked:
            text += f": the broker is blocking publishers ({link.blocked_reason})"
        elif last is not None:
            text += f"; last error: {last}"
        return PublishTimeout(text)

    # -- many messages -------------------------------------------------------------------------

    async def publish_batch(
        self,
        messages: Sequence[Prepared | None],
        options: Options,
        refused: Mapping[int, BaseException] | None = None,
        span: NoRecord = NO_SPAN,
    ) -> list[PublishResult]:
        """Publish encoded messages (publish_many, the outbox relay); one result per message, in order (see _batch)."""
        if not options.use_confirms and self.unconfirmed is not None:
            return await self.unconfirmed.publish_batch(messages, options, refused, span)
        return await BatchRun(self, messages, options, refused, span).run()


class SpoolLayer(Protocol):
    """A layer over the engine that keeps what the broker cannot take in time (aiopublish.outbox's spool).

    The Publisher sends each prepared message through `publish` instead of the engine's; it
    returns True when the message went to the spool rather than to the broker.
    """

    async def connect(self) -> None: ...

    async def publish(self, message: Prepared, options: Options, deadline: float | None, span: NoRecord) -> bool: ...

    async def stop(self, grace: float) -> None: ...


class SpoolSource(Protocol):
    """What `Publisher(spool=...)` takes: an aiopublish.outbox.Outbox, which makes the layer over the engine."""

    def spool_layer(self, publisher: Any, engine: Callable[[], Engine]) -> SpoolLayer: ...
