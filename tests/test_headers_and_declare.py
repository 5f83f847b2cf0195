"""Header merging and declarations, with nothing leaking from one call into the next."""

from __future__ import annotations

from aiopublish import Binding, Exchange, Publisher, Queue
from tests.broker import Broker
from tests.internals import declared_on_channel


async def test_header_merging_and_no_leak(amqp_url: str, broker: Broker) -> None:
    """Constructor headers, then per-call headers, then extra_headers (extra wins); calls do not leak."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, headers={"base": 1, "same": "ctor"}) as publisher:
        await publisher.publish("1", headers={"call": 2})
        await publisher.publish("2", extra_headers={"extra": 3})
        await publisher.publish("3", headers={"same": "call"}, extra_headers={"same": "extra"})
        await publisher.publish("4")
    headers = [m.header.properties.headers for m in await broker.get_all(queue)]
    assert headers == [
        {"base": 1, "same": "ctor", "call": 2},
        {"base": 1, "same": "ctor", "extra": 3},
        {"base": 1, "same": "extra"},
        {"base": 1, "same": "ctor"},
    ]


async def test_headers_only_and_extra_only(amqp_url: str, broker: Broker) -> None:
    """Per-call headers alone and extra_headers alone are each sent as given."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("1", headers={"h": "v"})
        await publisher.publish("2", extra_headers={"e": "v"})
        await publisher.publish("3")
    headers = [m.header.properties.headers for m in await broker.get_all(queue)]
    assert headers == [{"h": "v"}, {"e": "v"}, None]


async def test_declare_order_constructor_then_call(amqp_url: str, broker: Broker) -> None:
    """Constructor exchange and queue, then per-call queues, are declared and all receive the message."""
    exchange = Exchange(broker.name("x"), "fanout", auto_delete=True)
    q1 = Queue(broker.name("q"), exchange, auto_delete=True)
    q2 = Queue(broker.name("q"), exchange, auto_delete=True)
    q3 = Queue(broker.name("q"), exchange, auto_delete=True)
    async with Publisher(amqp_url, declare=[exchange, q1], exchange=exchange) as publisher:
        await publisher.publish("hello", declare=[q2, q3])
        # The per-call list does not stick: declaring it is not repeated, and q1's declaration stands.
        await publisher.publish("again")
        declared = declared_on_channel(publisher)
    for queue in (q1, q2, q3):
        assert next(m.body for m in await broker.get_all(queue.name)) == b'"hello"'
    assert declared.index(q1) < declared.index(q2) < declared.index(q3)


async def test_queue_declares_its_exchange_and_binding(amqp_url: str, broker: Broker) -> None:
    """Declaring a Queue bound to a topic exchange declares the exchange, the queue and the binding."""
    exchange = Exchange(broker.name("x"), "topic")
    queue = Queue(broker.name("q"), exchange, "orders.*")
    async with Publisher(amqp_url, declare=[queue], exchange=exchange) as publisher:
        await publisher.publish("hit", routing_key="orders.created")
        await publisher.publish("miss", routing_key="users.created")
    assert [m.body for m in await broker.get_all(queue.name)] == [b'"hit"']


async def test_headers_exchange_binding_arguments(amqp_url: str, broker: Broker) -> None:
    """A Binding with x-match arguments to a headers exchange routes by headers."""
    exchange = Exchange(broker.name("x"), "headers")
    queue = Queue(broker.name("q"), bindings=[Binding(exchange, arguments={"x-match": "all", "kind": "a"})])
    async with Publisher(amqp_url, declare=[queue], exchange=exchange) as publisher:
        await publisher.publish("yes", headers={"kind": "a"})
        await publisher.publish("no", headers={"kind": "b"})
    assert [m.body for m in await broker.get_all(queue.name)] == [b'"yes"']


async def test_publishing_to_exchange_object_does_not_declare_it(amqp_url: str, broker: Broker) -> None:
    """An Exchange passed as `exchange` (not in declare) is not declared: publishing to it is a 404."""
    from aiopublish import NotFound

    exchange = Exchange(broker.name("x"))
    async with Publisher(amqp_url) as publisher:
        try:
            await publisher.publish("x", exchange=exchange)
        except NotFound:
            pass
        else:
            raise AssertionError("publishing to an undeclared Exchange object should raise NotFound")


async def test_each_entity_declared_once_per_connection(amqp_url: str, broker: Broker) -> None:
    """A queue deleted after its first declaration is not redeclared by later publishes on the same channel."""
    queue = Queue(broker.name("q"))
    async with Publisher(amqp_url, routing_key=queue.name) as publisher:
        await publisher.publish("1", declare=[queue])
        channel = await broker.channel()
        await channel.queue_delete(queue.name)
        await publisher.publish("2", declare=[queue])
        assert not await broker.exists(queue.name)
