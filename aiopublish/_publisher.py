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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from ssl import SSLContext
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, Unpack

from . import _tracing
from ._attributes import PublisherType, register
from ._batch import prepare_batch
from ._connection import mask_url
from ._declarations import Declarable
from ._durations import seconds
from ._engine import Engine, SpoolLayer, SpoolSource
from ._exceptions import PublisherClosed, PublishTimeout
from ._link import LinkLike
from ._metrics import Metrics
from ._option_attributes import CONNECTION_ATTRIBUTES, KWARG_ATTRIBUTES, OptionAttributes
from ._options import (
    CONSTRUCTOR_PUBLISH_KWARGS,
    NAMED_OPTIONS,
    Options,
    Prepared,
    check_publish_kwargs,
)
from ._result import PublishResult, PublishStatus, result_of
from ._tracing import NO_SPAN, NoRecord
from ._transports import UnconfirmedLink, link_for
from .retry import DEFAULT_RETRY_POLICY, RetryPolicy

if TYPE_CHECKING:  # for signatures only: neither is needed to publish (see tests/test_import_cost.py)
    from ._state import PublisherState
    from ._types import BatchOptions, DefaultOptions, DeliveryMode, PublishOptions

__all__ = ["PublishResult", "Publisher"]

log = logging.getLogger("aiopublish")

#: The login methods a Publisher supports (any case).
LoginMethod = Literal["PLAIN", "AMQPLAIN", "EXTERNAL", "plain", "amqplain", "external"]

_MANDATORY_WITHOUT_CONFIRMS = (
    "Mandatory delivery was requested, but unroutable messages cannot be detected without publish confirms enabled."
)


# A publish's status once it went through, by options.use_confirms.
_WENT_THROUGH: dict[bool, PublishStatus] = {True: "confirmed", False: "sent"}


def _warn_if_unconfirmed_mandatory(options: Options, stacklevel: int) -> None:
    if options.mandatory and not options.use_confirms:
        warnings.warn(_MANDATORY_WITHOUT_CONFIRMS, UserWarning, stacklevel=stacklevel)


def _with_trace_headers(options: Options, span: NoRecord) -> Options:
    """The options with the span's trace context added to the headers, when it has any."""
    trace_headers = span.headers()
    return options.override({"extra_headers": trace_headers}) if trace_headers else options


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"

    value: Literal["unopened", "open", "closing", "closed"]


class Publisher(OptionAttributes, metaclass=PublisherType):
    """Publishes messages to RabbitMQ with confirms, retries and nameko's options.

    Class attributes are the defaults; a constructor argument replaces one when it
    is not None (so False and 0 are kept); an attribute assigned later on the
    instance (`publisher.mandatory = True`) replaces that; a keyword of `publish()`
    replaces all of them for that call only. A subclass, or an assignment on the
    class, changes the class default, for live publishers too. Extra constructor
    keywords (exchange, routing_key, headers, reply_to, timeout, ...) are kept as
    given in `publish_kwargs` and are defaults for every publish. An assignment is
    checked at once (TypeError/ValueError naming the option, the old value kept).
    `amqp_uri`, `ssl`, `login_method` and `transport_options` can be assigned until
    the publisher first connects.

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
    | `ssl` | `None` | `True`, an `SSLContext`, or a dict (`cafile`, `certfile`, ...; py-amqp's `ca_certs`, ...) |
    | `login_method` | `None` (PLAIN) | `PLAIN`, `AMQPLAIN` or `EXTERNAL` |
    | `transport_options` | `{}` | `heartbeat` (15 s), `connect_timeout` (10 s), ...; kombu's `max_retries`, ... |
    | `max_in_flight` | `1024` | publishes under way at once; more wait in line within their `timeout` |
    | `close_timeout` | `10` | seconds `close()` lets the publishes already called finish |
    | `spool` | `None` | an `aiopublish.outbox.Outbox`: publishes the broker is unreachable for go there |
    | `timeout` (publish keyword) | `30` | seconds a whole publish may take, retries included; None: no limit |
    | `retry_nacked` (publish keyword) | `False` | also retry a publish the broker nacked |
    | `max_message_size` (publish keyword) | the broker's | body bytes (4.x: 16 MiB, 3.x: 128 MiB); more: ValueError |

    Raises TypeError for an unknown keyword or a value of the wrong type and ValueError for
    a bad value (an unquoted password in the URL, a negative priority...), naming the
    option, when the Publisher is built: nothing is sent.
    """

    # Read at every publish, as nameko reads them (see aiopublish._attributes).
    _OPTION_ATTRIBUTES = (*NAMED_OPTIONS, *KWARG_ATTRIBUTES, "publish_kwargs", *sorted(CONNECTION_ATTRIBUTES))

    #: The broker URL(s) as given to the constructor.
    amqp_uri: str | Sequence[str]
    #: `True`, an `ssl.SSLContext`, or a dict of aiopublish's or py-amqp's ssl keys (nameko's AMQP_SSL).
    ssl: bool | SSLContext | Mapping[str, Any] | None = None
    #: "PLAIN" (None), "AMQPLAIN" or "EXTERNAL".
    login_method: LoginMethod | None = None
    #: Connection settings (heartbeat, connection_name, ...) and kombu's connection-establishment
    #: retries (max_retries, interval_start, interval_step, interval_max); nameko's default holds
    #: the retries (its DEFAULT_TRANSPORT_OPTIONS), aiopublish's none (see the compatibility table).
    transport_options: Mapping[str, Any] = MappingProxyType({})
    #: The extra keywords the constructor was given, exactly as given.
    publish_kwargs: dict[str, Any]
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
        spool: SpoolSource | None = None,
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
        # Stored directly: the options are built once below, from all of them.
        self._options_given: dict[str, Any] = {}  # the instance's own option values (see _attributes)
        own = self._options_given
        for name, value in given.items():
            if value is not None:
                own[name] = value
        own["amqp_uri"] = amqp_uri
        connection: dict[str, object] = {
            "ssl": ssl,
            "login_method": login_method,
            "transport_options": transport_options,
        }
        for name, setting in connection.items():
            if setting is not None:
                own[name] = setting
        given_kwargs: Mapping[str, Any] = publish_kwargs
        for name in KWARG_ATTRIBUTES:
            if name in given_kwargs:
                own[name] = given_kwargs[name]
        own["publish_kwargs"] = publish_kwargs
        self._link_declare: tuple[Any, ...] | None = None  # the declarations the link was built with
        self._params = self._connection_params({})
        self._mask = self._params.mask
        self._defaults = self._build_defaults({})
        if max_in_flight is not None:
            if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
                raise ValueError(f"max_in_flight must be an int >= 1, not {max_in_flight!r}")
            self.max_in_flight = max_in_flight
        if close_timeout is not None:
            self.close_timeout = seconds(close_timeout, "close_timeout")
        self._override_cache: dict[tuple[Any, ...], Options] = {}
        self._metrics = Metrics()
        self._state = _State.UNOPENED
        self._engine = self._make_engine()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._active = 0  # publish() / publish_many() calls under way
        self._drained: asyncio.Event | None = None  # set when _active drops to 0 during close()
        self._closed: asyncio.Future[None] | None = None  # done once close() has finished
        # A spool is a layer over the engine: publishes the broker is unreachable for go there.
        self._spool: SpoolLayer | None = None
        if spool is not None:
            if not callable(getattr(spool, "spool_layer", None)):
                raise TypeError(f"spool must be an aiopublish.outbox.Outbox, not {type(spool).__name__}")
            self._spool = spool.spool_layer(self, lambda: self._engine)
        self._send = self._sender()
        register(self)  # from now on a class-level option change reaches this publisher

    def _make_engine(self) -> Engine:
        # The link is chosen by the URL's scheme, built at first use (so a test's link override still applies).
        policy = self._defaults.retry_policy or DEFAULT_RETRY_POLICY
        self._link_declare = self._defaults.declare
        link = link_for(self._params, self._defaults.declare, policy, self._metrics)
        # use_confirms=False publishes: the same connection, a channel without confirm mode.
        return Engine(
            link,
            self.max_in_flight,
            self._metrics,
            self._mask,
            self._params.masked_url,
            self.close_timeout,
            unconfirmed=UnconfirmedLink(link),
        )

    @property
    def _link(self) -> LinkLike:
        return self._engine.link

    def _sender(self) -> Callable[[Prepared, Options, float | None, NoRecord], Awaitable[bool | None]]:
        """How a prepared message goes out: the engine, or the spool over it (one call, no branch per publish).

        Either returns True only when the message went to the spool instead of the broker.
        """
        return self._spool.publish if self._spool is not None else self._engine.publish

    def _has_connected(self) -> bool:
        return self._state is not _State.UNOPENED

    def _rebuild_engine(self) -> None:
        self._engine = self._make_engine()
        self._send = self._sender()

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
            await self._spool.connect()  # with a spool, an unreachable broker is not an error
            return
        await self._engine.connect(self._defaults)

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
            self._engine.deadlines.close()
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
    def state(self) -> PublisherState:
        """A read-only snapshot: lifecycle, node, channel, in-flight count, flow (see PublisherState)."""
        from ._state import PublisherState  # here: few programs ask for it

        channel = self._link.ready_channel()
        return PublisherState(
            lifecycle=self._state.value,
            connected=channel is not None,
            node=self.node,
            channel_number=channel.number if channel is not None else None,
            in_flight=channel.in_flight if channel is not None else 0,
            blocked=self._link.is_blocked,
            backed_up=channel.backed_up if channel is not None else False,
            connections_opened=int(getattr(self._link, "connections_opened", 0)),
        )

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
            self._engine = self._make_engine()
            self._defaults = self._build_defaults({})  # every declaration is the new link's own
            self._override_cache.clear()
            self._send = self._sender()
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
        if kwargs and "transport_options" in kwargs:
            return await self._publish_with_transport_options(payload, kwargs)
        span = NO_SPAN
        try:
            loop = asyncio.get_running_loop()
            if loop is not self._loop or self._state is not _State.OPEN:
                self._enter(loop)
            options = self._options_for(kwargs) if kwargs else self._defaults
            if _tracing.enabled:
                span = _tracing.start_publish(options, self._link)
                options = _with_trace_headers(options, span)
            # Take an in-flight slot first, before encoding anything, so publishes queued past
            # max_in_flight cost little memory while they wait (no extra coroutine frames either).
            deadline = None if options.timeout is None else loop.time() + options.timeout
            self._active += 1  # from here on, close() waits for this publish
            slots = self._engine.slots
            try:
                waiter = slots.reserve(deadline)
                if waiter is not None:
                    # Awaited here rather than in a helper: one coroutine frame less per queued publish.
                    try:
                        await waiter
                    except asyncio.CancelledError:
                        slots.abandon(waiter)
                        raise
                    except TimeoutError:
                        raise self._slot_timeout(options) from None
                try:
                    message = options.prepare(payload)
                    if span is not NO_SPAN:
                        span.set_message(message.message_id, len(message.body))
                    if options.mandatory and not options.use_confirms:  # inline: no call on the hot path
                        warnings.warn(_MANDATORY_WITHOUT_CONFIRMS, UserWarning, stacklevel=2)
                    spooled = await self._send(message, options, deadline, span)
                finally:
                    slots.release()
            finally:
                # _finished()'s work, inline: one call less per publish.
                self._active -= 1
                if self._drained is not None and not self._active:
                    self._drained.set()
        except BaseException as exc:
            self._count_failure(exc)
            span.finish(exc)
            raise
        result = PublishResult(0, message.message_id, "spooled" if spooled else _WENT_THROUGH[options.use_confirms])
        if span is not NO_SPAN:
            span.finish(None, result.status)
        return result

    def _count_failure(self, exc: BaseException) -> None:
        # The same status -> counter rule as publish_many's results (Metrics.count).
        self._metrics.count(result_of(0, "", exc, True))

    def _slot_timeout(self, options: Options) -> PublishTimeout:
        return PublishTimeout(
            f"publish did not get an in-flight slot within {options.timeout} s: "
            f"{self._engine.slots.used} publishes are under way (max_in_flight={self._engine.slots.limit})"
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
            options = _with_trace_headers(options, span)
        try:
            messages, refused = prepare_batch(payloads, options, routing_keys, headers)
        except BaseException as exc:
            span.finish(exc)
            raise
        _warn_if_unconfirmed_mandatory(options, stacklevel=3)
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
            return await self._engine.publish_batch(messages, options, refused, span)
        finally:
            self._finished()

    def _finished(self) -> None:
        """A publish() or publish_many() call ended: close() no longer waits for it."""
        self._active -= 1
        if self._drained is not None and not self._active:
            self._drained.set()
