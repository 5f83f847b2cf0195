"""What the command prints: results on stdout, errors and progress on stderr, one line each, passwords masked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, TextIO

from .._urls import mask_text
from ._common import PROG

__all__ = ["Console", "Progress", "Stats", "log_to_console", "ranges"]

#: Seconds between progress updates: redrawn in place on a terminal, a new line otherwise.
TTY_PROGRESS_INTERVAL = 0.1
PLAIN_PROGRESS_INTERVAL = 5.0


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


class Console:
    """stdout for results, stderr for errors; every line passes through `mask` and stays one line."""

    def __init__(self, out: TextIO, err: TextIO, *, quiet: bool = False) -> None:
        self.out = out
        self.err = err
        self.quiet = quiet
        #: Removes secrets from text; a command replaces it once it knows the broker URL's password.
        self.mask: Callable[[str], str] = mask_text
        self.progress = Progress(Stats(), err, enabled=False)

    def say(self, text: str) -> None:
        """A result line on stdout (not with --quiet)."""
        if not self.quiet:
            self.progress.clear()
            print(self.mask(text), file=self.out, flush=True)

    def error(self, text: object) -> None:
        """`aiopublish: TEXT` as one line on stderr, whatever newlines TEXT holds."""
        line = " ".join(self.mask(str(text)).split("\n"))
        self.progress.message(f"{PROG}: {line}")


def _isatty(stream: IO[Any]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def ranges(numbers: Sequence[int]) -> str:
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


# -- logging ---------------------------------------------------------------------------------

#: The loggers the command routes to stderr, with their level without and with --verbose (a child
#: logger listed here is handled by itself: it does not propagate to its parent's handler).
#: aiormq logs e.g. "error when creating transport" at every failed connect, next to the one line
#: the command prints itself: its records show only with --verbose.
_LOGGERS = {
    "aiopublish": (logging.WARNING, logging.INFO),
    # Connect retries: the command's own error says why it could not connect, in one line.
    "aiopublish.connect": (logging.ERROR, logging.INFO),
    "aiormq": (logging.CRITICAL + 1, logging.WARNING),
    "aio_pika": (logging.CRITICAL + 1, logging.WARNING),
}


class _LogToConsole(logging.Handler):
    """Log records as single masked lines on stderr, around the progress display."""

    def __init__(self, console: Console, verbose: bool) -> None:
        super().__init__()
        self.console = console
        self.verbose = verbose

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string in someone's log call
            text = str(record.msg)
        where = f"{record.name}: " if self.verbose else ""
        self.console.error(f"{where}{record.levelname.lower()}: {text}")


@contextlib.contextmanager
def log_to_console(console: Console, verbose: bool) -> Iterator[None]:
    """Print aiopublish's warnings (its info too with --verbose); aiormq's and aio-pika's only with --verbose."""
    handler = _LogToConsole(console, verbose)
    saved = []
    for name, (quiet_level, verbose_level) in _LOGGERS.items():
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(verbose_level if verbose else quiet_level)
        logger.propagate = False
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
