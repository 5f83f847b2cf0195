"""The link registry (a link per URL scheme, built at first use) and the override patch_publisher is built on."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from aiopublish import Publisher, PublisherClosed, Queue, _transports
from aiopublish._amqp1 import Amqp1Link
from aiopublish._connection import ConnectionParams
from aiopublish._link import Link, LinkLike
from aiopublish._metrics import Metrics
from aiopublish._transports import (
    DeferredLink,
    _factory_for,
    link_for,
    override_links,
    register_link_factory,
)
from aiopublish.retry import DEFAULT_RETRY_POLICY
from aiopublish.testing import InMemoryBroker, MemoryLink, get_broker, patch_publisher
from tests.broker import Broker

GONE = "amqp://app:secret@rabbit.invalid:5672/"  # nothing answers there: a real connection would fail


def _link(publisher: Publisher) -> DeferredLink:
    link = publisher._link
    assert isinstance(link, DeferredLink)
    return link


def test_each_scheme_has_its_factory() -> None:
    """amqp, amqps and kombu's pyamqp and librabbitmq build the real Link; amqp1(s) the AMQP 1.0 one; memory its own."""
    for scheme in ("amqp", "amqps", "pyamqp", "librabbitmq"):
        assert _factory_for(scheme) is Link
    params = ConnectionParams.build("memory://")
    link = _factory_for("memory")(params, [], DEFAULT_RETRY_POLICY, Metrics())
    assert isinstance(link, MemoryLink)
    for scheme in ("amqp1", "amqp1s"):  # AMQP 1.0
        assert isinstance(_factory_for(scheme)(params, [], DEFAULT_RETRY_POLICY, Metrics()), Amqp1Link)
    with pytest.raises(ValueError, match=r"no link is registered for nosuch:// URLs \(known: amqp://, amqp1://"):
        _factory_for("nosuch")


def test_register_link_factory_refuses_bad_arguments() -> None:
    """A scheme must be a bare scheme name and a factory callable."""
    with pytest.raises(ValueError, match="scheme must be a URL scheme"):
        register_link_factory("amqp://", Link)
    with pytest.raises(TypeError, match="factory must be callable, not str"):
        register_link_factory("x-test", "Link")  # type: ignore[arg-type]


async def test_a_registered_factory_is_used_at_first_use_only(
    memory_broker: InMemoryBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """link_for picks the scheme's factory at once but calls it only when a channel is first needed."""
    built: list[ConnectionParams] = []

    def factory(params: ConnectionParams, declare: Any, policy: Any, metrics: Metrics) -> LinkLike:
        built.append(params)
        return MemoryLink(params, declare, metrics, broker_url="memory://")

    monkeypatch.setattr(_transports, "_factories", dict(_transports._factories))  # undone after the test
    register_link_factory("x-test", factory)
    params = ConnectionParams(("x-test://somewhere/",))
    link = link_for(params, [Queue("q")], DEFAULT_RETRY_POLICY, Metrics())
    assert built == [] and link.ready_channel() is None and link.node is None and not link.is_blocked
    channel = await link.channel()
    assert built == [params] and link.ready_channel() is channel
    assert "q" in memory_broker.queues
    await link.close(None)


def test_the_core_does_not_import_the_test_double() -> None:
    """A Publisher on amqp:// leaves aiopublish.testing unimported; one on memory:// imports it by name."""
    code = (
        "import sys, aiopublish\n"
        "aiopublish.Publisher('amqp://guest:guest@127.0.0.1/')\n"
        "assert 'aiopublish.testing' not in sys.modules, 'amqp imported the test double'\n"
        "aiopublish.Publisher('memory://')\n"
        "assert 'aiopublish.testing' in sys.modules, 'memory did not import it'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


async def test_publisher_created_before_the_patch_is_caught_and_forgets(memory_broker: InMemoryBroker) -> None:
    """A Publisher built before patch_publisher but first used inside it publishes in memory, then forgets it."""
    publisher = Publisher(GONE, declare=[Queue("q")], routing_key="q")  # as at import time
    assert _link(publisher).resolved is None
    with patch_publisher() as broker:
        await publisher.publish("inside")
        assert isinstance(_link(publisher).resolved, MemoryLink)
        assert _link(publisher).node == "memory://"
    assert broker is memory_broker
    broker.assert_published_once(queue="q", payload="inside")
    assert _link(publisher).resolved is None and publisher.node is None
    with patch_publisher("memory://second") as second:
        await publisher.publish("again")
    # Resolved afresh: declared its queue again on the new broker, and the first got nothing more.
    second.assert_published_once(queue="q", payload="again")
    assert len(memory_broker.published) == 1
    await publisher.close()


async def test_forgetting_releases_exclusive_queues(memory_broker: InMemoryBroker) -> None:
    """When the patch ends, the in-memory link is closed: its exclusive queues go, as on a closed connection."""
    publisher = Publisher(GONE, declare=[Queue("mine", exclusive=True)], routing_key="mine")
    with patch_publisher():
        await publisher.connect()
        assert "mine" in memory_broker.queues
    assert "mine" not in memory_broker.queues
    await publisher.close()


async def test_nested_overrides_use_the_innermost_and_restore_the_outer(memory_broker: InMemoryBroker) -> None:
    """Inside two patches the inner one wins; after it ends the next use resolves under the outer again."""
    publisher = Publisher(GONE, routing_key="q")
    with patch_publisher("memory://outer") as outer:
        with patch_publisher("memory://inner") as inner:
            await publisher.publish(1)
        await publisher.publish(2)
    assert [m.payload for m in inner.published] == [1]
    assert [m.payload for m in outer.published] == [2]
    await publisher.close()


async def test_a_closed_publisher_stays_closed_under_a_patch(memory_broker: InMemoryBroker) -> None:
    """Closing an unused Publisher and then patching does not reopen it."""
    publisher = Publisher(GONE, routing_key="q")
    await publisher.close()
    with patch_publisher(), pytest.raises(PublisherClosed, match="closed"):
        await publisher.publish(1)
    memory_broker.assert_nothing_published()


async def test_override_counts_links_already_connected(memory_broker: InMemoryBroker) -> None:
    """override_links reports how many links were already connected outside any override when it began."""
    connected = Publisher("memory://elsewhere")
    await connected.connect()
    unused = Publisher("memory://elsewhere")
    with override_links(lambda params, declare, policy, metrics: MemoryLink(params, declare, metrics)) as override:
        assert override.bypassed == 1
        with override_links(lambda p, d, r, m: MemoryLink(p, d, m)) as inner:
            await unused.connect()
            assert inner.bypassed == 1  # a link resolved under an override is not "connected outside"
    await connected.close()
    await unused.close()
    with override_links(lambda p, d, r, m: MemoryLink(p, d, m)) as after:
        assert after.bypassed == 0


async def test_a_publisher_connected_to_the_real_broker_is_left_alone(
    amqp_url: str, broker: Broker, memory_broker: InMemoryBroker
) -> None:
    """A Publisher connected before the patch keeps publishing to RabbitMQ, and the failure message says so."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as real:
        await real.publish("before")
        with patch_publisher() as patched:
            await real.publish("during")
            assert isinstance(_link(real).resolved, Link)
            with pytest.raises(AssertionError) as info:
                patched.assert_published_once(payload="during")
            with pytest.raises(AssertionError, match="1 Publisher"):
                patched.assert_published_once()
    text = str(info.value)
    assert "Nothing was published." in text
    assert "1 Publisher(s) created before the patch were already connected to a real broker" in text
    assert [m.body for m in await broker.get_all(queue)] == [b'"before"', b'"during"']
    assert patched.notes == []  # the note goes with the patch
    with pytest.raises(AssertionError) as after:
        get_broker().assert_published_once()
    assert "already connected" not in str(after.value)


async def test_after_the_patch_the_next_use_follows_the_url(memory_broker: InMemoryBroker) -> None:
    """A memory://app Publisher first used inside patch_publisher() goes to memory://, then to its own URL after."""
    publisher = Publisher("memory://app", declare=[Queue("q")], routing_key="q")
    assert isinstance(_link(publisher).current, MemoryLink)  # a look before use: the scheme's own link
    with patch_publisher():
        await publisher.publish("patched")
    await publisher.publish("own")
    assert [m.payload for m in memory_broker.published] == ["patched"]
    assert [m.payload for m in get_broker("memory://app").published] == ["own"]
    await publisher.close()
