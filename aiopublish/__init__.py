"""aiopublish: an asyncio publisher for RabbitMQ, modelled on nameko's, with confirms on by default.

What a first publish does not need is imported when it is first asked for (`_LAZY`):
aio-pika for get_connection/get_producer, the state snapshot, the TypedDicts of the
signatures. Type checkers see them as plain imports (the TYPE_CHECKING block).
"""

from typing import TYPE_CHECKING

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
from ._publisher import Publisher
from ._result import PublishResult, PublishStatus
from ._serialization import register_compressor, register_serializer
from ._tracing import instrument, uninstrument
from .retry import RetryPolicy

if TYPE_CHECKING:
    from ._pool import close_pools, get_connection, get_producer
    from ._state import PublisherState
    from ._types import BatchOptions, DefaultOptions, PublishOptions

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

# Public name -> the private module that defines it, imported at first use (module __getattr__, PEP 562).
_LAZY = {
    "BatchOptions": "._types",
    "DefaultOptions": "._types",
    "PublishOptions": "._types",
    "PublisherState": "._state",
    "close_pools": "._pool",
    "get_connection": "._pool",
    "get_producer": "._pool",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # the next lookup finds it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
