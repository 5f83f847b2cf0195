"""The exceptions aiopublish raises, and the one place that translates aiormq's.

AiopublishError                      base of everything raised here
├── UndeliverableMessage             the broker returned or nacked the message
├── ChannelError                     the broker closed the channel (reply_code/reply_text)
│   ├── AccessRefused                403
│   ├── NotFound                     404
│   └── PreconditionFailed           406
├── ConnectionFailed                 could not connect, or the connection died (retried)
│   ├── ChannelInterrupted           the channel closed before this message's confirm (retried)
│   ├── AuthenticationError          the broker refused the login or the vhost's access (never retried)
│   ├── TLSError                     TLS handshake or certificate verification failed (never retried)
│   ├── UnsupportedByBroker          the broker refuses, every time, a feature asked of it (never retried)
│   └── VhostNotFound                the URL's vhost does not exist, or was deleted (never retried)
├── PublishTimeout                   the whole publish() took longer than `timeout`
├── PublisherClosed                  publish() after close()
└── SerializationError               the payload could not be encoded (also ValueError)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiormq.exceptions as amqp_errors
import pamqp.exceptions as pamqp_errors

__all__ = [
    "AccessRefused",
    "AiopublishError",
    "AuthenticationError",
    "ChannelError",
    "ChannelInterrupted",
    "ConnectionFailed",
    "NotFound",
    "PreconditionFailed",
    "PublishTimeout",
    "PublisherClosed",
    "SerializationError",
    "TLSError",
    "UndeliverableMessage",
    "UnsupportedByBroker",
    "VhostNotFound",
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
        elif reason in ("rejected", "modified"):  # AMQP 1.0 outcomes: the broker's own words
            text = f"message {message_id} was {reason} by the broker: {reply_text} ({where})"
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


class ChannelInterrupted(ConnectionFailed):
    """The channel closed before this message was confirmed; the broker may or may not have it (retriable)."""


class AuthenticationError(ConnectionFailed):
    """The broker refused the credentials or the login method. Retrying cannot help."""


class TLSError(ConnectionFailed):
    """The TLS handshake failed (e.g. certificate verification, hostname mismatch). Retrying cannot help."""


class UnsupportedByBroker(ConnectionFailed):
    """The broker refuses a feature asked of it, and will every time: a deprecated feature it denies
    (RabbitMQ 4.3: e.g. a queue's x-queue-master-locator), a frame_max below its least. Retrying cannot help.

    `feature` names it (the broker's name for a deprecated feature, or "frame_max"); `declaration`
    is the declaration that used it, when one did.
    """

    def __init__(self, message: str, *, feature: str, declaration: str | None = None) -> None:
        self.feature = feature
        self.declaration = declaration
        super().__init__(message)


# RabbitMQ 3.13+ closes the connection with 541 when a denied deprecated feature is used:
# "INTERNAL_ERROR - Feature `queue_master_locator` is deprecated. ..." (cut by the broker at 255 bytes).
# Patterns as text, compiled (and cached by `re`) at their first use: an error path, not the import.
_DEPRECATED_FEATURE = r"Feature `?([A-Za-z0-9_]+)`? is deprecated"


def deprecated_feature(exc: BaseException) -> str | None:
    """The deprecated feature a broker's connection.close says was denied, or None."""
    if not isinstance(exc, amqp_errors.ConnectionClosed):
        return None
    match = re.search(_DEPRECATED_FEATURE, str(getattr(exc, "strerror", None) or exc))
    return None if match is None else match.group(1)


def deprecated_feature_message(feature: str, broker_text: str, declaration: str | None = None) -> str:
    """The error's text: what was denied, by what, and the broker's own words (which it cut at 255 bytes)."""
    used = f" used by {declaration}" if declaration else ""
    return (
        f"the broker denies the deprecated feature {feature!r}{used}; it closed the connection with: "
        f"{broker_text} [RabbitMQ's text ends there; it permits the feature again with "
        f"`deprecated_features.permit.{feature} = true` in rabbitmq.conf]"
    )


class VhostNotFound(ConnectionFailed):
    """The vhost named in the URL does not exist (or was deleted while connected). Retrying cannot help."""

    def __init__(self, message: str, *, vhost: str) -> None:
        self.vhost = vhost
        super().__init__(message)


class PublishTimeout(AiopublishError, TimeoutError):
    """The publish (connecting, waiting while blocked, retries and the confirm) took longer than its timeout."""


class PublisherClosed(AiopublishError):
    """The publisher was closed; a closed publisher cannot be reopened."""


class SerializationError(AiopublishError, ValueError):
    """The payload could not be encoded by the serializer; nothing was sent."""


# Tracebacks and reprs name a class by its __module__: show where users import it from
# (aiopublish.ConnectionFailed), not this private module. Pickling finds them there too.
for _name in __all__:
    globals()[_name].__module__ = "aiopublish"
del _name


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


_VHOST_MISSING = r"vhost '?(.*?)'? (?:not found|is deleted)"
_VHOST_REFUSED = r"access to vhost '(.*?)' refused"

_Clean = Callable[[object], str]


def _connection_closed(exc: BaseException, clean: _Clean) -> AiopublishError:
    # aiormq's ConnectionClosed is an OSError(reply_code, reply_text): the broker's connection.close.
    text = clean(getattr(exc, "strerror", None) or exc)
    feature = deprecated_feature(exc)
    if feature is not None:
        return UnsupportedByBroker(deprecated_feature_message(feature, text), feature=feature)
    missing = re.search(_VHOST_MISSING, text)
    if missing is not None:
        return VhostNotFound(f"the broker has no vhost {missing.group(1)!r}: {text}", vhost=missing.group(1))
    if re.search(_VHOST_REFUSED, text):
        return AuthenticationError(f"the broker refused access: {text}")
    return ConnectionFailed(text or type(exc).__name__)


def _channel_closed(exc: BaseException, clean: _Clean) -> AiopublishError:
    assert isinstance(exc, amqp_errors.ChannelClosed)
    if not exc.args:
        return ConnectionFailed("the channel closed")
    error = from_channel_closed(exc)
    return type(error)(error.reply_code, clean(error.reply_text))


def _as(cls: type[AiopublishError], prefix: str = "") -> Callable[[BaseException, _Clean], AiopublishError]:
    def make(exc: BaseException, clean: _Clean) -> AiopublishError:
        return cls(prefix + (clean(exc) or type(exc).__name__))

    return make


def _as_channel_error(exc: BaseException, clean: _Clean) -> AiopublishError:
    return ChannelError(None, clean(exc) or type(exc).__name__)


_Mapper = Callable[[BaseException, _Clean], AiopublishError]

#: Every exception class of aiormq and pamqp, and what it becomes. Looked up along the
#: error's MRO, so a subclass aiormq adds later still maps; tests/test_lifecycle_errors.py
#: fails when either library grows a class missing here, so each one is decided on purpose.
LOWER_ERRORS: dict[type[BaseException], _Mapper] = {
    amqp_errors.AMQPError: _as(ConnectionFailed),
    amqp_errors.AMQPException: _as(ConnectionFailed),
    amqp_errors.AMQPConnectionError: _as(ConnectionFailed),
    amqp_errors.ConnectionClosed: _connection_closed,
    amqp_errors.ConnectionChannelError: _connection_closed,
    amqp_errors.ConnectionCommandInvalid: _connection_closed,
    amqp_errors.ConnectionFrameError: _connection_closed,
    amqp_errors.ConnectionInternalError: _connection_closed,
    amqp_errors.ConnectionNotAllowed: _connection_closed,
    amqp_errors.ConnectionNotImplemented: _connection_closed,
    amqp_errors.ConnectionResourceError: _connection_closed,
    amqp_errors.ConnectionSyntaxError: _connection_closed,
    amqp_errors.ConnectionUnexpectedFrame: _connection_closed,
    amqp_errors.IncompatibleProtocolError: _as(ConnectionFailed, "not an AMQP 0-9-1 broker: "),
    amqp_errors.AuthenticationError: _as(AuthenticationError),
    amqp_errors.ProbableAuthenticationError: _as(AuthenticationError),
    amqp_errors.AMQPChannelError: _as_channel_error,
    amqp_errors.ChannelClosed: _channel_closed,
    amqp_errors.ChannelAccessRefused: _channel_closed,
    amqp_errors.ChannelLockedResource: _channel_closed,
    amqp_errors.ChannelNotFoundEntity: _channel_closed,
    amqp_errors.ChannelPreconditionFailed: _channel_closed,
    amqp_errors.DuplicateConsumerTag: _channel_closed,
    amqp_errors.ChannelInvalidStateError: _as(ConnectionFailed, "channel is closed: "),
    amqp_errors.DeliveryError: _as_channel_error,
    amqp_errors.PublishError: _as_channel_error,
    amqp_errors.MethodNotImplemented: _as(ConnectionFailed, "the broker does not implement a method: "),
    amqp_errors.ProtocolSyntaxError: _as(ConnectionFailed, "protocol error: "),
    amqp_errors.InvalidFrameError: _as(ConnectionFailed, "unexpected frame from the broker: "),
    # pamqp raises while decoding frames (in aiormq's reader) or encoding ours.
    pamqp_errors.PAMQPException: _as(ConnectionFailed, "AMQP frame error: "),
    pamqp_errors.UnmarshalingException: _as(ConnectionFailed, "could not decode a frame from the broker: "),
    pamqp_errors.AMQPError: _as(ConnectionFailed),
    pamqp_errors.AMQPSoftError: _as_channel_error,
    pamqp_errors.AMQPHardError: _as(ConnectionFailed),
    pamqp_errors.AMQPAccessRefused: _as_channel_error,
    pamqp_errors.AMQPContentTooLarge: _as_channel_error,
    pamqp_errors.AMQPNoConsumers: _as_channel_error,
    pamqp_errors.AMQPNoRoute: _as_channel_error,
    pamqp_errors.AMQPNotFound: _as_channel_error,
    pamqp_errors.AMQPPreconditionFailed: _as_channel_error,
    pamqp_errors.AMQPResourceLocked: _as_channel_error,
    pamqp_errors.AMQPChannelError: _as(ConnectionFailed),
    pamqp_errors.AMQPCommandInvalid: _as(ConnectionFailed),
    pamqp_errors.AMQPConnectionForced: _as(ConnectionFailed),
    pamqp_errors.AMQPFrameError: _as(ConnectionFailed),
    pamqp_errors.AMQPInternalError: _as(ConnectionFailed),
    pamqp_errors.AMQPInvalidPath: _as(ConnectionFailed),
    pamqp_errors.AMQPNotAllowed: _as(ConnectionFailed),
    pamqp_errors.AMQPNotImplemented: _as(ConnectionFailed),
    pamqp_errors.AMQPResourceError: _as(ConnectionFailed),
    pamqp_errors.AMQPSyntaxError: _as(ConnectionFailed),
    pamqp_errors.AMQPUnexpectedFrame: _as(ConnectionFailed),
    # Sockets: refused, reset, unreachable, a closed transport.
    ConnectionError: _as(ConnectionFailed),
    OSError: _as(ConnectionFailed),
}


def translate(exc: BaseException, *, mask: Any = None) -> BaseException:
    """Map an aiormq / pamqp / socket error to the aiopublish exception that says what happened.

    Only errors from below aiopublish are mapped; anything else comes back unchanged.
    `mask` is a callable that removes secrets from text (a URL's password).
    """

    def clean(text: object) -> str:
        try:
            plain = str(text)
        except Exception:  # some aiormq errors cannot describe themselves when built oddly
            plain = type(text).__name__
        return mask(plain) if mask is not None else plain

    if isinstance(exc, AiopublishError):
        return exc
    for cls in type(exc).__mro__:
        mapper = LOWER_ERRORS.get(cls)
        if mapper is not None:
            return mapper(exc, clean)
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
    return isinstance(exc, ConnectionFailed) and not isinstance(
        exc, (AuthenticationError, TLSError, VhostNotFound, UnsupportedByBroker)
    )


def is_nack(exc: BaseException) -> bool:
    """The broker nacked the message, or over AMQP 1.0 rejected it (retried only with `retry_nacked`)."""
    return isinstance(exc, UndeliverableMessage) and exc.reason in ("nacked", "rejected")


def is_retriable_or_nack(exc: BaseException) -> bool:
    """The retry predicate of a publish with `retry_nacked=True`."""
    return is_retriable(exc) or is_nack(exc)
