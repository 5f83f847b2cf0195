"""A scripted AMQP 1.0 peer for what a real broker will not do on demand: withhold link credit,
and (for a run against 4.3 alone) answer an attach the way RabbitMQ 4.0 does.

It speaks just enough of the protocol (SASL PLAIN, open, begin, attach, flow, transfer,
disposition, end, close) with aiopublish's own codec, grants the credit a test asks
for, accepts every transfer it reads (or, while `hold` is set, leaves it unsettled)
and counts what it accepted by message-id. Nothing here decides an outcome that
RabbitMQ decides: the outcomes are tested against RabbitMQ in test_broker.py. The one
broker behaviour it replays is RabbitMQ 4.0's answer to an attach to a missing queue or
exchange, as observed on 4.0.5: no attach, no detach, but an `end` of the whole session
(error amqp:not-found, "no queue 'q' in vhost '/'" or "no exchange 'x' in vhost '/'"),
after which the frames the client had already sent on that session are ignored; a new
session (a begin, here on a new connection) is served as before. 4.0's own refusals are
tested against 4.0 in test_broker.py (CI's 4.0 run).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import unquote

from aiopublish._amqp1 import _performatives as p
from aiopublish._amqp1._codec import (
    Described,
    decode,
    encode_array_symbols,
    encode_bool,
    encode_described,
    encode_fields,
    encode_string,
    encode_symbol,
    encode_ubyte,
    encode_uint,
)
from aiopublish._amqp1._frames import AMQP_HEADER, SASL_HEADER, TYPE_SASL, FrameReader, InFrame, frame


def _message_id(payload: bytes) -> str:
    """The message-id of a transfer's message (its properties section), "" when it has none."""
    offset = 0
    while offset < len(payload):
        section, offset = decode(payload, offset)
        if p.descriptor_code(section) == p.PROPERTIES:
            return str(p.field(section, 0, ""))
    return ""


def _rabbitmq_40_not_found(address: str) -> str:
    """RabbitMQ 4.0's description for an attach to a /queues/ or /exchanges/ address that names nothing."""
    parts = address.split("/")
    kind = "queue" if parts[1] == "queues" else "exchange"
    return f"no {kind} '{unquote(parts[2])}' in vhost '/'"


class StubPeer:
    """Listens on 127.0.0.1; `grant(n)` gives the one sender link n more credit.

    `missing`: queues and exchanges (``/queues/q``, ``/exchanges/x``) an attach to which is
    answered as RabbitMQ 4.0 answers one to a missing queue or exchange, by ending the
    session. `hold`: while set, transfers read are left unsettled (a broker that has not
    confirmed yet); `accepted` counts, per message-id, the transfers settled as accepted.
    """

    def __init__(self, initial_credit: int, *, missing: tuple[str, ...] = ()) -> None:
        self.initial_credit = initial_credit
        self.missing = missing
        self.hold = False
        self.accepted: dict[str, int] = {}
        self.sessions_ended = 0
        self.transfers = 0
        self.transfer_seen = asyncio.Event()
        self.attached = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._handle = 0
        self._delivery_count = 0
        self._credit_given = 0
        self._next_incoming = 0
        self._ended = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"amqp1://guest:guest@127.0.0.1:{port}/"

    async def __aenter__(self) -> StubPeer:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        if self._writer is not None:
            self._writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)

    def grant(self, credit: int) -> None:
        """Give the link `credit` more (a flow frame for the link)."""
        assert self._writer is not None
        self._credit_given += credit
        self._writer.write(frame(0, self._flow(self._credit_given - self._delivery_count)))

    def _flow(self, link_credit: int) -> bytes:
        return encode_described(
            p.FLOW,
            encode_fields(
                [
                    encode_uint(self._next_incoming),
                    encode_uint(10_000),
                    encode_uint(0),
                    encode_uint(10_000),
                    encode_uint(self._handle),
                    encode_uint(self._delivery_count),
                    encode_uint(max(link_credit, 0)),
                ]
            ),
        )

    async def wait_for_transfers(self, count: int) -> None:
        """Until `count` transfers in all have been read."""
        while self.transfers < count:
            self.transfer_seen.clear()
            await self.transfer_seen.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A new connection: its session and link count from zero (a publisher reconnects after a loss).
        self._writer = writer
        self._delivery_count = self._credit_given = self._next_incoming = 0
        self._ended = False
        frames = FrameReader(1 << 20)
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                assert await reader.readexactly(8) == SASL_HEADER
                writer.write(SASL_HEADER)
                mechanisms = encode_described(p.SASL_MECHANISMS, encode_fields([encode_array_symbols(["PLAIN"])]))
                writer.write(frame(0, mechanisms, TYPE_SASL))
                pending: list[InFrame] = []
                while not pending:
                    pending = frames.feed(await reader.read(4096))
                writer.write(frame(0, encode_described(p.SASL_OUTCOME, encode_fields([encode_ubyte(0)])), TYPE_SASL))
                assert await reader.readexactly(8) == AMQP_HEADER
                writer.write(AMQP_HEADER)
                while True:
                    data = await reader.read(65536)
                    if not data:
                        return
                    for item in frames.feed(data):
                        self._answer(item.performative, item.payload, writer)
        finally:
            writer.transport.abort()  # a publisher's earlier connection too, once it is gone

    def _answer(self, performative: object, payload: bytes, writer: asyncio.StreamWriter) -> None:
        if performative is None:
            return
        code = p.descriptor_code(performative)
        if self._ended and code not in (p.BEGIN, p.CLOSE):
            return  # sent on the session we ended, before the client read our end: ignored
        if code == p.OPEN:
            writer.write(frame(0, p.open_("stub", "stub", 65536, 0, 0)))
        elif code == p.BEGIN:
            self._ended = False
            self._delivery_count = self._credit_given = self._next_incoming = 0
            body = encode_described(
                p.BEGIN, encode_fields([encode_uint(0), encode_uint(0), encode_uint(10_000), encode_uint(10_000)])
            )
            writer.write(frame(0, body))
        elif code == p.ATTACH:
            assert isinstance(performative, Described)
            address = str(p.field(p.field(performative, 6), 0))
            if "/".join(address.split("/")[:3]) in self.missing:  # /exchanges/x/key is to /exchanges/x
                self._end_session(address, writer)
                return
            self._handle = p.field(performative, 1, 0)
            target = encode_described(0x29, encode_fields([encode_string(str(p.field(p.field(performative, 6), 0)))]))
            reply = encode_described(
                p.ATTACH,
                encode_fields(
                    [
                        encode_string(str(p.field(performative, 0))),
                        encode_uint(self._handle),
                        encode_bool(True),  # receiver
                        encode_ubyte(2),
                        encode_ubyte(0),
                        encode_described(0x28, encode_fields([])),
                        target,
                    ]
                ),
            )
            writer.write(frame(0, reply))
            self.attached.set()
            self.grant(self.initial_credit)
        elif code == p.TRANSFER:
            assert isinstance(performative, Described)
            delivery_id = p.field(performative, 1, 0)
            self.transfers += 1
            self._delivery_count += 1
            self._next_incoming += 1
            self.transfer_seen.set()
            if self.hold:
                return
            message_id = _message_id(payload)
            self.accepted[message_id] = self.accepted.get(message_id, 0) + 1
            accepted = encode_described(p.ACCEPTED, encode_fields([]))
            disposition = encode_described(
                p.DISPOSITION,
                encode_fields(
                    [encode_bool(True), encode_uint(delivery_id), encode_uint(delivery_id), encode_bool(True), accepted]
                ),
            )
            writer.write(frame(0, disposition))
        elif code == p.CLOSE:
            writer.write(frame(0, p.close()))

    def _end_session(self, address: str, writer: asyncio.StreamWriter) -> None:
        """RabbitMQ 4.0's answer to an attach to a missing queue or exchange: the session's end."""
        error = encode_described(
            p.ERROR, encode_fields([encode_symbol("amqp:not-found"), encode_string(_rabbitmq_40_not_found(address))])
        )
        writer.write(frame(0, encode_described(p.END, encode_fields([error]))))
        self._ended = True
        self.sessions_ended += 1
