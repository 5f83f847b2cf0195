"""The in-memory brokers by URL: every Publisher on the same memory:// URL shares one broker."""

from __future__ import annotations

from yarl import URL

from ._broker import InMemoryBroker
from ._vhost import DEFAULT_URL

__all__ = ["broker_key", "get_broker", "reset"]

_brokers: dict[str, InMemoryBroker] = {}


def broker_key(url: str) -> str:
    """The registry key of a memory:// URL: host and path (the vhost), without credentials or query."""
    parsed = URL(url)
    if parsed.scheme != "memory":
        raise ValueError(f"an in-memory broker needs a memory:// URL, not {url!r}")
    host = parsed.host or ""
    port = f":{parsed.explicit_port}" if parsed.explicit_port is not None else ""
    path = parsed.raw_path.rstrip("/")
    return f"memory://{host}{port}{path}"


def get_broker(url: str = DEFAULT_URL) -> InMemoryBroker:
    """The broker every Publisher on this memory:// URL uses (created on first use)."""
    key = broker_key(url)
    broker = _brokers.get(key)
    if broker is None:
        broker = _brokers[key] = InMemoryBroker(key)
    return broker


def reset() -> None:
    """Forget every in-memory broker: the next use of any memory:// URL starts empty."""
    _brokers.clear()
