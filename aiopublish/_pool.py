"""nameko's get_connection / get_producer, as async context managers over pooled aio-pika objects.

Connections are pooled per event loop and per connection arguments, so two
sequential `get_connection()` calls with the same arguments share one robust
connection; producers (channels) are pooled per connection and confirm flag.
`close_pools()` closes what this event loop's pools opened. asyncio.run() calls it as the loop
shuts down (aio-pika's robust connections keep tasks running until they are closed), so a
program that forgets it still ends with no task pending.

The arguments are nameko's, in nameko's order, positional or by name:
`get_connection(amqp_uri, ssl, login_method, transport_options)` and
`get_producer(amqp_uri, confirms, ssl, login_method, transport_options)`. An aiormq or
aio-pika error raised inside the `async with` block (a publish the broker refuses, a lost
connection) comes out as aiopublish's exception for it (NotFound, ConnectionFailed, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from ._connection import ConnectionParams
from ._exceptions import ConnectionFailed, is_retriable, mapped_errors, translate
from .retry import RetryState

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

__all__ = ["close_pools", "get_connection", "get_producer"]

log = logging.getLogger("aiopublish")

_AMQPLAIN_REFUSED = (
    "get_connection() and get_producer() cannot log in with AMQPLAIN: they yield aio-pika objects, and "
    "aio-pika opens its connections through aiormq.connect(), which offers only PLAIN and EXTERNAL. "
    "Publish with Publisher(..., login_method='AMQPLAIN'), which opens its own connection and supports it"
)


@dataclass
class _LoopPools:
    """One event loop's pooled connections and channels."""

    connections: dict[ConnectionParams, AbstractRobustConnection] = field(default_factory=dict)
    producers: dict[tuple[ConnectionParams, bool], AbstractRobustChannel] = field(default_factory=dict)
    # Held while a connection or channel is being opened, so concurrent first uses share one.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Started async generator whose finally closes the pools: asyncio.run() and Runner.close()
    # finalize the loop's async generators before closing it (loop.shutdown_asyncgens()), so a
    # program that never calls close_pools() still ends with nothing pending.
    guard: AsyncGenerator[None] | None = None


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPools] = weakref.WeakKeyDictionary()


async def _closed_at_shutdown() -> AsyncGenerator[None]:
    try:
        yield
    finally:
        await _close_pools(from_guard=True)


async def _loop_pools() -> _LoopPools:
    loop = asyncio.get_running_loop()
    pools = _pools.get(loop)
    if pools is None:
        pools = _pools[loop] = _LoopPools()
        pools.guard = _closed_at_shutdown()
        await anext(pools.guard)  # started: the loop now tracks it (weakly: pools holds it)
    return pools


def _params(
    amqp_uri: str | Sequence[str], ssl: Any, login_method: str | None, transport_options: Mapping[str, Any] | None
) -> ConnectionParams:
    params = ConnectionParams.build(amqp_uri, ssl, login_method, transport_options)
    if params.login_method == "AMQPLAIN":
        raise ValueError(_AMQPLAIN_REFUSED)
    return params


async def _open(params: ConnectionParams) -> AbstractRobustConnection:
    """Connect, retrying as kombu's transport options say (max_retries, interval_*), if any is given."""
    policy = params.connect_retry
    if policy is None:
        return await _open_once(params)

    def on_retry(state: RetryState) -> None:
        log.warning(
            "connecting to %s failed on try %d (%s); trying again in %.2f s (transport options)",
            params.masked_url,
            state.attempt,
            params.mask(str(state.exception)),
            state.next_wait,
        )

    return await policy.run(partial(_open_once, params), retry=is_retriable, on_retry=on_retry)


async def _open_once(params: ConnectionParams) -> AbstractRobustConnection:
    import aio_pika  # here, not at module level: only these helpers need it (faster `import aiopublish`)

    options = dict(params.transport_options)
    try:
        return await aio_pika.connect_robust(
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


async def _connection_for(pools: _LoopPools, params: ConnectionParams) -> AbstractRobustConnection:
    connection = pools.connections.get(params)
    if connection is None or connection.is_closed:
        connection = pools.connections[params] = await _open(params)
    return connection


# How long leaving a producer block waits for aiormq to finish closing a channel the broker closed.
_CLOSE_WAIT = 5.0
# How often _settle looks whether aio-pika has reopened the channel (seconds).
_REOPEN_POLL = 0.01


async def _settle(channel: AbstractRobustChannel, underlay: Any) -> None:
    """Leaving a producer block: let aiormq finish closing the channel if the broker closed it meanwhile.

    aiormq closes a channel in tasks of its own (its reader, then the wrappers it gathers);
    a program ending right after the broker's refusal (asyncio.run() cancelling them mid-way)
    would otherwise log "unhandled exception during asyncio.run() shutdown" for the refusal
    it already got as an exception; then aio-pika reopens the channel (robust), which is
    waited for too. Waits only after the channel closed, at most a few seconds; never raises.
    """
    if underlay is None or not underlay.is_closed:
        return
    reader = getattr(underlay, "_Channel__reader_task", None)  # checked in tests/test_aiormq_hooks.py
    task = getattr(reader, "task", reader)
    if isinstance(task, asyncio.Task) and not task.done():
        await asyncio.wait([task], timeout=_CLOSE_WAIT)
    await asyncio.sleep(0)  # the wrappers gathering it finish on the next turn
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_CLOSE_WAIT):
            # aio-pika's reopen of the channel, so it is not cut off mid-way. Its close callbacks can
            # take a few more loop turns to start it (Python 3.13 schedules them later than 3.11):
            # `ready()` alone may return before the reopen began, so wait for the new channel itself.
            while True:
                await channel.ready()
                current = await _underlay(channel)
                if current is not None and current is not underlay and not current.is_closed:
                    return
                await asyncio.sleep(_REOPEN_POLL)


async def _underlay(channel: AbstractRobustChannel) -> Any:
    """The aiormq channel under `channel` now, or None; never waits (the robust one waits for a reconnect)."""
    from aio_pika.channel import Channel

    try:
        return await Channel.get_underlay_channel(channel)  # type: ignore[arg-type]
    except Exception:  # not open (being restored): nothing of it to settle
        return None


@asynccontextmanager
async def get_connection(
    amqp_uri: str | Sequence[str],
    ssl: Any = None,
    login_method: str | None = None,
    transport_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[AbstractRobustConnection]:
    """Yield the pooled aio-pika robust connection for these arguments (opened on first use).

    nameko's `get_connection`, as an async context manager: one connection per event loop and
    set of arguments (`amqp_uri`, `ssl`, `login_method`, `transport_options`, as `Publisher`
    takes them), kept open for the next use until `close_pools()` or the loop's end.

    Raises ValueError for login_method="AMQPLAIN", which aio-pika cannot do (Publisher can),
    and TypeError/ValueError for other bad arguments, naming them; ConnectionFailed (or its
    AuthenticationError, TLSError, VhostNotFound) when the broker cannot be reached or refuses.
    """
    params = _params(amqp_uri, ssl, login_method, transport_options)
    pools = await _loop_pools()
    async with pools.lock:
        connection = await _connection_for(pools, params)
    with mapped_errors(params.mask):
        yield connection


@asynccontextmanager
async def get_producer(
    amqp_uri: str | Sequence[str],
    confirms: bool = True,
    ssl: Any = None,
    login_method: str | None = None,
    transport_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[AbstractRobustChannel]:
    """Yield the pooled aio-pika channel for these arguments, in confirm mode when `confirms` is true.

    nameko's `get_producer`, as an async context manager: the channel (default: confirms on,
    and an unroutable mandatory message then raises) is opened on the pooled connection of
    `get_connection` and kept for the next use until `close_pools()`.

    `confirms` decides, as in nameko (which writes it over kombu's `confirm_publish`
    transport option).

    Raises as `get_connection` does: ValueError for login_method="AMQPLAIN", TypeError or
    ValueError for bad arguments, ConnectionFailed (or a subclass) when the broker cannot be
    reached or refuses.
    """
    transport_options = {**(transport_options or {}), "confirm_publish": bool(confirms)}
    params = _params(amqp_uri, ssl, login_method, transport_options)
    pools = await _loop_pools()
    key = (params, bool(confirms))
    async with pools.lock:
        connection = await _connection_for(pools, params)
        channel = pools.producers.get(key)
        if channel is None or channel.is_closed:
            from aio_pika.abc import AbstractRobustChannel

            with mapped_errors(params.mask):
                channel = await connection.channel(publisher_confirms=bool(confirms), on_return_raises=bool(confirms))
            assert isinstance(channel, AbstractRobustChannel)
            pools.producers[key] = channel
    underlay = await _underlay(channel)
    try:
        with mapped_errors(params.mask):
            yield channel
    finally:
        await _settle(channel, underlay)


async def close_pools() -> None:
    """Close every channel and connection get_connection()/get_producer() opened on this event loop.

    Idempotent; the next get_connection() opens a new connection. A connection that fails to
    close cleanly is logged (warning on the "aiopublish" logger) and dropped.
    """
    await _close_pools(from_guard=False)


async def _close_pools(*, from_guard: bool) -> None:
    pools = _pools.pop(asyncio.get_running_loop(), None)
    if pools is None:
        return
    async with pools.lock:  # let a connection being opened finish, then close it too
        channels = [channel for channel in pools.producers.values() if not channel.is_closed]
        connections = list(pools.connections.values())
        pools.producers.clear()
        pools.connections.clear()
    for group in (channels, connections):
        results = await asyncio.gather(*(item.close() for item in group), return_exceptions=True)
        for item, result in zip(group, results, strict=True):
            if isinstance(result, Exception):
                log.warning("closing pooled %r failed: %s", item, result)
    guard, pools.guard = pools.guard, None
    if guard is not None and not from_guard:
        await guard.aclose()  # its finally finds nothing left to close
