"""Opening an AMQP 1.0 connection: TCP (or TLS), SASL, the AMQP header, open and begin.

The SASL exchange logs in with PLAIN (the URL's user and password), ANONYMOUS (when
the broker offers no PLAIN) or EXTERNAL (the TLS client certificate). RabbitMQ takes
the vhost from open's hostname, written ``vhost:NAME``. The Session returned has its
reader running.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module

from . import _performatives as p
from ._connection import _HANDLE_MAX, _INCOMING_WINDOW, _MAX_FRAME_SIZE, _OUTGOING_WINDOW, _READ_SIZE, Session
from ._frames import AMQP_HEADER, SASL_HEADER, TYPE_SASL, FrameReader, InFrame, frame

__all__ = ["OpenRefused", "Sasl", "open_session"]


class OpenRefused(Exception):
    """The broker refused the SASL login or the open (a missing vhost); `condition` as it said."""

    def __init__(self, text: str, condition: str = "", *, login: bool = False, dropped: bool = False) -> None:
        super().__init__(text)
        self.condition = condition
        self.login = login
        #: The broker closed the socket in answer to open, without a close frame saying why.
        self.dropped = dropped


class Sasl:
    """The login: a mechanism and its initial response."""

    def __init__(self, user: str | None, password: str | None, mechanism: str | None) -> None:
        self.user = user
        self.password = password
        self.mechanism = mechanism

    def choose(self, offered: list[str]) -> tuple[str, bytes | None]:
        wanted = self.mechanism
        if wanted is None:
            wanted = "PLAIN" if "PLAIN" in offered or self.user else "ANONYMOUS"
        if wanted not in offered:
            raise OpenRefused(
                f"the broker does not offer login method {wanted} (it offers: {', '.join(offered) or 'none'})",
                login=True,
            )
        if wanted == "PLAIN":
            user, password = self.user or "guest", self.password if self.password is not None else "guest"
            return wanted, b"\x00" + user.encode("utf-8") + b"\x00" + password.encode("utf-8")
        if wanted == "ANONYMOUS":
            return wanted, b""
        return wanted, None  # EXTERNAL: the TLS client certificate is the identity


async def _read_frame(reader: asyncio.StreamReader, frames: FrameReader, pending: list[InFrame]) -> InFrame:
    while not pending:
        data = await reader.read(_READ_SIZE)
        if not data:
            raise OpenRefused("the broker closed the connection during the handshake")
        pending.extend(frames.feed(data))
    return pending.pop(0)


async def open_session(
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None,
    server_hostname: str | None,
    sasl: Sasl,
    vhost: str,
    container_id: str,
) -> Session:
    """Connect, log in, open and begin; a Session whose reader runs. Raises OSError or OpenRefused."""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl, server_hostname=server_hostname if ssl is not None else None, limit=_READ_SIZE
    )
    try:
        return await _handshake(reader, writer, sasl, vhost, container_id)
    except BaseException:
        writer.transport.abort()
        raise


async def _handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sasl: Sasl, vhost: str, container_id: str
) -> Session:
    frames = FrameReader(_MAX_FRAME_SIZE)
    pending: list[InFrame] = []
    writer.write(SASL_HEADER)
    header = await reader.readexactly(8)
    if header != SASL_HEADER:
        raise OpenRefused(f"the broker answered the SASL header with {header!r}: is this an AMQP 1.0 broker?")
    mechanisms = await _read_frame(reader, frames, pending)
    if p.descriptor_code(mechanisms.performative) != p.SASL_MECHANISMS:
        raise OpenRefused("the broker did not offer SASL mechanisms")
    offered = p.field(mechanisms.performative, 0, [])
    offered = [str(name) for name in (offered if isinstance(offered, list) else [offered])]
    mechanism, response = sasl.choose(offered)
    writer.write(frame(0, p.sasl_init(mechanism, response, None), TYPE_SASL))
    outcome = await _read_frame(reader, frames, pending)
    if p.descriptor_code(outcome.performative) != p.SASL_OUTCOME:
        raise OpenRefused("the broker did not answer the SASL login")
    code = p.field(outcome.performative, 0, 1)
    if code != 0:
        raise OpenRefused(f"the broker refused the login (SASL outcome {code})", login=True)
    writer.write(AMQP_HEADER)
    header = await reader.readexactly(8)
    if header != AMQP_HEADER:
        raise OpenRefused(f"the broker answered the AMQP header with {header!r}")
    writer.write(frame(0, p.open_(container_id, f"vhost:{vhost}", _MAX_FRAME_SIZE, 0, 0)))
    # begin waits for open's answer: a broker that refuses the open (a missing vhost) closes the
    # socket after its close frame, and a begin written meanwhile would make that a reset, losing the frame.
    try:
        opened = await _read_frame(reader, frames, pending)
    except (OSError, OpenRefused):
        # RabbitMQ 4.x answers an open it refuses (a vhost that does not exist, or that the user
        # may not use) by dropping the connection a few seconds later, without a close frame.
        raise OpenRefused(
            f"the broker dropped the connection in answer to open for vhost {vhost!r} "
            "(RabbitMQ does so when the vhost does not exist or the user may not use it)",
            dropped=True,
        ) from None
    if p.descriptor_code(opened.performative) == p.CLOSE:
        condition, description = p.error_text(p.field(opened.performative, 0))
        raise OpenRefused(f"the broker refused to open the connection: {condition}: {description}", condition)
    if p.descriptor_code(opened.performative) != p.OPEN:
        raise OpenRefused("the broker did not answer open")
    session = Session(reader, writer, frames)
    session.remote_max_frame = max(512, min(p.field(opened.performative, 2, 0xFFFFFFFF), 0xFFFFFFFF))
    idle_ms = p.field(opened.performative, 4, 0)
    writer.write(frame(0, p.begin(0, _INCOMING_WINDOW, _OUTGOING_WINDOW, _HANDLE_MAX)))
    begun = await _read_frame(reader, frames, pending)
    code = p.descriptor_code(begun.performative)
    if code in (p.CLOSE, p.END):
        condition, description = p.error_text(p.field(begun.performative, 0))
        raise OpenRefused(f"the broker refused the session: {condition}: {description}", condition)
    if code != p.BEGIN:
        raise OpenRefused("the broker did not answer begin")
    session.remote_incoming_window = p.field(begun.performative, 2, 0)
    session.next_incoming_id = p.field(begun.performative, 1, 0)
    for item in pending:  # frames read together with begin (a flow already)
        session._handle(item)
    session.start(idle_ms / 1000 if idle_ms else None)
    return session
