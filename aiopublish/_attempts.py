"""One message's way to the broker: attempts under the retry policy, all inside one deadline.

An attempt takes the ready channel (opening one if needed), declares what the call
names, waits while the broker blocks publishers, writes the message and waits for
its confirm. Around it:

- a Bystander (the channel closed for another publish's error) is published again
  at once, up to BYSTANDER_REPUBLISHES times, without spending an attempt;
- a Suspect (it may have caused that error) is published again alone (Link.probe);
- anything retriable waits as the retry policy says (with `retry_nacked`, nacks too);
- the deadline turns into PublishTimeout naming the last error, or the nack itself.

Most publishes need none of that: the first attempt is made without the retry policy
and without a timer of its own (publish_one's fast path), and only one that fails
goes on, from its error, under the policy (_publish_retrying).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ._blame import BYSTANDER_REPUBLISHES, Bystander, Suspect
from ._channel import PublishChannel, wait_confirm
from ._deadlines import ConfirmDeadlines, DeadlinePassed
from ._exceptions import ConnectionFailed, PublisherClosed, PublishTimeout, is_nack, is_retriable, is_retriable_or_nack
from ._link import LinkLike
from ._metrics import Metrics
from ._options import Options, Prepared
from ._tracing import NO_SPAN, NoRecord
from .retry import DEFAULT_RETRY_POLICY, RetryState

__all__ = ["publish_one", "retry_hook"]

log = logging.getLogger("aiopublish")


def retry_hook(
    metrics: Metrics,
    mask: Callable[[str], str],
    what: str,
    which: object,
    level: int = logging.WARNING,
    span: NoRecord = NO_SPAN,
) -> Callable[[RetryState], None]:
    """The retry policy's hook: count the retry and log it (attempt, error, wait) with secrets masked."""

    def on_retry(state: RetryState) -> None:
        metrics.retried += 1
        error = mask(str(state.exception))
        log.log(
            level,
            "%s %s failed on attempt %d (%s: %s); retrying in %.2f s",
            what,
            which,
            state.attempt,
            type(state.exception).__name__,
            error,
            state.next_wait,
        )
        span.retried(state, error)

    return on_retry


async def publish_one(
    link: LinkLike,
    metrics: Metrics,
    mask: Callable[[str], str],
    message: Prepared,
    options: Options,
    deadline: float | None,
    span: NoRecord,
    close_timeout: float,
    deadlines: ConfirmDeadlines,
) -> None:
    """Publish `message` under `options` by `deadline` (loop time); raise what ended it.

    The usual publish (the channel open, nothing to declare, the broker not blocking, the
    socket keeping up) is written at once and only waits for its confirm: its deadline is a
    ConfirmDeadlines entry, not a timer of its own, and the retry policy is not entered
    unless the attempt fails. Everything else takes the full path (_publish_retrying).
    """
    channel = link.ready_channel()
    if channel is None or options.call_declare or link.is_blocked or channel.backed_up:
        return await _publish_retrying(link, metrics, mask, message, options, deadline, span, close_timeout)
    started = time.monotonic()
    failed: Exception
    try:
        future = _write(link, metrics, channel, message, options, span)
    except Exception as exc:
        failed = exc
    else:
        if future is None:
            return
        tag = channel.last_delivery_tag
        if deadline is not None:
            deadlines.add(deadline, future)
        # wait_confirm's work, inline (one coroutine less per publish), and the deadline's.
        try:
            await future
        except asyncio.CancelledError:
            channel.forget(future, tag)  # leave no record behind for a late confirm
            raise
        except DeadlinePassed:
            channel.forget(future, tag)
            raise _timed_out(link, message, options, deadline, []) from None
        except Exception as exc:
            failed = exc
        else:
            metrics.confirmed += 1
            return
    # The attempt failed (a lost connection, a channel closed for another publish, a nack...):
    # the full path goes on from its error as if it had made the attempt itself.
    await _publish_retrying(link, metrics, mask, message, options, deadline, span, close_timeout, failed, started)


async def _publish_retrying(
    link: LinkLike,
    metrics: Metrics,
    mask: Callable[[str], str],
    message: Prepared,
    options: Options,
    deadline: float | None,
    span: NoRecord,
    close_timeout: float,
    failed: Exception | None = None,
    started: float | None = None,
) -> None:
    """Attempts under the retry policy inside `deadline`; `failed`: the first attempt's error, if made already."""
    last_error: list[BaseException] = []
    first = [failed] if failed is not None else []

    async def attempt() -> None:
        republished = 0
        while True:
            try:
                if first:
                    await _after_failure(link, metrics, message, first.pop())
                else:
                    await _attempt(link, metrics, message, options, span)
                return
            except Bystander as exc:
                # Another publish's error closed the channel: publish again at once, no attempt spent.
                republished += 1
                if not options.retry or republished > BYSTANDER_REPUBLISHES:
                    last_error[:] = [exc]
                    raise
            except Exception as exc:
                last_error[:] = [exc]
                raise

    try:
        async with asyncio.timeout_at(deadline) as timer:
            if options.retry:
                policy = options.retry_policy or DEFAULT_RETRY_POLICY
                retry = is_retriable_or_nack if options.retry_nacked else is_retriable
                on_retry = retry_hook(metrics, mask, "publish of message", message.message_id, span=span)
                start = time.monotonic() if started is None else started
                await policy.resume(attempt, start, retry=retry, on_retry=on_retry)
            else:
                await attempt()
    except TimeoutError:
        if not timer.expired():
            raise
        error = _timed_out(link, message, options, deadline, last_error)
        if last_error and is_nack(last_error[0]):
            raise last_error[0] from None  # retry_nacked: the broker kept refusing it until the deadline
        raise error from (last_error[0] if last_error else None)
    except PublisherClosed:
        # Called before close(), still unconfirmed when close_timeout ran out.
        raise ConnectionFailed(
            f"the publisher closed (close_timeout {close_timeout} s passed) "
            f"before message {message.message_id} was confirmed"
        ) from None


async def _after_failure(link: LinkLike, metrics: Metrics, message: Prepared, error: Exception) -> None:
    """Go on from a first attempt's error as _attempt would have: probe a Suspect, else raise it."""
    if not isinstance(error, Suspect):
        raise error
    metrics.published += 1
    await link.probe(message)
    metrics.confirmed += 1


def _timed_out(
    link: LinkLike, message: Prepared, options: Options, deadline: float | None, last_error: list[BaseException]
) -> PublishTimeout:
    """The PublishTimeout of a publish whose deadline passed; checks that the connection still answers."""
    if deadline is not None and options.timeout is not None:
        link.check_alive(deadline - options.timeout)
    text = f"publish of message {message.message_id} did not complete within {options.timeout} s"
    if link.is_blocked:
        text += f": the broker is blocking publishers ({link.blocked_reason})"
    elif last_error:
        text += f"; last error: {last_error[0]}"
    return PublishTimeout(text)


async def _attempt(link: LinkLike, metrics: Metrics, message: Prepared, options: Options, span: NoRecord) -> None:
    channel = link.ready_channel() or await link.channel()
    if options.call_declare:
        await link.ensure_declared(channel, options.call_declare)
    if link.is_blocked:
        await link.wait_unblocked()
    if channel.backed_up:
        await channel.wait_writable()
    future = _write(link, metrics, channel, message, options, span)
    if future is None:
        return
    try:
        await wait_confirm(channel, future, channel.last_delivery_tag)
    except Suspect as exc:
        # Another publish's channel error may be this one's: publish it again alone to know.
        await _after_failure(link, metrics, message, exc)
        return
    metrics.confirmed += 1


def _write(
    link: LinkLike, metrics: Metrics, channel: PublishChannel, message: Prepared, options: Options, span: NoRecord
) -> asyncio.Future[None] | None:
    """Queue the message's frames on `channel` and count it; the future of its confirm (None without confirms)."""
    future = channel.send(message, track=options.use_confirms)
    metrics.published += 1
    if span is not NO_SPAN:
        span.sent(link, channel)
    return future
