"""The Publisher: nameko's publisher, awaited.

One Publisher holds one connection and one confirm-mode channel (see _link).
`publish()` resolves its options, encodes the message once (so every retry sends
the same bytes and the same message_id), then runs attempts under the retry
policy, all inside one deadline (`timeout`).

Lifecycle: a Publisher belongs to the event loop it is used in. Used in a later
loop after that one ended (several `asyncio.run()` calls, a pytest loop per test),
it drops what belonged to the old loop without touching it and reconnects; used
from two running loops at once it refuses with a RuntimeError saying so. close()
stops new publishes at once, lets the ones already called finish (up to
`close_timeout`), then closes the connection; concurrent close() calls all wait
for that one drain.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from functools import partial
from ssl import SSLContext
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Unpack

from . import _tracing
from ._attempts import publish_one, retry_hook
from ._batch import prepare_batch, publish_prepared
from ._connection import ConnectionParams, mask_url
from ._deadlines import ConfirmDeadlines
from ._declarations import Declarable
from ._durations import seconds
from ._exceptions import (
    ConnectionFailed,
    PublisherClosed,
    PublishTimeout,
    is_retriable,
)
from ._limit import InFlightLimit
from ._link import LinkLike
from ._metrics import Metrics
from ._options import CONSTRUCTOR_PUBLISH_KWARGS, PUBLISH_OPTIONS, Options, Prepared, check_publish_kwargs
from ._result import PublishResult, result_of
from ._tracing import NO_SPAN, NoRecord
from ._transports import link_for
from ._types import BatchOptions, DefaultOptions, DeliveryMode, PublishOptions
from .retry import DEFAULT_RETRY_POLICY, RetryPolicy, RetryState

if TYPE_CHECKING:
    from .outbox import Outbox

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
    CLOSING = "closing"
    CLOSED = "closed"


class Publisher:
    """Publishes messages to RabbitMQ with confirms, retries and nameko's options.

    Class attributes are the defaults; a constructor argument replaces one when it
    is not None (so False and 0 are kept); a keyword of `publish()` replaces both
    for that call only. Extra constructor keywords (exchange, routing_key, headers,
    reply_to, timeout, ...) are defaults for every publish.

    `amqp_uri` is an `amqp://`, `amqps://` (or kombu's `pyamqp://`) URL, a comma-separated
    str of URLs, or a list of them (failover). Nothing connects until `connect()`,
    `async with` or the first publish.

    | option | default | meaning (times in seconds: a number or a `timedelta`) |
    | --- | --- | --- |
    | `use_confirms` | `True` | wait for the broker's ack; a nack (or a return) raises `UndeliverableMessage` |
    | `serializer` | `"json"` | `json`, `json-plain`, `pickle`, `raw`, `msgpack` (extra), or a registered one |
    | `compression` | `None` | `gzip`, `bzip2`, `lzma`/`xz`, `zstd` (extra), or a registered one |
    | `delivery_mode` | `2` | `1`/`"transient"` or `2`/`"persistent"` |
    | `mandatory` | `False` | unroutable raises `UndeliverableMessage("returned")`; False: confirmed and dropped |
    | `priority` | `0` | 0-255 |
    | `expiration` | `None` | the message's TTL in seconds, sent as milliseconds |
    | `declare` | `[]` | `Exchange`/`Queue` objects (aiopublish's or kombu's), declared once per connection |
    | `retry` | `True` | retry a publish that failed on a connection error, reconnecting in between |
    | `retry_policy` | `{"max_retries": 3}` | a `RetryPolicy` or nameko's dict: 4 attempts, 1 s apart |
    | `ssl` | `None` | `True`, an `SSLContext`, or a dict (`cafile`, `certfile`, `keyfile`, `verify`, ...) |
    | `login_method` | `None` (PLAIN) | `PLAIN`, `AMQPLAIN` or `EXTERNAL` |
    | `transport_options` | `None` | `heartbeat` (15 s), `connect_timeout` (10 s), `connection_name`, ... |
    | `max_in_flight` | `1024` | publishes under way at once; more wait in line within their `timeout` |
    | `close_timeout` | `10` | seconds `close()` lets the publishes already called finish |
    | `spool` | `None` | an `aiopublish.outbox.Outbox`: publishes the broker is unreachable for go there |
    | `timeout` (publish keyword) | `30` | seconds a whole publish may take, retries included; None: no limit |
    | `retry_nacked` (publish keyword) | `False` | also retry a publish the broker nacked |
    | `max_message_size` (publish keyword) | `134217728` | bytes a body may have (compressed); larger: ValueError |

    Raises TypeError for an unknown keyword or a value of the wrong type and ValueError for
    a bad value (an unquoted password in the URL, a negative priority...), naming the
    option, when the Publisher is built: nothing is sent.
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
    #: Seconds close() waits for the publishes already called to finish before it closes anyway.
    close_timeout: float = 10.0
    #: Retry a publish the broker nacked (under the retry policy, within `timeout`).
    retry_nacked: bool = False
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
        close_timeout: float | timedelta | None = None,
        spool: Outbox | None = None,
        **publish_kwargs: Unpack[DefaultOptions],
    ) -> None:
        check_publish_kwargs(publish_kwargs, CONSTRUCTOR_PUBLISH_KWARGS, "Publisher()")
        publish_kwargs.setdefault("retry_nacked", type(self).retry_nacked)
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
        self._mask = self._params.mask
        self._defaults = Options.build(named, publish_kwargs)
        self.publish_kwargs = publish_kwargs
        if max_in_flight is not None:
            if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
                raise ValueError(f"max_in_flight must be an int >= 1, not {max_in_flight!r}")
            self.max_in_flight = max_in_flight
        if close_timeout is not None:
            self.close_timeout = seconds(close_timeout, "close_timeout")
        self._slots = InFlightLimit(self.max_in_flight)
        self._deadlines = ConfirmDeadlines()  # the confirm deadlines of publishes that wait only for their confirm
        self._override_cache: dict[tuple[Any, ...], Options] = {}
        self._metrics = Metrics()
        self._link: LinkLike = self._make_link()
        self._state = _State.UNOPENED
        self._loop: asyncio.AbstractEventLoop | None = None
        self._active = 0  # publish() / publish_many() calls under way
        self._drained: asyncio.Event | None = None  # set when _active drops to 0 during close()
        self._closed: asyncio.Future[None] | None = None  # done once close() has finished
        # Publishes the broker is unreachable for go there (see aiopublish.outbox._spool).
        self._spool = None
        if spool is not None:
            from .outbox._spool import Spool

            self._spool = Spool(spool)

    def _make_link(self) -> LinkLike:
        # Chosen by the URL's scheme, built at first use (so a test's link override still applies).
        policy = self._defaults.retry_policy or DEFAULT_RETRY_POLICY
        return link_for(self._params, self._defaults.declare, policy, self._metrics)

    def __repr__(self) -> str:
        return f"<Publisher {self._params.masked_url} {self._state.value}>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Publisher:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and declare now rather than at the first publish.

        With `retry` on, a broker that does not answer yet is tried again under the retry
        policy, all within the publish `timeout`; a refused login, a TLS failure or a
        missing vhost fails at once. Raises ConnectionFailed (or that subclass); with a
        spool, an unreachable broker is logged instead and publishes go to the spool.
        """
        self._enter(asyncio.get_running_loop())
        if self._spool is not None:
            await self._spool.connect(self)  # with a spool, an unreachable broker is not an error
            return
        options = self._defaults
        last_error: list[BaseException] = []

        async def attempt() -> None:
            try:
                await self._link.channel()
            except Exception as exc:
                last_error[:] = [exc]
                raise

        try:
            async with asyncio.timeout(options.timeout) as timer:
                if options.retry:
                    policy = options.retry_policy or DEFAULT_RETRY_POLICY
                    # Logged at INFO: waiting for a broker that is still starting is expected at start-up.
                    on_retry = self._on_retry("connect to", self._params.masked_url, logging.INFO)
                    await policy.run(attempt, retry=is_retriable, on_retry=on_retry)
                else:
                    await attempt()
        except TimeoutError:
            if not timer.expired():
                raise
            text = f"could not connect to {self._params.masked_url} within {options.timeout} s"
            if last_error:
                text += f"; last error: {last_error[0]}"
            raise ConnectionFailed(text) from None

    async def close(self) -> None:
        """Stop taking publishes, let those already called finish, then close. Idempotent.

        Publishes called before close() (those waiting for an in-flight slot included)
        are sent and confirmed, for up to `close_timeout` seconds; a publish called after
        it raises PublisherClosed. Concurrent close() calls all return once the same
        drain and close are done. Cancelled, it still releases the socket.
        """
        loop = asyncio.get_running_loop()
        closed = self._closed
        if closed is not None:
            if not closed.done() and closed.get_loop() is loop:
                await asyncio.shield(closed)
            return
        old = self._loop
        if old is not None and old is not loop:
            await self._close_from_other_loop(old)
            return
        self._loop = loop
        self._state = _State.CLOSING
        self._closed = loop.create_future()
        try:
            deadline = loop.time() + self.close_timeout
            if self._active:
                self._drained = asyncio.Event()
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._drained.wait()
                except TimeoutError:
                    log.warning(
                        "close(): %d publishes still under way after close_timeout (%s s); closing anyway",
                        self._active,
                        self.close_timeout,
                    )
            if self._spool is not None:
                await self._spool.stop(max(0.0, deadline - loop.time()))
            await self._link.close(max(0.0, deadline - loop.time()))
        except BaseException:
            self._link.abandon()  # cancelled mid-drain: still release the socket
            raise
        finally:
            self._state = _State.CLOSED
            self._deadlines.close()
            if not self._closed.done():
                self._closed.set_result(None)

    async def _close_from_other_loop(self, old: asyncio.AbstractEventLoop) -> None:
        """close() called in another loop than the one the publisher ran in."""
        if old.is_running() and not old.is_closed():
            # That loop runs in another thread: close there, where the connection lives.
            future = asyncio.run_coroutine_threadsafe(self._close_in_own_loop(), old)
            await asyncio.wrap_future(future)
            return
        # That loop has ended: nothing of it can be awaited any more.
        self._state = _State.CLOSED
        self._link.abandon()

    async def _close_in_own_loop(self) -> None:
        await self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        # Like httpx and aiohttp: an unclosed publisher says so, only when warnings are shown.
        # Only a publisher that did connect holds something (a connection, or one its loop closed).
        if getattr(self, "_state", None) is _State.OPEN and getattr(self._link, "connections_opened", None) != 0:
            _warn(
                f"unclosed {self!r}: close it with `await publisher.close()` or `async with Publisher(...)`",
                ResourceWarning,
                source=self,
            )

    @property
    def is_closed(self) -> bool:
        """True once close() was called (while it drains too): no new publish is taken."""
        return self._state is _State.CLOSING or self._state is _State.CLOSED

    @property
    def is_blocked(self) -> bool:
        """True while the broker blocks this connection's publishers (connection.blocked)."""
        return self._link.is_blocked

    @property
    def in_flight(self) -> int:
        """Publishes written and waiting for the broker's confirm (also while close() drains them)."""
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

    def _enter(self, loop: asyncio.AbstractEventLoop) -> None:
        """Check the publisher may publish in `loop` now; adopt `loop` if the old one ended."""
        if loop is not self._loop:
            self._adopt(loop)
        if self._state is not _State.OPEN:
            if self._state is not _State.UNOPENED:
                raise PublisherClosed("this publisher is closed; create a new Publisher to publish again")
            self._state = _State.OPEN

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        old = self._loop
        if old is not None:
            if old.is_running() and not old.is_closed():
                raise RuntimeError(
                    f"{self!r} is in use by another event loop that is still running (another thread): "
                    "a Publisher works in one event loop at a time; create one Publisher per loop"
                )
            # The old loop ended: its connection, channel, locks, futures and tasks are dead
            # with it. Drop them without touching them and start afresh in this loop.
            log.info("%r: its event loop ended; reconnecting in the new one", self)
            self._link.abandon()
            self._link = self._make_link()
            self._slots = InFlightLimit(self.max_in_flight)
            self._deadlines = ConfirmDeadlines()
            self._active = 0
            self._drained = None
            if self._state is _State.CLOSING:  # closing in a loop that ended: the close is over
                self._state = _State.CLOSED
        self._loop = loop

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, payload: Any, **kwargs: Unpack[PublishOptions]) -> PublishResult:
        """Publish one message; with confirms on, return once the broker has it.

        Returns a PublishResult with the message id and status "confirmed" ("sent" with
        confirms off). Raises UndeliverableMessage (returned or nacked), a ChannelError
        subclass (NotFound, PreconditionFailed, AccessRefused) for this message's own
        refusal, ConnectionFailed when retries ran out, PublishTimeout when `timeout`
        passed, TypeError/ValueError for bad options and SerializationError for a payload
        that cannot be encoded; in the last three cases nothing was sent. With a `spool`, a
        publish the broker is unreachable for returns status "spooled" instead of raising.
        """
        span = NO_SPAN
        try:
            loop = asyncio.get_running_loop()
            if loop is not self._loop or self._state is not _State.OPEN:
                self._enter(loop)
            options = self._options_for(kwargs) if kwargs else self._defaults
            if _tracing.enabled:
                span = _tracing.start_publish(options, self._link)
                trace_headers = span.headers()
                if trace_headers:
                    options = options.override({"extra_headers": trace_headers})
            # Take an in-flight slot first, before encoding anything, so publishes queued past
            # max_in_flight cost little memory while they wait (no extra coroutine frames either).
            deadline = None if options.timeout is None else loop.time() + options.timeout
            self._active += 1  # from here on, close() waits for this publish
            try:
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
                    if span is not NO_SPAN:
                        span.set_message(message.message_id, len(message.body))
                    if options.mandatory and not options.use_confirms:
                        warnings.warn(_MANDATORY_WITHOUT_CONFIRMS, UserWarning, stacklevel=2)
                    if self._spool is None:
                        # Awaited directly (no method in between): one coroutine frame less per publish.
                        await publish_one(
                            self._link,
                            self._metrics,
                            self._mask,
                            message,
                            options,
                            deadline,
                            span,
                            self.close_timeout,
                            self._deadlines,
                        )
                    elif await self._spool.publish(
                        self, message, options, deadline, partial(self._publish_one, message, options, span=span)
                    ):
                        result = PublishResult(0, message.message_id, "spooled")
                        span.finish(None, result.status)
                        return result
                finally:
                    self._slots.release()
            finally:
                self._active -= 1
                if self._drained is not None and not self._active:
                    self._drained.set()
        except BaseException as exc:
            self._count_failure(exc)
            span.finish(exc)
            raise
        result = PublishResult(0, message.message_id, "confirmed" if options.use_confirms else "sent")
        if span is not NO_SPAN:
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
        # The same status -> counter rule as publish_many's results (Metrics.count).
        self._metrics.count(result_of(0, "", exc, True))

    def _slot_timeout(self, options: Options) -> PublishTimeout:
        return PublishTimeout(
            f"publish did not get an in-flight slot within {options.timeout} s: "
            f"{self._slots.used} publishes are under way (max_in_flight={self._slots.limit})"
        )

    async def _publish_one(self, message: Prepared, options: Options, deadline: float | None, span: NoRecord) -> None:
        await publish_one(
            self._link, self._metrics, self._mask, message, options, deadline, span, self.close_timeout, self._deadlines
        )

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
        self._enter(asyncio.get_running_loop())
        options = self._options_for(kwargs, "publish_many()") if kwargs else self._defaults
        payloads = list(payloads)
        span = NO_SPAN
        if _tracing.enabled:
            span = _tracing.start_batch(options, self._link, len(payloads), routing_keys)
            trace_headers = span.headers()
            if trace_headers:
                options = options.override({"extra_headers": trace_headers})
        try:
            messages, refused = prepare_batch(payloads, options, routing_keys, headers)
        except BaseException as exc:
            span.finish(exc)
            raise
        if options.mandatory and not options.use_confirms:
            warnings.warn(_MANDATORY_WITHOUT_CONFIRMS, UserWarning, stacklevel=2)
        return await self._publish_prepared(messages, options, refused, span)

    async def _publish_prepared(
        self,
        messages: Sequence[Prepared | None],
        options: Options,
        refused: Mapping[int, BaseException] | None = None,
        span: NoRecord = NO_SPAN,
    ) -> list[PublishResult]:
        """Publish messages encoded already (publish_many, the outbox relay) under `options`."""
        if span is NO_SPAN and _tracing.enabled:  # the relay's messages: a span, but no trace headers in them
            keys = [m.routing_key if m is not None else options.routing_key for m in messages]
            span = _tracing.start_batch(options, self._link, len(messages), keys)
        self._enter(asyncio.get_running_loop())
        self._active += 1  # close() waits for the whole batch
        try:
            return await publish_prepared(
                self._link,
                self._slots,
                self._metrics,
                messages,
                options,
                self._on_retry("publish_many, messages:", len(messages), span=span),
                refused,
                span,
            )
        finally:
            self._active -= 1
            if self._drained is not None and not self._active:
                self._drained.set()

    def _on_retry(
        self, what: str, which: object, level: int = logging.WARNING, *, span: NoRecord = NO_SPAN
    ) -> Callable[[RetryState], None]:
        """The retry hook: count the retry and log it (attempt, error, wait) with secrets masked."""
        return retry_hook(self._metrics, self._params.mask, what, which, level, span)
