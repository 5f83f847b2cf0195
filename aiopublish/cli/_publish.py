"""`aiopublish publish`: one message, or one message per line of JSON, each waiting for its confirm."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

import aiormq.exceptions
from yarl import URL

from .._connection import ConnectionParams, mask_url
from .._exceptions import AiopublishError, PreconditionFailed
from .._options import new_message_id
from .._publisher import Publisher
from .._urls import mask_text
from ._arguments import add_arguments, settings_from
from ._common import EXIT_FAILED, EXIT_OK, PROG, URL_ENV, UsageError
from ._console import Console, Progress, Stats, ranges
from ._input import LineReader, open_input, read_all
from ._lines import LinePublisher

__all__ = ["HELP", "add_arguments", "run"]

HELP = "publish one message, or one message per line of JSON"


async def run(args: argparse.Namespace, console: Console) -> int:
    """Run `aiopublish publish` as `args` say; the exit status."""
    command = _PublishCommand(args, console)
    if args.json_lines:
        return await command.publish_lines()
    return await command.publish_one()


class _PublishCommand:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.settings = settings_from(args, os.environ.get(URL_ENV))
        try:
            params = ConnectionParams.build(self.settings.url)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--url: {exc}") from None
        console.mask = lambda text: mask_text(params.mask(text))

    def publisher(self) -> Publisher:
        args, settings = self.args, self.settings
        try:
            publisher = Publisher(
                settings.url,
                serializer=settings.serializer,
                compression=args.compression,
                mandatory=args.mandatory,
                declare=settings.declare,
                # --timeout bounds connecting as a whole too (see connect()); one node may take all of it.
                transport_options={"connection_name": f"{PROG} cli", "connect_timeout": args.timeout},
                max_in_flight=args.window,
                exchange=args.exchange,
                routing_key=settings.routing_key,
                headers=settings.headers,
                timeout=args.timeout,
                **settings.properties,
            )
        except (TypeError, ValueError) as exc:
            raise UsageError(self.console.mask(str(exc))) from None
        if not args.exchange and not settings.routing_key:
            self.console.error(
                "warning: no --routing-key: on the default exchange a message without one reaches no queue"
            )
        return publisher

    async def connect(self, publisher: Publisher) -> bool:
        """Connect and declare within --timeout; False (and one line on stderr) when that fails."""
        try:
            async with asyncio.timeout(self.args.timeout):
                await publisher.connect()
        except (AiopublishError, TimeoutError, aiormq.exceptions.AMQPError, OSError) as exc:
            self.console.error(f"error: {self._connect_error(exc)}")
            return False
        return True

    def _connect_error(self, exc: BaseException) -> str:
        url = mask_url(self.settings.url.split(",")[0])
        if isinstance(exc, TimeoutError) and not isinstance(exc, AiopublishError):
            return f"timed out after {self.args.timeout:g} s connecting to {url}"
        if isinstance(exc, PreconditionFailed) and "inequivalent arg 'type'" in str(exc):
            return f"{exc} (give its type: --declare-exchange NAME:TYPE)"
        if isinstance(exc, AiopublishError):
            return str(exc)
        if isinstance(exc, aiormq.exceptions.InvalidFrameError) and "Connection.OpenOk" in str(exc):
            # aiormq's answer to a connection.close during connection.open: the vhost is missing or not allowed.
            return (
                f"the broker at {url} closed the connection while opening virtual host "
                f"{_vhost(self.settings.url)!r}: it does not exist or this user may not use it"
            )
        return f"cannot connect to {url}: {type(exc).__name__}: {exc}"

    # -- one message -------------------------------------------------------------------------

    async def read_body(self) -> Any:
        args = self.args
        if args.body is not None and args.file is not None:
            raise UsageError("give BODY or --file, not both")
        if args.body is not None and args.body != "-":
            body: str | bytes = args.body
        elif args.body is None and args.file is None:
            raise UsageError("no body: give BODY, --file PATH, or - to read stdin")
        else:
            source = await open_input(args.file or "-")
            try:
                body = await read_all(source)
            finally:
                source.close()
        serializer = self.settings.serializer
        if serializer == "raw" or "content_type" in self.settings.properties:
            return body
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise UsageError(f"the body is not JSON, which --serializer {serializer} needs: {exc}") from None

    async def publish_one(self) -> int:
        publisher = self.publisher()
        message_id = self.settings.properties.get("message_id") or new_message_id()
        try:
            payload = await self.read_body()
            if not await self.connect(publisher):
                return EXIT_FAILED
            try:
                await publisher.publish(payload, message_id=message_id)
            except (AiopublishError, TimeoutError) as exc:
                self.console.error(f"error: {exc}")
                return EXIT_FAILED
        finally:
            await publisher.close()
        self.console.say(
            f"confirmed message {message_id} (exchange {self.args.exchange!r}, "
            f"routing key {self.settings.routing_key!r})"
        )
        return EXIT_OK

    # -- many messages -----------------------------------------------------------------------

    def _lines_path(self) -> str:
        args = self.args
        if args.body is not None:
            if args.file is not None:
                raise UsageError("give BODY or --file, not both")
            if args.body != "-":
                raise UsageError("with --json-lines the input is --file PATH or stdin, not BODY")
        return args.file or "-"

    async def publish_lines(self) -> int:
        args, console = self.args, self.console
        path = self._lines_path()
        publisher = self.publisher()
        source = await open_input(path)
        stats = Stats()
        console.progress = Progress(stats, console.err, enabled=not (args.no_progress or args.quiet))
        lines = LineReader(source, batch_size=args.window)
        loop = LinePublisher(publisher, console, stats)
        ticker = asyncio.get_running_loop().create_task(console.progress.run())
        interrupted = False
        try:
            if not await self.connect(publisher):
                return EXIT_FAILED
            await loop.run(lines)
        except asyncio.CancelledError:  # Ctrl-C or SIGTERM: the publishes under way were waited for
            interrupted = True
        finally:
            source.close()
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            await publisher.close()
        console.progress.clear()
        self._report(loop, lines, stats, interrupted)
        if interrupted:
            raise asyncio.CancelledError
        return EXIT_FAILED if loop.failures or loop.stopped is not None else EXIT_OK

    def _report(self, loop: LinePublisher, lines: LineReader, stats: Stats, interrupted: bool) -> None:
        console = self.console
        if loop.stopped is not None:
            console.error(f"error: {loop.stopped}; stopped after line {lines.last_line}")
        if interrupted:
            console.error(f"interrupted after line {lines.last_line}")
        if loop.failures:
            count = len(loop.failures)
            console.error(f"{count} line{'s' if count > 1 else ''} failed: {ranges(loop.failures)}")
        console.say(stats.summary())


def _vhost(url: str) -> str:
    path = URL(url.split(",")[0]).path
    return path[1:] if len(path) > 1 else "/"
