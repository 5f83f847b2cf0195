"""aiopublish: an asyncio publisher for RabbitMQ, modelled on nameko's, with confirms on by default."""

from ._declarations import Binding, Exchange, Queue
from ._exceptions import (
    AccessRefused,
    AiopublishError,
    AuthenticationError,
    ChannelError,
    ConnectionFailed,
    NotFound,
    PreconditionFailed,
    PublisherClosed,
    PublishTimeout,
    SerializationError,
    TLSError,
    UndeliverableMessage,
    VhostNotFound,
)
from ._pool import get_connection, get_producer
from ._publisher import Publisher, PublishResult
from ._serialization import register_compressor, register_serializer
from .retry import RetryPolicy

__all__ = [
    "AccessRefused",
    "AiopublishError",
    "AuthenticationError",
    "Binding",
    "ChannelError",
    "ConnectionFailed",
    "Exchange",
    "NotFound",
    "PreconditionFailed",
    "PublishTimeout",
    "PublishResult",
    "Publisher",
    "PublisherClosed",
    "Queue",
    "RetryPolicy",
    "SerializationError",
    "TLSError",
    "UndeliverableMessage",
    "VhostNotFound",
    "get_connection",
    "get_producer",
    "register_compressor",
    "register_serializer",
]

__version__ = "0.1.0"
