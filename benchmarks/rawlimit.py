"""Ceiling probe: the least Python can do per confirmed publish on this machine.

Adapted from /work/shared/bench/rawlimit.py (the team's shared "rawlimit" yardstick):
a bare asyncio AMQP 0-9-1 client built on pamqp frames. Handshake, one channel in
confirm mode, three frames marshalled per message and written straight to the socket,
acks counted (``multiple=True`` honoured), at most ``window`` messages unconfirmed.
Not a product: no returns, no reconnects, no flow control, no frame splitting.

Changes from the original: the URL's host, port, credentials and vhost are used; the
caller supplies the queue, message count, window and body factory; nacks are counted
as failures instead of being ignored; a channel or connection close from the broker
raises; the connection is closed with the Connection.Close handshake.

Standalone: ``python benchmarks/rawlimit.py [N] [WINDOW]`` (declares and purges its
own queue ``aiopublish-bench-rawlimit``, deletes it afterwards).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader
from pamqp.exceptions import UnmarshalingException

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


class _Link:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""

    async def read_frame(self) -> object:
        while True:
            try:
                used, _channel, frame = pframe.unmarshal(self.buffer)
            except UnmarshalingException:  # incomplete frame: read more
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("connection closed by the broker") from None
                self.buffer += data
                continue
            self.buffer = self.buffer[used:]
            if isinstance(frame, C.Connection.Close | C.Channel.Close):
                raise ConnectionError(f"broker closed: {frame.reply_code} {frame.reply_text}")
            return frame

    def send(self, frame: object, channel: int) -> None:
        self.writer.write(pframe.marshal(frame, channel))  # type: ignore[arg-type]

    async def rpc(self, frame: object, channel: int) -> object:
        self.send(frame, channel)
        return await self.read_frame()


async def open_link(url: str) -> _Link:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 5672)
    link = _Link(reader, writer)
    writer.write(PROTOCOL_HEADER)
    await link.read_frame()  # Connection.Start
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    link.send(
        C.Connection.StartOk(
            client_properties={"product": "rawlimit"},
            mechanism="PLAIN",
            response=f"\0{user}\0{password}",
            locale="en_US",
        ),
        0,
    )
    tune = await link.read_frame()
    assert isinstance(tune, C.Connection.Tune)
    link.send(C.Connection.TuneOk(tune.channel_max, tune.frame_max, 0), 0)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    await link.rpc(C.Connection.Open(vhost), 0)  # OpenOk
    await link.rpc(C.Channel.Open(), 1)
    return link


async def close_link(link: _Link) -> None:
    try:
        link.send(C.Connection.Close(200, "bye", 0, 0), 0)
        await asyncio.wait_for(link.read_frame(), 5)  # CloseOk
    except (ConnectionError, TimeoutError):
        pass
    finally:
        link.writer.close()


async def publish(
    url: str,
    queue: str,
    n: int,
    window: int,
    make_body: Callable[[int], bytes],
    on_ready: Callable[[], object] = lambda: None,
) -> int:
    """Publish ``n`` messages to ``queue`` with confirms; return the number nacked."""
    link = await open_link(url)
    try:
        await link.rpc(C.Confirm.Select(), 1)
        properties = C.Basic.Properties(content_type="application/json", delivery_mode=2)
        settled = 0
        nacked = 0
        slots = asyncio.Semaphore(window)

        async def read_confirms() -> None:
            nonlocal settled, nacked
            try:
                while settled < n:
                    frame = await link.read_frame()
                    if isinstance(frame, C.Basic.Ack | C.Basic.Nack):
                        count = frame.delivery_tag - settled if frame.multiple else 1
                        settled += count
                        if isinstance(frame, C.Basic.Nack):
                            nacked += count
                        for _ in range(count):
                            slots.release()
            except BaseException:
                for _ in range(window):  # wake the writer so that it sees the failure
                    slots.release()
                raise

        on_ready()
        reader = asyncio.create_task(read_confirms())
        for i in range(n):
            await slots.acquire()
            if reader.done():  # surfaces a broker close instead of waiting forever
                reader.result()
            data = make_body(i)
            link.writer.write(
                pframe.marshal(C.Basic.Publish(exchange="", routing_key=queue), 1)
                + pframe.marshal(pheader.ContentHeader(0, len(data), properties), 1)
                + pframe.marshal(pbody.ContentBody(data), 1)
            )
            if i % 64 == 0:
                await link.writer.drain()
        await reader
        return nacked
    finally:
        await close_link(link)


async def _standalone(n: int, window: int) -> None:
    url = "amqp://guest:guest@127.0.0.1:5672/"
    queue = "aiopublish-bench-rawlimit"
    link = await open_link(url)
    await link.rpc(C.Queue.Declare(queue=queue, durable=True), 1)
    await link.rpc(C.Queue.Purge(queue=queue), 1)
    await close_link(link)
    started: list[float] = []

    def body(i: int) -> bytes:
        return json.dumps({"id": i, "body": "x" * 120}).encode()

    nacked = await publish(url, queue, n, window, body, on_ready=lambda: started.append(time.perf_counter()))
    elapsed = time.perf_counter() - started[0]
    print(f"raw-limit {n / elapsed:10.0f} msg/s  ({elapsed:.2f}s, window {window}, nacked {nacked})")
    link = await open_link(url)
    await link.rpc(C.Queue.Delete(queue=queue), 1)
    await close_link(link)


if __name__ == "__main__":
    asyncio.run(
        _standalone(
            int(sys.argv[1]) if len(sys.argv) > 1 else 20000,
            int(sys.argv[2]) if len(sys.argv) > 2 else 512,
        )
    )
