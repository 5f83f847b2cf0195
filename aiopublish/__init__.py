"""aiopublish: an asyncio publisher for RabbitMQ, modelled on nameko's, with confirms on by default."""

from ._declarations import Binding, Exchange, Queue
from ._exceptions import (
    AccessRefused,
    AiopublishError,
    AuthenticationError,
    ChannelError,
    ChannelInterrupted,
    ConnectionFailed,
    NotFound,
    PreconditionFailed,
    PublisherClosed,
    PublishTimeout,
    SerializationError,
    TLSError,
    UndeliverableMessage,
    UnsupportedByBroker,
    VhostNotFound,
)
from ._metrics import Metrics
from ._pool import close_pools, get_connection, get_producer
from ._publisher import Publisher
from ._result import PublishResult, PublishStatus
from ._serialization import register_compressor, register_serializer
from ._state import PublisherState
from ._tracing import instrument, uninstrument
from ._types import BatchOptions, DefaultOptions, PublishOptions
from .retry import RetryPolicy

__all__ = [
    "AccessRefused",
    "AiopublishError",
    "AuthenticationError",
    "BatchOptions",
    "Binding",
    "ChannelError",
    "ChannelInterrupted",
    "ConnectionFailed",
    "DefaultOptions",
    "Exchange",
    "Metrics",
    "NotFound",
    "PreconditionFailed",
    "PublishTimeout",
    "PublishOptions",
    "PublishResult",
    "PublishStatus",
    "Publisher",
    "PublisherClosed",
    "PublisherState",
    "Queue",
    "RetryPolicy",
    "SerializationError",
    "TLSError",
    "UndeliverableMessage",
    "UnsupportedByBroker",
    "VhostNotFound",
    "close_pools",
    "get_connection",
    "get_producer",
    "instrument",
    "register_compressor",
    "register_serializer",
    "uninstrument",
]

__version__ = "0.1.0"
