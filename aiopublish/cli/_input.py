"""Reading the command's input (a body, or lines) without blocking the event loop.

Pipes, sockets and terminals are read through the event loop (`connect_read_pipe` and a
`StreamReader`), so a writer that pauses never stalls the publishes under way and Ctrl-C
stops a read at once. Regular files (and devices such as /dev/null) are read with plain
reads: they never wait for a writer, and the event loop refuses them as pipes (uvloop
even aborts the process on one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
from typing import IO, Protocol

from ._common import UsageError

__all__ = ["CHUNK_SIZE", "Input", "LineReader", "open_input", "read_all"]

#: Bytes asked for by each read: all that a pipe holds, up to this.
CHUNK_SIZE = 64 * 1024


class Input(Protocol):
    """A byte stream read chunk by chunk; b"" at the end."""

    async def read(self) -> bytes: ...

    def close(self) -> None: ...


class _FileInput:
    """A regular file, a device that never waits, or an in-memory stream: plain reads."""

    def __init__(self, stream: IO[bytes], *, close: bool) -> None:
        self._stream = stream
        self._close = close

    async def read(self) -> bytes:
        return self._stream.read(CHUNK_SIZE)

    def close(self) -> None:
        if self._close:
            self._stream.close()


class _PipeInput:
    """A pipe, socket or terminal, read through the event loop."""

    def __init__(self, reader: asyncio.StreamReader, transport: asyncio.ReadTransport, restore: int | None) -> None:
        self._reader = reader
        self._transport = transport
        # The pipe transport makes the descriptor non-blocking, and that flag belongs to the open
        # file, shared with whoever else reads it (the shell, for a terminal): put it back after.
        self._restore = restore

    async def read(self) -> bytes:
        return await self._reader.read(CHUNK_SIZE)

    def close(self) -> None:
        self._transport.close()
        if self._restore is not None:
            with contextlib.suppress(OSError):  # the descriptor is gone already: nothing to restore
                os.set_blocking(self._restore, True)


def _reads_through_the_loop(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode) and os.isatty(fd))


async def _pipe_input(fd: int, restore: int | None) -> _PipeInput:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(loop=loop)
    pipe = os.fdopen(fd, "rb", buffering=0)  # closed by the transport
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe)
    return _PipeInput(reader, transport, restore)


async def _stdin() -> Input:
    """Standard input, on a descriptor of our own (a copy of it), so closing it leaves sys.stdin alone."""
    buffer = sys.stdin.buffer
    try:
        fd = buffer.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stdin (tests): read it as it is
        return _FileInput(buffer, close=False)
    if _reads_through_the_loop(fd):
        return await _pipe_input(os.dup(fd), restore=fd if os.get_blocking(fd) else None)
    return _FileInput(os.fdopen(os.dup(fd), "rb"), close=True)


async def open_input(path: str) -> Input:
    """The input at `path` ('-' is stdin). UsageError when it cannot be opened."""
    if path == "-":
        return await _stdin()
    try:
        # Opening is quick (a FIFO waits for its writer, as with cat); closed by the Input it becomes.
        stream = open(path, "rb")  # noqa: ASYNC230, SIM115
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if _reads_through_the_loop(stream.fileno()):
        fd = os.dup(stream.fileno())
        stream.close()
        return await _pipe_input(fd, restore=None)
    return _FileInput(stream, close=True)


async def read_all(source: Input) -> bytes:
    """Everything up to the end of the input."""
    chunks = []
    while chunk := await source.read():
        chunks.append(chunk)
    return b"".join(chunks)


class LineReader:
    """The lines of an input in batches of at most `batch_size` `(line_number, bytes)` pairs.

    A batch holds the complete lines that one read brought (a pipe's reads bring what the
    writer has written so far), so a slow writer's lines go out as they come and a fast one's
    in batches. Line numbers count every line, blank ones included; the newline is dropped.
    """

    def __init__(self, source: Input, batch_size: int) -> None:
        self._source = source
        self._batch_size = batch_size
        self._ready: list[tuple[int, bytes]] = []
        self._partial: list[bytes] = []
        self._ended = False
        #: The number of the last line handed out.
        self.last_line = 0
        self._numbered = 0

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> list[tuple[int, bytes]]:
        while not self._ready:
            if self._ended:
                raise StopAsyncIteration
            await self._fill()
        batch = self._ready[: self._batch_size]
        del self._ready[: self._batch_size]
        self.last_line = batch[-1][0]
        return batch

    async def _fill(self) -> None:
        chunk = await self._source.read()
        if not chunk:
            self._ended = True
            if self._partial:  # a last line without a newline
                self._add(b"".join(self._partial))
                self._partial = []
            return
        if b"\n" not in chunk:  # part of a long line: joined once its end comes
            self._partial.append(chunk)
            return
        first, *middle, rest = chunk.split(b"\n")
        self._add(b"".join([*self._partial, first]))
        for line in middle:
            self._add(line)
        self._partial = [rest] if rest else []

    def _add(self, line: bytes) -> None:
        self._numbered += 1
        self._ready.append((self._numbered, line))
