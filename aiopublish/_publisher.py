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
from dataclasses import replace
from datetime import timedelta
from ssl import SSLContext
from types import TracebackType
from typing import Any, Literal, Unpack

from . import _tracing
from ._batch import prepare_batch, publish_prepared
from ._blame import BYSTANDER_REPUBLISHES, Bystander, Suspect
from ._connection import ConnectionParams, mask_url
from ._declarations import Declarable
from ._exceptions import (
    PublisherClosed,
    PublishTimeout,
    UndeliverableMessage,
    is_retriable,
)
from ._limit import InFlightLimit
from ._link import LinkLike
from ._metrics import Metrics
from ._options import CONSTRUCTOR_PUBLISH_KWARGS, PUBLISH_OPTIONS, Options, Prepared, check_publish_kwargs
from ._result import PublishResult, result_of
from ._transports import link_for
from ._types import BatchOptions, DefaultOptions, DeliveryMode, PublishOptions
from .retry import DEFAULT_RETRY_POLICY, RetryPolicy, RetryState

__all__ = ["PublishResult", "Publisher"]

log = logging.getLogger("aiopublish")

#: The login methods a Publisher supports (any case).
LoginMethod = Literal["PLAIN", "AMQPLAIN", "EXTERNAL", "plain", "amqplain", "external"]

_MANDATORY_WITHOUT_CONFIRMS = (
    "Mandatory delivery was requested, but unroutable messages cannot be detected without publish confirms enabled."
)


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
    declare: Sequence[Declarable] = []
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
        amqp_uri: str | Sequence[str],
        use_confirms: bool | None = None,
        serializer: str | None = None,
        compression: str | None = None,
        delivery_mode: DeliveryMode | None = None,
        mandatory: bool | None = None,
        priority: int | None = None,
        expiration: float | timedelta | None = None,
        declare: Sequence[Declarable] | None = None,
        retry: bool | None = None,
        retry_policy: RetryPolicy | Mapping[str, Any] | None = None,
        ssl: bool | SSLContext | Mapping[str, Any] | None = None,
        login_method: LoginMethod | None = None,
        *,
        transport_options: Mapping[str, Any] | None = None,
        max_in_flight: int | None = None,
        **publish_kwargs: Unpack[DefaultOptions],
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
        self._override_cache: dict[tuple[Any, ...], Options] = {}
        self._metrics = Metrics()
        self._link: LinkLike = self._make_link()
        self._state = _State.UNOPENED

    def _make_link(self) -> LinkLike:
        # Chosen by the URL's scheme, built at first use (so a test's link override still applies).
        policy = self._defaults.retry_policy or DEFAULT_RETRY_POLICY
        return link_for(self._params, self._defaults.declare, policy, self._metrics)

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

    async def publish(self, payload: Any, **kwargs: Unpack[PublishOptions]) -> PublishResult:
        """Publish one message; with confirms on, return once the broker has it.

        Returns a PublishResult with the message id and status "confirmed" ("sent" with
        confirms off). Raises UndeliverableMessage (returned or nacked), a ChannelError
        subclass (NotFound, PreconditionFailed, AccessRefused) for this message's own
        refusal, ConnectionFailed when retries ran out, PublishTimeout when `timeout`
        passed, TypeError/ValueError for bad options and SerializationError for a payload
        that cannot be encoded; in the last three cases nothing was sent.
        """
        span = _tracing.NO_SPAN
        try:
            self._check_open()
            options = self._options_for(kwargs) if kwargs else self._defaults
            if _tracing.enabled and _tracing.active():
                span = _tracing.start_publish(options.exchange, options.routing_key)
                options = options.override({"extra_headers": span.headers()})
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
                span.set_message(message.message_id, len(message.body))
                if options.mandatory and not options.use_confirms:
                    warnings.warn(_MANDATORY_WITHOUT_CONFIRMS, UserWarning, stacklevel=2)
                await self._run(message, options, deadline)
            finally:
                self._slots.release()
        except BaseException as exc:
            self._count_failure(exc)
            span.finish(exc)
            raise
        result = result_of(0, message.message_id, None, options.use_confirms)
        span.finish(None, result.status)
        return result

    def _options_for(self, kwargs: Mapping[str, Any], where: str = "publish()") -> Options:
        """The options of a call with these keywords; shared between calls that pass the same simple ones.

        Calls that repeat `routing_key=...` or `exchange=...` then share one Options and its
        encoded-properties templates instead of building both per call (and, for publishes
        queued past max_in_flight, holding a copy each). The key holds each value's type
        beside it: `priority=True` and `priority=1` are equal but must not share a check. A
        cached entry's names were checked when it was made, so a hit costs one dict look-up.
        """
        key: tuple[Any, ...] | None
        try:
            if len(kwargs) == 1:  # the usual call, routing_key=... alone: no sort, no tuple of tuples
                ((name, value),) = kwargs.items()
                key = (name, type(value), value)
            else:
                key = tuple(sorted((name, type(value), value) for name, value in kwargs.items()))
            options = self._override_cache.get(key)
        except TypeError:  # an unhashable value
            options = key = None
        if options is not None:
            return options
        check_publish_kwargs(kwargs, PUBLISH_OPTIONS, where)
        if key is None or kwargs.keys() & _PER_MESSAGE_OPTIONS:
            return self._defaults.override(kwargs)
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

    def _slot_timeout(self, options: Options) -> PublishTimeout:
        return PublishTimeout(
            f"publish did not get an in-flight slot within {options.timeout} s: "
            f"{self._slots.used} publishes are under way (max_in_flight={self._slots.limit})"
        )

    async def _run(self, message: Prepared, options: Options, deadline: float | None) -> None:
        last_error: list[BaseException] = []

        async def attempt() -> None:
            republished = 0
            while True:
                try:
                    await self._attempt(message, options)
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
        future = channel.send(message, track=options.use_confirms)
        self._metrics.published += 1
        if future is None:
            return
        try:
            await future
        except asyncio.CancelledError:
            # Cancelled or timed out while waiting: leave no record behind for a late confirm.
            channel.forget(future)
            raise
        except Suspect:
            # Another publish's channel error may be this one's: publish it again alone to know.
            self._metrics.published += 1
            await link.probe(message)
        self._metrics.confirmed += 1

    # -- batches -----------------------------------------------------------------------------

    async def publish_many(
        self,
        payloads: Iterable[Any],
        *,
        routing_keys: Sequence[str] | None = None,
        headers: Sequence[Mapping[str, Any] | None] | None = None,
        **kwargs: Unpack[BatchOptions],
    ) -> list[PublishResult]:
        """Publish a batch under one set of options and report each message's outcome.

        `routing_keys` and `headers`, when given, hold one entry per payload (headers
        are merged like `extra_headers`). Every payload is encoded before anything is
        sent: one that cannot be (a payload the serializer refuses, a header or size
        that cannot go on the wire) is not sent and gets a "failed" result with its
        TypeError/ValueError, naming its index; the others go out. Then the batch
        streams out with many confirms in flight; messages whose connection died are
        published again under the retry policy (same message ids). Returns one
        PublishResult per payload, in order; a failure of some never hides the success
        of the rest. The whole call is bounded by `timeout`.
        """
        self._check_open()
        options = self._options_for(kwargs, "publish_many()") if kwargs else self._defaults
        messages, refused = prepare_batch(list(payloads), options, routing_keys, headers)
        if options.mandatory and not options.use_confirms:
            warnings.warn(_MANDATORY_WITHOUT_CONFIRMS, UserWarning, stacklevel=2)
        return await self._publish_prepared(messages, options, refused)

    async def _publish_prepared(
        self,
        messages: Sequence[Prepared | None],
        options: Options,
        refused: Mapping[int, BaseException] | None = None,
    ) -> list[PublishResult]:
        """Publish messages encoded already (publish_many, the outbox relay) under `options`."""
        return await publish_prepared(
            self._link,
            self._slots,
            self._metrics,
            messages,
            options,
            self._on_retry("publish_many, messages:", len(messages)),
            refused,
        )

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
