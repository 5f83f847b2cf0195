"""An in-process asyncio TCP proxy with fault controls, for fault-injection tests.

The proxy sits between a client (e.g. aiormq / aio-pika) and a broker and lets a
test break the network on demand:

``drop_all()``
    Abort every open connection (client side and upstream side) with
    ``transport.abort()``: the client sees a reset / EOF right away. New
    connections are still accepted and forwarded.

``refuse(True)``
    Close the listening socket, so a new ``connect()`` gets ``ECONNREFUSED``
    (a real refusal, not accept-then-close). Open connections keep working.
    ``refuse(False)`` binds the same port again (``SO_REUSEADDR``) and serves
    again; the socket is listening when the call returns, so a ``connect()``
    made right after it succeeds.

``go_silent(True)``
    Imitate a dead network where the peer never answers and never closes:
    every open connection stays open but the proxy stops *reading* from both
    sides (``pause_reading()``), so nothing is forwarded and bytes pile up in
    the kernel buffers (the sender eventually blocks, as with unacknowledged
    TCP data); EOFs and resets from either side are not noticed either.
    Connections accepted while silent are never connected upstream.
    ``go_silent(False)`` only affects connections accepted *after* it:
    connections that were frozen stay frozen (dead) until ``drop_all()`` or
    ``stop()``; a real client will notice them through its heartbeat /
    timeouts and reconnect, which is the behaviour under test.

All controls are plain methods that take effect before they return; call them
from the event loop that runs the proxy (the test's loop). ``stop()`` aborts
everything and waits for every task and transport, so no task is left pending
and no transport is left unclosed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from types import TracebackType
from urllib.parse import quote

from tests.broker import until

__all__ = ["TcpProxy"]

_CHUNK = 64 * 1024


class _Link:
    """One proxied client connection and, once connected, its upstream connection."""

    __slots__ = ("client_reader", "client_writer", "closing", "dead", "frozen", "upstream_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frozen: bool) -> None:
        self.client_reader = reader
        self.client_writer = writer
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.frozen = frozen
        self.closing = False  # one side closed: shutting down gracefully
        # Set when the link is dropped: wakes up frozen pumps so they can exit.
        self.dead = asyncio.Event()

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client_writer, self.upstream_writer) if w is not None]

    def freeze(self) -> None:
        self.frozen = True
        for writer in self.writers():
            # A closing transport ignores pause_reading(); an open one stops
            # reading at once, so no new byte reaches the pumps.
            writer.transport.pause_reading()

    def kill(self) -> None:
        self.dead.set()
        for writer in self.writers():
            writer.transport.abort()


class TcpProxy:
    """A TCP proxy from ``listen_host:listen_port`` to ``target_host:target_port``.

    ``listen_port=0`` picks a free port; read it back from :attr:`port` after
    :meth:`start`. Counters: :attr:`connections_total` (client connections
    accepted since start) and :attr:`active_connections` (accepted and neither
    closed nor dropped yet).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        *,
        connect_timeout: float = 5.0,
        user: str = "guest",
        password: str = "guest",
        vhost: str = "/",
    ) -> None:
        self.target_host = target_host
        # Defaults for url(): the fixtures set them from AIOPUBLISH_TEST_URL.
        self.user = user
        self.password = password
        self.vhost = vhost
        self.target_port = target_port
        self.listen_host = listen_host
        self._port = listen_port
        self.connect_timeout = connect_timeout
        self.connections_total = 0
        self._server: asyncio.Server | None = None
        # A socket bound by refuse(False) that the server task has not taken over yet.
        self._pending_sock: socket.socket | None = None
        self._serve_tasks: set[asyncio.Task[None]] = set()
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._stopped = False
        self._refusing = False
        self._silent = False
        #: When set, what the broker sends is forwarded in writes of at most this many bytes, one per
        #: loop turn, so the client reads frames split at arbitrary points (see trickle()).
        self.trickle_bytes: int | None = None
        #: Set to a list to record every connection's bytes from now on: one (client to broker,
        #: broker to client) pair of bytearrays per connection, in the order they were accepted.
        self.recordings: list[tuple[bytearray, bytearray]] | None = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> TcpProxy:
        if self._started:
            raise RuntimeError("TcpProxy already started")
        self._started = True
        sock = self._bind()
        self._port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._on_client, sock=sock)
        return self

    async def stop(self) -> None:
        """Stop listening, abort every connection and wait for all tasks to end."""
        if self._stopped:
            return
        self._stopped = True
        # Let a server being (re)started by refuse(False) finish, then close it.
        if self._serve_tasks:
            await asyncio.gather(*self._serve_tasks, return_exceptions=True)
        self._close_server()
        self.drop_all()
        tasks = list(self._tasks)
        if tasks:
            # Aborted links end within an iteration or two; only a link still
            # connecting upstream has to be cancelled.
            _, pending = await asyncio.wait(tasks, timeout=1)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- addresses --------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("TcpProxy not started yet")
        return self._port

    def url(self, user: str | None = None, password: str | None = None, vhost: str | None = None) -> str:
        """An ``amqp://`` URL that connects through this proxy (``guest:guest`` and ``/`` by default)."""
        user = self.user if user is None else user
        password = self.password if password is None else password
        vhost = self.vhost if vhost is None else vhost
        path = "" if vhost == "/" else quote(vhost, safe="")
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"amqp://{auth}@{host}:{self.port}/{path}"

    # -- counters / state ---------------------------------------------------------

    @property
    def active_connections(self) -> int:
        return sum(1 for link in self._links if not (link.dead.is_set() or link.closing))

    @property
    def refusing(self) -> bool:
        return self._refusing

    @property
    def silent(self) -> bool:
        return self._silent

    async def wait_active(self, count: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until exactly ``count`` connections are active; fail the test otherwise."""
        await until(
            lambda: self.active_connections == count,
            within=timeout,
            what=f"exactly {count} active connections",
        )

    # -- fault controls ---------------------------------------------------------------

    def drop_all(self) -> None:
        """Abort every current client and upstream connection (the client sees a reset/EOF)."""
        for link in self._links:
            link.kill()

    def refuse(self, on: bool = True) -> None:
        """While on, connecting is refused (listening socket closed); open connections live on."""
        self._check_running()
        if on == self._refusing:
            return
        if on:
            self._refusing = True
            self._close_server()
            return
        # Bind and listen synchronously so that the port accepts (into the
        # backlog) as soon as this returns; the server starts serving the
        # backlog on the next loop iterations.
        sock = self._bind()
        self._refusing = False
        self._pending_sock = sock
        task = asyncio.get_running_loop().create_task(self._serve_on(sock))
        self._serve_tasks.add(task)
        task.add_done_callback(self._serve_tasks.discard)

    def go_silent(self, on: bool = True) -> None:
        """While on, nothing is forwarded: open connections are frozen for good, new ones never forwarded."""
        self._check_running()
        self._silent = on
        if on:
            for link in self._links:
                link.freeze()

    # -- internals ----------------------------------------------------------------------

    def limit_receive_buffer(self, size: int) -> None:
        """Connections accepted from now on read the client through a kernel buffer of about `size` bytes.

        Linux lets a receive buffer grow to tcp_rmem's maximum (32 MiB here) by itself: a proxy
        that stops reading (go_silent) would then absorb that much before the client's own write
        buffer backs up. Set on the listening socket, the size is inherited by every accepted one
        (and a size set explicitly is not grown).
        """
        self._check_running()
        assert self._server is not None
        for sock in self._server.sockets:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def trickle(self, size: int | None) -> None:
        """Forward the broker's bytes `size` at a time, a loop turn apart (None: as they come)."""
        self.trickle_bytes = size

    def _check_running(self) -> None:
        if not self._started or self._stopped:
            raise RuntimeError("TcpProxy is not running")

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.listen_host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.listen_host, self._port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _serve_on(self, sock: socket.socket) -> None:
        if self._pending_sock is not sock:
            return  # refuse(True) came first and closed it
        self._pending_sock = None
        # start_server() starts serving before its first await, so there is
        # no window where the socket belongs to nobody.
        server = await asyncio.start_server(self._on_client, sock=sock)
        if self._refusing or self._stopped or self._server is not None:
            server.close()  # refuse(True) or stop() came while it was starting
        else:
            self._server = server

    def _close_server(self) -> None:
        if self._pending_sock is not None:
            self._pending_sock.close()
            self._pending_sock = None
        if self._server is not None:
            # Closes the listening socket at once: pending connects are refused.
            self._server.close()
            self._server = None

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain (non-coroutine) callback, so the task is registered before
        # anything else can run: stop() never misses a connection.
        if self._stopped or self._refusing:
            writer.transport.abort()
            return
        self.connections_total += 1
        link = _Link(reader, writer, frozen=self._silent)
        self._links.add(link)
        if link.frozen:
            link.freeze()
        self._track(asyncio.get_running_loop().create_task(self._run_link(link)))

    async def _run_link(self, link: _Link) -> None:
        pumps: list[asyncio.Task[None]] = []
        try:
            if link.frozen:
                await link.dead.wait()
                return
            try:
                async with asyncio.timeout(self.connect_timeout):
                    up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            except (OSError, TimeoutError):
                return  # upstream down: the client sees its connection closed
            link.upstream_writer = up_writer
            if link.dead.is_set():
                return
            if link.frozen:
                link.freeze()
            loop = asyncio.get_running_loop()
            to_broker = from_broker = None
            if self.recordings is not None:
                to_broker, from_broker = bytearray(), bytearray()
                self.recordings.append((to_broker, from_broker))
            pumps = [
                loop.create_task(self._pump(link, link.client_reader, up_writer, sink=to_broker)),
                loop.create_task(self._pump(link, up_reader, link.client_writer, self, sink=from_broker)),
            ]
            # When either side closes, close both (as a NAT/proxy would).
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            link.closing = True
            for writer in link.writers():
                if link.dead.is_set():
                    writer.transport.abort()
                else:
                    writer.close()  # graceful: flushes what was already forwarded
            try:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                for writer in link.writers():
                    # Wait for connection_lost so no transport outlives the proxy.
                    try:
                        async with asyncio.timeout(2):
                            await writer.wait_closed()
                    except (OSError, TimeoutError):
                        writer.transport.abort()
                        with contextlib.suppress(OSError):
                            await writer.wait_closed()
            finally:
                self._links.discard(link)

    @staticmethod
    async def _pump(
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        downstream: TcpProxy | None = None,
        *,
        sink: bytearray | None = None,
    ) -> None:
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    return
                if sink is not None:
                    sink += data
                if link.frozen:
                    # Read just before the freeze: hold it, never forward it.
                    await link.dead.wait()
                    return
                size = downstream.trickle_bytes if downstream is not None else None
                if size is None:
                    writer.write(data)
                    await writer.drain()
                    continue
                for start in range(0, len(data), size):
                    writer.write(data[start : start + size])
                    await writer.drain()
                    await asyncio.sleep(0)  # a loop turn: the client reads this piece on its own
        except OSError:
            return
