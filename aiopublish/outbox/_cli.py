"""`aiopublish relay`: publish an outbox's committed messages until stopped.

SIGTERM or SIGINT lets the batch under way settle first.

aiopublish relay --outbox postgresql://app@db/shop --url amqp://rabbit/
aiopublish relay --outbox postgresql://app@db/shop --show-failed
aiopublish relay --outbox postgresql://app@db/shop --requeue-failed
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from .._connection import ConnectionParams, mask_url
from .._publisher import Publisher
from .._urls import mask_text
from ..cli._common import (
    DEFAULT_URL,
    EXIT_FAILED,
    EXIT_OK,
    URL_ENV,
    UsageError,
    add_output_arguments,
    add_url_argument,
    positive_float,
    positive_int,
)
from ..cli._console import Console
from ._outbox import Outbox

__all__ = ["add_arguments", "run"]

OUTBOX_ENV = "AIOPUBLISH_OUTBOX"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `aiopublish relay`."""
    parser.description = (
        "Publish the messages an application committed to its outbox table, with confirms, until stopped. "
        "Several relays may share one PostgreSQL outbox."
    )
    parser.add_argument(
        "--outbox", default=None, metavar="DSN", help=f"postgresql://... or sqlite:///path (default: ${OUTBOX_ENV})"
    )
    parser.add_argument("--table", default="aiopublish_outbox", help="the outbox table (default: aiopublish_outbox)")
    add_url_argument(parser)
    parser.add_argument("--batch-size", type=positive_int, default=1000, help="rows per batch (default: 1000)")
    parser.add_argument(
        "--max-attempts", type=positive_int, default=5, help="broker refusals before a message is moved aside (5)"
    )
    parser.add_argument(
        "--poll-interval", type=positive_float, default=1.0, help="seconds between looks when idle (default: 1)"
    )
    parser.add_argument("--timeout", type=positive_float, default=30.0, help="seconds a batch may take (default: 30)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--show-failed", action="store_true", help="list the messages moved aside, then exit")
    action.add_argument("--requeue-failed", action="store_true", help="put the failed messages back in line, then exit")
    add_output_arguments(parser)


async def run(args: argparse.Namespace, console: Console) -> int:
    """Run `aiopublish relay` as `args` say; the exit status."""
    dsn = args.outbox or os.environ.get(OUTBOX_ENV)
    if not dsn:
        raise UsageError(f"--outbox DSN is required (or ${OUTBOX_ENV})")
    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    try:
        params = ConnectionParams.build(url)
        outbox = Outbox(dsn, table=args.table)
    except (TypeError, ValueError, ImportError) as exc:
        raise UsageError(str(exc)) from None
    console.mask = lambda text: mask_text(params.mask(text))
    try:
        if args.show_failed or args.requeue_failed:
            try:
                if args.show_failed:
                    return await _show_failed(outbox, console)
                console.say(f"requeued {await outbox.requeue()} failed message(s)")
                return EXIT_OK
            except Exception as exc:  # the database cannot be reached or refuses: one line
                console.error(f"error: outbox {args.table}: {type(exc).__name__}: {exc}")
                return EXIT_FAILED
        # Not connected first: a relay started while the broker is down waits for it (the retry policy).
        publisher = Publisher(url, transport_options={"connection_name": "aiopublish relay"})
        try:
            return await _relay(outbox, publisher, args, console, url)
        finally:
            await publisher.close()
    finally:
        await outbox.close()


async def _show_failed(outbox: Outbox, console: Console) -> int:
    failed = await outbox.failed()
    for message in failed:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(message.created_at))
        console.say(
            f"{message.message_id}\t{when}\texchange={message.exchange!r} routing_key={message.routing_key!r}"
            f"\tattempts={message.attempts}\t{message.error}"
        )
    console.say(f"{len(failed)} failed message(s)")
    return EXIT_OK


async def _relay(outbox: Outbox, publisher: Publisher, args: argparse.Namespace, console: Console, url: str) -> int:
    relay = outbox.relay(
        publisher,
        batch_size=args.batch_size,
        max_attempts=args.max_attempts,
        poll_interval=args.poll_interval,
        timeout=args.timeout,
    )
    console.say(f"relaying outbox table {args.table} ({outbox.kind}) to {mask_url(url.split(',')[0])}")
    relay.start()
    try:
        await relay.wait()
    except asyncio.CancelledError:
        await relay.stop()  # SIGTERM/SIGINT: let the batch under way settle
        raise
    finally:
        metrics = relay.metrics
        console.say(f"relayed {metrics.relayed} message(s), {metrics.failed} moved aside as failed")
    return EXIT_OK
