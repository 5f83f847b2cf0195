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

from ._blame import Suspect
from ._channel import Batch
from ._exceptions import PublishTimeout, is_retriable, is_retriable_or_nack
from ._limit import InFlightLimit
from ._link import LinkLike
from ._metrics import Metrics
from ._options import Options, Prepared
from ._result import PublishResult, result_of
from .retry import DEFAULT_RETRY_POLICY, RetryState

__all__ = ["prepare_batch", "publish_prepared"]

# Every this many writes the batch lets the socket drain (a slow or blocked broker).
_DRAIN_EVERY = 256


def prepare_batch(
    payloads: list[Any],
    options: Options,
    routing_keys: Sequence[str] | None,
    headers: Sequence[Mapping[str, Any] | None] | None,
) -> list[Prepared]:
    """Encode every payload (with its own routing key / headers); a bad one raises naming its index."""
    for name, values in (("routing_keys", routing_keys), ("headers", headers)):
        if values is not None and len(values) != len(payloads):
            raise ValueError(f"{name} has {len(values)} entries for {len(payloads)} payloads")
    messages = []
    for index, payload in enumerate(payloads):
        per_message: dict[str, Any] = {}
        if routing_keys is not None:
            per_message["routing_key"] = routing_keys[index]
        if headers is not None and headers[index]:
            per_message["extra_headers"] = dict(headers[index] or {})
        try:
            message_options = options.override(per_message) if per_message else options
            messages.append(message_options.prepare(payload))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"payload {index}: {exc}") from exc
    return messages


async def publish_prepared(
    link: LinkLike,
    slots: InFlightLimit,
    metrics: Metrics,
    messages: list[Prepared],
    options: Options,
    on_retry: Callable[[RetryState], None],
) -> list[PublishResult]:
    """Publish encoded messages under `options` (confirms, retry, timeout); one result per message, in order."""
    errors: dict[int, BaseException] = {}
    todo = list(range(len(messages)))
    retriable = is_retriable_or_nack if options.retry_nacked else is_retriable
    started = asyncio.get_running_loop().time()

    async def attempt() -> None:
        nonlocal todo
        await _send(link, slots, metrics, messages, todo, options, errors)
        again = [i for i in todo if i in errors and retriable(errors[i])]
        if again:
            todo = again
            raise errors[again[0]]

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
    except Exception:
        pass  # every message's own error is in `errors`
    return _results(messages, errors, options, metrics)


async def _send(
    link: LinkLike,
    slots: InFlightLimit,
    metrics: Metrics,
    messages: list[Prepared],
    todo: list[int],
    options: Options,
    errors: dict[int, BaseException],
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
    track = options.use_confirms
    try:
        for position, index in enumerate(todo):
            if link.is_blocked:
                await link.wait_unblocked()
            if not slots.try_acquire():
                await slots.acquire()
            try:
                channel.send(messages[index], track=track, batch=batch, index=index)
            except Exception as exc:
                slots.release()
                for rest in todo[position:]:
                    errors[rest] = exc
                break
            metrics.published += 1
            if not track:
                slots.release()
            if position % _DRAIN_EVERY == _DRAIN_EVERY - 1:
                await channel.wait_writable()
        batch.seal()
        await batch.done
    finally:
        errors.update(batch.errors)
    # Publishes that may have caused another's channel error: each again alone, to find out.
    for index in [i for i in todo if isinstance(errors.get(i), Suspect)]:
        try:
            await link.probe(messages[index])
        except Exception as exc:
            errors[index] = exc
        else:
            metrics.published += 1
            del errors[index]


def _results(
    messages: list[Prepared], errors: dict[int, BaseException], options: Options, metrics: Metrics
) -> list[PublishResult]:
    results = []
    for index, message in enumerate(messages):
        result = result_of(index, message.message_id, errors.get(index), options.use_confirms)
        metrics.count(result)
        results.append(result)
    return results
