"""publish_many: encode a whole batch first, stream it with many confirms in flight, retry what died.

One Batch object settles every confirm of an attempt (no future per message); the
in-flight limit is shared with publish(), so a batch and concurrent publishes
together never exceed max_in_flight. A message whose connection or channel died
before its confirm is published again under the retry policy (same bytes, same
message_id), through the engine's one retry loop; the broker's verdict on a message
(returned, nacked, refused) is final.

A message's outcome is what was observed for it: "confirmed" when its ack was read,
"sent" (confirms off) when its frames were handed to the socket. Every other message
gets its own error or, when nothing at all was observed for it, the error that ended
the attempt that carried it. Nothing is concluded from the absence of an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._blame import BYSTANDER_REPUBLISHES, Bystander, ChannelInterrupted, Suspect
from ._channel import Batch, PublishChannel
from ._exceptions import PublishTimeout, is_retriable, is_retriable_or_nack, translate
from ._options import Options, Prepared, check_routing_key
from ._result import PublishResult, PublishStatus, result_of
from ._tracing import NoRecord

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["BatchRun", "prepare_batch"]

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


class BatchRun:
    """One publish_many call: its messages, their facts and errors, and its attempts under the engine's loop."""

    __slots__ = ("engine", "errors", "messages", "options", "span", "through", "todo")

    def __init__(
        self,
        engine: Engine,
        messages: Sequence[Prepared | None],
        options: Options,
        refused: Mapping[int, BaseException] | None,
        span: NoRecord,
    ) -> None:
        """Entries of `messages` that are None were refused before sending, with their error in `refused`."""
        self.engine = engine
        self.messages = messages
        self.options = options
        self.span = span
        self.errors: dict[int, BaseException] = dict(refused or {})
        self.todo = [index for index, message in enumerate(messages) if message is not None]
        # Facts, one byte per message: its ack was read (confirms on), or its frames were written (off).
        self.through = bytearray(len(messages))

    async def run(self) -> list[PublishResult]:
        """Publish under the options (confirms, retry, timeout); one result per message, in order."""
        from ._engine import Expired

        engine, options, span = self.engine, self.options, self.span
        retriable = is_retriable_or_nack if options.retry_nacked else is_retriable
        started = asyncio.get_running_loop().time()
        deadline = None if options.timeout is None else started + options.timeout
        on_retry = engine.retry_hook("publish_many, messages:", len(self.messages), span=span)
        try:
            await engine.run(self._attempt, options, deadline, on_retry, retriable)
        except Expired:
            timeout = PublishTimeout(f"publish_many did not complete within {options.timeout} s")
            engine.link.check_alive(started)
            for index in self.todo:
                error = self.errors.get(index)
                if not self.through[index] and (error is None or is_retriable(error)):  # a nack stays "nacked"
                    self.errors[index] = timeout
        except asyncio.CancelledError as exc:
            span.finish(exc)
            raise
        except Exception as exc:
            # The last attempt's error, raised once retries ran out or for a verdict: a message
            # without an outcome of its own fails with it.
            for index in self.todo:
                if not self.through[index]:
                    self.errors.setdefault(index, exc)
        results = self._results()
        span.finish_batch(results)
        return results

    async def _attempt(self) -> None:
        retriable = is_retriable_or_nack if self.options.retry_nacked else is_retriable
        for _ in range(1 + BYSTANDER_REPUBLISHES):
            await self._send()
            errors, through = self.errors, self.through
            again = [i for i in self.todo if not through[i] and retriable(errors[i])]
            if not again:
                return
            self.todo = again
            # Messages caught in another's channel error go again at once; anything else waits.
            if not self.options.retry or not all(isinstance(errors[i], Bystander) for i in again):
                break
        raise self.errors[self.todo[0]]

    async def _send(self) -> None:
        """One attempt at sending `todo`: every message of it ends with a fact in `through` or an error."""
        engine, errors, through, todo = self.engine, self.errors, self.through, self.todo
        link = engine.link
        for index in todo:
            errors.pop(index, None)
        try:
            channel = link.ready_channel() or await link.channel()
            if self.options.call_declare:
                await link.ensure_declared(channel, self.options.call_declare)
        except Exception as exc:
            error = translate(exc, mask=engine.mask)
            for index in todo:
                errors[index] = error
            return
        batch = Batch(asyncio.get_running_loop(), engine.slots.release, through)
        sent: list[int] = []
        failure: BaseException | None = None
        try:
            await self._stream(channel, batch, sent)
            batch.seal()
            await batch.done
            if batch.untracked:
                # Confirms off: let what waits to be written (an AMQP 1.0 link's credit) go out first.
                await channel.wait_writable()
        except Exception as exc:  # the write path failed: the connection died under the stream
            failure = translate(exc, mask=engine.mask)
        finally:
            # Timed out, cancelled or failed: what still waits to be written (AMQP 1.0 link credit)
            # must never go out after this attempt reported it.
            channel.withdraw(batch)
            errors.update(batch.errors)
            self.span.written(sent, len(sent))
            if batch.untracked:
                # Confirms off: "sent" once the frames are handed to the socket, not merely queued for it
                # (also when the attempt timed out waiting for the rest: these were written).
                written_upto = channel.flush()
                for index, tag in batch.untracked:
                    if tag <= written_upto:
                        through[index] = 1
        # Whatever has no fact and no error of its own now was not acked in this attempt: written
        # into a connection that died, or waiting behind it. It fails with what ended the attempt.
        unknown = failure or ChannelInterrupted("the attempt ended before the broker confirmed the message")
        for index in todo:
            if not through[index] and index not in errors:
                errors[index] = unknown
        await self._probe_suspects()

    async def _stream(self, channel: PublishChannel, batch: Batch, sent: list[int]) -> None:
        """Write each message of `todo` on `channel` in order, within the in-flight limit; `sent` gets what went out."""
        link, slots, metrics = self.engine.link, self.engine.slots, self.engine.metrics
        messages, errors, todo = self.messages, self.errors, self.todo
        track = self.options.use_confirms
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
                error = translate(exc, mask=self.engine.mask)
                for rest in todo[position:]:
                    errors[rest] = error
                return
            metrics.published += 1
            sent.append(index)
            if not track:
                slots.release()
                batch.untracked.append((index, channel.last_delivery_tag))
            if position % _DRAIN_EVERY == _DRAIN_EVERY - 1:
                await channel.wait_writable()
                look_for_block = True

    async def _probe_suspects(self) -> None:
        """Publishes that may have caused another's channel error: each again alone, to find out."""
        engine, errors = self.engine, self.errors
        for index in [i for i in self.todo if isinstance(errors.get(i), Suspect)]:
            message = self.messages[index]
            assert message is not None
            try:
                await engine.link.probe(message)
            except Exception as exc:
                errors[index] = translate(exc, mask=engine.mask)
            else:
                engine.metrics.published += 1
                self.through[index] = 1
                del errors[index]

    def _results(self) -> list[PublishResult]:
        options, metrics, errors, through = self.options, self.engine.metrics, self.errors, self.through
        results: list[PublishResult] = []
        append = results.append
        went_through: PublishStatus = "confirmed" if options.use_confirms else "sent"
        count = 0
        for index, message in enumerate(self.messages):
            if through[index]:  # the usual case: its ack was read (or, confirms off, it was written)
                assert message is not None
                append(PublishResult(index, message.message_id, went_through))
                count += 1
                continue
            # A message refused before sending never got an id of its own.
            message_id = message.message_id if message is not None else options.message_id or ""
            error = errors.get(index)
            if error is None:  # every attempt leaves a fact or an error; had it not, this says so
                error = ChannelInterrupted("no confirm was read for this message")
            result = result_of(index, message_id, error, options.use_confirms)
            metrics.count(result)
            append(result)
        if options.use_confirms:
            metrics.confirmed += count  # what metrics.count does for each confirmed result
        return results
