"""The in-memory broker, driven through real Publishers on memory:// URLs, and its pytest fixtures."""

from __future__ import annotations

import asyncio
import json
import pickle
from datetime import UTC, datetime

import pytest

from aiopublish import (
    Binding,
    ChannelError,
    Exchange,
    NotFound,
    PreconditionFailed,
    Publisher,
    Queue,
    UndeliverableMessage,
    register_compressor,
)
from aiopublish.retry import is_testing
from aiopublish.testing import (
    InMemoryBroker,
    get_broker,
    headers_match,
    patch_publisher,
    register_decompressor,
    reset,
    topic_matches,
)

pytest_plugins = ["pytester"]

# -- routing ---------------------------------------------------------------------------------------


async def test_default_exchange_routes_by_queue_name(memory_broker: InMemoryBroker) -> None:
    """The default exchange delivers to the queue named by the routing key, and nowhere else."""
    async with Publisher("memory://", declare=[Queue("orders"), Queue("other")]) as publisher:
        await publisher.publish({"n": 1}, routing_key="orders")
        await publisher.publish({"n": 2}, routing_key="nosuch")
    assert [m.payload for m in memory_broker.messages("orders")] == [{"n": 1}]
    assert memory_broker.messages("other") == []
    assert [m.outcome for m in memory_broker.published] == ["routed", "unroutable"]


async def test_direct_exchange_routes_by_exact_key(memory_broker: InMemoryBroker) -> None:
    """A direct exchange delivers to every queue bound with exactly the routing key."""
    x = Exchange("jobs", "direct")
    declare = [Queue("a1", x, "a"), Queue("a2", x, "a"), Queue("b", x, "b")]
    async with Publisher("memory://", declare=declare, exchange=x) as publisher:
        await publisher.publish("to-a", routing_key="a")
        await publisher.publish("to-A", routing_key="A")
    assert memory_broker.published[0].queues == ("a1", "a2")
    assert memory_broker.published[1].queues == ()
    assert memory_broker.messages("b") == []


async def test_fanout_exchange_routes_to_every_bound_queue(memory_broker: InMemoryBroker) -> None:
    """A fanout exchange ignores the routing key."""
    x = Exchange("events", "fanout")
    async with Publisher("memory://", declare=[Queue("x1", x, "k1"), Queue("x2", x)], exchange=x) as publisher:
        await publisher.publish("hello", routing_key="whatever")
    assert memory_broker.published[0].queues == ("x1", "x2")


async def test_topic_exchange_routes_by_pattern(memory_broker: InMemoryBroker) -> None:
    """A topic exchange matches * to one word and # to zero or more, each queue getting a message once."""
    x = Exchange("topics", "topic")
    declare = [
        Queue("star", x, "order.*"),
        Queue("hash", x, "order.#"),
        Queue("both", bindings=[Binding(x, "#"), Binding(x, "*.paid")]),
    ]
    async with Publisher("memory://", declare=declare, exchange=x) as publisher:
        for key in ("order", "order.paid", "order.paid.eu", "user.paid"):
            await publisher.publish(key, routing_key=key)
    assert [m.payload for m in memory_broker.messages("star")] == ["order.paid"]
    assert [m.payload for m in memory_broker.messages("hash")] == ["order", "order.paid", "order.paid.eu"]
    assert [m.payload for m in memory_broker.messages("both")] == ["order", "order.paid", "order.paid.eu", "user.paid"]


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#", "", True),
        ("*", "", False),
        ("*.b.#", "x.b", True),
        ("*.b.#", "b", False),
        ("#.c", "c", True),
        ("#.c", "a.c.d", False),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.x.y.c", True),
        ("a.*", "a.", True),
        ("", "", True),
        ("", "a", False),
    ],
)
def test_topic_matches(pattern: str, key: str, matches: bool) -> None:
    """topic_matches follows RabbitMQ's word rules, empty words and empty keys included."""
    assert topic_matches(pattern, key) is matches


async def test_headers_exchange_all_and_any(memory_broker: InMemoryBroker) -> None:
    """x-match all needs every argument, any needs one; x- arguments are ignored by both."""
    x = Exchange("by-headers", "headers")
    declare = [
        Queue("all", bindings=[Binding(x, arguments={"x-match": "all", "kind": "a", "n": 1, "x-note": "ignored"})]),
        Queue("any", bindings=[Binding(x, arguments={"x-match": "any", "kind": "a", "n": 1})]),
    ]
    async with Publisher("memory://", declare=declare, exchange=x) as publisher:
        await publisher.publish("both", headers={"kind": "a", "n": 1})
        await publisher.publish("one", headers={"kind": "a"})
        await publisher.publish("wrong-type", headers={"n": "1"})
    assert [m.payload for m in memory_broker.messages("all")] == ["both"]
    assert [m.payload for m in memory_broker.messages("any")] == ["both", "one"]


def test_headers_match_with_x_modes() -> None:
    """all-with-x and any-with-x compare x- arguments too; a void argument only asks for presence."""
    assert headers_match({"x-match": "all-with-x", "x-t": "a"}, {"x-t": "a"})
    assert headers_match({"x-match": "all", "x-t": "a"}, {})
    assert not headers_match({"x-match": "any", "x-t": "a"}, {"x-t": "a"})
    assert headers_match({"x-match": "any-with-x", "x-t": "a", "k": 1}, {"x-t": "a"})
    assert headers_match({"trace": None}, {"trace": "anything"})
    assert not headers_match({"trace": None}, None)
    assert not headers_match({"flag": 1}, {"flag": True})


async def test_alternate_exchange_takes_unroutable_messages(memory_broker: InMemoryBroker) -> None:
    """An exchange's alternate exchange receives what it cannot route; mandatory then does not return."""
    alternate = Exchange("lost-and-found", "fanout")
    main = Exchange("main", arguments={"alternate-exchange": alternate.name})
    declare = [Queue("lost", alternate), Queue("routed", main, "ok")]
    async with Publisher("memory://", declare=declare, exchange=main, mandatory=True) as publisher:
        await publisher.publish("a", routing_key="ok")
        await publisher.publish("b", routing_key="nope")
    assert [m.payload for m in memory_broker.messages("routed")] == ["a"]
    assert [m.payload for m in memory_broker.messages("lost")] == ["b"]


# -- what is recorded ------------------------------------------------------------------------------


async def test_recorded_properties_are_what_went_on_the_wire(memory_broker: InMemoryBroker) -> None:
    """Every property set is recorded under the name publish() takes, decoded from the encoded header."""
    async with Publisher("memory://", declare=[Queue("q")], routing_key="q", headers={"base": 1}) as publisher:
        await publisher.publish(
            {"a": 1},
            headers={"call": "x"},
            delivery_mode="transient",
            priority=5,
            expiration=10,
            correlation_id="corr",
            reply_to="replies",
            message_id="m-1",
            type="order.created",
            app_id="shop",
            user_id="guest",
            timestamp=1_700_000_000,
            cluster_id="c1",
        )
    message = memory_broker.assert_published_once(queue="q")
    assert message.properties == {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "headers": {"base": 1, "call": "x"},
        "delivery_mode": 1,
        "priority": 5,
        "correlation_id": "corr",
        "reply_to": "replies",
        "expiration": "10000",
        "message_id": "m-1",
        "timestamp": datetime.fromtimestamp(1_700_000_000, UTC),
        "type": "order.created",
        "user_id": "guest",
        "app_id": "shop",
        "cluster_id": "c1",
    }
    assert message.headers == {"base": 1, "call": "x"}
    assert message.message_id == "m-1"
    assert (message.exchange, message.routing_key) == ("", "q")
    # json.dumps' bytes, or orjson's compact ones when it is installed: the same JSON either way.
    assert json.loads(message.body) == {"a": 1}


async def test_unset_properties_are_not_recorded(memory_broker: InMemoryBroker) -> None:
    """Only the properties that were sent appear; no headers means an empty headers dict."""
    async with Publisher("memory://", routing_key="q") as publisher:
        await publisher.publish("x", message_id="m")
    message = memory_broker.published[0]
    assert message.properties == {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "delivery_mode": 2,
        "priority": 0,
        "message_id": "m",
    }
    assert message.headers == {}


@pytest.mark.parametrize(
    ("options", "payload", "expected"),
    [
        ({}, {"order": 42, "items": [1, 2]}, {"order": 42, "items": [1, 2]}),
        ({"serializer": "pickle"}, {"when": (1, 2)}, {"when": (1, 2)}),
        ({"serializer": "msgpack"}, {"k": [1, "v"]}, {"k": [1, "v"]}),
        ({"compression": "gzip"}, {"big": "x" * 100}, {"big": "x" * 100}),
        ({"compression": "bzip2", "serializer": "pickle"}, {1, 2}, {1, 2}),
        ({"compression": "lzma"}, ["a"], ["a"]),
        ({"compression": "zstd"}, "z", "z"),
        ({"serializer": "raw"}, "text", "text"),
        ({"serializer": "raw"}, b"\x00\x01", b"\x00\x01"),
        ({"content_type": "text/plain", "content_encoding": "latin-1"}, "café", "café"),
        ({"content_type": "application/octet-stream"}, b"\xff", b"\xff"),
    ],
)
async def test_payload_is_decoded(
    memory_broker: InMemoryBroker, options: dict[str, str], payload: object, expected: object
) -> None:
    """The payload is the body decompressed and deserialized as a kombu consumer would."""
    async with Publisher("memory://", routing_key="q", **options) as publisher:
        await publisher.publish(payload)
    assert memory_broker.published[0].payload == expected


async def test_gzip_body_is_kept_as_sent(memory_broker: InMemoryBroker) -> None:
    """body holds the compressed bytes as sent and the compression header names the codec."""
    async with Publisher("memory://", routing_key="q", compression="gzip", serializer="pickle") as publisher:
        await publisher.publish({"a": 1})
    message = memory_broker.published[0]
    assert message.headers == {"compression": "application/x-gzip"}
    assert message.body != pickle.dumps({"a": 1}) and message.payload == {"a": 1}


async def test_custom_compressor_needs_a_decompressor(memory_broker: InMemoryBroker) -> None:
    """An unknown compression leaves payload as the body until register_decompressor knows it."""
    register_compressor("reverse", lambda body: body[::-1], "application/x-aiopublish-reverse")
    async with Publisher("memory://", routing_key="q", compression="reverse") as publisher:
        await publisher.publish("abc")
        assert memory_broker.published[-1].payload == b'"cba"'
        register_decompressor("application/x-aiopublish-reverse", lambda body: body[::-1])
        await publisher.publish("abc")
    assert memory_broker.published[-1].payload == "abc"


# -- refusals, returns and nacks -------------------------------------------------------------------


async def test_missing_exchange_raises_not_found_with_rabbitmqs_text(memory_broker: InMemoryBroker) -> None:
    """With confirms, a publish to an undeclared exchange raises NotFound 404 and the next publish works."""
    async with Publisher("memory://", declare=[Queue("q")]) as publisher:
        with pytest.raises(NotFound) as info:
            await publisher.publish("x", exchange="nowhere")
        await publisher.publish("ok", routing_key="q")
    assert info.value.reply_code == 404
    assert info.value.reply_text == "NOT_FOUND - no exchange 'nowhere' in vhost '/'"
    assert [m.exchange for m in memory_broker.refused] == ["nowhere"]
    assert [m.payload for m in memory_broker.messages("q")] == ["ok"]


async def test_missing_exchange_without_confirms_is_silent(memory_broker: InMemoryBroker) -> None:
    """Without confirms nothing raises, as with RabbitMQ; the refusal is still recorded."""
    async with Publisher("memory://", use_confirms=False) as publisher:
        await publisher.publish("x", exchange="nowhere")
    assert memory_broker.published == []
    assert isinstance(memory_broker.refused[0].error, NotFound)


async def test_channel_error_redeclares_on_the_next_channel(memory_broker: InMemoryBroker) -> None:
    """After a channel error the publisher's declarations are made again, so a deleted queue comes back."""
    async with Publisher("memory://", declare=[Queue("q")], routing_key="q") as publisher:
        memory_broker.delete_queue("q")
        with pytest.raises(NotFound):
            await publisher.publish("x", exchange="nowhere")
        await publisher.publish("back")
    assert [m.payload for m in memory_broker.messages("q")] == ["back"]


async def test_mandatory_unroutable_is_returned(memory_broker: InMemoryBroker) -> None:
    """mandatory with no route raises UndeliverableMessage(returned, 312, NO_ROUTE) with confirms on."""
    async with Publisher("memory://", mandatory=True) as publisher:
        with pytest.raises(UndeliverableMessage) as info:
            await publisher.publish("lost", routing_key="nowhere", message_id="m-1")
        assert publisher.metrics.returned == 1
    error = info.value
    assert (error.reason, error.reply_code, error.reply_text) == ("returned", 312, "NO_ROUTE")
    assert (error.exchange, error.routing_key, error.message_id) == ("", "nowhere", "m-1")
    assert memory_broker.published[0].outcome == "returned"


async def test_mandatory_without_confirms_does_not_raise(memory_broker: InMemoryBroker) -> None:
    """Without confirms a returned message raises nothing (the Publisher warns), and is recorded as returned."""
    async with Publisher("memory://", mandatory=True, use_confirms=False) as publisher:
        with pytest.warns(UserWarning, match="without publish confirms"):
            await publisher.publish("lost", routing_key="nowhere")
    assert memory_broker.published[0].outcome == "returned"


async def test_user_id_must_be_the_login(memory_broker: InMemoryBroker) -> None:
    """A user_id other than the URL's user raises PreconditionFailed 406 with RabbitMQ's text."""
    async with Publisher("memory://", routing_key="q") as publisher:
        with pytest.raises(PreconditionFailed) as info:
            await publisher.publish("x", user_id="mallory")
        await publisher.publish("x", user_id="guest")
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'"
    )
    async with Publisher("memory://alice:secret@/", routing_key="q") as publisher:
        await publisher.publish("x", user_id="alice")
        with pytest.raises(PreconditionFailed):
            await publisher.publish("x", user_id="guest")


async def test_reject_publish_overflow_nacks(memory_broker: InMemoryBroker) -> None:
    """A full queue with x-overflow reject-publish nacks; the default drop-head keeps the newest."""
    limited = Queue("limited", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    rolling = Queue("rolling", arguments={"x-max-length": 2})
    async with Publisher("memory://", declare=[limited, rolling]) as publisher:
        await publisher.publish("fits", routing_key="limited")
        with pytest.raises(UndeliverableMessage) as info:
            await publisher.publish("overflows", routing_key="limited")
        for n in range(4):
            await publisher.publish(n, routing_key="rolling")
    assert info.value.reason == "nacked"
    assert [m.payload for m in memory_broker.messages("limited")] == ["fits"]
    assert [m.payload for m in memory_broker.messages("rolling")] == [2, 3]


async def test_inequivalent_redeclare_raises_precondition_failed(memory_broker: InMemoryBroker) -> None:
    """Declaring an existing entity with other properties raises PreconditionFailed, from a test or a publisher."""
    memory_broker.declare(Queue("q"), Exchange("x", "topic"))
    with pytest.raises(PreconditionFailed) as info:
        memory_broker.declare(Exchange("x", "fanout"))
    assert info.value.reply_text == (
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': "
        "received 'fanout' but current is 'topic'"
    )
    publisher = Publisher("memory://", declare=[Queue("q", durable=False)])
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'durable' for queue 'q'"):
        await publisher.connect()
    await publisher.close()


async def test_per_call_declare_failure_then_recovery(memory_broker: InMemoryBroker) -> None:
    """A per-call declaration that fails raises and is not remembered; later publishes work."""
    memory_broker.declare(Queue("q", arguments={"x-max-length": 5}))
    async with Publisher("memory://", routing_key="q") as publisher:
        with pytest.raises(PreconditionFailed):
            await publisher.publish("x", declare=[Queue("q")])
        await publisher.publish("y", declare=[Queue("other")], routing_key="other")
        await publisher.publish("z")
    assert [m.payload for m in memory_broker.messages("q")] == ["z"]
    assert [m.payload for m in memory_broker.messages("other")] == ["y"]


async def test_exclusive_queue_goes_with_its_publisher(memory_broker: InMemoryBroker) -> None:
    """An exclusive queue belongs to the publisher that declared it and is deleted when it closes."""
    async with Publisher("memory://", declare=[Queue("mine", exclusive=True)]) as publisher:
        await publisher.connect()
        assert "mine" in memory_broker.queues
        other = Publisher("memory://", declare=[Queue("mine", exclusive=True)])
        with pytest.raises(ChannelError, match="RESOURCE_LOCKED"):
            await other.connect()
        await other.close()
    assert "mine" not in memory_broker.queues


async def test_server_named_queue(memory_broker: InMemoryBroker) -> None:
    """Queue("") gets an amq.gen- name from the broker, and its bindings apply to that queue."""
    x = Exchange("fan", "fanout")
    async with Publisher("memory://", declare=[Queue("", x)], exchange=x) as publisher:
        await publisher.publish("hi")
    (name,) = memory_broker.queues
    assert name.startswith("amq.gen-")
    assert [m.payload for m in memory_broker.messages(name)] == ["hi"]


# -- assertion helpers -----------------------------------------------------------------------------


async def test_assert_published_once_returns_the_message(memory_broker: InMemoryBroker) -> None:
    """assert_published_once filters by queue, exchange, key, payload and a subset of headers."""
    x = Exchange("shop", "topic")
    async with Publisher("memory://", declare=[Queue("billing", x, "order.*")], exchange=x) as publisher:
        await publisher.publish({"order": 1}, routing_key="order.paid", headers={"tenant": "acme", "v": 2})
        await publisher.publish({"order": 2}, routing_key="order.paid")
    message = memory_broker.assert_published_once(
        queue="billing", exchange="shop", routing_key="order.paid", payload={"order": 1}, headers={"tenant": "acme"}
    )
    assert message.headers == {"tenant": "acme", "v": 2}
    assert memory_broker.messages("billing")[0] is message
    assert memory_broker.find(routing_key="order.paid") == memory_broker.published


async def test_assert_published_once_lists_what_was_published(memory_broker: InMemoryBroker) -> None:
    """The failure names the filters, the count, and each published message with what differs."""
    async with Publisher("memory://", declare=[Queue("q")], routing_key="q") as publisher:
        await publisher.publish({"order": 1}, headers={"tenant": "acme"})
        await publisher.publish({"order": 2})
    with pytest.raises(AssertionError) as info:
        memory_broker.assert_published_once(payload={"order": 3}, headers={"tenant": "acme"})
    text = str(info.value)
    assert text.startswith(
        "expected exactly one published message with payload={'order': 3}, headers={'tenant': 'acme'}; found 0."
    )
    assert "#1 exchange='' routing_key='q' queues=['q'] payload={'order': 1}" in text
    assert "- payload: {'order': 1} != expected {'order': 3}" in text
    assert "- headers['tenant']: missing, expected 'acme'" in text
    with pytest.raises(AssertionError, match="found 2"):
        memory_broker.assert_published_once(queue="q")
    with pytest.raises(AssertionError, match="not among the queues it reached"):
        memory_broker.assert_published_once(queue="elsewhere")


def test_assert_published_once_on_an_empty_broker(memory_broker: InMemoryBroker) -> None:
    """With nothing published the failure says so."""
    with pytest.raises(AssertionError, match=r"found 0\.\nNothing was published\."):
        memory_broker.assert_published_once(routing_key="q")


async def test_assert_nothing_published_and_clear(memory_broker: InMemoryBroker) -> None:
    """assert_nothing_published fails on published and refused messages; clear() forgets them all."""
    memory_broker.assert_nothing_published()
    async with Publisher("memory://", declare=[Queue("q")], use_confirms=False) as publisher:
        await publisher.publish("a", routing_key="q")
        await publisher.publish("b", exchange="missing")
    with pytest.raises(AssertionError) as info:
        memory_broker.assert_nothing_published()
    assert "Published (1):" in str(info.value) and "Refused by the broker (1):" in str(info.value)
    assert "error=NotFound(404 NOT_FOUND - no exchange 'missing'" in str(info.value)
    memory_broker.clear()
    memory_broker.assert_nothing_published()
    assert memory_broker.messages("q") == []
    assert "q" in memory_broker.queues


def test_messages_of_an_unknown_queue(memory_broker: InMemoryBroker) -> None:
    """messages() of a queue nobody declared is a LookupError naming the declared ones."""
    memory_broker.declare(Queue("known"))
    with pytest.raises(LookupError, match=r"no queue 'unknown' was declared on memory:// \(declared: 'known'\)"):
        memory_broker.messages("unknown")


# -- sharing brokers, resetting, patching ----------------------------------------------------------


async def test_publishers_on_one_url_share_a_broker(memory_broker: InMemoryBroker) -> None:
    """Publishers on memory:// share one broker; memory://other is another one."""
    async with (
        Publisher("memory://", declare=[Queue("q")], routing_key="q") as first,
        Publisher("memory:///", routing_key="q") as second,
        Publisher("memory://other", routing_key="q") as elsewhere,
    ):
        await asyncio.gather(first.publish(1), second.publish(2), elsewhere.publish(3))
    assert get_broker() is memory_broker
    assert [m.payload for m in memory_broker.messages("q")] == [1, 2]
    assert [m.payload for m in get_broker("memory://other").published] == [3]
    with pytest.raises(ValueError, match="memory://"):
        get_broker("amqp://localhost/")


async def test_publisher_follows_a_reset(memory_broker: InMemoryBroker) -> None:
    """A publisher that outlives reset() declares its entities again on the new broker."""
    async with Publisher("memory://", declare=[Queue("q")], routing_key="q") as publisher:
        await publisher.publish(1)
        reset()
        await publisher.publish(2)
        assert publisher.state.node == "memory://"
    assert [m.payload for m in memory_broker.messages("q")] == [1]
    assert [m.payload for m in get_broker().messages("q")] == [2]


async def test_patch_publisher_redirects_any_url(memory_broker: InMemoryBroker) -> None:
    """Inside patch_publisher a Publisher with an amqp:// URL publishes to the in-memory broker."""
    with patch_publisher() as broker:
        publisher = Publisher("amqp://app:secret@rabbit.invalid:5672/", declare=[Queue("q")], routing_key="q")
        async with publisher:
            await publisher.publish("x", user_id="app")
    assert broker is memory_broker
    assert memory_broker.assert_published_once(queue="q").properties["user_id"] == "app"


def test_patch_publisher_refuses_a_url_that_is_not_memory() -> None:
    """patch_publisher("amqp://...") fails at once, naming the URL."""
    with (
        pytest.raises(ValueError, match="an in-memory broker needs a memory:// URL, not 'amqp://x/'"),
        patch_publisher("amqp://x/"),
    ):
        pass


async def test_patched_broker_fixture(patched_broker: InMemoryBroker) -> None:
    """patched_broker is the memory:// broker, and Publishers with any URL publish to it."""
    async with Publisher("amqp://guest:guest@rabbit.invalid/", routing_key="q") as publisher:
        await publisher.publish("x")
    assert patched_broker is get_broker()
    patched_broker.assert_published_once(routing_key="q", payload="x")


def test_instant_retries_fixture(instant_retries: None) -> None:
    """instant_retries switches the retry policy's testing mode on."""
    assert is_testing()


def test_plugin_is_loaded_from_the_entry_point(request: pytest.FixtureRequest) -> None:
    """The fixtures come from the pytest11 entry point of the installed package."""
    plugin = request.config.pluginmanager.get_plugin("aiopublish")
    assert plugin is not None and plugin.__name__ == "aiopublish._pytest_plugin"


@pytest.mark.slow
def test_fixtures_in_a_fresh_project(pytester: pytest.Pytester) -> None:
    """In a project of its own, the fixtures work in async tests and undo themselves afterwards."""
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        from aiopublish import Publisher, Queue
        from aiopublish.retry import is_testing
        from aiopublish.testing import get_broker

        async def test_uses_fixtures(memory_broker, instant_retries):
            assert is_testing()
            async with Publisher("memory://", declare=[Queue("q")], routing_key="q") as publisher:
                await publisher.publish({"a": 1})
            memory_broker.assert_published_once(queue="q", payload={"a": 1})

        def test_state_was_restored():
            assert not is_testing()
            assert get_broker().published == []
            assert "q" not in get_broker().queues
        """
    )
    # A fresh interpreter: in-process, aiopublish is already imported and cannot be assertion-rewritten.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=2)
    fixtures = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    fixtures.stdout.fnmatch_lines(["*memory_broker*", "*patched_broker*", "*instant_retries*"])


def test_patched_broker_catches_a_module_level_publisher(pytester: pytest.Pytester) -> None:
    """A Publisher built when the app module is imported publishes to patched_broker, and forgets it after each test."""
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        app="""
        from aiopublish import Publisher, Queue

        # As application code does it: built at import time, with a URL nothing answers at.
        publisher = Publisher("amqp://guest:guest@rabbit.invalid/", declare=[Queue("orders")], routing_key="orders")

        async def place_order(number):
            await publisher.publish({"order": number})
        """,
        test_app="""
        import app

        async def test_first(patched_broker):
            await app.place_order(1)
            patched_broker.assert_published_once(queue="orders", payload={"order": 1})

        async def test_second_gets_a_fresh_link(patched_broker):
            assert app.publisher.state.node is None  # the override's link was forgotten
            await app.place_order(2)
            patched_broker.assert_published_once(queue="orders", payload={"order": 2})

        def test_forgotten_after_the_fixture():
            assert app.publisher.state.node is None  # the override's link was forgotten
        """,
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", "--timeout", "60")
    result.assert_outcomes(passed=3)


def test_testing_package_exports_the_same_names() -> None:
    """aiopublish.testing, now a package, still exports exactly the names the module did, each importable."""
    import aiopublish.testing as testing

    assert sorted(testing.__all__) == [
        "InMemoryBroker",
        "MemoryChannel",
        "MemoryLink",
        "Outcome",
        "RecordedMessage",
        "decode_payload",
        "get_broker",
        "headers_match",
        "memory_link",
        "patch_publisher",
        "register_decoder",
        "register_decompressor",
        "reset",
        "topic_matches",
    ]
    assert all(getattr(testing, name) is not None for name in testing.__all__)
