"""nameko's get_connection / get_producer, as async context managers over pooled aio-pika objects.

Connections are pooled per event loop and per connection arguments, so two
sequential `get_connection()` calls with the same arguments share one robust
connection; producers (channels) are pooled per connection and confirm flag.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._connection import ConnectionParams
from ._exceptions import ConnectionFailed, mapped_errors, translate

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

__all__ = ["get_connection", "get_producer"]

_Pools = dict[ConnectionParams, "AbstractRobustConnection"]
_connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pools] = weakref.WeakKeyDictionary()
_producers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[ConnectionParams, bool], AbstractRobustChannel]
] = weakref.WeakKeyDictionary()


async def _connection_for(params: ConnectionParams) -> AbstractRobustConnection:
    if params.login_method == "AMQPLAIN":
        raise ValueError("get_connection() supports login_method PLAIN and EXTERNAL; Publisher supports AMQPLAIN")
    pool = _connections.setdefault(asyncio.get_running_loop(), {})
    connection = pool.get(params)
    if connection is not None and not connection.is_closed:
        return connection
    import aio_pika  # here, not at module level: only these helpers need it (faster `import aiopublish`)

    options = dict(params.transport_options)
    try:
        connection = await aio_pika.connect_robust(
            str(params._connection_url()),
            ssl_context=params._ssl_context(),
            client_properties=dict(options.get("client_properties", ())) or None,
            timeout=options.get("connect_timeout", 10.0),
        )
    except Exception as exc:
        error = translate(exc, mask=params.mask)
        if error is exc:
            raise
        raise ConnectionFailed(f"cannot connect to {params.masked_url}: {error}") from None
    pool[params] = connection
    return connection


@asynccontextmanager
async def get_connection(
    amqp_uri: str,
    ssl: Any = None,
    login_method: str | None = None,
    transport_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[AbstractRobustConnection]:
    """Yield the pooled aio-pika robust connection for these arguments (opened on first use)."""
    params = ConnectionParams.build(amqp_uri, ssl, login_method, transport_options)
    yield await _connection_for(params)


@asynccontextmanager
async def get_producer(
    amqp_uri: str,
    confirms: bool = True,
    ssl: Any = None,
    login_method: str | None = None,
    transport_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[AbstractRobustChannel]:
    """Yield the pooled aio-pika channel for these arguments, in confirm mode when `confirms` is true."""
    params = ConnectionParams.build(amqp_uri, ssl, login_method, transport_options)
    connection = await _connection_for(params)
    pool = _producers.setdefault(asyncio.get_running_loop(), {})
    key = (params, bool(confirms))
    channel = pool.get(key)
    if channel is None or channel.is_closed:
        from aio_pika.abc import AbstractRobustChannel

        with mapped_errors(params.mask):
            channel = await connection.channel(publisher_confirms=bool(confirms), on_return_raises=bool(confirms))
        assert isinstance(channel, AbstractRobustChannel)
        pool[key] = channel
    yield channel
