"""The Publisher: nameko's publisher, awaited.

One Publisher holds one connection and one confirm-mode channel (see _link).
`publish()` resolves its options, encodes the message once (so every retry sends
the same bytes and the same message_id), then runs attempts under the retry
policy, all inside one deadline (`timeout`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from types import TracebackType
from typing import Any

from . import _tracing
from ._channel import Batch, PublishChannel
from ._connection import ConnectionParams, mask_url
from ._declarations import Exchange, Queue
from ._exceptions import (
    PublisherClosed,
    PublishTimeout,
    UndeliverableMessage,
    is_retriable,
)
from ._limit import InFlightLimit
from ._link import Link, LinkLike
from ._metrics import Metrics
from ._options import CONSTRUCTOR_PUBLISH_KWARGS, PUBLISH_OPTIONS, Options, Prepared, check_publish_kwargs
from ._wire import method_frame
from .retry import DEFAULT_RETRY_POLICY, RetryPolicy, RetryState

__all__ = ["PublishResult", "Publisher"]

log = logging.getLogger("aiopublish")

_MANDATORY_WITHOUT_CONFIRMS = (
    "Mandatory delivery was requested, but unroutable messages cannot be detected without publish confirms enabled."
)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The outcome of one message of publish_many().

    status: "confirmed" (the broker has it), "sent" (confirms off), "returned" or
    "nacked" (the broker refused it), or "failed" (error says why: a connection that
    died before the confirm, a channel error, a timeout).
    """

    index: int
    message_id: str
    status: str
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# Options that differ per message: calls passing them get options of their own, never cached.
_PER_MESSAGE_OPTIONS = frozenset(
    {"message_id", "correlation_id", "timestamp", "headers", "extra_headers", "declare", "retry_policy"}
)
_OVERRIDE_CACHE_SIZE = 256


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class Publisher:
    """Publishes messages to RabbitMQ with confirms, retries and nameko's options.

    Class attributes are the defaults; a constructor argument replaces one when it
    is not None (so False and 0 are kept); a keyword of `publish()` replaces both
    for that call only. Extra constructor keywords (exchange, routing_key, headers,
    reply_to, timeout, ...) are defaults for every publish.
    """

    use_confirms: bool = True
    serializer: str = "json"
    compression: str | None = None
    delivery_mode: int | str = 2
    mandatory: bool = False
    priority: int = 0
    expiration: float | timedelta | None = None
    declare: Sequence[Exchange | Queue] = []
    retry: bool = True
    retry_policy: RetryPolicy | Mapping[str, Any] = DEFAULT_RETRY_POLICY
    #: Seconds a whole publish() may take, retries included; None waits without limit.
    timeout: float | None = 30.0
    #: Seconds close() waits for unconfirmed publishes before it closes anyway.
    close_timeout: float = 10.0
    #: Publishes that may wait for a confirm at once; more wait for a free slot.
    max_in_flight: int = 1024

    def __init__(
        self,
        amqp_uri: str,
        use_confirms: bool | None = None,
        serializer: str | None = None,
        compression: str | None = None,
        delivery_mode: int | str | None = None,
        mandatory: bool | None = None,
        priority: int | None = None,
        expiration: float | timedelta | None = None,
        declare: Sequence[Exchange | Queue] | None = None,
        retry: bool | None = None,
        retry_policy: RetryPolicy | Mapping[str, Any] | None = None,
        ssl: Any = None,
        login_method: str | None = None,
        transport_options: Mapping[str, Any] | None = None,
        *,
        max_in_flight: int | None = None,
        **publish_kwargs: Any,
    ) -> None:
        check_publish_kwargs(publish_kwargs, CONSTRUCTOR_PUBLISH_KWARGS, "Publisher()")
        given = {
            "use_confirms": use_confirms,
            "serializer": serializer,
            "compression": compression,
            "delivery_mode": delivery_mode,
            "mandatory": mandatory,
            "priority": priority,
            "expiration": expiration,
            "declare": declare,
            "retry": retry,
            "retry_policy": retry_policy,
        }
        for name, value in given.items():
            if value is not None:
                setattr(self, name, value)
        named = {name: getattr(self, name) for name in given}
        publish_kwargs.setdefault("timeout", type(self).timeout)
        self._params = ConnectionParams.build(amqp_uri, ssl, login_method, transport_options)
        self._defaults = Options.build(named, publish_kwargs)
        self.publish_kwargs = publish_kwargs
        if max_in_flight is not None:
            if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
                raise ValueError(f"max_in_flight must be an int >= 1, not {max_in_flight!r}")
            self.max_in_flight = max_in_flight
        self._slots = InFlightLimit(self.max_in_flight)
        self._override_cache: dict[tuple[tuple[str, Any], ...], Options] = {}
        self._metrics = Metrics()
        self._link: LinkLike = self._make_link()
        self._state = _State.UNOPENED

    def _make_link(self) -> LinkLike:
        if self._params.url.startswith("memory://"):
            from .testing import memory_link

            return memory_link(self._params, self._defaults.declare, self._metrics)
        policy = self._defaults.retry_policy or DEFAULT_RETRY_POLICY
        return Link(self._params, self._defaults.declare, policy, self._metrics)

    def __repr__(self) -> str:
        return f"<Publisher {self._params.masked_url} {self._state.value}>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Publisher:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and declare now rather than at the first publish. Raises ConnectionFailed."""
        self._check_open()
        await self._link.channel()

    async def close(self) -> None:
        """Wait up to `close_timeout` seconds for unconfirmed publishes, then close. Idempotent."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        await self._link.close(self.close_timeout)

    @property
    def is_closed(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def is_blocked(self) -> bool:
        """True while the broker blocks this connection's publishers (connection.blocked)."""
        return self._link.is_blocked

    @property
    def in_flight(self) -> int:
        """Publishes written and waiting for the broker's confirm."""
        channel = self._link.ready_channel()
        return channel.in_flight if channel is not None else 0

    @property
    def node(self) -> str | None:
        """The URL (password masked) of the broker node in use, or None before connecting."""
        node = self._link.node
        return mask_url(node) if node else None

    @property
    def metrics(self) -> Metrics:
        """A snapshot of this publisher's counters (see Metrics)."""
        snapshot = replace(self._metrics)
        snapshot.in_flight = self.in_flight
        return snapshot

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise PublisherClosed("this publisher is closed; create a new Publisher to publish again")
        self._state = _State.OPEN

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, payload: Any, **kwargs: Any) -> None:
        """Publish one message; with confirms on, return once the broker has it.

        Raises UndeliverableMessage (returned or nacked), a ChannelError subclass
        (NotFound, PreconditionFailed, AccessRefused), ConnectionFailed when retries
        ran out, PublishTimeout when `timeout` passed, TypeError/ValueError for bad
        options and SerializationError for a payload that cannot be encoded; in the
        last three cases nothing was sent.
        """
        try:
            self._check_open()
            if kwargs:
                check_publish_kwargs(kwargs, PUBLISH_OPTIONS, "publish()")
            if _tracing.enabled and _tracing.active():
                await self._publish_traced(payload, kwargs)
                return
            options = self._options_for(kwargs) if kwargs else self._defaults
            # Take an in-flight slot first, before encoding anything, so publishes queued past
            # max_in_flight cost little memory while they wait (no extra coroutine frames either).
            deadline = None if options.timeout is None else asyncio.get_running_loop().time() + options.timeout
            waiter = self._slots.reserve(deadline)
            if waiter is not None:
                # Awaited here rather than in a helper: one coroutine frame less per queued publish.
                try:
                    await waiter
                except asyncio.CancelledError:
                    self._slots.abandon(waiter)
                    raise
                except TimeoutError:
                    raise self._slot_timeout(options) from None
            try:
                message = options.prepare(payload)
                if options.mandatory and not options.use_confirms:
                    warnings.warn(_MANDATORY_WITHOUT_CONFIRMS, UserWarning, stacklevel=3)
                await self._run(message, options, deadline)
            finally:
                self._slots.release()
        except BaseException as exc:
            self._count_failure(exc)
            raise

    def _options_for(self, kwargs: dict[str, Any]) -> Options:
        """The options of a call with these keywords; shared between calls that pass the same simple ones.

        Calls that repeat `routing_key=...` or `exchange=...` then share one Options and its
        encoded-properties templates instead of building both per call (and, for publishes
        queued past max_in_flight, holding a copy each).
        """
        if kwargs.keys() & _PER_MESSAGE_OPTIONS:
            return self._defaults.override(kwargs)
        try:
            key = tuple(sorted(kwargs.items()))
            options = self._override_cache.get(key)
        except TypeError:  # an unhashable value
            return self._defaults.override(kwargs)
        if options is None:
            options = self._defaults.override(kwargs)
            if len(self._override_cache) >= _OVERRIDE_CACHE_SIZE:
                self._override_cache.clear()
            self._override_cache[key] = options
        return options

    def _count_failure(self, exc: BaseException) -> None:
        self._metrics.failed += 1
        if isinstance(exc, UndeliverableMessage):
            if exc.reason == "returned":
                self._metrics.returned += 1
            else:
                self._metrics.nacked += 1

    async def _wait_for_slot(self, waiter: asyncio.Future[None], options: Options) -> None:
        """Wait in line for an in-flight slot; PublishTimeout if the publish's deadline passes first."""
        try:
            await waiter
        except asyncio.CancelledError:
            self._slots.abandon(waiter)
            raise
        except TimeoutError:
            raise self._slot_timeout(options) from None

    def _slot_timeout(self, options: Options) -> PublishTimeout:
        return PublishTimeout(
            f"publish did not get an in-flight slot within {options.timeout} s: "
            f"{self._slots.used} publishes are under way (max_in_flight={self._slots.limit})"
        )

    async def _publish_traced(self, payload: Any, kwargs: dict[str, Any]) -> None:
        """publish() inside an OpenTelemetry span whose context travels in the message headers."""
        destination = self._defaults.override(kwargs) if kwargs else self._defaults
        with _tracing.publish_span(destination.exchange, destination.routing_key) as span:
            extra = {**(kwargs.get("extra_headers") or {}), **span.headers()}
            options = self._defaults.override({**kwargs, "extra_headers": extra})
            deadline = None if options.timeout is None else asyncio.get_running_loop().time() + options.timeout
            waiter = self._slots.reserve(deadline)
            if waiter is not None:
                try:
                    await self._wait_for_slot(waiter, options)
                except PublishTimeout:
                    span.set_outcome("failed")
                    raise
            try:
                message = options.prepare(payload)
                span.set_message(message.message_id, len(message.body))
                if options.mandatory and not options.use_confirms:
                    warnings.warn(_MANDATORY_WITHOUT_CONFIRMS, UserWarning, stacklevel=4)
                await self._run(message, options, deadline)
            except UndeliverableMessage as exc:
                span.set_outcome(exc.reason)
                raise
            except BaseException:
                span.set_outcome("failed")
                raise
            finally:
                self._slots.release()
            span.set_outcome("confirmed" if options.use_confirms else "sent")

    async def _run(self, message: Prepared, options: Options, deadline: float | None) -> None:
        last_error: list[BaseException] = []

        async def attempt() -> None:
            try:
                await self._attempt(message, options)
            except Exception as exc:
                last_error[:] = [exc]
                raise

        try:
            async with asyncio.timeout_at(deadline) as timer:
                if options.retry:
                    policy = options.retry_policy or DEFAULT_RETRY_POLICY
                    await policy.run(
                        attempt, retry=is_retriable, on_retry=self._on_retry("publish of message", message.message_id)
                    )
                else:
                    await attempt()
        except TimeoutError:
            if not timer.expired():
                raise
            error = self._timeout_error(message, options, last_error)
            if options.timeout is not None:
                self._link.check_stalled(options.timeout)
            raise error from (last_error[0] if last_error else None)

    def _timeout_error(self, message: Prepared, options: Options, last_error: list[BaseException]) -> PublishTimeout:
        text = f"publish of message {message.message_id} did not complete within {options.timeout} s"
        if self._link.is_blocked:
            text += f": the broker is blocking publishers ({self._link.blocked_reason})"
        elif last_error:
            text += f"; last error: {last_error[0]}"
        return PublishTimeout(text)

    async def _attempt(self, message: Prepared, options: Options) -> None:
        link = self._link
        channel = link.ready_channel() or await link.channel()
        if options.call_declare:
            await link.ensure_declared(channel, options.call_declare)
        if link.is_blocked:
            await link.wait_unblocked()
        await channel.wait_writable()
        await self._send(channel, message, options)

    async def _send(self, channel: PublishChannel, message: Prepared, options: Options) -> None:
        future = _write(channel, message, options.use_confirms)
        self._metrics.published += 1
        if future is None:
            return
        try:
            await future
        except asyncio.CancelledError:
            # Cancelled or timed out while waiting: leave no record behind for a late confirm.
            channel.forget(future)
            raise
        self._metrics.confirmed += 1

    # -- batches -----------------------------------------------------------------------------

    async def publish_many(
        self,
        payloads: Iterable[Any],
        *,
        routing_keys: Sequence[str] | None = None,
        headers: Sequence[Mapping[str, Any] | None] | None = None,
        **kwargs: Any,
    ) -> list[PublishResult]:
        """Publish a batch under one set of options and report each message's outcome.

        `routing_keys` and `headers`, when given, hold one entry per payload (headers
        are merged like `extra_headers`). Every payload is encoded before anything is
        sent: a bad one raises (SerializationError naming its index) and nothing goes
        out. Then the batch streams out with many confirms in flight; messages whose
        connection died are published again under the retry policy (same message ids).
        Returns one PublishResult per payload, in order; a failure of some never hides
        the success of the rest. The whole call is bounded by `timeout`.
        """
        self._check_open()
        if kwargs:
            check_publish_kwargs(kwargs, PUBLISH_OPTIONS, "publish_many()")
        options = self._options_for(kwargs) if kwargs else self._defaults
        messages = self._prepare_batch(list(payloads), options, routing_keys, headers)
        if any(message.mandatory for message in messages) and not options.use_confirms:
            warnings.warn(_MANDATORY_WITHOUT_CONFIRMS, UserWarning, stacklevel=2)
        errors: dict[int, BaseException] = {}
        todo = list(range(len(messages)))

        async def attempt() -> None:
            nonlocal todo
            await self._send_batch(messages, todo, options, errors)
            retriable = [i for i in todo if i in errors and is_retriable(errors[i])]
            if retriable:
                todo = retriable
                raise errors[retriable[0]]

        try:
            async with asyncio.timeout(options.timeout) as deadline:
                if options.retry:
                    policy = options.retry_policy or DEFAULT_RETRY_POLICY
                    await policy.run(
                        attempt, retry=is_retriable, on_retry=self._on_retry("publish_many, messages:", len(todo))
                    )
                else:
                    await attempt()
        except TimeoutError:
            if not deadline.expired():
                raise
            timeout = PublishTimeout(f"publish_many did not complete within {options.timeout} s")
            if options.timeout is not None:
                self._link.check_stalled(options.timeout)
            for index in todo:
                if index not in errors or is_retriable(errors[index]):
                    errors[index] = timeout
        except Exception:
            pass  # every message's own error is in `errors`
        return self._batch_results(messages, errors, options)

    def _prepare_batch(
        self,
        payloads: list[Any],
        options: Options,
        routing_keys: Sequence[str] | None,
        headers: Sequence[Mapping[str, Any] | None] | None,
    ) -> list[Prepared]:
        for name, values in (("routing_keys", routing_keys), ("headers", headers)):
            if values is not None and len(values) != len(payloads):
                raise ValueError(f"{name} has {len(values)} entries for {len(payloads)} payloads")
        messages = []
        for index, payload in enumerate(payloads):
            per_message: dict[str, Any] = {}
            if routing_keys is not None:
                per_message["routing_key"] = routing_keys[index]
            if headers is not None and headers[index]:
                per_message["extra_headers"] = {**options.headers, **dict(headers[index] or {})}
            message_options = options.override(per_message) if per_message else options
            try:
                messages.append(message_options.prepare(payload))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"payload {index}: {exc}") from exc
        return messages

    async def _send_batch(
        self, messages: list[Prepared], todo: list[int], options: Options, errors: dict[int, BaseException]
    ) -> None:
        """One attempt at sending `todo`: fills `errors` for those that failed, clears it for the rest."""
        for index in todo:
            errors.pop(index, None)
        link = self._link
        try:
            channel = link.ready_channel() or await link.channel()
            if options.call_declare:
                await link.ensure_declared(channel, options.call_declare)
        except Exception as exc:
            for index in todo:
                errors[index] = exc
            return
        slots = self._slots
        batch = Batch(asyncio.get_running_loop(), slots.release)
        track = options.use_confirms
        try:
            for position, index in enumerate(todo):
                if link.is_blocked:
                    await link.wait_unblocked()
                if not slots.try_acquire():
                    await slots.acquire()
                message = messages[index]
                try:
                    _write(channel, message, track, batch, index)
                except ValueError as exc:  # this message alone cannot go (properties over frame_max)
                    slots.release()
                    errors[index] = exc
                    continue
                except Exception as exc:
                    slots.release()
                    for rest in todo[position:]:
                        errors[rest] = exc
                    break
                self._metrics.published += 1
                if not track:
                    slots.release()
                if position % 256 == 255:
                    await channel.wait_writable()
            batch.seal()
            await batch.done
        finally:
            errors.update(batch.errors)

    def _batch_results(
        self, messages: list[Prepared], errors: dict[int, BaseException], options: Options
    ) -> list[PublishResult]:
        results = []
        metrics = self._metrics
        ok_status = "confirmed" if options.use_confirms else "sent"
        for index, message in enumerate(messages):
            error = errors.get(index)
            if error is None:
                status = ok_status
                metrics.confirmed += options.use_confirms
            elif isinstance(error, UndeliverableMessage):
                status = error.reason
                if error.reason == "returned":
                    metrics.returned += 1
                else:
                    metrics.nacked += 1
            else:
                status = "failed"
            if error is not None:
                metrics.failed += 1
            results.append(PublishResult(index, message.message_id, status, error))
        return results

    def _on_retry(self, what: str, which: object) -> Callable[[RetryState], None]:
        """The retry hook: count the retry and log it (attempt, error, wait) with secrets masked."""

        def on_retry(state: RetryState) -> None:
            self._metrics.retried += 1
            log.warning(
                "%s %s failed on attempt %d (%s: %s); retrying in %.2f s",
                what,
                which,
                state.attempt,
                type(state.exception).__name__,
                self._params.mask(str(state.exception)),
                state.next_wait,
            )

        return on_retry


def _write(
    channel: PublishChannel, message: Prepared, track: bool, batch: Batch | None = None, index: int = 0
) -> asyncio.Future[None] | None:
    """Write one prepared message on `channel` (see PublishChannel.send)."""
    return channel.send(
        method_frame(channel.number, message.exchange, message.routing_key, message.mandatory),
        message.properties,
        message.body,
        exchange=message.exchange,
        routing_key=message.routing_key,
        message_id=message.message_id,
        mandatory=message.mandatory,
        user_id=message.user_id,
        track=track,
        batch=batch,
        index=index,
    )
