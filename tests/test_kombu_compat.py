"""kombu's Exchange/Queue/binding objects (what nameko code passes) work in declare= and exchange=, declared on the
real broker exactly as kombu declares them; and the "Coming from ..." guides' snippets run."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kombu
import pytest
from kombu import binding

import aiopublish
from aiopublish import Exchange, Publisher, Queue
from aiopublish._declarations import exchange_name, expand, from_kombu, normalize_declare
from aiopublish.testing import patch_publisher
from tests.admin import broker_admin
from tests.broker import Broker


async def broker_snapshot(amqp_url: str) -> dict[str, list[dict[str, Any]]]:
    """The broker's exchanges, queues and bindings on vhost "/", read by its administration (three at once)."""
    admin, kinds = broker_admin(amqp_url), ("exchanges", "queues", "bindings")
    rows = await asyncio.gather(*(asyncio.to_thread(admin.listing, kind) for kind in kinds))
    return dict(zip(kinds, rows, strict=True))


def broker_state(snapshot: dict[str, list[dict[str, Any]]], prefix: str) -> dict[str, Any]:
    """The part of `snapshot` named with `prefix`, the prefix replaced by "P"; arguments by value."""

    def rename(value: Any) -> Any:
        return value.replace(prefix, "P") if isinstance(value, str) else value

    def table(arguments: dict[str, Any]) -> dict[str, Any]:
        # RabbitMQ 4.x lists the queue type it chose for a queue declared without one (classic);
        # kombu and aiopublish declare none: what 3.x lists, so both compare as declared.
        return {key: rename(value) for key, value in arguments.items() if (key, value) != ("x-queue-type", "classic")}

    exchanges = {
        rename(row["name"]): (row["type"], row["durable"], row["auto_delete"], row["internal"], table(row["arguments"]))
        for row in snapshot["exchanges"]
        if row["name"].startswith(prefix)
    }
    queues = {
        rename(row["name"]): (row["durable"], row["auto_delete"], row["exclusive"], table(row["arguments"]))
        for row in snapshot["queues"]
        if row["name"].startswith(prefix)
    }
    bindings = sorted(
        [
            rename(row["source_name"]),
            rename(row["destination_name"]),
            rename(row["routing_key"]),
            table(row["arguments"]),
        ]
        for row in snapshot["bindings"]
        if row["destination_name"].startswith(prefix)
    )
    return {"exchanges": exchanges, "queues": queues, "bindings": bindings}


def kombu_entities(prefix: str) -> list[Any]:
    """A nameko-style declare list using every declaring attribute kombu has."""
    topic = kombu.Exchange(
        f"{prefix}-topic", "topic", durable=False, auto_delete=True, arguments={"alternate-exchange": f"{prefix}-ae"}
    )
    headers = kombu.Exchange(f"{prefix}-headers", "headers")
    return [
        kombu.Exchange(f"{prefix}-ae", "fanout"),
        kombu.Queue(
            f"{prefix}-orders",
            topic,
            "order.*",
            queue_arguments={"x-max-length": 10, "x-overflow": "reject-publish"},
            binding_arguments={"note": "main"},
            message_ttl=1.5,
            expires=120,
            max_length_bytes=100_000,
            max_priority=5,
            durable=False,
        ),
        kombu.Queue(
            f"{prefix}-audit",
            bindings=[
                binding(headers, arguments={"x-match": "any", "kind": "a"}),
                binding(topic, "#"),
            ],
        ),
        kombu.Queue(f"{prefix}-named", exchange=f"{prefix}-direct", routing_key="k"),
        kombu.Queue(f"{prefix}-temp", auto_delete=True),
    ]


def kombu_declare(url: str, entities: list[Any]) -> None:
    with kombu.Connection(url) as connection:
        channel = connection.default_channel
        for entity in entities:
            entity(channel).declare()


def remember(broker: Broker, prefix: str) -> None:
    """Let the broker fixture delete every queue and exchange kombu_entities(prefix) makes."""
    for suffix in ("topic", "headers", "ae", "direct", "orders", "audit", "named", "temp"):
        broker._queues.append(f"{prefix}-{suffix}")
        broker._exchanges.append(f"{prefix}-{suffix}")


@pytest.mark.slow  # rabbitmqctl: about 1 s a listing on a busy machine
async def test_kombu_objects_are_declared_exactly_as_kombu_declares_them(amqp_url: str, broker: Broker) -> None:
    """The same kombu declare list, declared by kombu and by aiopublish, leaves the same exchanges, queues, bindings."""
    by_kombu, by_us = broker.name("k"), broker.name("a")
    remember(broker, by_kombu)
    remember(broker, by_us)
    await asyncio.to_thread(kombu_declare, amqp_url, kombu_entities(by_kombu))
    async with Publisher(amqp_url, declare=kombu_entities(by_us)):
        snapshot = await broker_snapshot(amqp_url)
    ours, theirs = broker_state(snapshot, by_us), broker_state(snapshot, by_kombu)
    assert ours == theirs
    # And what that is, spelled out: a test that both could pass by declaring nothing would prove nothing.
    assert ours["exchanges"] == {
        "P-ae": ("fanout", True, False, False, {}),
        "P-topic": ("topic", False, True, False, {"alternate-exchange": "P-ae"}),
        "P-headers": ("headers", True, False, False, {}),
        "P-direct": ("direct", True, False, False, {}),
    }
    assert ours["queues"]["P-orders"] == (
        False,
        False,
        False,
        {
            "x-max-length": 10,
            "x-overflow": "reject-publish",
            "x-message-ttl": 1500,
            "x-expires": 120_000,
            "x-max-length-bytes": 100_000,
            "x-max-priority": 5,
        },
    )
    assert ours["queues"]["P-temp"] == (True, True, False, {})
    assert ["P-topic", "P-orders", "order.*", {"note": "main"}] in ours["bindings"]
    assert ["P-headers", "P-audit", "", {"x-match": "any", "kind": "a"}] in ours["bindings"]
    assert ["P-topic", "P-audit", "#", {}] in ours["bindings"]
    assert ["P-direct", "P-named", "k", {}] in ours["bindings"]


@pytest.mark.slow  # rabbitmqctl: about 1 s a listing on a busy machine
async def test_exclusive_kombu_queue_belongs_to_the_publisher(amqp_url: str, broker: Broker) -> None:
    """kombu's exclusive=True (which implies auto_delete) gives an exclusive queue that goes with the publisher."""
    name = broker.name("excl")
    async with Publisher(amqp_url, declare=[kombu.Queue(name, exclusive=True)]):
        state = broker_state(await broker_snapshot(amqp_url), name)
        # (RabbitMQ lists an exclusive queue as non-durable whatever was asked, for kombu too.)
        assert state["queues"]["P"][1:] == (True, True, {})
    assert not await broker.exists(name)


async def test_publish_to_a_kombu_exchange_object(amqp_url: str, broker: Broker) -> None:
    """exchange=kombu.Exchange(...) per call and in the constructor publishes to that exchange's name."""
    prefix = broker.name("pub")
    exchange = kombu.Exchange(f"{prefix}-x", "topic")
    queue = kombu.Queue(f"{prefix}-q", exchange, "order.#")
    broker._queues.append(queue.name)
    broker._exchanges.append(exchange.name)
    async with Publisher(amqp_url, declare=[queue], exchange=exchange, routing_key="order.paid") as publisher:
        await publisher.publish({"n": 1})
        await publisher.publish({"n": 2}, exchange=exchange, routing_key="order.new")
        await publisher.publish({"n": 3}, exchange=kombu.Exchange(""), routing_key=queue.name)  # default exchange
    bodies = [json.loads(message.body) for message in await broker.get_all(queue.name)]
    assert bodies == [{"n": 1}, {"n": 2}, {"n": 3}]


@pytest.mark.slow  # rabbitmqctl: about 1 s a listing on a busy machine
async def test_no_declare_and_amq_exchanges_are_not_declared(amqp_url: str, broker: Broker) -> None:
    """no_declare exchanges and queues are skipped as kombu skips them; a queue bound to amq.topic works (no 403)."""
    prefix = broker.name("nd")
    remember(broker, prefix)
    declare = [
        kombu.Exchange(f"{prefix}-topic", "topic", no_declare=True),
        kombu.Queue(f"{prefix}-orders", kombu.Exchange("amq.topic", "topic"), f"{prefix}.#"),
        kombu.Queue(f"{prefix}-audit", kombu.Exchange(f"{prefix}-headers", "headers"), no_declare=True),
        Queue(f"{prefix}-named", exchange=Exchange(f"{prefix}-ae", "fanout", no_declare=True)),
    ]
    publisher = Publisher(amqp_url, declare=declare)
    try:
        # The queue is declared, then binding it to the exchange nobody declared fails: as with kombu.
        with pytest.raises(aiopublish.NotFound, match=f"no exchange '{prefix}-ae'"):
            await publisher.connect()
    finally:
        await publisher.close()  # `async with` would not close it: __aexit__ never runs when __aenter__ raised
    state = broker_state(await broker_snapshot(amqp_url), prefix)
    assert state["exchanges"] == {}
    assert set(state["queues"]) == {"P-orders", "P-named"}
    assert ["amq.topic", "P-orders", "P.#", {}] in state["bindings"]


def test_kombu_attributes_that_cannot_be_honoured_are_refused() -> None:
    """passive exchanges, on_declared callbacks, bindings in declare and exchange-less bindings raise before any I/O."""
    with pytest.raises(ValueError, match=r"kombu Exchange 'x' has passive=True"):
        Publisher("amqp://guest:guest@127.0.0.1:5672/", declare=[kombu.Exchange("x", passive=True)])
    with pytest.raises(ValueError, match=r"kombu Queue 'q' has an on_declared callback"):
        normalize_declare([kombu.Queue("q", on_declared=print)], "publish()")
    with pytest.raises(TypeError, match=r"declare cannot hold a binding"):
        normalize_declare([binding(kombu.Exchange("x"), "k")], "publish()")
    with pytest.raises(TypeError, match=r"a kombu binding needs an exchange"):
        normalize_declare([kombu.Queue("q", bindings=[binding(None, "k")])], "publish()")
    with pytest.raises(TypeError, match=r"not a single one"):
        normalize_declare(kombu.Queue("q"), "Publisher(...)")
    with pytest.raises(TypeError, match=r"aiopublish's or kombu's\), not int"):
        normalize_declare([kombu.Queue("q"), 5], "publish()")
    with pytest.raises(TypeError, match=r"exchange must be a str, an Exchange or None, not int"):
        exchange_name(5)
    with pytest.raises(TypeError, match=r"Queue\(exchange=...\) must be an Exchange or an exchange name, not int"):
        Queue("q", exchange=5)  # type: ignore[arg-type]


def test_conversion_is_faithful_and_stable() -> None:
    """A kombu Queue converts to the Queue its attributes describe, the same every time (bindings are a set)."""
    topic = kombu.Exchange("t", "topic", durable=False)
    source = kombu.Queue("q", bindings=[binding(topic, key) for key in ("c", "a", "b")], max_length=3)
    first, again = from_kombu(source), from_kombu(source)
    assert first == again
    assert isinstance(first, Queue)
    assert [b.routing_key for b in first.bindings] == ["a", "b", "c"]
    assert first.arguments == (("x-max-length", 3),)
    assert first.bindings[0].exchange == Exchange("t", "topic", durable=False)
    assert from_kombu(kombu.Exchange("amq.direct")) == Exchange("amq.direct", no_declare=True)
    assert Queue("q", exchange="orders", routing_key="k").exchange == Exchange("orders")
    assert Binding("orders", "k") == Binding(Exchange("orders"), "k")
    mixed = Queue("q", bindings=[binding(topic, "x", arguments={"a": 1}), Binding("d", "y")])
    assert mixed.bindings == (Binding(Exchange("t", "topic", durable=False), "x", {"a": 1}), Binding("d", "y"))
    assert Queue("q", exchange=topic).exchange == Exchange("t", "topic", durable=False)
    steps = expand([Queue("q", Exchange("x", no_declare=True), "k"), Exchange("y", no_declare=True)])
    assert steps == [
        Queue("q", Exchange("x", no_declare=True), "k"),
        ("q", Binding(Exchange("x", no_declare=True), "k")),
    ]


Binding = aiopublish.Binding


async def test_kombu_objects_in_the_memory_broker() -> None:
    """The in-memory broker gets kombu's entities through the same conversion and routes with them."""
    with patch_publisher("memory://kombu-compat") as memory:
        topic = kombu.Exchange("events", "topic")
        async with Publisher(
            "amqp://prod-rabbit/", declare=[kombu.Queue("billing", topic, "order.*")], exchange=topic
        ) as publisher:
            await publisher.publish({"order": 42}, routing_key="order.placed")
        message = memory.assert_published_once(queue="billing", payload={"order": 42})
    assert message.exchange == "events"


@pytest.mark.slow  # rabbitmqctl: about 1 s a listing on a busy machine
async def test_str_exchange_on_our_queue(amqp_url: str, broker: Broker) -> None:
    """aiopublish.Queue(name, exchange="x") declares a durable direct exchange x and binds the queue, as kombu does."""
    prefix = broker.name("str")
    remember(broker, prefix)
    queue = Queue(f"{prefix}-orders", exchange=f"{prefix}-direct", routing_key="paid")
    async with Publisher(amqp_url, declare=[queue], exchange=f"{prefix}-direct", routing_key="paid") as publisher:
        await publisher.publish("hello")
    state = broker_state(await broker_snapshot(amqp_url), prefix)
    assert state["exchanges"] == {"P-direct": ("direct", True, False, False, {})}
    assert ["P-direct", "P-orders", "paid", {}] in state["bindings"]
    assert [m.body for m in await broker.get_all(queue.name)] == [b'"hello"']


# -- the "Coming from ..." guides (docs/guides): every python block runs ----------------------------


GUIDES = Path(__file__).resolve().parent.parent / "docs" / "guides"


def readme_blocks(section: str) -> list[str]:
    """The ```python blocks under the guide's heading `section` (up to the next heading of that level or higher)."""
    page = {"Coming from nameko": "from-nameko.md", "Coming from aio-pika or FastStream": "from-aio-pika.md"}[section]
    text = (GUIDES / page).read_text()
    start = re.search(rf"^(#+) {re.escape(section)}\s*$", text, re.MULTILINE)
    assert start is not None, f"{page} has no section {section!r}"
    level = len(start.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, start.end())
    body = text[start.end() : end.start() if end else len(text)]
    return re.findall(r"^```python\n(.*?)^```", body, re.MULTILINE | re.DOTALL)


README_BROKER = "amqp://guest:guest@127.0.0.1:5672/"  # the URL the "Coming from ..." blocks publish to


def run_snippet(code: str, where: Path) -> subprocess.CompletedProcess[str]:
    script = where / "snippet.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=where)


@pytest.mark.slow  # a fresh interpreter per block
@pytest.mark.parametrize(("section", "count"), [("Coming from nameko", 1), ("Coming from aio-pika or FastStream", 3)])
async def test_readme_coming_from_snippets_run(
    section: str, count: int, tmp_path: Path, amqp_url: str, broker: Broker
) -> None:
    """Each ```python block of the "Coming from ..." guides runs as a file and its message arrives.

    (The nameko "before" block is fenced ```py: nameko is not installed here.) The blocks' URL, the
    machine's broker, is pointed at the broker under test.
    """
    blocks = readme_blocks(section)
    assert len(blocks) == count, f"{section}: expected {count} python blocks, found {len(blocks)}"
    broker._queues.append("billing")  # the snippets' own names; removed afterwards
    broker._exchanges.append("orders")
    channel = await broker.channel()
    for index, code in enumerate(blocks):
        await channel.queue_declare("billing", durable=True)
        await channel.queue_purge("billing")
        assert README_BROKER in code, f"{section} block {index} does not use {README_BROKER}"
        result = await asyncio.to_thread(run_snippet, code.replace(README_BROKER, amqp_url), tmp_path)
        assert result.returncode == 0, f"{section} block {index} failed:\n{code}\n{result.stdout}\n{result.stderr}"
        [message] = await broker.get_all("billing")
        assert message.header.properties.headers.get("source") == "shop"
        assert json.loads(message.body)["order_id"] == 42
