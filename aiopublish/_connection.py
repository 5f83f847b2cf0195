"""Opening one AMQP connection: URL, TLS, login method and transport options, with secrets masked.

`AmqpConnection` is aiormq's connection with what aiormq does not give: the
connection.blocked state as a flag and callbacks, the AMQPLAIN login method, direct
access to the socket's writer so publishes skip aiormq's writer queue, a frame_max
of the client's own, and what the broker's version implies (see `BrokerLimits`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import struct
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

import aiormq
import pamqp.frame
from aiormq.auth import AuthBase
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory, exception_by_code
from pamqp import commands as spec
from yarl import URL

from ._broker_limits import AMQP_FRAME_MIN, BrokerLimits
from ._durations import seconds
from ._exceptions import (
    AuthenticationError,
    ConnectionFailed,
    TLSError,
    VhostNotFound,
    translate,
)
from ._frames import ConfirmFrames
from ._tls import SslSetting, build_context, ssl_setting
from ._urls import _MASK, mask_text, mask_url, node_urls
from ._value import ValueRecord
from .retry import RetryPolicy, Stop, stop_after_attempt, stop_never, wait_incrementing

__all__ = [
    "AmqpConnection",
    "BrokerLimits",
    "ConnectionParams",
    "call_connect_retry",
    "connect_retry_policy",
    "mask_url",
]

log = logging.getLogger("aiopublish")

LOGIN_METHODS = ("PLAIN", "AMQPLAIN", "EXTERNAL")
# kombu's connection-establishment retries (nameko's TRANSPORT_OPTIONS), see connect_retry_policy.
CONNECT_RETRY_KEYS = ("max_retries", "interval_start", "interval_step", "interval_max")
# What a connection is made with: a publish cannot change these (it would need a connection of its own).
CONNECTION_SHAPING_OPTIONS = (
    "heartbeat",
    "connection_name",
    "client_properties",
    "connect_timeout",
    "shuffle_nodes",
    "frame_max",
)
TRANSPORT_OPTIONS = (*CONNECTION_SHAPING_OPTIONS, *CONNECT_RETRY_KEYS, "confirm_publish")
DEFAULT_HEARTBEAT = 15
DEFAULT_CONNECT_TIMEOUT = 10.0


def _login_method(login_method: object) -> str | None:
    if login_method is None:
        return None
    if not isinstance(login_method, str) or login_method.upper() not in LOGIN_METHODS:
        raise ValueError(f"login_method must be one of {', '.join(LOGIN_METHODS)}, not {login_method!r}")
    return login_method.upper()


def _transport(transport_options: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    options = dict(transport_options or {})
    unknown = set(options) - set(TRANSPORT_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown transport option(s): {', '.join(sorted(map(str, unknown)))} "
            f"(known: {', '.join(TRANSPORT_OPTIONS)})"
        )
    if "heartbeat" in options and not (isinstance(options["heartbeat"], int) and options["heartbeat"] >= 0):
        raise ValueError(f"transport option heartbeat must be an int >= 0, not {options['heartbeat']!r}")
    frame_max = options.get("frame_max")
    if frame_max is not None and (
        isinstance(frame_max, bool) or not isinstance(frame_max, int) or not AMQP_FRAME_MIN <= frame_max < 2**32
    ):
        raise ValueError(
            f"transport option frame_max must be an int from {AMQP_FRAME_MIN} (AMQP's least frame size) "
            f"to {2**32 - 1} bytes, not {frame_max!r}"
        )
    if "client_properties" in options:
        options["client_properties"] = tuple(sorted(dict(options["client_properties"]).items()))
    confirm_publish = options.pop("confirm_publish", None)
    if confirm_publish is not None and not isinstance(confirm_publish, bool):
        raise TypeError(f"transport option confirm_publish must be True or False, not {confirm_publish!r}")
    connect_retry_policy(options)  # checked now, not at the first connect
    return tuple(sorted(options.items()))


def call_connect_retry(transport_options: Mapping[str, Any], params: ConnectionParams) -> RetryPolicy | None:
    """One publish's `transport_options`: checked, and its connection-establishment retries (None: the publisher's).

    ValueError for a key that shapes the connection (heartbeat, connection_name, ...) with
    another value than the publisher's: one publish cannot change the connection it shares.
    """
    call = dict(_transport(transport_options))
    own = dict(params.transport_options)
    for key in CONNECTION_SHAPING_OPTIONS:
        if key in call and call[key] != own.get(key):
            raise ValueError(
                f"transport option {key!r} of a publish() differs from the publisher's ({own.get(key)!r}): "
                "it shapes the connection every publish shares; set it on the Publisher"
            )
    return connect_retry_policy(call)


def connect_retry_policy(transport_options: Mapping[str, Any]) -> RetryPolicy | None:
    """kombu's connection-establishment retries from nameko's TRANSPORT_OPTIONS, or None when none is set.

    kombu (Connection._extract_failover_opts, _ensure_connection) reads `max_retries` (missing or
    None: forever), `interval_start` (default 2 s), `interval_step` (2 s) and `interval_max` (30 s)
    from the transport options and retries opening the connection with them; a round is one try
    of every node. Only these keys make a policy; without any of them a connection is tried once.
    """
    given = {key: transport_options[key] for key in CONNECT_RETRY_KEYS if key in transport_options}
    if not given:
        return None
    max_retries = given.get("max_retries")
    stop: Stop = stop_never
    if max_retries is not None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"transport option max_retries must be an int >= 0 or None, not {max_retries!r}")
        stop = stop_after_attempt(max_retries + 1)
    waits = {}
    for key, default in (("interval_start", 2.0), ("interval_step", 2.0), ("interval_max", 30.0)):
        waits[key] = seconds(given.get(key, default), f"transport option {key}")
    wait = wait_incrementing(start=waits["interval_start"], increment=waits["interval_step"], max=waits["interval_max"])
    return RetryPolicy(stop=stop, wait=wait)


class ConnectionParams(ValueRecord):
    """Everything needed to open a connection; equal params share a pooled connection.

    `urls` holds one URL per broker node, tried in order (failover). Read-only by convention.
    """

    # Compared by these; `context` (built from `ssl`) and `connect_retry` (from the transport options) are not.
    _fields = ("urls", "ssl", "login_method", "transport_options")
    __slots__ = (*_fields, "connect_retry", "context")
    urls: tuple[str, ...]
    ssl: SslSetting
    login_method: str | None
    transport_options: tuple[tuple[str, Any], ...]
    context: ssl_module.SSLContext | None
    connect_retry: RetryPolicy | None

    def __init__(
        self,
        urls: tuple[str, ...],
        ssl: SslSetting = None,
        login_method: str | None = None,
        transport_options: tuple[tuple[str, Any], ...] = (),
        context: ssl_module.SSLContext | None = None,
        connect_retry: RetryPolicy | None = None,
    ) -> None:
        self.urls = urls
        self.ssl = ssl
        self.login_method = login_method
        self.transport_options = transport_options
        # Built once from an ssl dict (files read and checked when the Publisher is built); not part of equality.
        self.context = context
        # kombu's connection-establishment retries from the transport options (None: one try per node).
        self.connect_retry = connect_retry

    def __repr__(self) -> str:
        return f"ConnectionParams({self.masked_url!r}, login_method={self.login_method!r})"

    @classmethod
    def build(
        cls,
        amqp_uri: str | Sequence[str],
        ssl: bool | ssl_module.SSLContext | Mapping[str, Any] | None = None,
        login_method: str | None = None,
        transport_options: Mapping[str, Any] | None = None,
    ) -> ConnectionParams:
        """Validate the arguments; raise TypeError/ValueError naming what is wrong (never a password).

        An ssl dict is turned into its SSLContext here: a CA, certificate or key file that is
        missing or unreadable is a ValueError naming the option and the path, never retried.
        """
        setting = ssl_setting(ssl)
        context = build_context(dict(setting)) if isinstance(setting, tuple) else None
        transport = _transport(transport_options)
        return cls(
            node_urls(amqp_uri),
            setting,
            _login_method(login_method),
            transport,
            context,
            connect_retry_policy(dict(transport)),
        )

    @property
    def url(self) -> str:
        """The first node's URL."""
        return self.urls[0]

    @property
    def masked_url(self) -> str:
        return ",".join(mask_url(url) for url in self.urls)

    @property
    def shuffle_nodes(self) -> bool:
        return bool(dict(self.transport_options).get("shuffle_nodes", False))

    def mask(self, text: str) -> str:
        """`text` with every URL's password replaced by `******`, and this params' passwords where
        they stand as a URL's userinfo without the scheme (`user:secret@host`, plain or URL-quoted).

        Only passwords in userinfo are masked: a user name, a vhost or a broker's text that happens
        to contain the same characters is left as it is.
        """
        text = mask_text(text)
        for url in self.urls:
            parsed = URL(url)
            for secret in {parsed.password, parsed.raw_password}:
                if secret:
                    text = text.replace(f":{secret}@", f":{_MASK}@")
        return text

    def _ssl_context(self, url: str | None = None) -> ssl_module.SSLContext | None:
        ssl = self.ssl
        uses_tls = URL(url or self.url).scheme == "amqps" or bool(ssl)
        if not uses_tls:
            return None
        if isinstance(ssl, ssl_module.SSLContext):
            return ssl
        if self.context is not None:
            return self.context
        return ssl_module.create_default_context()

    def _connection_url(self, node: str | None = None) -> URL:
        url = URL(node or self.url)
        if self._ssl_context(node) is not None and url.scheme == "amqp":
            # ssl=True on an amqp:// URL means TLS on the amqps port unless one is given.
            url = url.with_scheme("amqps")
            if url.explicit_port is None:
                url = url.with_port(5671)
        options = dict(self.transport_options)
        query = dict(url.query)
        query["heartbeat"] = str(options.get("heartbeat", query.get("heartbeat", DEFAULT_HEARTBEAT)))
        if "connection_name" in options:
            query["name"] = str(options["connection_name"])
        if self.login_method in ("PLAIN", "EXTERNAL"):
            query["auth"] = self.login_method
        return url.with_query(query)

    async def connect(self, node: str | None = None) -> AmqpConnection:
        """Open a connection to `node` (default: the first URL).

        Raises ConnectionFailed or one of its subclasses (AuthenticationError, TLSError,
        VhostNotFound), with the password masked.
        """
        node = node or self.url
        connection = self._new_connection(node)
        timeout = dict(self.transport_options).get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        try:
            async with asyncio.timeout(timeout):
                await connection.connect()
        except TimeoutError as exc:
            await _discard(connection, exc)
            raise ConnectionFailed(f"timed out after {timeout} s connecting to {mask_url(node)}") from None
        except Exception as exc:
            error = self._connect_error(exc, mask_url(node))
            if error is exc:
                raise
            raise error from None
        except BaseException:
            # Cancelled mid-handshake: aiormq's connect runs in a task of its own that may still
            # open the connection; close it rather than leave it (and its tasks) behind.
            _abandon(connection)
            raise
        await _guard_shutdown()
        return connection

    def _new_connection(self, node: str) -> AmqpConnection:
        options = dict(self.transport_options)
        context = self._ssl_context(node)
        kwargs: dict[str, Any] = {}
        ssl_options = dict(self.ssl) if isinstance(self.ssl, tuple) else {}
        if ssl_options.get("server_hostname"):
            kwargs["server_hostname"] = ssl_options["server_hostname"]
        factory = _RecordingTransportFactory(TLSTransportFactory() if context else TCPTransportFactory())
        connection = AmqpConnection(
            self._connection_url(node),
            context=context,
            transport_factory=factory,
            client_properties=dict(options.get("client_properties", ())) or None,
            login_method=self.login_method,
            frame_max=options.get("frame_max"),
            **kwargs,
        )
        connection.factory = factory
        return connection

    def _connect_error(self, exc: Exception, masked: str) -> Exception:
        """The aiopublish exception for a connect that failed with `exc` (`exc` itself if it is none of ours)."""
        tls_failure = _ssl_error_in(exc)  # aiormq wraps the handshake's SSLError in AMQPConnectionError
        if tls_failure is not None:
            return TLSError(f"TLS failed connecting to {masked}: {self.mask(str(tls_failure))}")
        if isinstance(exc, aiormq.exceptions.AuthenticationError):
            return AuthenticationError(
                f"the broker at {masked} does not offer login method "
                f"{self.login_method or 'PLAIN'} (it offers: {exc.args[0] if exc.args else '?'})"
            )
        if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
            return AuthenticationError(f"the broker at {masked} refused the login: {self.mask(str(exc))}")
        error = translate(exc, mask=self.mask)
        if error is exc or not isinstance(error, Exception):
            return exc
        if isinstance(error, VhostNotFound):
            # The broker answered and refused: not a "cannot connect".
            return VhostNotFound(f"{error} (at {masked})", vhost=error.vhost)
        cls = AuthenticationError if isinstance(error, AuthenticationError) else ConnectionFailed
        return cls(f"cannot connect to {masked}: {error}")


def _abandon(connection: AmqpConnection) -> None:
    """Drop a connection now (no await): abort its socket, then close it in the background."""
    writer = connection.factory.writer
    if writer is None:
        return  # no socket yet: aiormq's cancelled connect task cleans up after itself
    writer.transport.abort()
    task = asyncio.get_running_loop().create_task(_discard(connection, asyncio.CancelledError()))
    _DISCARDING.add(task)
    task.add_done_callback(_DISCARDING.discard)


async def _discard(connection: AmqpConnection, reason: BaseException) -> None:
    """Close a connection that failed or was given up; never raises."""
    try:
        await connection.close(reason)
    except Exception:  # already broken: there is nothing more to release
        log.debug("closing a failed connection raised", exc_info=True)


#: Connections being closed in the background after a cancelled connect (kept alive until done).
_DISCARDING: set[asyncio.Task[None]] = set()


# One async generator per event loop that has opened a connection. asyncio.run() cancels every
# task at its end, and the cancelled reader and writer of a connection left open (a publisher
# never closed) start clean-up tasks of aiormq's own, which Python 3.12+ then destroys pending
# ("Task was destroyed but it is pending!", "Future exception was never retrieved"). The loop
# finalises async generators after cancelling the tasks, while it still runs: this one's
# `finally` lets those clean-up tasks finish (bounded), so a forgotten close stays quiet.
_GUARDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGenerator[None]] = weakref.WeakKeyDictionary()
_SHUTDOWN_TURNS = 20


async def _settled_at_shutdown() -> AsyncGenerator[None]:
    try:
        yield
    finally:
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
        # A few loop turns finish them (each waits on the one before); a task still waiting on
        # something else after that is not aiormq's clean-up and is left as it is.
        for _ in range(_SHUTDOWN_TURNS):
            if all(task.done() for task in pending):
                break
            await asyncio.sleep(0)
        for task in pending:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: nothing logged for it


async def _guard_shutdown() -> None:
    loop = asyncio.get_running_loop()
    if loop not in _GUARDS:
        guard = _GUARDS[loop] = _settled_at_shutdown()
        await anext(guard)  # started: the loop finalises it at shutdown_asyncgens()


async def wait_discarded() -> None:
    """Wait until every connection given up by a cancelled connect in this loop is closed."""
    loop = asyncio.get_running_loop()
    pending = [task for task in _DISCARDING if task.get_loop() is loop]
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


def _ssl_error_in(exc: BaseException) -> ssl_module.SSLError | None:
    """The SSLError behind `exc`, following its causes, if there is one."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl_module.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class _RecordingTransportFactory(TransportFactory):
    """Keeps the StreamWriter aiormq opens, so publishes can write frames directly."""

    def __init__(self, inner: TransportFactory) -> None:
        self.inner = inner
        self.writer: asyncio.StreamWriter | None = None

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await self.inner.create(url, **kwargs)
        self.writer = writer
        return reader, writer


class _AmqPlainAuth(AuthBase):
    def encode(self) -> str:
        url = self.connector.url
        table = b""
        for key, value in (("LOGIN", url.user or "guest"), ("PASSWORD", url.password or "guest")):
            raw = value.encode("utf-8")
            # pamqp sends the response as a utf-8 str, so every length byte must stay below 0x80.
            if len(raw) > 127:
                raise ValueError("AMQPLAIN credentials longer than 127 bytes are not supported")
            table += bytes((len(key),)) + key.encode() + b"S" + struct.pack(">I", len(raw)) + raw
        return table.decode("utf-8")


class _AmqPlainMechanism:
    name = "AMQPLAIN"
    value = _AmqPlainAuth


class AmqpConnection(aiormq.Connection):
    """aiormq's connection plus a visible blocked state, AMQPLAIN, and the socket writer."""

    factory: _RecordingTransportFactory

    def __init__(
        self, url: URL, *, login_method: str | None = None, frame_max: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(url, **kwargs)
        self.login_method = login_method
        self.frame_max_wanted = frame_max
        # Learnt from connection.start, before anything else is sent (see _credentials_class).
        self.broker = BrokerLimits()
        self.blocked_reason: str | None = None
        self.on_blocked: list[Callable[[AmqpConnection], None]] = []
        self._last_channel_number = 0

    # aiormq's is a staticmethod, always called as self._rpc(...): this one needs self (frame_max, broker).
    async def _rpc(  # type: ignore[override]
        self, request: Any, writer: asyncio.StreamWriter, frame_receiver: Any, wait_response: bool = True
    ) -> Any:
        """aiormq's handshake step, but a Connection.Close answer raises the broker's own error,
        and the broker's connection.tune meets the client's frame_max.

        aiormq checks for the expected reply first, so a refused connection.open (530
        "vhost X not found", "access to vhost X refused") came out as InvalidFrameError
        without the broker's text.
        """
        writer.write(pamqp.frame.marshal(request, 0))
        await writer.drain()
        if not wait_response:
            return None
        _, _, frame = await frame_receiver.get_frame()
        if isinstance(frame, spec.Connection.Close):
            if frame.reply_code == 403:
                raise aiormq.exceptions.ProbableAuthenticationError(frame.reply_text)
            raise exception_by_code(frame)
        if request.synchronous and frame.name not in request.valid_responses:
            raise aiormq.exceptions.InvalidFrameError(f"Expected one of {request.valid_responses!r}, got {frame!r}")
        if isinstance(frame, spec.Connection.Tune) and self.frame_max_wanted:
            self._tune_frame_max(frame)
        return frame

    def _tune_frame_max(self, tune: spec.Connection.Tune) -> None:
        """Lower the broker's proposed frame_max to the client's (aiormq answers tune-ok with the
        Tune frame's values and keeps it as connection_tune); refuse one the broker would refuse."""
        wanted = self.frame_max_wanted
        assert wanted is not None
        self.broker.check_frame_max(wanted)
        tune.frame_max = min(tune.frame_max or wanted, wanted)  # the broker's 0 means "no limit"

    async def _Connection__reader(self, frame_receiver: Any) -> None:
        # aiormq's reader loop, reading through ConfirmFrames: confirms are settled as they are read.
        frames = ConfirmFrames(frame_receiver.reader, self.channels.get, self._heard_from_broker)
        await super()._Connection__reader(frames)  # type: ignore[misc]

    def _heard_from_broker(self) -> None:
        # What aiormq's loop notes for each frame it sees (heartbeat checks, last_received);
        # the confirms ConfirmFrames settles itself never reach that loop.
        self._Connection__last_frame_time = self.loop.time()

    def next_channel_number(self) -> int:
        """A free channel number, counting up rather than reusing the lowest free one.

        aiormq frees a number as soon as the broker's channel.close arrives, before our
        close-ok is written: a channel reopened on that number at once could send its
        channel.open ahead of the close-ok, which the broker answers by closing the
        connection. Counting up leaves a just-closed number alone until the count wraps.
        """
        limit = (self.connection_tune.channel_max if self.connection_tune else 0) or 2047
        number = self._last_channel_number
        for _ in range(limit):
            number = number % limit + 1
            if number not in self.channels:
                self._last_channel_number = number
                return number
        raise ConnectionFailed(f"all {limit} channels of the connection are in use")

    @property
    def is_blocked(self) -> bool:
        return self.blocked_reason is not None

    @property
    def last_received(self) -> float:
        """Loop time of the last frame read from the broker (heartbeats included)."""
        return float(self._Connection__last_frame_time)

    async def round_trip(self) -> None:
        """Open and close a spare channel: two requests the broker must answer, on any vhost, with no rights."""
        number = self.next_channel_number()
        channel = await self.channel(channel_number=number, publisher_confirms=False)
        await channel.close()

    @property
    def stream_writer(self) -> asyncio.StreamWriter:
        writer = self.factory.writer
        if writer is None:  # pragma: no cover - only before connect()
            raise ConnectionFailed("not connected")
        return writer

    def _credentials_class(self, start_frame: spec.Connection.Start) -> Any:
        # aiormq's one hook between reading connection.start and answering it.
        self.broker = BrokerLimits.from_server_properties(start_frame.server_properties)
        if self.login_method == "AMQPLAIN":
            if "AMQPLAIN" not in start_frame.mechanisms.split():
                raise aiormq.exceptions.AuthenticationError(start_frame.mechanisms, ["AMQPLAIN"])
            return _AmqPlainMechanism
        return super()._credentials_class(start_frame)

    # aiormq dispatches these by their name-mangled names; overriding them is the only hook.
    async def _Connection__handle_connection_blocked(self, frame: spec.Connection.Blocked) -> None:
        self.blocked_reason = frame.reason or "blocked"
        self._Connection__connection_unblocked.clear()  # type: ignore[attr-defined]
        self._notify_blocked()

    async def _Connection__handle_connection_unblocked(self, frame: spec.Connection.Unblocked) -> None:
        self.blocked_reason = None
        self._Connection__connection_unblocked.set()  # type: ignore[attr-defined]
        self._notify_blocked()

    def _notify_blocked(self) -> None:
        for callback in list(self.on_blocked):
            try:
                callback(self)
            except Exception:  # a listener's bug must not kill the connection's reader
                log.exception("blocked-state callback failed")
