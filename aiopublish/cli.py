"""The `aiopublish` command: publish messages to RabbitMQ from a shell, with confirms.

    aiopublish publish 'hello' --routing-key jobs
    aiopublish publish --json-lines --file orders.jsonl --exchange shop --routing-key orders

One message comes from BODY, `--file PATH` or `-` (stdin). With `--json-lines`
every non-blank line of the input is one JSON message; lines are published
concurrently (`--window` in flight at once), each waiting for its own confirm,
with a progress display on stderr and a summary at the end. The exit status is 0
when every message was confirmed, 1 when any was not (or the broker could not be
reached), 2 for a usage error. Passwords never appear in what it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from datetime import datetime
from typing import IO, Any, TextIO

from . import __version__
from ._connection import ConnectionParams, mask_text, mask_url
from ._declarations import Queue
from ._exceptions import AiopublishError, SerializationError, UndeliverableMessage
from ._options import MESSAGE_PROPERTIES, new_message_id
from ._publisher import Publisher
from ._serialization import _serializers

__all__ = ["main"]

PROG = "aiopublish"
URL_ENV = "AIOPUBLISH_URL"
DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
DEFAULT_WINDOW = 256
DEFAULT_TIMEOUT = 30.0
#: Failures described one by one on stderr; the line numbers of all of them are listed at the end.
MAX_DETAILED_FAILURES = 20
#: Seconds between progress updates: redrawn in place on a terminal, a new line otherwise.
TTY_PROGRESS_INTERVAL = 0.1
PLAIN_PROGRESS_INTERVAL = 5.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_STR_PROPERTIES = tuple(name for name in MESSAGE_PROPERTIES if name != "timestamp")
_PROPERTIES = (*_STR_PROPERTIES, "expiration", "priority", "timestamp", "delivery_mode")


class UsageError(Exception):
    """A bad command line: reported with the usage line, exit status 2."""


# -- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The parser of `aiopublish` and its `publish` command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Publish messages to RabbitMQ and wait for the broker's confirms.",
        epilog=(
            f"Run '{PROG} publish --help' for the options of publish.\n\n"
            "exit status: 0 every message confirmed; 1 a message was not confirmed, or the broker\n"
            "could not be reached; 2 usage error."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    publish = commands.add_parser(
        "publish",
        help="publish one message, or one message per line of JSON",
        description=(
            "Publish one message (BODY, --file PATH, or - for stdin) or, with --json-lines, one JSON\n"
            "message per line of the input, and wait for the broker to confirm each."
        ),
        epilog=_PUBLISH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.set_defaults(parser=publish)

    source = publish.add_argument_group("input")
    source.add_argument(
        "body",
        nargs="?",
        metavar="BODY",
        help="the message body; '-' reads it from stdin",
    )
    source.add_argument("--file", "-f", metavar="PATH", help="read the body (or the lines) from PATH; '-' is stdin")
    source.add_argument(
        "--json-lines",
        "--lines",
        dest="json_lines",
        action="store_true",
        help="publish every non-blank line of --file (default: stdin) as one JSON message",
    )
    source.add_argument(
        "--window",
        type=_positive_int,
        default=DEFAULT_WINDOW,
        metavar="N",
        help=f"with --json-lines, messages waiting for a confirm at once (default: {DEFAULT_WINDOW})",
    )

    where = publish.add_argument_group("destination")
    where.add_argument(
        "--url",
        default=None,
        help=f"broker URL, or several separated by commas (default: ${URL_ENV}, else {mask_url(DEFAULT_URL)})",
    )
    where.add_argument("--exchange", "-e", default="", metavar="NAME", help="exchange (default: the default exchange)")
    where.add_argument("--routing-key", "-k", default=None, metavar="KEY", help="routing key")
    where.add_argument(
        "--declare-queue",
        metavar="NAME",
        help="declare the durable queue NAME first; on the default exchange it is also the default routing key",
    )
    where.add_argument(
        "--mandatory",
        action="store_true",
        help="have the broker return a message no queue takes (it then counts as returned and failed)",
    )

    message = publish.add_argument_group("message")
    message.add_argument(
        "--header",
        "-H",
        action="append",
        default=[],
        metavar="K=V",
        help="a header with a string value; K:=JSON gives a typed value (repeatable)",
    )
    message.add_argument(
        "--property",
        "-p",
        action="append",
        default=[],
        metavar="K=V",
        help=f"an AMQP property (repeatable): {', '.join(_PROPERTIES)}",
    )
    persistence = message.add_mutually_exclusive_group()
    persistence.add_argument(
        "--persistent",
        dest="delivery_mode",
        action="store_const",
        const=2,
        help="delivery mode 2, kept across broker restarts (the default)",
    )
    persistence.add_argument("--transient", dest="delivery_mode", action="store_const", const=1, help="delivery mode 1")
    message.add_argument(
        "--serializer",
        "-s",
        metavar="NAME",
        help=(
            f"{', '.join(sorted(_serializers))}; default raw (the body as it is), json with --json-lines. "
            "Any other than raw reads the body as JSON and encodes the value"
        ),
    )
    message.add_argument("--compression", "-z", metavar="NAME", help="gzip, bzip2, lzma, zstd (extra), ...")

    run = publish.add_argument_group("run")
    run.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds to connect, and for each publish retries included (default: {DEFAULT_TIMEOUT:g})",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress display")
    run.add_argument("--quiet", "-q", action="store_true", help="print errors only")
    run.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also print the library's log: connections, retries, and aiormq's warnings",
    )
    return parser


_PUBLISH_EPILOG = """\
examples:
  aiopublish publish 'hello' --declare-queue jobs
  aiopublish publish '{"order": 42}' --serializer json -e shop -k orders.paid -H source=cli
  aiopublish publish --file report.pdf -k reports -p content_type=application/pdf
  jq -c '.items[]' dump.json | aiopublish publish --json-lines -e shop -k orders

Without --serializer the body goes as it is: text from BODY (utf-8), bytes from a file or
stdin. With --property content_type=... the body also goes as it is, labelled with that type.
Properties: expiration is in seconds, priority an int 0-255, timestamp seconds since the
epoch, an ISO 8601 date or 'now'.

With --json-lines each line is decoded as JSON and published with the json serializer (or
--serializer); a line that is not JSON fails alone, the others are still published. The
summary counts sent (published), confirmed, returned, nacked and failed (any other error,
invalid JSON included); confirmed + returned + nacked + failed is the number of lines.
Failing line numbers are listed on stderr.

exit status: 0 every message confirmed; 1 any message not confirmed, or the broker could not
be reached; 2 usage error."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, not {text}")
    return value


def _split(option: str, item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key or key == ":":
        raise UsageError(f"{option} takes K=V, not {item!r}")
    return key, value


def parse_headers(items: Sequence[str]) -> dict[str, Any]:
    """`K=V` as a string header, `K:=JSON` as a typed one (number, bool, list, ...)."""
    headers: dict[str, Any] = {}
    for item in items:
        key, value = _split("--header", item)
        if key.endswith(":"):
            try:
                headers[key[:-1]] = json.loads(value)
            except ValueError as exc:
                raise UsageError(f"--header {item!r}: the value after := is not JSON ({exc})") from None
        else:
            headers[key] = value
    return headers


def parse_properties(items: Sequence[str]) -> dict[str, Any]:
    """`K=V` AMQP properties, converted to what Publisher.publish takes (expiration in seconds, ...)."""
    properties: dict[str, Any] = {}
    for item in items:
        raw_key, value = _split("--property", item)
        key = raw_key.replace("-", "_")
        if key in _STR_PROPERTIES:
            properties[key] = value
        elif key == "expiration":
            properties[key] = _number("expiration", value, float)
        elif key == "priority":
            properties[key] = _number("priority", value, int)
        elif key == "delivery_mode":
            properties[key] = int(value) if value.isdigit() else value
        elif key == "timestamp":
            properties[key] = _timestamp(value)
        else:
            raise UsageError(f"unknown property {raw_key!r} (known: {', '.join(_PROPERTIES)})")
    return properties


def _number(name: str, text: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise UsageError(
            f"property {name} must be {'an integer' if kind is int else 'a number'}, not {text!r}"
        ) from None


def _timestamp(text: str) -> datetime | float:
    if text == "now":
        return datetime.now().astimezone()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"property timestamp must be seconds since the epoch, ISO 8601 or 'now', not {text!r}"
        ) from None


# -- output ----------------------------------------------------------------------------------


class Stats:
    """What happened to the messages so far."""

    def __init__(self) -> None:
        self.sent = 0
        self.confirmed = 0
        self.returned = 0
        self.nacked = 0
        self.failed = 0
        self.started = time.monotonic()

    def summary(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.sent / elapsed if elapsed > 0 else 0.0
        return (
            f"sent {self.sent}, confirmed {self.confirmed}, returned {self.returned}, nacked {self.nacked}, "
            f"failed {self.failed} in {elapsed:.2f} s ({rate:.0f} msgs/s)"
        )


class Progress:
    """Progress on stderr: one line redrawn with '\\r' on a terminal, a line every few seconds otherwise."""

    def __init__(self, stats: Stats, stream: TextIO, enabled: bool = True) -> None:
        self.stats = stats
        self.stream = stream
        self.enabled = enabled
        self.tty = _isatty(stream)
        self.interval = TTY_PROGRESS_INTERVAL if self.tty else PLAIN_PROGRESS_INTERVAL
        self._width = 0

    def draw(self) -> None:
        """Show the counts now."""
        if not self.enabled:
            return
        text = self.stats.summary()
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(f"{PROG}: progress: {text}\n")
        self.stream.flush()

    def clear(self) -> None:
        """Remove the progress line from a terminal (before printing something else)."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def message(self, text: str) -> None:
        """Print a line of its own on stderr; a terminal's progress line is redrawn at the next update."""
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    async def run(self) -> None:
        """Redraw every `interval` seconds until cancelled."""
        if not self.enabled:
            return
        while True:
            await asyncio.sleep(self.interval)
            self.draw()


def _isatty(stream: IO[Any]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _ranges(numbers: Sequence[int]) -> str:
    """1, 2, 3, 7 -> '1-3, 7'."""
    parts: list[str] = []
    ordered = sorted(numbers)
    start = previous = ordered[0]
    for number in [*ordered[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if number is not None:
            start = previous = number
    return ", ".join(parts)


class _Masker:
    """Removes the broker password from any text before it is printed."""

    def __init__(self, params: ConnectionParams) -> None:
        self.params = params

    def __call__(self, text: object) -> str:
        return mask_text(self.params.mask(str(text))).replace("\n", " ")


# -- reading lines ---------------------------------------------------------------------------

_EOF = object()


class LineSource:
    """The lines of a binary stream, read by a daemon thread so a slow pipe never stalls the event loop.

    At most `ahead` lines wait in memory; `(line_number, bytes)` pairs come out in order.
    """

    def __init__(self, stream: IO[bytes], ahead: int, close: bool = False) -> None:
        self._stream = stream
        self._close = close
        self._space = threading.Semaphore(ahead)
        self._lock = threading.Lock()
        self._items: collections.deque[object] = collections.deque()
        self._waiting = False
        self._stopped = False
        self._wakeup = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.last_line = 0
        threading.Thread(target=self._read, name="aiopublish-lines", daemon=True).start()

    def _read(self) -> None:
        try:
            for number, line in enumerate(self._stream, 1):
                self._space.acquire()
                if self._stopped:
                    return
                self._push((number, line))
            self._push(_EOF)
        except BaseException as exc:
            self._push(exc)
        finally:
            if self._close:
                self._stream.close()

    def _push(self, item: object) -> None:
        with self._lock:
            self._items.append(item)
            wake, self._waiting = self._waiting, False
        if wake:
            with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody reads any more
                self._loop.call_soon_threadsafe(self._wakeup.set)

    def stop(self) -> None:
        """Stop reading (the thread ends at its next line)."""
        self._stopped = True
        self._space.release()

    def __aiter__(self) -> LineSource:
        return self

    async def __anext__(self) -> tuple[int, bytes]:
        while True:
            with self._lock:
                if self._items:
                    item = self._items[0]
                    if item is not _EOF:
                        self._items.popleft()
                    break
                self._waiting = True
                self._wakeup.clear()
            await self._wakeup.wait()
        if item is _EOF:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        self._space.release()
        assert isinstance(item, tuple)
        self.last_line = item[0]
        return item


# -- publishing ------------------------------------------------------------------------------


class _Command:
    """One run of `aiopublish publish`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = sys.stdout
        self.err = sys.stderr
        self.url: str = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
        try:
            params = ConnectionParams.build(self.url)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--url: {exc}") from None
        self.mask = _Masker(params)
        self.stats = Stats()
        self.progress = Progress(self.stats, self.err, enabled=not (args.no_progress or args.quiet))
        self.failures: list[int] = []

    def say(self, text: str) -> None:
        if not self.args.quiet:
            print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        self.progress.message(f"{PROG}: {self.mask(text)}")

    # -- setup -------------------------------------------------------------------------------

    def publisher(self, serializer: str) -> Publisher:
        args = self.args
        options: dict[str, Any] = parse_properties(args.property)
        if args.delivery_mode is not None:
            if "delivery_mode" in options:
                raise UsageError("give --persistent/--transient or --property delivery_mode, not both")
            options["delivery_mode"] = args.delivery_mode
        routing_key = args.routing_key
        declare = []
        if args.declare_queue is not None:
            declare.append(Queue(args.declare_queue))
            if routing_key is None and not args.exchange:
                routing_key = args.declare_queue
        try:
            publisher = Publisher(
                self.url,
                serializer=serializer,
                compression=args.compression,
                mandatory=args.mandatory,
                declare=declare,
                transport_options={"connection_name": f"{PROG} cli", "connect_timeout": min(args.timeout, 10.0)},
                exchange=args.exchange,
                routing_key=routing_key or "",
                headers=parse_headers(args.header),
                timeout=args.timeout,
                **options,
            )
        except (TypeError, ValueError) as exc:
            raise UsageError(self.mask(exc)) from None
        if not args.exchange and not routing_key:
            self.error("warning: no --routing-key: on the default exchange a message without one reaches no queue")
        return publisher

    async def connect(self, publisher: Publisher) -> bool:
        try:
            async with asyncio.timeout(self.args.timeout):
                await publisher.connect()
        except TimeoutError:
            self.error(f"error: timed out after {self.args.timeout:g} s connecting to {mask_url(self.url)}")
            return False
        except AiopublishError as exc:
            self.error(f"error: {exc}")
            return False
        return True

    def open_input(self) -> tuple[IO[bytes], bool]:
        """The input stream and whether to close it afterwards."""
        args = self.args
        path = args.file
        if args.body is not None:
            if path is not None:
                raise UsageError("give BODY or --file, not both")
            if args.json_lines and args.body != "-":
                raise UsageError("with --json-lines the input is --file PATH or stdin, not BODY")
            path = "-"
        if path is None:
            if not args.json_lines:
                raise UsageError("no body: give BODY, --file PATH, or - to read stdin")
            path = "-"
        if path == "-":
            return _stdin()
        try:
            return open(path, "rb"), True  # closed by the caller or the reader thread
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None

    # -- one message -------------------------------------------------------------------------

    async def publish_one(self) -> int:
        args = self.args
        serializer = args.serializer or "raw"
        publisher = self.publisher(serializer)
        properties = parse_properties(args.property)
        if args.body is not None and args.body != "-":
            if args.file is not None:
                raise UsageError("give BODY or --file, not both")
            body: str | bytes = args.body
        else:
            stream, close = self.open_input()
            try:
                body = stream.read()
            finally:
                if close:
                    stream.close()
        payload: Any = body
        if serializer != "raw" and "content_type" not in properties:
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError) as exc:
                self.error(f"error: the body is not JSON, which --serializer {serializer} needs: {exc}")
                return EXIT_FAILED
        message_id = properties.get("message_id") or new_message_id()
        try:
            if not await self.connect(publisher):
                return EXIT_FAILED
            try:
                await publisher.publish(payload, message_id=message_id)
            except UndeliverableMessage as exc:
                self.error(str(exc))
                return EXIT_FAILED
            except (AiopublishError, TimeoutError) as exc:
                self.error(f"error: {exc}")
                return EXIT_FAILED
        finally:
            await publisher.close()
        self.say(f"confirmed message {message_id} (exchange {args.exchange!r}, routing key {_key(publisher)!r})")
        return EXIT_OK

    # -- many messages -----------------------------------------------------------------------

    async def publish_lines(self) -> int:
        serializer = self.args.serializer or "json"
        if serializer == "raw":
            raise UsageError("--json-lines decodes every line as JSON: use --serializer json, msgpack, pickle, ...")
        publisher = self.publisher(serializer)
        stream, close = self.open_input()
        if not await self.connect(publisher):
            if close:
                stream.close()
            await publisher.close()
            return EXIT_FAILED
        source = LineSource(stream, ahead=4 * self.args.window, close=close)
        ticker = asyncio.get_running_loop().create_task(self.progress.run())
        stopped: str | None = None
        interrupted = False
        try:
            stopped = await self._publish_all(publisher, source)
        except asyncio.CancelledError:  # Ctrl-C: the publishes under way were waited for; report them
            interrupted = True
        finally:
            source.stop()
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            await publisher.close()
        self.progress.clear()
        if stopped is not None:
            self.error(f"error: {stopped}; stopped after line {source.last_line}")
        if interrupted:
            self.error(f"interrupted after line {source.last_line}")
        if self.failures:
            count = len(self.failures)
            self.error(f"{count} line{'s' if count > 1 else ''} failed: {_ranges(self.failures)}")
        self.say(self.stats.summary())
        if interrupted:
            raise asyncio.CancelledError  # asyncio.run makes it a KeyboardInterrupt: exit status 130
        return EXIT_FAILED if self.failures or stopped is not None else EXIT_OK

    def _failed(self, number: int, reason: str) -> None:
        self.failures.append(number)
        if len(self.failures) <= MAX_DETAILED_FAILURES:
            self.error(f"line {number}: {reason}")
        elif len(self.failures) == MAX_DETAILED_FAILURES + 1:
            self.error("more lines failed; their numbers follow at the end")

    async def _publish_all(self, publisher: Publisher, source: LineSource) -> str | None:
        """Publish every line, `window` at a time; return why it stopped early, or None."""
        stats = self.stats
        window = asyncio.Semaphore(self.args.window)
        tasks: set[asyncio.Task[None]] = set()
        fatal: list[str] = []

        async def publish(number: int, payload: Any) -> None:
            try:
                await publisher.publish(payload)
            except UndeliverableMessage as exc:
                if exc.reason == "returned":
                    stats.returned += 1
                    self._failed(number, f"returned by the broker: {exc.reply_code} {exc.reply_text}")
                else:
                    stats.nacked += 1
                    self._failed(number, "nacked by the broker")
            except SerializationError as exc:
                stats.failed += 1
                self._failed(number, str(exc))
            except Exception as exc:
                # The broker refused the destination or went away, or a timeout: the next lines would fare no better.
                stats.failed += 1
                self._failed(number, f"{type(exc).__name__}: {exc}")
                if not fatal:
                    fatal.append(f"{type(exc).__name__}: {exc}")
            else:
                stats.confirmed += 1
            finally:
                window.release()

        try:
            async for number, line in source:
                if fatal:
                    break
                if not line.strip():
                    continue
                try:
                    payload = json.loads(line)
                except (ValueError, RecursionError) as exc:
                    stats.failed += 1
                    self._failed(number, f"invalid JSON: {exc}")
                    continue
                await window.acquire()
                if fatal:
                    window.release()
                    break
                stats.sent += 1
                task = asyncio.create_task(publish(number, payload))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except OSError as exc:
            fatal.append(f"cannot read the input: {exc.strerror or exc}")
        finally:
            if tasks:
                await asyncio.wait(set(tasks))
        return fatal[0] if fatal else None


def _stdin() -> tuple[IO[bytes], bool]:
    """Standard input as bytes, and whether to close it.

    A reader of our own on a copy of fd 0, not sys.stdin.buffer: at exit the interpreter
    finalizes sys.stdin, and a daemon thread blocked in a read of it (Ctrl-C while a pipe
    is still open) would hold its lock and make that a fatal error.
    """
    buffer = sys.stdin.buffer
    try:
        fd = buffer.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stdin (tests): read it as it is
        return buffer, False
    return os.fdopen(os.dup(fd), "rb"), True


def _key(publisher: Publisher) -> str:
    routing_key = publisher.publish_kwargs.get("routing_key")
    return routing_key if isinstance(routing_key, str) else ""


# -- entry point -----------------------------------------------------------------------------


class _LogToStderr(logging.Handler):
    """The library's log records as single masked lines on stderr, around the progress display."""

    def __init__(self, command: _Command, verbose: bool) -> None:
        super().__init__()
        self.command = command
        self.verbose = verbose

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string in someone's log call
            text = str(record.msg)
        where = f"{record.name}: " if self.verbose else ""
        self.command.error(f"{where}{record.levelname.lower()}: {text}")


@contextlib.contextmanager
def _logging(command: _Command, verbose: bool) -> Iterator[None]:
    """Print aiopublish's warnings (everything with --verbose); silence aiormq's unless --verbose.

    Without this, aiormq's errors reach stderr through logging's last-resort handler as
    extra lines next to the one-line error the command prints itself.
    """
    levels = {
        "aiopublish": logging.INFO if verbose else logging.WARNING,
        "aiormq": logging.WARNING if verbose else logging.CRITICAL + 1,
        "aio_pika": logging.WARNING if verbose else logging.CRITICAL + 1,
    }
    handler = _LogToStderr(command, verbose)
    saved = []
    for name, level in levels.items():
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(level)
        logger.propagate = False
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


async def _run(args: argparse.Namespace) -> int:
    command = _Command(args)
    with _logging(command, args.verbose):
        if args.json_lines:
            return await command.publish_lines()
        return await command.publish_one()


def _run_in_event_loop(coro: Coroutine[Any, Any, int]) -> int:
    """Run the command on uvloop when it is installed (the `speed` extra), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _run_in_event_loop(_run(args))
    except UsageError as exc:
        args.parser.print_usage(sys.stderr)
        print(f"{args.parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
