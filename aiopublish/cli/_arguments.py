"""The options of `aiopublish publish`, and what they turn into: the Publisher's settings and declarations."""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .._declarations import EXCHANGE_TYPES, Binding, Exchange, Queue
from .._options import MESSAGE_PROPERTIES
from ._common import DEFAULT_URL, UsageError, add_output_arguments, add_url_argument, positive_float, positive_int

__all__ = ["Settings", "add_arguments", "parse_headers", "parse_properties", "settings_from"]

DEFAULT_WINDOW = 256
DEFAULT_TIMEOUT = 30.0

_STR_PROPERTIES = tuple(name for name in MESSAGE_PROPERTIES if name != "timestamp")
_PROPERTIES = (*_STR_PROPERTIES, "expiration", "priority", "timestamp", "delivery_mode")

#: Codecs that come with an extra: (option, name) -> (extra, module it needs).
_CODEC_EXTRAS = {
    ("serializer", "msgpack"): ("msgpack", "msgpack"),
    ("compression", "zstd"): ("zstd", "zstandard"),
}

DESCRIPTION = """\
Publish one message (BODY, --file PATH, or - for stdin) or, with --json-lines, one JSON
message per line of the input, and wait for the broker to confirm each."""

EPILOG = """\
examples (in order, on an empty broker):
  aiopublish publish 'hello' --declare-queue jobs
  aiopublish publish '{"order": 42}' -s json -e shop -k orders.paid --declare-exchange shop:topic \\
      --declare-queue orders --bind-key 'orders.#' -H source=cli
  aiopublish publish --file report.pdf -k reports --declare-queue reports -p content_type=application/pdf
  grep paid examples/publish_lines.jsonl | aiopublish publish --json-lines -e shop -k orders.paid

Without --serializer the body goes as it is: text from BODY (utf-8), bytes from a file or
stdin. With --property content_type=... the body also goes as it is, labelled with that type.
Properties: expiration is in seconds, priority an int 0-255, timestamp seconds since the
epoch, an ISO 8601 date or 'now'.

Messages are mandatory unless --no-mandatory: one that no queue takes comes back from the
broker and counts as failed (without mandatory the broker drops it and confirms it).

With --json-lines each line is decoded as JSON and published with the json serializer (or
--serializer); a line that is not JSON fails alone, the others are still published. The
summary counts sent (published), confirmed, returned, nacked and failed (any other error,
invalid JSON included); confirmed + returned + nacked + failed is the number of lines.
Failing line numbers are listed on stderr. Ctrl-C or SIGTERM waits for the publishes under
way, prints the summary and exits with 130 or 143.

exit status: 0 every message confirmed; 1 any message not confirmed, or the broker could not
be reached; 2 usage error."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `publish`, in four groups: input, destination, message, run."""
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    _input_arguments(parser.add_argument_group("input"))
    _destination_arguments(parser.add_argument_group("destination"))
    _message_arguments(parser.add_argument_group("message"))
    _run_arguments(parser.add_argument_group("run"))


def _input_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("body", nargs="?", metavar="BODY", help="the message body; '-' reads it from stdin")
    group.add_argument("--file", "-f", metavar="PATH", help="read the body (or the lines) from PATH; '-' is stdin")
    group.add_argument(
        "--json-lines",
        "--lines",
        dest="json_lines",
        action="store_true",
        help="publish every non-blank line of --file (default: stdin) as one JSON message",
    )
    group.add_argument(
        "--window",
        type=positive_int,
        default=DEFAULT_WINDOW,
        metavar="N",
        help=f"with --json-lines, messages waiting for a confirm at once (default: {DEFAULT_WINDOW})",
    )


def _destination_arguments(group: argparse._ArgumentGroup) -> None:
    add_url_argument(group)
    group.add_argument("--exchange", "-e", default="", metavar="NAME", help="exchange (default: the default exchange)")
    group.add_argument("--routing-key", "-k", default=None, metavar="KEY", help="routing key")
    group.add_argument(
        "--declare-exchange",
        action="append",
        default=[],
        metavar="NAME[:TYPE]",
        help="declare the durable exchange NAME first, of TYPE direct (default), topic, fanout or headers (repeatable)",
    )
    group.add_argument(
        "--declare-queue",
        metavar="NAME",
        help=(
            "declare the durable queue NAME first; with --exchange it is bound to that exchange with the "
            "routing key, on the default exchange it is the default routing key"
        ),
    )
    group.add_argument(
        "--bind-key",
        action="append",
        default=[],
        metavar="KEY",
        help="also bind the --declare-queue to --exchange with KEY, e.g. a topic pattern (repeatable)",
    )
    group.add_argument(
        "--mandatory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="have the broker return a message no queue takes: it then counts as failed (default: on)",
    )


def _message_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--header",
        "-H",
        action="append",
        default=[],
        metavar="K=V",
        help="a header with a string value; K:=JSON gives a typed value (repeatable)",
    )
    group.add_argument(
        "--property",
        "-p",
        action="append",
        default=[],
        metavar="K=V",
        help=f"an AMQP property (repeatable): {', '.join(_PROPERTIES)}",
    )
    persistence = group.add_mutually_exclusive_group()
    persistence.add_argument(
        "--persistent",
        dest="delivery_mode",
        action="store_const",
        const=2,
        help="delivery mode 2, kept across broker restarts (the default)",
    )
    persistence.add_argument("--transient", dest="delivery_mode", action="store_const", const=1, help="delivery mode 1")
    group.add_argument(
        "--serializer",
        "-s",
        metavar="NAME",
        help=(
            "raw, json, pickle, msgpack (extra); default raw (the body as it is), json with --json-lines. "
            "Any other than raw reads the body as JSON and encodes the value"
        ),
    )
    group.add_argument("--compression", "-z", metavar="NAME", help="gzip, bzip2, lzma, zstd (extra), ...")


def _run_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds to connect, and for each publish retries included (default: {DEFAULT_TIMEOUT:g})",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress display")
    add_output_arguments(group)


# -- from options to settings ----------------------------------------------------------------


@dataclass
class Settings:
    """What the options say, checked and converted once, before anything connects."""

    url: str
    serializer: str
    routing_key: str
    declare: list[Exchange | Queue]
    headers: dict[str, Any]
    #: AMQP properties and delivery_mode, as Publisher() takes them.
    properties: dict[str, Any] = field(default_factory=dict)


def settings_from(args: argparse.Namespace, url_from_env: str | None) -> Settings:
    """Check the options; UsageError for anything wrong, before connecting."""
    properties = parse_properties(args.property)
    if args.delivery_mode is not None:
        if "delivery_mode" in properties:
            raise UsageError("give --persistent/--transient or --property delivery_mode, not both")
        properties["delivery_mode"] = args.delivery_mode
    routing_key = args.routing_key
    if routing_key is None and not args.exchange and args.declare_queue is not None:
        routing_key = args.declare_queue
    return Settings(
        url=args.url or url_from_env or DEFAULT_URL,
        serializer=_serializer(args),
        routing_key=routing_key or "",
        declare=declarations(args),
        headers=parse_headers(args.header),
        properties=properties,
    )


def _serializer(args: argparse.Namespace) -> str:
    """The serializer to use (raw for one body, json for lines); checks the compression's extra too."""
    serializer: str = args.serializer or ("json" if args.json_lines else "raw")
    if args.json_lines and serializer == "raw":
        raise UsageError("--json-lines decodes every line as JSON: use --serializer json, msgpack, pickle, ...")
    _check_extra("serializer", serializer)
    if args.compression:
        _check_extra("compression", args.compression)
    return serializer


def _check_extra(option: str, name: str) -> None:
    extra = _CODEC_EXTRAS.get((option, name))
    if extra is not None and importlib.util.find_spec(extra[1]) is None:
        raise UsageError(
            f"{option} {name!r} needs the {extra[0]} extra, which is not installed: "
            f'pip install ".[{extra[0]}]" in a clone of aiopublish'
        )


def parse_exchange(spec: str) -> Exchange:
    """NAME[:TYPE] as a durable exchange; a name with ':' in it needs the type after it."""
    name, sep, kind = spec.rpartition(":")
    if not sep:
        name, kind = spec, "direct"
    if not name:
        raise UsageError(f"--declare-exchange takes NAME[:TYPE], not {spec!r}")
    if kind not in EXCHANGE_TYPES and not kind.startswith("x-"):
        raise UsageError(
            f"--declare-exchange {spec!r}: the type must be one of {', '.join(EXCHANGE_TYPES)} "
            f"(a name with ':' in it takes the type after it: {spec}:direct)"
        )
    return Exchange(name, kind)


def declarations(args: argparse.Namespace) -> list[Exchange | Queue]:
    """The exchanges, then the queue and its bindings, that --declare-* and --bind-key ask for."""
    exchanges = {exchange.name: exchange for exchange in map(parse_exchange, args.declare_exchange)}
    declare: list[Exchange | Queue] = list(exchanges.values())
    if args.bind_key and args.declare_queue is None:
        raise UsageError("--bind-key binds the --declare-queue: give --declare-queue NAME too")
    if args.declare_queue is None:
        return declare
    if not args.exchange:
        if args.bind_key:
            raise UsageError("--bind-key needs --exchange: every queue is bound to the default exchange already")
        declare.append(Queue(args.declare_queue))
        return declare
    # Binding declares the exchange too (as kombu does): as --declare-exchange says, else durable direct.
    exchange = exchanges.get(args.exchange) or Exchange(args.exchange)
    keys = dict.fromkeys([args.routing_key or "", *args.bind_key])
    bindings = [Binding(exchange, key) for key in keys]
    declare.append(Queue(args.declare_queue, bindings=bindings))
    return declare


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
    """`K=V` AMQP properties, converted to what Publisher takes (expiration in seconds, ...)."""
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
