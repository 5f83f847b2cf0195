"""The in-memory brokers by URL: every Publisher on the same memory:// URL shares one broker.

The URL's ``rabbitmq`` query parameter chooses the RabbitMQ version the broker imitates when it
is created (``memory://?rabbitmq=3.10``); it is not part of the broker's identity, so
``memory://`` finds the same broker to read back, and naming another version for a broker that
exists already is an error.
"""

from __future__ import annotations

from yarl import URL

from ._broker import InMemoryBroker
from ._vhost import DEFAULT_RABBITMQ, DEFAULT_URL, rabbitmq_limits

__all__ = ["broker_key", "get_broker", "reset"]

_brokers: dict[str, InMemoryBroker] = {}


def broker_key(url: str) -> str:
    """The registry key of a memory:// URL: host and path (the vhost), without credentials or query."""
    parsed = URL(url)
    if parsed.scheme != "memory":
        raise ValueError(f"an in-memory broker needs a memory:// URL, not {url!r}")
    version = parsed.query.get("rabbitmq")
    if version is not None:
        rabbitmq_limits(version)  # a version that is not one fails here, in the Publisher's constructor
    host = parsed.host or ""
    port = f":{parsed.explicit_port}" if parsed.explicit_port is not None else ""
    path = parsed.raw_path.rstrip("/")
    return f"memory://{host}{port}{path}"


def get_broker(url: str = DEFAULT_URL) -> InMemoryBroker:
    """The broker every Publisher on this memory:// URL uses (created on first use)."""
    key = broker_key(url)
    version = URL(url).query.get("rabbitmq")
    broker = _brokers.get(key)
    if broker is None:
        broker = _brokers[key] = InMemoryBroker(key, version or DEFAULT_RABBITMQ)
    elif version is not None and rabbitmq_limits(version).version != broker.rabbitmq.version:
        raise ValueError(
            f"{url} asks for RabbitMQ {version}, but the in-memory broker {key} imitates "
            f"{broker.rabbitmq.name} (created first): use another host or path, or reset()"
        )
    return broker


def reset() -> None:
    """Forget every in-memory broker: the next use of any memory:// URL starts empty."""
    _brokers.clear()
