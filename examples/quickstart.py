"""Publish one confirmed message and read it back.

    python examples/quickstart.py [AMQP_URL]

Declares a queue, publishes a JSON message with confirms on (the default),
then reads the message back with a plain aiormq consumer to show what arrived.
"""

from __future__ import annotations

import asyncio
import os
import sys

import aiormq

from aiopublish import ConnectionFailed, Publisher, Queue

URL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AIOPUBLISH_URL", "amqp://guest:guest@127.0.0.1:5672/")
QUEUE = Queue("aiopublish-quickstart", auto_delete=False)


async def main() -> int:
    try:
        async with Publisher(URL, declare=[QUEUE], routing_key=QUEUE.name, retry=False) as publisher:
            await publisher.publish({"order": 42, "status": "paid"}, headers={"source": "quickstart"})
    except ConnectionFailed as exc:
        print(
            f"No RabbitMQ answered ({exc}).\nStart one (Debian: `apt-get install rabbitmq-server && "
            "rabbitmq-server -detached`) or pass its URL as the first argument."
        )
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
    sys.exit(asyncio.run(main()))
