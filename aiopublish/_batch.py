"""publish_many's engine: encode a whole batch first, stream it with many confirms in flight, retry what died.

One Batch object settles every confirm of an attempt (no future per message); the
in-flight limit is shared with publish(), so a batch and concurrent publishes
together never exceed max_in_flight. A message whose connection or channel died
before its confirm is published again under the retry policy (same bytes, same
message_id); the broker's verdict on a message (returned, nacked, refused) is final.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._blame import BYSTANDER_REPUBLISHES, Bystander, Suspect
from ._channel import Batch, PublishChannel
from ._exceptions import PublishTimeout, is_retriable, is_retriable_or_nack
from ._limit import InFlightLimit
from ._link import LinkLike
from ._metrics import Metrics
from ._options import Options, Prepared, check_routing_key
from ._result import PublishResult, PublishStatus, result_of
from ._tracing import NO_SPAN, NoRecord
from .retry import DEFAULT_RETRY_POLICY, RetryState

__all__ = ["prepare_batch", "publish_prepared"]

# Every this many writes the batch lets the socket drain (a slow or blocked broker).
_DRAIN_EVERY = 256


def prepare_batch(
    payloads: list[Any],
    options: Options,
    routing_keys: Sequence[str] | None,
    headers: Sequence[Mapping[str, Any] | None] | None,
) -> tuple[list[Prepared | None], dict[int, BaseException]]:
    """Encode every payload with its own routing key / headers, before anything is sent.

    A payload, routing key or header that cannot go on the wire is refused alone: its
    entry is None and its error (a TypeError/ValueError naming its index) is in the dict;
    the rest of the batch goes out. Lists of the wrong length raise ValueError.
    """
    for name, values in (("routing_keys", routing_keys), ("headers", headers)):
        if values is not None and len(values) != len(payloads):
            raise ValueError(f"{name} has {len(values)} entries for {len(payloads)} payloads")
    messages: list[Prepared | None] = []
    refused: dict[int, BaseException] = {}
    prepare = options.prepare
    # Routing keys already checked: a batch usually spreads over a few destinations.
    checked: set[str] = set()
    for index, payload in enumerate(payloads):
        try:
            routing_key = None
            if routing_keys is not None:
                routing_key = routing_keys[index]
                if type(routing_key) is not str or routing_key not in checked:
                    routing_key = check_routing_key("routing_key", routing_key)
                    checked.add(routing_key)
            messages.append(prepare(payload, routing_key, None if headers is None else headers[index]))
        except (TypeError, ValueError) as exc:
            refused[index] = _refusal(index, exc)
            messages.append(None)
    return messages, refused


def _refusal(index: int, exc: TypeError | ValueError) -> BaseException:
    """The error of a message refused before sending, naming its index, caused by the original."""
    error = type(exc)(f"payload {index}: {exc}")
    error.__cause__ = exc
    return error


async def publish_prepared(
    link: LinkLike,
    slots: InFlightLimit,
    metrics: Metrics,
    messages: Sequence[Prepared | None],
    options: Options,
    on_retry: Callable[[RetryState], None],
    refused: Mapping[int, BaseException] | None = None,
    span: NoRecord = NO_SPAN,
) -> list[PublishResult]:
    """Publish encoded messages under `options` (confirms, retry, timeout); one result per message, in order.

    Entries that are None were refused before sending, with their error in `refused`.
    """
    errors: dict[int, BaseException] = dict(refused or {})
    todo = [index for index, message in enumerate(messages) if message is not None]
    retriable = is_retriable_or_nack if options.retry_nacked else is_retriable
    started = asyncio.get_running_loop().time()

    async def attempt() -> None:
        nonlocal todo
        for _ in range(1 + BYSTANDER_REPUBLISHES):
            await _send(link, slots, metrics, messages, todo, options, errors, span)
            again = [i for i in todo if i in errors and retriable(errors[i])]
            if not again:
                return
            todo = again
            # Messages caught in another's channel error go again at once; anything else waits.
            if not options.retry or not all(isinstance(errors[i], Bystander) for i in again):
                break
        raise errors[todo[0]]

    try:
        async with asyncio.timeout(options.timeout) as deadline:
            if options.retry:
                policy = options.retry_policy or DEFAULT_RETRY_POLICY
                await policy.run(attempt, retry=retriable, on_retry=on_retry)
            else:
                await attempt()
    except TimeoutError:
        if not deadline.expired():
            raise
        timeout = PublishTimeout(f"publish_many did not complete within {options.timeout} s")
        link.check_alive(started)
        for index in todo:
            if index not in errors or is_retriable(errors[index]):  # a nack stays "nacked"
                errors[index] = timeout
    except asyncio.CancelledError as exc:
        span.finish(exc)
        raise
    except Exception:
        pass  # every message's own error is in `errors`
    results = _results(messages, errors, options, metrics)
    span.finish_batch(results)
    return results


async def _send(
    link: LinkLike,
    slots: InFlightLimit,
    metrics: Metrics,
    messages: Sequence[Prepared | None],
    todo: list[int],
    options: Options,
    errors: dict[int, BaseException],
    span: NoRecord,
) -> None:
    """One attempt at sending `todo`: fills `errors` for those that failed, clears it for the rest."""
    for index in todo:
        errors.pop(index, None)
    try:
        channel = link.ready_channel() or await link.channel()
        if options.call_declare:
            await link.ensure_declared(channel, options.call_declare)
    except Exception as exc:
        for index in todo:
            errors[index] = exc
        return
    batch = Batch(asyncio.get_running_loop(), slots.release)
    sent: list[int] = []
    try:
        await _stream(link, channel, slots, metrics, messages, todo, options.use_confirms, batch, errors, sent)
        batch.seal()
        await batch.done
    finally:
        errors.update(batch.errors)
        span.written(sent, len(sent))
    await _probe_suspects(link, metrics, messages, todo, errors)


async def _stream(
    link: LinkLike,
    channel: PublishChannel,
    slots: InFlightLimit,
    metrics: Metrics,
    messages: Sequence[Prepared | None],
    todo: list[int],
    track: bool,
    batch: Batch,
    errors: dict[int, BaseException],
    sent: list[int],
) -> None:
    """Write every message of `todo` on `channel` in order, within the in-flight limit; `sent` gets what went out."""
    send = channel.send
    try_acquire = slots.try_acquire
    # A connection.blocked is read by the event loop, so it can only arrive while this loop awaits:
    # look again after each await, not before every message.
    look_for_block = True
    for position, index in enumerate(todo):
        if look_for_block:
            if link.is_blocked:
                await link.wait_unblocked()
            look_for_block = False
        if not try_acquire():
            await slots.acquire()
            look_for_block = True
        message = messages[index]
        assert message is not None
        try:
            send(message, track=track, batch=batch, index=index)
        except (TypeError, ValueError) as exc:  # this message cannot go on this connection (frame_max)
            slots.release()
            errors[index] = type(exc)(f"payload {index}: {exc}")
            continue
        except Exception as exc:
            slots.release()
            for rest in todo[position:]:
                errors[rest] = exc
            return
        metrics.published += 1
        sent.append(index)
        if not track:
            slots.release()
        if position % _DRAIN_EVERY == _DRAIN_EVERY - 1:
            await channel.wait_writable()
            look_for_block = True


async def _probe_suspects(
    link: LinkLike,
    metrics: Metrics,
    messages: Sequence[Prepared | None],
    todo: list[int],
    errors: dict[int, BaseException],
) -> None:
    """Publishes that may have caused another's channel error: each again alone, to find out."""
    for index in [i for i in todo if isinstance(errors.get(i), Suspect)]:
        message = messages[index]
        assert message is not None
        try:
            await link.probe(message)
        except Exception as exc:
            errors[index] = exc
        else:
            metrics.published += 1
            del errors[index]


def _results(
    messages: Sequence[Prepared | None], errors: dict[int, BaseException], options: Options, metrics: Metrics
) -> list[PublishResult]:
    results: list[PublishResult] = []
    append = results.append
    went_through: PublishStatus = "confirmed" if options.use_confirms else "sent"
    through = 0
    for index, message in enumerate(messages):
        error = errors.get(index)
        if error is None and message is not None:  # the usual case: no result_of, counted below
            append(PublishResult(index, message.message_id, went_through))
            through += 1
            continue
        # A message refused before sending never got an id of its own.
        message_id = message.message_id if message is not None else options.message_id or ""
        result = result_of(index, message_id, error, options.use_confirms)
        metrics.count(result)
        append(result)
    if options.use_confirms:
        metrics.confirmed += through  # what metrics.count does for each confirmed result
    return results
