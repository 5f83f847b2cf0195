"""A scripted AMQP 1.0 peer for what a real broker will not do on demand: withhold link credit.

It speaks just enough of the protocol (SASL PLAIN, open, begin, attach, flow, transfer,
disposition, end, close) with aiopublish's own codec, grants the credit a test asks
for, accepts every transfer it reads and counts them. Nothing here decides an outcome
that RabbitMQ decides: the outcomes are tested against RabbitMQ in test_broker.py.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiopublish._amqp1 import _performatives as p
from aiopublish._amqp1._codec import (
    Described,
    encode_array_symbols,
    encode_bool,
    encode_described,
    encode_fields,
    encode_string,
    encode_ubyte,
    encode_uint,
)
from aiopublish._amqp1._frames import AMQP_HEADER, SASL_HEADER, TYPE_SASL, FrameReader, frame


class StubPeer:
    """Listens on 127.0.0.1; `grant(n)` gives the one sender link n more credit."""

    def __init__(self, initial_credit: int) -> None:
        self.initial_credit = initial_credit
        self.transfers = 0
        self.transfer_seen = asyncio.Event()
        self.attached = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._handle = 0
        self._delivery_count = 0
        self._credit_given = 0
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
                    encode_uint(self.transfers),
                    encode_uint(10_000),
                    encode_uint(0),
                    encode_uint(10_000),
                    encode_uint(self._handle),
                    encode_uint(self._delivery_count),
                    encode_uint(max(link_credit, 0)),
                ]
            ),
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        frames = FrameReader(1 << 20)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            assert await reader.readexactly(8) == SASL_HEADER
            writer.write(SASL_HEADER)
            mechanisms = encode_described(p.SASL_MECHANISMS, encode_fields([encode_array_symbols(["PLAIN"])]))
            writer.write(frame(0, mechanisms, TYPE_SASL))
            pending = []
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
                    self._answer(item.performative, writer)

    def _answer(self, performative: object, writer: asyncio.StreamWriter) -> None:
        if performative is None:
            return
        code = p.descriptor_code(performative)
        if code == p.OPEN:
            writer.write(frame(0, p.open_("stub", "stub", 65536, 0, 0)))
        elif code == p.BEGIN:
            body = encode_described(
                p.BEGIN, encode_fields([encode_uint(0), encode_uint(0), encode_uint(10_000), encode_uint(10_000)])
            )
            writer.write(frame(0, body))
        elif code == p.ATTACH:
            assert isinstance(performative, Described)
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
            self.transfer_seen.set()
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
