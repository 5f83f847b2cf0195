"""The exceptions aiopublish raises, and the one place that translates aiormq's.

AiopublishError                      base of everything raised here
├── UndeliverableMessage             the broker returned or nacked the message
├── ChannelError                     the broker closed the channel (reply_code/reply_text)
│   ├── AccessRefused                403
│   ├── NotFound                     404
│   └── PreconditionFailed           406
├── ConnectionFailed                 could not connect, or the connection died (retried)
│   ├── AuthenticationError          the broker refused the login (never retried)
│   └── TLSError                     TLS handshake or certificate verification failed (never retried)
├── PublishTimeout                   the whole publish() took longer than `timeout`
├── PublisherClosed                  publish() after close()
└── SerializationError               the payload could not be encoded (also ValueError)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiormq.exceptions as amqp_errors

__all__ = [
    "AccessRefused",
    "AiopublishError",
    "AuthenticationError",
    "ChannelError",
    "ConnectionFailed",
    "NotFound",
    "PreconditionFailed",
    "PublishTimeout",
    "PublisherClosed",
    "SerializationError",
    "TLSError",
    "UndeliverableMessage",
]


class AiopublishError(Exception):
    """Base class of every exception aiopublish raises."""


class UndeliverableMessage(AiopublishError):
    """The broker did not take the message: it returned it (unroutable) or nacked it."""

    def __init__(
        self,
        reason: str,
        *,
        exchange: str,
        routing_key: str,
        message_id: str | None,
        reply_code: int | None = None,
        reply_text: str | None = None,
    ) -> None:
        self.reason = reason
        self.exchange = exchange
        self.routing_key = routing_key
        self.message_id = message_id
        self.reply_code = reply_code
        self.reply_text = reply_text
        where = f"exchange {exchange!r} with routing key {routing_key!r}"
        if reason == "returned":
            text = f"message {message_id} was returned by the broker: {reply_code} {reply_text} ({where})"
        else:
            text = f"message {message_id} was nacked by the broker ({where})"
        super().__init__(text)


class ChannelError(AiopublishError):
    """The broker closed the channel with an error; the publisher opens a new one by itself."""

    def __init__(self, reply_code: int | None, reply_text: str | None) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text
        super().__init__(f"{reply_code} {reply_text}" if reply_code else str(reply_text))


class AccessRefused(ChannelError):
    """403 ACCESS_REFUSED: the user may not do this on this vhost or entity."""


class NotFound(ChannelError):
    """404 NOT_FOUND: the exchange (or queue) does not exist."""


class PreconditionFailed(ChannelError):
    """406 PRECONDITION_FAILED: e.g. a user_id that is not the login, or a redeclare with other arguments."""


class ConnectionFailed(AiopublishError, ConnectionError):
    """The broker could not be reached or the connection died; the outcome of an unconfirmed publish is unknown."""


class AuthenticationError(ConnectionFailed):
    """The broker refused the credentials or the login method. Retrying cannot help."""


class TLSError(ConnectionFailed):
    """The TLS handshake failed (e.g. certificate verification, hostname mismatch). Retrying cannot help."""


class PublishTimeout(AiopublishError, TimeoutError):
    """The publish (connecting, waiting while blocked, retries and the confirm) took longer than its timeout."""


class PublisherClosed(AiopublishError):
    """The publisher was closed; a closed publisher cannot be reopened."""


class SerializationError(AiopublishError, ValueError):
    """The payload could not be encoded by the serializer; nothing was sent."""


_CHANNEL_ERRORS: dict[int, type[ChannelError]] = {
    403: AccessRefused,
    404: NotFound,
    406: PreconditionFailed,
}


def channel_error(reply_code: int | None, reply_text: str | None) -> ChannelError:
    """The library exception for a broker's channel.close with this code."""
    return _CHANNEL_ERRORS.get(reply_code or 0, ChannelError)(reply_code, reply_text)


# aiormq raises these with the reply text only; the class says the code.
_AIORMQ_CHANNEL_CODES: tuple[tuple[type[amqp_errors.ChannelClosed], int], ...] = (
    (amqp_errors.ChannelAccessRefused, 403),
    (amqp_errors.ChannelNotFoundEntity, 404),
    (amqp_errors.ChannelLockedResource, 405),
    (amqp_errors.ChannelPreconditionFailed, 406),
)


def from_channel_closed(exc: amqp_errors.ChannelClosed) -> ChannelError:
    """The library exception for aiormq's ChannelClosed (or one of its subclasses)."""
    args = exc.args
    for cls, code in _AIORMQ_CHANNEL_CODES:
        if isinstance(exc, cls):
            return channel_error(code, str(args[0]) if args else "")
    if len(args) >= 2 and isinstance(args[0], int):
        return channel_error(args[0], str(args[1]))
    return ChannelError(None, str(args[-1]) if args else "channel closed")


def translate(exc: BaseException, *, mask: Any = None) -> BaseException:
    """Map an aiormq / socket error to the aiopublish exception that says what happened.

    Only errors from below aiopublish are mapped; anything else comes back unchanged.
    `mask` is a callable that removes secrets from text (a URL's password).
    """

    def clean(text: object) -> str:
        return mask(str(text)) if mask is not None else str(text)

    if isinstance(exc, AiopublishError):
        return exc
    if isinstance(exc, amqp_errors.ChannelClosed) and exc.args:
        error = from_channel_closed(exc)
        return type(error)(error.reply_code, clean(error.reply_text))
    if isinstance(exc, (amqp_errors.AuthenticationError, amqp_errors.ProbableAuthenticationError)):
        return AuthenticationError(clean(exc))
    if isinstance(exc, amqp_errors.ChannelInvalidStateError):
        return ConnectionFailed(f"channel is closed: {clean(exc)}")
    if isinstance(exc, (amqp_errors.AMQPConnectionError, ConnectionError, OSError)):
        return ConnectionFailed(clean(exc) or type(exc).__name__)
    if isinstance(exc, amqp_errors.AMQPChannelError):
        return ChannelError(None, clean(exc))
    return exc


@contextmanager
def mapped_errors(mask: Callable[[str], str] | None = None) -> Iterator[None]:
    """Inside this block, an aiormq / aio-pika / socket error surfaces as the aiopublish exception for it.

    The one place the lower libraries' errors are translated (link, connection, pool).
    The original is not chained (`from None`): its text and traceback can hold the URL
    with its password; the translated message keeps what it says, masked.
    """
    try:
        yield
    except AiopublishError:
        raise
    except Exception as exc:
        error = translate(exc, mask=mask)
        if error is exc:
            raise
        raise error from None


def is_retriable(exc: BaseException) -> bool:
    """Errors a new attempt can fix: the connection or channel went away. Never a broker's verdict."""
    return isinstance(exc, ConnectionFailed) and not isinstance(exc, (AuthenticationError, TLSError))
