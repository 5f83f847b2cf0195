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
from collections.abc import Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any

from ._connection import ConnectionParams
from ._declarations import Exchange, Queue
from ._exceptions import (
    AuthenticationError,
    ConnectionFailed,
    PublisherClosed,
    PublishTimeout,
)
from ._link import Link
from ._options import CONSTRUCTOR_PUBLISH_KWARGS, PUBLISH_OPTIONS, Options, Prepared, check_publish_kwargs
from ._wire import method_frame
from .retry import DEFAULT_RETRY_POLICY, RetryPolicy, RetryState

__all__ = ["Publisher"]

log = logging.getLogger("aiopublish")

_MANDATORY_WITHOUT_CONFIRMS = (
    "Mandatory delivery was requested, but unroutable messages cannot be detected without publish confirms enabled."
)


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


def is_retriable(exc: BaseException) -> bool:
    """Errors a new attempt can fix: the connection or channel went away. Never a broker's verdict."""
    return isinstance(exc, ConnectionFailed) and not isinstance(exc, AuthenticationError)


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
        self._link = Link(self._params, self._defaults.declare)
        self._state = _State.UNOPENED

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
        self._check_open()
        if kwargs:
            check_publish_kwargs(kwargs, PUBLISH_OPTIONS, "publish()")
            options = self._defaults.override(kwargs)
        else:
            options = self._defaults
        message = options.prepare(payload)
        if options.mandatory and not options.use_confirms:
            warnings.warn(_MANDATORY_WITHOUT_CONFIRMS, UserWarning, stacklevel=2)
        await self._run(message, options)

    async def _run(self, message: Prepared, options: Options) -> None:
        last_error: list[BaseException] = []

        async def attempt() -> None:
            try:
                await self._attempt(message, options)
            except Exception as exc:
                last_error[:] = [exc]
                raise

        try:
            async with asyncio.timeout(options.timeout) as deadline:
                if options.retry:
                    policy = options.retry_policy or DEFAULT_RETRY_POLICY
                    await policy.run(attempt, retry=is_retriable, on_retry=self._log_retry(message))
                else:
                    await attempt()
        except TimeoutError:
            if not deadline.expired():
                raise
            raise self._timeout_error(message, options, last_error) from (last_error[0] if last_error else None)

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
        if options.declare:
            await link.ensure_declared(channel, options.declare)
        if link.is_blocked:
            await link.wait_unblocked()
        await channel.wait_writable()
        future = channel.send(
            method_frame(channel.number, message.exchange, message.routing_key, message.mandatory),
            message.properties,
            message.body,
            exchange=message.exchange,
            routing_key=message.routing_key,
            message_id=message.message_id,
            mandatory=message.mandatory,
            user_id=message.user_id,
            track=options.use_confirms,
        )
        if future is None:
            return
        try:
            await future
        except asyncio.CancelledError:
            # Cancelled or timed out while waiting: leave no record behind for a late confirm.
            channel.forget(future)
            raise

    def _log_retry(self, message: Prepared) -> Any:
        def on_retry(state: RetryState) -> None:
            log.warning(
                "publish of message %s failed on attempt %d (%s: %s); retrying in %.2f s",
                message.message_id,
                state.attempt,
                type(state.exception).__name__,
                self._params.mask(str(state.exception)),
                state.next_wait,
            )

        return on_retry
