"""What every subcommand shares: the program name, exit statuses, the usage error."""

from __future__ import annotations

import argparse
import signal

from .._connection import mask_url

__all__ = [
    "DEFAULT_URL",
    "add_output_arguments",
    "add_url_argument",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "URL_ENV",
    "UsageError",
    "exit_status_for_signal",
    "positive_float",
    "positive_int",
]

PROG = "aiopublish"
URL_ENV = "AIOPUBLISH_URL"
DEFAULT_URL = "amqp://guest:guest@localhost:5672/"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A bad command line: reported with the usage line, exit status 2."""


def add_url_argument(group: argparse._ActionsContainer) -> None:
    """--url, as every command that talks to a broker takes it (args.url; None: $AIOPUBLISH_URL, else the default)."""
    group.add_argument(
        "--url",
        default=None,
        help=f"broker URL, or several separated by commas (default: ${URL_ENV}, else {mask_url(DEFAULT_URL)})",
    )


def add_output_arguments(group: argparse._ActionsContainer) -> None:
    """-q and -v: main() reads args.quiet (Console.say prints nothing) and args.verbose (the log level)."""
    group.add_argument("--quiet", "-q", action="store_true", help="print errors only")
    group.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also print the library's log: connections, retries, and aiormq's own log lines",
    )


def exit_status_for_signal(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signal.Signals(signum))


def positive_int(text: str) -> int:
    """An argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, not {text}")
    return value
