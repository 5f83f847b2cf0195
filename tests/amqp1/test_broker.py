"""Publishing over AMQP 1.0 to a real RabbitMQ 4.x: every outcome, multi-frame bodies, a cut connection.

The node comes from AIOPUBLISH_AMQP1_TEST_URL (an amqp1:// URL); what arrived is read
back over 0-9-1 (aiormq) on the same node and port. Run with ``pytest -m amqp1``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
import uuid
from collections.abc import AsyncIterator

import aiormq
import pytest
from yarl import URL

from aiopublish import (
    AccessRefused,
    AuthenticationError,
    Exchange,
    NotFound,
    PreconditionFailed,
    Publisher,
    PublishTimeout,
    Queue,
    UndeliverableMessage,
    VhostNotFound,
)
from tests.admin import broker_admin
from tests.broker import until
from tests.faults.proxy import TcpProxy

pytestmark = pytest.mark.amqp1


@pytest.fixture
def amqp1_url() -> str:
    url = os.environ.get("AIOPUBLISH_AMQP1_TEST_URL")
    if not url:
        pytest.fail(
            "Set AIOPUBLISH_AMQP1_TEST_URL to an amqp1:// URL of a RabbitMQ 4.x node "
            "(e.g. amqp1://guest:guest@127.0.0.1:5682/) to run the AMQP 1.0 tests."
        )
    return url


class Node:
    """Declares queues over 0-9-1 on the amqp1 node, reads them back, deletes them afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"a1-{uuid.uuid4().hex[:8]}"
        self.queues: list[str] = []
        self.connection: aiormq.abc.AbstractConnection | None = None
        self.channel: aiormq.abc.AbstractChannel | None = None

    async def open(self) -> None:
        self.connection = await aiormq.connect(str(URL(self.url).with_scheme("amqp")))
        self.channel = await self.connection.channel()

    async def queue(self, name: str, arguments: dict[str, object] | None = None) -> str:
        assert self.channel is not None
        full = f"{self.prefix}-{name}"
        await self.channel.queue_declare(full, durable=True, arguments=arguments)
        self.queues.append(full)
        return full

    async def take_all(self, queue: str) -> list[aiormq.abc.DeliveredMessage]:
        """Every message the queue holds now, consumed (one round trip per message would be slow)."""
        assert self.channel is not None
        expected = await self.count(queue)
        taken: list[aiormq.abc.DeliveredMessage] = []
        if not expected:
            return taken
        done = asyncio.get_running_loop().create_future()

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            taken.append(message)
            if len(taken) == expected and not done.done():
                done.set_result(None)

        consumer = await self.channel.basic_consume(queue, on_message, no_ack=True)
        await done
        await self.channel.basic_cancel(consumer.consumer_tag or "")
        return taken

    async def count(self, queue: str) -> int:
        assert self.channel is not None
        declared = await self.channel.queue_declare(queue, passive=True)
        return declared.message_count or 0

    async def close(self) -> None:
        if self.channel is not None:
            for queue in self.queues:
                await self.channel.queue_delete(queue)
        if self.connection is not None:
            await self.connection.close()


@pytest.fixture
async def node(amqp1_url: str) -> AsyncIterator[Node]:
    probe = Node(amqp1_url)
    await probe.open()
    try:
        yield probe
    finally:
        await probe.close()


async def test_accepted_message_arrives_with_its_properties(amqp1_url: str, node: Node) -> None:
    """accepted -> confirmed; a 0-9-1 consumer reads the body, message_id, headers and properties as sent."""
    queue = await node.queue("props")
    async with Publisher(amqp1_url, routing_key=queue, timeout=10) as publisher:
        result = await publisher.publish(
            {"a": 1},
            headers={"h": "v", "n": 5},
            correlation_id="c-1",
            priority=3,
            expiration=60,  # seconds
            reply_to="replies",
            message_id="m-1",
            user_id=URL(amqp1_url).user or "guest",
            timestamp=1_700_000_000,
        )
    assert result.status == "confirmed"
    [message] = await node.take_all(queue)
    properties = message.header.properties
    assert message.body == b'{"a":1}'
    assert properties.message_id == "m-1"
    assert properties.content_type == "application/json"
    assert properties.correlation_id == "c-1"
    assert properties.priority == 3
    assert properties.delivery_mode == 2
    assert properties.expiration == "60000"
    assert properties.reply_to == "replies"
    assert properties.user_id == (URL(amqp1_url).user or "guest")
    assert properties.timestamp is not None and int(properties.timestamp.timestamp()) == 1_700_000_000
    assert properties.headers is not None and properties.headers["h"] == "v" and properties.headers["n"] == 5


async def test_a_body_larger_than_a_frame_arrives_whole(amqp1_url: str, node: Node) -> None:
    """A 3 MB body is split over many transfer frames at the broker's max-frame-size and arrives intact."""
    queue = await node.queue("big")
    body = os.urandom(3 * 1024 * 1024)
    async with Publisher(amqp1_url, routing_key=queue, timeout=30, serializer="raw") as publisher:
        await publisher.publish(body)
    [message] = await node.take_all(queue)
    assert message.body == body


async def test_released_for_an_unroutable_address(amqp1_url: str, node: Node) -> None:
    """released: mandatory -> UndeliverableMessage("returned") saying so; without mandatory it is confirmed."""
    key = f"{node.prefix}-nobody"
    async with Publisher(amqp1_url, exchange="amq.direct", routing_key=key, timeout=10) as publisher:
        with pytest.raises(UndeliverableMessage) as raised:
            await publisher.publish(b"x", mandatory=True)
        assert raised.value.reason == "returned"
        assert "released" in str(raised.value) and "no queue" in str(raised.value)
        result = await publisher.publish(b"x")
        assert result.status == "confirmed"


async def test_rejected_by_a_full_quorum_queue(amqp1_url: str, node: Node) -> None:
    """A quorum queue at x-max-length with reject-publish rejects: the broker's condition (if any) is in the error."""
    queue = await node.queue("full", {"x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "reject-publish"})
    accepted = []
    async with Publisher(amqp1_url, routing_key=queue, timeout=10, serializer="raw") as publisher:
        with pytest.raises(UndeliverableMessage) as raised:
            # A quorum queue rejects once it is over its limit: the second or the third publish.
            for index in range(3):
                await publisher.publish(f"m{index}".encode())
                accepted.append(f"m{index}".encode())
    assert raised.value.reason == "rejected"
    # RabbitMQ 4.1+ names the condition (amqp:resource-limit-exceeded: ...); 4.0 rejects without an error.
    assert raised.value.reply_text and (
        raised.value.reply_text.startswith("amqp:") or raised.value.reply_text == "rejected"
    )
    assert 1 <= len(accepted) <= 2
    assert [m.body for m in await node.take_all(queue)] == accepted


async def test_a_missing_queue_is_not_found(amqp1_url: str, node: Node) -> None:
    """A /queues/ address with no queue: the broker refuses the link, the publish raises NotFound."""
    async with Publisher(amqp1_url, routing_key=f"{node.prefix}-missing", timeout=10) as publisher:
        with pytest.raises(NotFound, match="amqp:not-found"):
            await publisher.publish(b"x")
        queue = await node.queue("later")
        assert (await publisher.publish(b"y", routing_key=queue)).status == "confirmed"


async def test_a_missing_exchange_named_as_a_queue_refuses_only_its_own_publish(amqp1_url: str, node: Node) -> None:
    """A publish to a missing exchange and one to a queue of the same name, attaching together: the
    first raises NotFound, the second arrives (4.0 ends the session for the first: the second goes again)."""
    queue = await node.queue("twin")
    async with Publisher(amqp1_url, timeout=10, serializer="raw") as publisher:
        refused = asyncio.ensure_future(publisher.publish(b"x", exchange=queue, routing_key="k"))
        good = asyncio.ensure_future(publisher.publish(b"y", routing_key=queue))
        with pytest.raises(NotFound, match=f"amqp:not-found: no exchange '{queue}'"):
            await refused
        assert (await good).status == "confirmed"
    assert [m.body for m in await node.take_all(queue)] == [b"y"]


async def test_a_queue_the_user_may_not_write_is_access_refused(amqp1_url: str, node: Node) -> None:
    """Without write permission a publish to a /queues/ address raises AccessRefused, as over 0-9-1.
    RabbitMQ checks it at the transfer and ends the whole session: before, that read as a lost
    connection (ChannelInterrupted, retried until the timeout). Five at once: each refused, none sent."""
    queue = await node.queue("nowrite")
    user = f"{node.prefix}-nowrite"
    admin = broker_admin(str(URL(amqp1_url).with_scheme("amqp")))
    await asyncio.to_thread(admin.add_user, user, "pw")
    try:
        await asyncio.to_thread(admin.set_permissions, "/", user, ".*", "", ".*")  # configure, write, read
        url = str(URL(amqp1_url).with_user(user).with_password("pw"))
        async with Publisher(url, timeout=30, serializer="raw", routing_key=queue) as publisher:
            with pytest.raises(AccessRefused, match=r"write access to exchange 'amq\.default'"):
                await publisher.publish(b"alone")
            assert publisher.metrics.retried == 0  # refused, not retried
            outcomes = await asyncio.gather(*(publisher.publish(b"%d" % n) for n in range(5)), return_exceptions=True)
            assert [type(outcome) for outcome in outcomes] == [AccessRefused] * 5, outcomes
    finally:
        await asyncio.to_thread(admin.delete_user, user)
    assert await node.count(queue) == 0


async def test_options_without_an_amqp1_meaning_are_refused(amqp1_url: str, node: Node) -> None:
    """type, app_id and nested headers are refused with a sentence; nothing reaches the queue."""
    queue = await node.queue("refused")
    async with Publisher(amqp1_url, routing_key=queue, timeout=10) as publisher:
        with pytest.raises(ValueError, match=r"type option has no AMQP 1\.0 property"):
            await publisher.publish(b"x", type="t")
        with pytest.raises(ValueError, match="app_id option"):
            await publisher.publish(b"x", app_id="a")
        with pytest.raises(ValueError, match="simple values only"):
            await publisher.publish(b"x", headers={"nested": {"a": 1}})
    assert await node.count(queue) == 0


async def test_publish_many_ten_thousand_counted_per_message_id(amqp1_url: str, node: Node) -> None:
    """publish_many of 10,000: every message confirmed, and each message id is in the queue exactly once."""
    queue = await node.queue("many")
    async with Publisher(amqp1_url, routing_key=queue, timeout=60) as publisher:
        results = await publisher.publish_many([f"m{i}".encode() for i in range(10_000)])
    assert collections.Counter(r.status for r in results) == {"confirmed": 10_000}
    taken = await node.take_all(queue)
    ids = collections.Counter(m.header.properties.message_id for m in taken)
    assert set(ids) == {r.message_id for r in results}
    assert set(ids.values()) == {1}


async def test_connection_dropped_mid_stream_loses_nothing(amqp1_url: str, node: Node) -> None:
    """A connection cut mid-batch: with retry on, every message ends confirmed and is in the queue (lost 0)."""
    queue = await node.queue("cut")
    target = URL(amqp1_url)
    async with TcpProxy(target.host or "127.0.0.1", target.port or 5672) as proxy:
        url = str(target.with_host("127.0.0.1").with_port(proxy.port))
        async with Publisher(url, routing_key=queue, timeout=60, retry=True) as publisher:
            await publisher.connect()
            batch = publisher.publish_many([os.urandom(512) for _ in range(20_000)])
            task = asyncio.ensure_future(batch)
            # Each count is a round trip to the broker: the cut comes once the batch is flowing.
            while await node.count(queue) < 2_000 and not task.done():
                continue
            assert not task.done(), "the batch finished before the cut: nothing was tested"
            proxy.drop_all()
            results = await task
            assert publisher.metrics.reconnects >= 1
    assert collections.Counter(r.status for r in results) == {"confirmed": 20_000}
    ids = {m.header.properties.message_id for m in await node.take_all(queue)}
    missing = {r.message_id for r in results} - ids
    assert not missing, f"{len(missing)} confirmed messages are not in the queue"


async def test_declarations_through_the_management_node(amqp1_url: str, node: Node) -> None:
    """declare= creates the exchange, the queue and the binding (management node); a message routes through."""
    exchange = Exchange(f"{node.prefix}-x", type="topic", durable=False, auto_delete=True)
    name = f"{node.prefix}-declared"
    node.queues.append(name)
    queue = Queue(name, exchange=exchange, routing_key="a.#", arguments={"x-max-length": 100})
    async with Publisher(amqp1_url, declare=[queue], exchange=exchange, routing_key="a.b", timeout=10) as publisher:
        await publisher.publish(b"routed", serializer="raw")
        with pytest.raises(PreconditionFailed, match="inequivalent"):
            await publisher.publish(b"x", declare=[Queue(name, durable=False)])
    assert [m.body for m in await node.take_all(name)] == [b"routed"]


async def test_declarations_are_made_again_after_a_reconnect(amqp1_url: str, node: Node) -> None:
    """A queue deleted while the connection was down is declared again before the next publish."""
    name = f"{node.prefix}-again"
    node.queues.append(name)
    target = URL(amqp1_url)
    async with TcpProxy(target.host or "127.0.0.1", target.port or 5672) as proxy:
        url = str(target.with_host("127.0.0.1").with_port(proxy.port))
        async with Publisher(url, declare=[Queue(name)], routing_key=name, timeout=20) as publisher:
            await publisher.publish(b"one", serializer="raw")
            assert node.channel is not None
            await node.channel.queue_delete(name)
            proxy.drop_all()
            await publisher.publish(b"two", serializer="raw")
            assert publisher.metrics.reconnects >= 1
    assert [m.body for m in await node.take_all(name)] == [b"two"]


async def test_confirms_off_sends_every_message_once(amqp1_url: str, node: Node) -> None:
    """use_confirms=False: pre-settled transfers, "sent" once written (past the link credit), each stored once."""
    queue = await node.queue("unconfirmed")
    async with Publisher(amqp1_url, routing_key=queue, use_confirms=False, timeout=30) as publisher:
        results = await publisher.publish_many([f"m{i}".encode() for i in range(5_000)])
        single = await publisher.publish(b"one more")
    assert collections.Counter(r.status for r in results) == {"sent": 5_000}
    assert single.status == "sent"
    async with asyncio.timeout(30):
        while await node.count(queue) < 5_001:
            continue  # pre-settled: nothing tells the publisher when the queue has them
    assert await node.count(queue) == 5_001


async def test_a_silent_connection_is_dropped_after_a_timeout(amqp1_url: str, node: Node) -> None:
    """A publish timing out on a connection that answers nothing makes the link ask (flow echo) and drop it."""
    queue = await node.queue("silent")
    target = URL(amqp1_url)
    async with TcpProxy(target.host or "127.0.0.1", target.port or 5672) as proxy:
        url = str(target.with_host("127.0.0.1").with_port(proxy.port))
        async with Publisher(url, routing_key=queue, timeout=20, serializer="raw") as publisher:
            await publisher.publish(b"before")
            proxy.go_silent()
            with pytest.raises(PublishTimeout):
                await publisher.publish(b"into the silence", timeout=0.5)
            # The liveness check gives up on it within its 5 s probe.
            await until(lambda: not publisher.state.connected, within=15, what="the silent connection dropped")
            proxy.go_silent(False)
            assert (await publisher.publish(b"after")).status == "confirmed"
            assert publisher.metrics.reconnects == 1
    assert b"after" in [m.body for m in await node.take_all(queue)]


async def test_a_refused_login_is_an_authentication_error(amqp1_url: str) -> None:
    """A wrong password: SASL outcome 'auth' -> AuthenticationError, never retried, password masked."""
    url = str(URL(amqp1_url).with_password("not-the-password"))
    with pytest.raises(AuthenticationError, match="refused the login") as raised:
        async with Publisher(url, timeout=20, retry=True) as publisher:
            await publisher.publish(b"x", routing_key="q")
    assert "not-the-password" not in str(raised.value)


async def test_a_missing_vhost_is_vhost_not_found_never_retried(amqp1_url: str) -> None:
    """RabbitMQ drops an AMQP 1.0 open for a missing vhost without a close frame; asked over 0-9-1 it says
    the vhost is not found: VhostNotFound naming it, as for amqp://, and not retried even with retry on."""
    url = str(URL(amqp1_url).with_path("/no-such-vhost-amqp1"))
    started = time.monotonic()
    with pytest.raises(VhostNotFound, match="dropped the connection in answer to open") as raised:
        async with Publisher(url, timeout=60, retry=True) as publisher:
            await publisher.publish(b"x", routing_key="q")
    assert raised.value.vhost == "no-such-vhost-amqp1"
    assert "not found" in str(raised.value)
    assert time.monotonic() - started < 30, "retried: a missing vhost is final"
