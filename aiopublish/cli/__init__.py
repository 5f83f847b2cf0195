"""The `aiopublish` command: publish messages to RabbitMQ from a shell, with confirms.

    aiopublish publish 'hello' --declare-queue jobs
    aiopublish publish --json-lines --file orders.jsonl --exchange shop --routing-key orders

Each subcommand is a module named in COMMANDS, imported only when that subcommand runs,
with two functions:

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    async def run(args: argparse.Namespace, console: Console) -> int: ...   # the exit status

`_common.add_url_argument` and `_common.add_output_arguments` give a command the same
`--url` and `-q`/`-v` as `publish`. For example, with aiopublish/outbox/_cli.py holding those
two functions, `"relay": Subcommand("aiopublish.outbox._cli", "publish the outbox")` is the
whole change here.

`main` parses the command line, then runs `run` on an event loop (uvloop when installed)
with the log routed to stderr as single masked lines (see _console) and SIGINT/SIGTERM
turned into a cancellation of `run`: a command that has something to finish catches
CancelledError, finishes (drains, prints its summary) and re-raises; the exit status is
then 128 + the signal (130, 143). A UsageError from anywhere is exit status 2.

A usage error is reported by the parser of the command it belongs to (its usage line, not the
top level's), and an option nobody knows gets a "did you mean" (`--routing_key`:
`--routing-key`; given before the command, the command and option it may have meant).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import importlib
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NoReturn

from .. import __version__
from ._common import EXIT_USAGE, PROG, UsageError, exit_status_for_signal
from ._console import Console, log_to_console

__all__ = ["COMMANDS", "Subcommand", "main"]


@dataclass(frozen=True)
class Subcommand:
    """A subcommand: the module that implements it (imported when it runs) and its one-line help."""

    module: str
    help: str


#: The subcommands, in the order `--help` lists them. Adding one is a line here and a module.
COMMANDS: dict[str, Subcommand] = {
    "publish": Subcommand("aiopublish.cli._publish", "publish one message, or one message per line of JSON"),
    "relay": Subcommand("aiopublish.outbox._cli", "publish the messages committed to an outbox table"),
}

_EPILOG = (
    f"Run '{PROG} COMMAND --help' for the options of a command.\n\n"
    "exit status: 0 every message confirmed; 1 a message was not confirmed, or the broker\n"
    "could not be reached; 2 usage error; 130/143 interrupted by SIGINT/SIGTERM."
)


_UNRECOGNIZED = "unrecognized arguments: "
# The top level's own options: any other option before the command belongs after it.
_TOP_LEVEL_OPTIONS = ("-h", "--help", "--version")


def _closest(option: str, known: Sequence[str]) -> str | None:
    """The known option `option` most likely misspells (`--routing_key` -> `--routing-key`), if any."""
    wanted = option.split("=", 1)[0]
    candidates = [name for name in known if name.startswith("--")] if wanted.startswith("--") else list(known)
    match = difflib.get_close_matches(wanted.replace("_", "-"), candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def _unknown_options(message: str) -> list[str]:
    if not message.startswith(_UNRECOGNIZED):
        return []
    return [word.split("=", 1)[0] for word in message.removeprefix(_UNRECOGNIZED).split() if word.startswith("-")]


class _Parser(argparse.ArgumentParser):
    """argparse's parser; its usage errors end with a "did you mean" for a misspelt option."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}{self.suggestion(message)}\n")

    def suggestion(self, message: str) -> str:
        """ " (did you mean --routing-key?)" for the unknown options of `message` this parser nearly knows."""
        known = list(self._option_string_actions)
        hints = [hint for hint in (_closest(option, known) for option in _unknown_options(message)) if hint]
        return f" (did you mean {', '.join(hints)}?)" if hints else ""


class _TopLevelParser(_Parser):
    """The top level: an unknown option there is usually a subcommand's, given before the command."""

    def suggestion(self, message: str) -> str:
        hints = []
        for option in _unknown_options(message):
            for name in COMMANDS:  # each command's parser is built on this error path only
                subparser = _subcommand_parser(name)
                match = _closest(option, list(subparser._option_string_actions))
                if match:
                    hints.append(f"'{PROG} {name} {match}'")
                    break
        if not hints:
            return ""
        return f" (options go after the command: did you mean {', '.join(hints)}?)"


def _subcommand_parser(name: str) -> argparse.ArgumentParser:
    """The parser of subcommand `name`, with its options."""
    chosen: argparse.ArgumentParser = build_parser([name]).parse_known_args([name])[0].parser
    return chosen


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of `aiopublish`, with the options of the subcommand `argv` names (other modules stay unimported)."""
    parser = _TopLevelParser(
        prog=PROG,
        description="Publish messages to RabbitMQ and wait for the broker's confirms.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", parser_class=_Parser)
    # The top level has no option that takes a value: the first word is the subcommand.
    chosen = next((word for word in argv if not word.startswith("-")), None)
    for name, command in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=command.help)
        if name == chosen:
            module = importlib.import_module(command.module)
            module.add_arguments(subparser)
            subparser.set_defaults(module=module, parser=subparser)
    return parser


class _Signals:
    """SIGINT and SIGTERM cancel the running command (again at a second signal: stop waiting)."""

    def __init__(self) -> None:
        self.received: int | None = None


@contextlib.contextmanager
def _cancel_on_signals() -> Iterator[_Signals]:
    signals = _Signals()
    task = asyncio.current_task()
    if task is None or threading.current_thread() is not threading.main_thread():
        yield signals  # signal handlers belong to the main thread (main() run from a test's thread)
        return
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        signals.received = signals.received or signum
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield signals
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _run(args: argparse.Namespace, module: ModuleType) -> int:
    console = Console(sys.stdout, sys.stderr, quiet=getattr(args, "quiet", False))
    with log_to_console(console, getattr(args, "verbose", False)), _cancel_on_signals() as signals:
        try:
            status: int = await module.run(args, console)
        except asyncio.CancelledError:
            if signals.received is None:
                raise
            console.error(f"interrupted by {signal.Signals(signals.received).name}")
            return exit_status_for_signal(signals.received)
        return status


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
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        command_at = next((i for i, word in enumerate(argv) if not word.startswith("-")), len(argv))
        early = [word for word in argv[:command_at] if word.split("=", 1)[0] not in _TOP_LEVEL_OPTIONS]
        if early and command_at < len(argv):
            # `aiopublish --routing_key x`: argparse would call "x" an invalid command.
            parser.error(_UNRECOGNIZED + " ".join(early))
        args, extras = parser.parse_known_args(argv)
        if extras:
            # Reported by the command they were given to, with its usage (argparse: the top level's).
            getattr(args, "parser", parser).error(_UNRECOGNIZED + " ".join(extras))
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _run_in_event_loop(_run(args, args.module))
    except UsageError as exc:
        args.parser.print_usage(sys.stderr)
        print(f"{args.parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # a Ctrl-C before the signal handlers were in place
        print(f"{PROG}: interrupted", file=sys.stderr)
        return exit_status_for_signal(signal.SIGINT)
