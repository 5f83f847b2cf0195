"""Opening one AMQP connection: URL, TLS, login method and transport options, with secrets masked.

`AmqpConnection` is aiormq's connection with three things aiormq does not give:
the connection.blocked state as a flag and callbacks, the AMQPLAIN login method,
and direct access to the socket's writer so publishes skip aiormq's writer queue.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl as ssl_module
import struct
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiormq
import pamqp.frame
from aiormq.auth import AuthBase
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory, exception_by_code
from pamqp import commands as spec
from yarl import URL

from ._exceptions import AuthenticationError, ConnectionFailed, TLSError, VhostNotFound, translate
from ._frames import ConfirmFrames

__all__ = ["AmqpConnection", "ConnectionParams", "mask_url"]

log = logging.getLogger("aiopublish")

LOGIN_METHODS = ("PLAIN", "AMQPLAIN", "EXTERNAL")
_TRANSPORT_OPTIONS = ("heartbeat", "connection_name", "client_properties", "connect_timeout", "shuffle_nodes")
DEFAULT_HEARTBEAT = 15
DEFAULT_CONNECT_TIMEOUT = 10.0
_MASK = "******"


def mask_url(url: str | URL) -> str:
    """The URL with its password, and nothing else, replaced by `******`, for logs, reprs and errors.

    The user name stays (even when it equals the password). A text yarl cannot parse as a URL is
    masked as free text (`mask_text`).
    """
    try:
        parsed = URL(str(url))
    except ValueError:
        return mask_text(str(url))
    if parsed.password:
        parsed = parsed.with_password(_MASK)
    return str(parsed)


def _node_urls(amqp_uri: object) -> tuple[str, ...]:
    if isinstance(amqp_uri, str):
        urls = tuple(part.strip() for part in amqp_uri.split(",") if part.strip())
    elif isinstance(amqp_uri, Sequence) and all(isinstance(u, str) for u in amqp_uri):
        urls = tuple(amqp_uri)
    else:
        # Not the value itself: a list of URLs would show their passwords.
        kinds = sorted({type(u).__name__ for u in amqp_uri}) if isinstance(amqp_uri, Sequence) else []
        held = f" holding {', '.join(kinds)}" if kinds else ""
        raise TypeError(
            "amqp_uri must be a URL, a comma-separated str of URLs or a list of them, "
            f"not a {type(amqp_uri).__name__}{held}"
        )
    if not urls:
        raise ValueError("amqp_uri is empty: give at least one amqp:// URL")
    return tuple(_node_url(url) for url in urls)


def _login_method(login_method: object) -> str | None:
    if login_method is None:
        return None
    if not isinstance(login_method, str) or login_method.upper() not in LOGIN_METHODS:
        raise ValueError(f"login_method must be one of {', '.join(LOGIN_METHODS)}, not {login_method!r}")
    return login_method.upper()


def _ssl_value(ssl: object) -> bool | ssl_module.SSLContext | tuple[tuple[str, Any], ...] | None:
    if ssl is None or isinstance(ssl, (bool, ssl_module.SSLContext)):
        return ssl
    if isinstance(ssl, Mapping):
        unknown = set(ssl) - {"cafile", "certfile", "keyfile", "verify", "server_hostname", "capath"}
        if unknown:
            raise ValueError(f"unknown ssl option(s): {', '.join(sorted(unknown))}")
        return tuple(sorted(ssl.items()))
    raise TypeError(f"ssl must be a bool, an ssl.SSLContext or a dict, not {type(ssl).__name__}")


def _transport(transport_options: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    options = dict(transport_options or {})
    unknown = set(options) - set(_TRANSPORT_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown transport option(s): {', '.join(sorted(unknown))} (known: {', '.join(_TRANSPORT_OPTIONS)})"
        )
    if "heartbeat" in options and not (isinstance(options["heartbeat"], int) and options["heartbeat"] >= 0):
        raise ValueError(f"transport option heartbeat must be an int >= 0, not {options['heartbeat']!r}")
    if "client_properties" in options:
        options["client_properties"] = tuple(sorted(dict(options["client_properties"]).items()))
    return tuple(sorted(options.items()))


# kombu's names for an AMQP broker (nameko's usual AMQP_URI is "pyamqp://guest:guest@localhost"):
# the same connection as amqp://, with the defaults kombu applies (see _node_url).
_KOMBU_SCHEMES = ("pyamqp", "librabbitmq")
_SCHEMES = ("amqp", "amqps", "amqp1", "amqp1s", "memory", *_KOMBU_SCHEMES)
_QUOTE_HINT = "percent-quote them, e.g. urllib.parse.quote(password, safe='')"


def _node_url(url: str) -> str:
    """One node's URL as aiopublish connects to it; ValueError that never shows its password.

    A password holding an unquoted '/', '#', '?' or '@' makes the URL mean something else
    (yarl then reads part of the password as the port, or as the host and vhost): refused,
    with the URL shown up to its last '@' masked. The error is raised outside any `except`
    block, so not even its __context__ holds the parser's message.
    """
    problem = _url_problem(url)
    if problem is not None:
        raise ValueError(f"amqp_uri {_redacted(url)!r} {problem}")
    scheme, _, rest = url.partition("://")
    if scheme.lower() in _KOMBU_SCHEMES:
        # kombu: pyamqp://host is amqp://guest:guest@host:5672/ (TLS through ssl=, on 5671), and
        # pyamqp:// alone is localhost. aiormq already defaults the login to guest:guest, the port
        # by scheme and an empty vhost to "/"; the rest of the URL is kept exactly as written.
        authority_end = _authority_end(rest)
        login, at, host = rest[:authority_end].rpartition("@")
        if not host or host.startswith(":"):
            host = "localhost" + host
        return f"amqp://{login}{at}{host}{rest[authority_end:]}"
    return url


def _authority_end(rest: str) -> int:
    """Where the user:password@host:port part of a URL (without its scheme://) ends."""
    return min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))


def _url_problem(url: str) -> str | None:
    """What is wrong with `url`, in words that do not quote it, or None."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in _SCHEMES:
        return "must start with amqp:// or amqps:// (or kombu's pyamqp:// or librabbitmq://, or amqp1:// for AMQP 1.0)"
    if "@" in rest[_authority_end(rest) :]:
        return f"has an '@' after a '/', '?' or '#' (if the password or vhost holds these: {_QUOTE_HINT})"
    try:
        parsed = URL(url)
        # yarl parses lazily: touch every part now so that no later access raises.
        _ = (parsed.host, parsed.port, parsed.user, parsed.password, parsed.path, parsed.query)
    except Exception:  # whatever the parser raises, its text may hold the password
        return f"cannot be parsed as a URL (if a password or vhost holds '/', '#', '?', '@' or '%': {_QUOTE_HINT})"
    return None


def _redacted(url: str) -> str:
    """`url` with everything before its last '@' (where any password is) hidden.

    Without an '@', a non-numeric "port" is hidden too: "amqp://guest:S3cr3t" is a login
    whose "@host" was forgotten, not a host and a port.
    """
    head, at, tail = url.rpartition("@")
    if at:
        scheme, separator, _ = head.partition("://")
        return f"{scheme}://{_MASK}@{tail}" if separator else f"{_MASK}@{tail}"
    scheme, separator, rest = url.partition("://")
    end = _authority_end(rest)
    host, colon, port = rest[:end].rpartition(":")
    if colon and not port.isdigit() and not port.endswith("]"):
        return f"{scheme}{separator}{host}:{_MASK}{rest[end:]}"
    return url


@dataclass(frozen=True)
class ConnectionParams:
    """Everything needed to open a connection; equal params share a pooled connection.

    `urls` holds one URL per broker node, tried in order (failover).
    """

    urls: tuple[str, ...]
    ssl: bool | ssl_module.SSLContext | tuple[tuple[str, Any], ...] | None = None
    login_method: str | None = None
    transport_options: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def build(
        cls,
        amqp_uri: str | Sequence[str],
        ssl: bool | ssl_module.SSLContext | Mapping[str, Any] | None = None,
        login_method: str | None = None,
        transport_options: Mapping[str, Any] | None = None,
    ) -> ConnectionParams:
        """Validate the arguments; raise TypeError/ValueError naming what is wrong (never a password)."""
        return cls(_node_urls(amqp_uri), _ssl_value(ssl), _login_method(login_method), _transport(transport_options))

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
        options = dict(ssl) if isinstance(ssl, tuple) else {}
        context = ssl_module.create_default_context(cafile=options.get("cafile"), capath=options.get("capath"))
        if options.get("certfile"):
            context.load_cert_chain(options["certfile"], options.get("keyfile"))
        if options.get("verify") is False:
            context.check_hostname = False
            context.verify_mode = ssl_module.CERT_NONE
        return context

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

    def __init__(self, url: URL, *, login_method: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.login_method = login_method
        self.blocked_reason: str | None = None
        self.on_blocked: list[Callable[[AmqpConnection], None]] = []
        self._last_channel_number = 0

    @staticmethod
    async def _rpc(request: Any, writer: asyncio.StreamWriter, frame_receiver: Any, wait_response: bool = True) -> Any:
        """aiormq's handshake step, but a Connection.Close answer raises the broker's own error.

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
        return frame

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


# scheme://user:password@ in free text: the password is everything between the first ':' after
# the scheme and the '@' (userinfo holds no '/', '@' or whitespace unquoted).
_PASSWORD_IN_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@/\s]*@")


def mask_text(text: str) -> str:
    """Mask the password of every URL with userinfo (`scheme://user:password@`) in free text."""
    return _PASSWORD_IN_URL.sub(rf"\g<1>{_MASK}@", text)
