"""Publish one confirmed message and read it back.

    python examples/quickstart.py [AMQP_URL]

Declares a queue, publishes a JSON message with confirms on (the default),
then reads the message back with a plain aiormq consumer to show what arrived.
When that cannot be done it says why in one line on stderr and exits with 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from urllib.parse import unquote, urlsplit

import aiormq

from aiopublish import AiopublishError, AuthenticationError, ConnectionFailed, Publisher, Queue, TLSError

URL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AIOPUBLISH_URL", "amqp://guest:guest@127.0.0.1:5672/")
QUEUE = Queue("aiopublish-quickstart", auto_delete=False)
START_ONE = "start one (Debian: `apt-get install rabbitmq-server && rabbitmq-server -detached`)"


def one_line(exc: BaseException) -> str:
    """What went wrong, as one line (aiopublish's messages already mask the password)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, ConnectionFailed) and not isinstance(exc, (AuthenticationError, TLSError)):
        return f"No RabbitMQ answered ({text}): {START_ONE} or pass its URL as the first argument"
    if isinstance(exc, AiopublishError):
        return text  # a refused login, TLS failed, a missing exchange, a refused permission, ...
    # aiormq's own error for a connection.close while opening the vhost (a missing vhost, today).
    return f"The broker closed the connection while opening virtual host {vhost()!r}: is it there, may you use it?"


def vhost() -> str:
    path = urlsplit(URL.split(",")[0]).path
    return unquote(path[1:]) if len(path) > 1 else "/"


async def main() -> int:
    try:
        async with Publisher(URL, declare=[QUEUE], routing_key=QUEUE.name, retry=False) as publisher:
            await publisher.publish({"order": 42, "status": "paid"}, headers={"source": "quickstart"})
    except (AiopublishError, aiormq.exceptions.AMQPError) as exc:
        print(one_line(exc), file=sys.stderr)
        return 1
    print(f"published and confirmed: queue {QUEUE.name!r}")

    connection = await aiormq.connect(URL)
    try:
        channel = await connection.channel()
        message = await channel.basic_get(QUEUE.name, no_ack=True)
        props = message.header.properties
        print(
            f"read back: body={message.body.decode()} content_type={props.content_type} "
            f"delivery_mode={props.delivery_mode} headers={props.headers} message_id={props.message_id}"
        )
        await channel.queue_delete(QUEUE.name)
    finally:
        await connection.close()
    return 0


if __name__ == "__main__":
    # aiormq logs every failed connect itself ("error when creating transport: ..."); the one line
    # printed above says it already. See the README's "Logging" section.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    sys.exit(asyncio.run(main()))
