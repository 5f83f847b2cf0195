"""Code written for nameko's publisher, run unchanged against the real broker (issue 21).

Each test calls aiopublish the way nameko's own code, tests and users' settings call
`nameko.amqp.publish`: positional helpers, attributes assigned after construction, a
subclass overriding class attributes, `retry_policy` read as a dict, nameko's
`TRANSPORT_OPTIONS`, and `use_confirms=False` on a channel without confirm mode. What
arrived is read back over a separate connection (tests/broker.py) or off the wire.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

import aiopublish
from aiopublish import (
    ConnectionFailed,
    NotFound,
    Publisher,
    Queue,
    RetryPolicy,
    UndeliverableMessage,
    get_connection,
    get_producer,
)
from tests.broker import Broker
from tests.faults.proxy import TcpProxy

DEAD_URL = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens on port 1
NO_WAIT = {"interval_start": 0, "interval_step": 0, "interval_max": 0}


# -- 1. get_connection / get_producer with nameko's positional arguments -----------------------


async def test_get_connection_and_get_producer_take_positional_arguments(amqp_url: str, broker: Broker) -> None:
    """get_connection(uri, ssl, login_method, transport_options) and get_producer(uri, confirms, ...) positionally."""
    queue = await broker.queue()
    try:
        async with get_connection(amqp_url, None) as by_position, get_connection(amqp_url) as by_default:
            assert by_position is by_default  # nameko's messaging code calls get_connection(uri, ssl)
        async with get_connection(amqp_url, None, "PLAIN", {"heartbeat": 20}) as other:
            assert other is not by_default
        async with get_producer(amqp_url, False, None, "PLAIN", None) as plain:
            assert plain.publisher_confirms is False
            await plain.default_exchange.publish(aio_pika.Message(b"unconfirmed"), routing_key=queue)
        async with get_producer(amqp_url, True, None, None, {"max_retries": 3, "interval_start": 2}) as confirming:
            assert confirming.publisher_confirms is True
            await confirming.default_exchange.publish(aio_pika.Message(b"confirmed"), routing_key=queue)
        assert [m.body for m in await broker.get_all(queue)] == [b"unconfirmed", b"confirmed"]
    finally:
        await aiopublish.close_pools()


# -- 6. errors through get_producer() are aiopublish's -------------------------------------------


async def test_a_refusal_inside_a_producer_block_is_aiopublish_not_found(amqp_url: str, broker: Broker) -> None:
    """Publishing to a missing exchange in a get_producer() block raises aiopublish.NotFound, not aiormq's error."""
    missing = broker.name("missing-exchange")
    try:
        with pytest.raises(NotFound, match="no exchange") as caught:
            async with get_producer(amqp_url) as producer:
                exchange = await producer.get_exchange(missing, ensure=False)
                await exchange.publish(aio_pika.Message(b"x"), routing_key="r")
        assert type(caught.value).__module__ == "aiopublish"  # shown as aiopublish.NotFound
        # The pool still gives a working producer afterwards.
        queue = await broker.queue()
        async with get_producer(amqp_url) as producer:
            await producer.default_exchange.publish(aio_pika.Message(b"after"), routing_key=queue)
        assert (await broker.get(queue)).body == b"after"
    finally:
        await aiopublish.close_pools()


@pytest.mark.parametrize("caught_where", ["inside", "outside"])
async def test_a_refusal_in_a_producer_block_leaves_asyncio_run_quiet(amqp_url: str, caught_where: str) -> None:
    """A program whose producer block got a broker refusal ends without "unhandled exception during shutdown"."""
    script = textwrap.dedent(
        f"""
        import asyncio, aio_pika, aiopublish

        async def publish(producer):
            exchange = await producer.get_exchange("aiopublish-missing-exchange-x", ensure=False)
            await exchange.publish(aio_pika.Message(b"x"), routing_key="r")

        async def main():
            if {caught_where!r} == "inside":
                async with aiopublish.get_producer({amqp_url!r}) as producer:
                    try:
                        await publish(producer)
                    except Exception as exc:
                        print(type(exc).__name__)
            else:
                try:
                    async with aiopublish.get_producer({amqp_url!r}) as producer:
                        await publish(producer)
                except aiopublish.NotFound as exc:
                    print(type(exc).__name__)

        asyncio.run(main())
        print("done")
        """
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "dev", "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().split() == ["ChannelNotFoundEntity" if caught_where == "inside" else "NotFound", "done"]
    assert stderr.decode() == ""


# -- 2. option attributes read at publish time ---------------------------------------------------


async def test_mandatory_set_after_construction_applies(amqp_url: str, broker: Broker) -> None:
    """publisher.mandatory = True after construction makes an unroutable publish raise UndeliverableMessage."""
    unroutable = broker.name("no-route")
    async with Publisher(amqp_url, routing_key=unroutable) as publisher:
        await publisher.publish("dropped silently, as nameko does with mandatory=False")
        publisher.mandatory = True
        with pytest.raises(UndeliverableMessage) as caught:
            await publisher.publish("returned")
        assert caught.value.reason == "returned"
        publisher.mandatory = False
        await publisher.publish("dropped again")


async def test_delivery_options_set_after_construction_arrive(amqp_url: str, broker: Broker) -> None:
    """priority, delivery_mode, expiration, serializer and compression assigned later reach the wire."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish({"n": 1})
        publisher.priority = 7
        publisher.delivery_mode = 1
        publisher.expiration = 10
        publisher.serializer = "pickle"
        publisher.compression = "gzip"
        await publisher.publish({"n": 2})
    first, second = await broker.get_all(queue)
    before, after = first.header.properties, second.header.properties
    assert (before.priority, before.delivery_mode, before.expiration, before.content_type) == (
        0,
        2,
        None,
        "application/json",
    )
    assert (after.priority, after.delivery_mode, after.expiration, after.content_type) == (
        7,
        1,
        "10000",
        "application/x-python-serialize",
    )
    assert after.headers == {"compression": "application/x-gzip"}


async def test_use_confirms_and_publish_kwargs_set_after_construction_apply(amqp_url: str, broker: Broker) -> None:
    """use_confirms and publish_kwargs (nameko's extra keywords) assigned later apply to the next publish."""
    first, second = await broker.queue(), await broker.queue()
    async with Publisher(amqp_url, routing_key=first) as publisher:
        assert (await publisher.publish("a")).status == "confirmed"
        publisher.use_confirms = False
        assert (await publisher.publish("b")).status == "sent"
        publisher.use_confirms = True
        publisher.publish_kwargs = {"routing_key": second, "headers": {"via": "publish_kwargs"}}
        await publisher.publish("c")
    assert [m.body for m in await broker.get_all(first)] == [b'"a"', b'"b"']
    (moved,) = await broker.get_all(second)
    assert (moved.body, moved.header.properties.headers) == (b'"c"', {"via": "publish_kwargs"})


async def test_declare_set_after_construction_is_declared(amqp_url: str, broker: Broker) -> None:
    """declare assigned after the publisher connected is declared before the next publish (nameko redeclares)."""
    queue = broker.name("declared-later")
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("nowhere to go")
        assert not await broker.exists(queue)
        publisher.declare = [Queue(queue, auto_delete=False)]
        await publisher.publish("declared first")
    assert [m.body for m in await broker.get_all(queue)] == [b'"declared first"']


async def test_retry_and_retry_policy_set_after_construction_apply() -> None:
    """retry_policy and retry assigned later govern the next publish's retries (broker unreachable)."""
    publisher = Publisher(DEAD_URL, timeout=20)
    try:
        publisher.retry_policy = {"max_retries": 2, **NO_WAIT}
        with pytest.raises(ConnectionFailed):
            await publisher.publish("x")
        assert publisher.metrics.retried == 2
        publisher.retry = False
        with pytest.raises(ConnectionFailed):
            await publisher.publish("x")
        assert publisher.metrics.retried == 2  # no retry this time
    finally:
        await publisher.close()


async def test_precedence_class_constructor_later_attribute_call(amqp_url: str, broker: Broker) -> None:
    """A subclass's class attribute < constructor < attribute set later < publish() keyword, on the wire."""
    queue = await broker.queue()

    class Urgent(Publisher):
        priority = 9
        delivery_mode = 1

    async with Urgent(amqp_url, routing_key=queue) as by_class, Urgent(amqp_url, priority=3, routing_key=queue) as ctor:
        await by_class.publish("class")
        await ctor.publish("constructor")
        ctor.priority = 5
        await ctor.publish("later")
        await ctor.publish("call", priority=0)  # a falsy keyword still wins
    got = [
        (m.body, m.header.properties.priority, m.header.properties.delivery_mode) for m in await broker.get_all(queue)
    ]
    assert got == [(b'"class"', 9, 1), (b'"constructor"', 3, 1), (b'"later"', 5, 1), (b'"call"', 0, 1)]


async def test_class_attribute_changed_later_reaches_live_publishers(amqp_url: str, broker: Broker) -> None:
    """Changing a class attribute after construction applies to its live publishers without their own value."""
    queue = await broker.queue()

    class Service(Publisher):
        pass

    async with Service(amqp_url, routing_key=queue) as plain, Service(amqp_url, priority=2, routing_key=queue) as own:
        Service.priority = 6
        await plain.publish("class changed")
        await own.publish("own value kept")
        with pytest.raises(ValueError, match="priority"):
            Service.priority = 256  # refused for every live publisher: the class keeps 6
        assert Service.priority == 6
        await plain.publish("still 6")
    priorities = [m.header.properties.priority for m in await broker.get_all(queue)]
    assert priorities == [6, 2, 6]
    assert Publisher.priority == 0  # the base class is untouched


async def test_a_bad_assignment_is_refused_and_changes_nothing(amqp_url: str, broker: Broker) -> None:
    """An assigned option is checked at once: ValueError/TypeError naming it, the old value kept for publishing."""
    queue = await broker.queue()
    async with Publisher(amqp_url, priority=4, routing_key=queue) as publisher:
        with pytest.raises(ValueError, match="priority"):
            publisher.priority = 300
        with pytest.raises(ValueError, match="delivery_mode"):
            publisher.delivery_mode = 3
        with pytest.raises(TypeError, match=r"unexpected keyword argument.*'routing_kye'"):
            publisher.publish_kwargs = {"routing_kye": queue}
        assert (publisher.priority, publisher.delivery_mode) == (4, 2)
        await publisher.publish("unchanged")
    message = await broker.get(queue)
    assert (message.header.properties.priority, message.header.properties.delivery_mode) == (4, 2)


# -- 7. every reference attribute, with nameko's meaning ----------------------------------------


def test_reference_attributes_hold_nameko_defaults_and_what_was_given() -> None:
    """amqp_uri, ssl, login_method, transport_options, publish_kwargs and every option attribute exist."""
    bare = Publisher("pyamqp://guest:guest@localhost")
    assert bare.amqp_uri == "pyamqp://guest:guest@localhost"
    assert (bare.ssl, bare.login_method, dict(bare.transport_options), bare.publish_kwargs) == (None, None, {}, {})
    defaults = {name: getattr(bare, name) for name in ("use_confirms", "delivery_mode", "mandatory", "priority")}
    assert defaults == {"use_confirms": True, "delivery_mode": 2, "mandatory": False, "priority": 0}
    assert (bare.expiration, bare.serializer, bare.compression, bare.retry, list(bare.declare)) == (
        None,
        "json",
        None,
        True,
        [],
    )
    assert dict(bare.retry_policy) == {"max_retries": 3}

    extra = {"exchange": "orders", "routing_key": "order.placed", "reply_to": "replies", "timeout": 5}
    given = Publisher(
        "amqp://localhost/", ssl=True, login_method="AMQPLAIN", transport_options={"heartbeat": 30}, **extra
    )
    assert given.publish_kwargs == extra  # exactly what the caller passed, nothing added
    assert (given.ssl, given.login_method, given.transport_options) == (True, "AMQPLAIN", {"heartbeat": 30})
    assert given.timeout == 5
    given.timeout = 8  # the attribute and publish_kwargs say the same thing
    assert given.publish_kwargs["timeout"] == 8


def test_connection_attributes_are_fixed_once_connected_and_checked_before() -> None:
    """amqp_uri/ssl/login_method/transport_options can be assigned (and are checked) until the publisher connects."""
    publisher = Publisher("amqp://localhost/")
    publisher.amqp_uri = "amqp://guest:secret@127.0.0.1:5672/"
    assert repr(publisher) == "<Publisher amqp://guest:******@127.0.0.1:5672/ unopened>"
    with pytest.raises(ValueError, match="login_method"):
        publisher.login_method = "CRAM-MD5"  # type: ignore[assignment]
    assert publisher.login_method is None


async def test_connection_attributes_cannot_change_after_connecting(amqp_url: str) -> None:
    """Once connected, assigning amqp_uri is an AttributeError saying why (the connection was made with it)."""
    async with Publisher(amqp_url) as publisher:
        with pytest.raises(AttributeError, match="cannot change once the publisher has connected"):
            publisher.amqp_uri = "amqp://elsewhere/"
        assert publisher.amqp_uri == amqp_url


# -- 3. retry_policy read and updated as nameko's dict -------------------------------------------


async def test_retry_policy_reads_and_updates_like_nameko_dict() -> None:
    """publisher.retry_policy["max_retries"] and dict(publisher.retry_policy, ...) work; the policy object remains."""
    publisher = Publisher(DEAD_URL, timeout=20)
    try:
        assert publisher.retry_policy["max_retries"] == 3
        assert isinstance(Publisher.retry_policy, RetryPolicy)  # still the policy object, runnable
        policy = dict(publisher.retry_policy, max_retries=1, **NO_WAIT)
        assert policy == {"max_retries": 1, **NO_WAIT}
        publisher.retry_policy = policy
        assert publisher.retry_policy is policy
        with pytest.raises(ConnectionFailed):
            await publisher.publish("x")
        assert publisher.metrics.retried == 1  # the updated dict is what the publish retried under
        with pytest.raises(ConnectionFailed):
            await publisher.publish("x", retry_policy=dict(publisher.retry_policy, max_retries=2))
        assert publisher.metrics.retried == 3
    finally:
        await publisher.close()


# -- 5. nameko's TRANSPORT_OPTIONS: connection-establishment retries -----------------------------


class _RetryLogged(logging.Handler):
    """Sets an event once the link logs its `count`-th connection-establishment retry."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.seen = 0
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "(transport options)" in record.getMessage():
            self.seen += 1
            if self.seen >= self.count:
                self.event.set()


@pytest.fixture
def retry_log() -> Iterator[_RetryLogged]:
    handler = _RetryLogged(2)
    logger = logging.getLogger("aiopublish")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


TRANSPORT_OPTIONS = {"max_retries": 20, "interval_start": 0.1, "interval_step": 0.1, "interval_max": 0.2}


@pytest.mark.parametrize("where", ["publisher", "call"])
async def test_transport_options_retry_connecting_while_the_broker_is_down(
    tcp_proxy: TcpProxy, broker: Broker, retry_log: _RetryLogged, where: str
) -> None:
    """nameko's TRANSPORT_OPTIONS retry opening the connection (retry=False: no publish retries) until it answers."""
    queue = await broker.queue()
    tcp_proxy.refuse()
    on_publisher = TRANSPORT_OPTIONS if where == "publisher" else None
    per_call = {"transport_options": TRANSPORT_OPTIONS} if where == "call" else {}
    publisher = Publisher(tcp_proxy.url(), retry=False, transport_options=on_publisher, routing_key=queue)
    try:
        if where == "publisher":
            assert publisher.transport_options == TRANSPORT_OPTIONS
        publish = asyncio.create_task(publisher.publish("after the outage", **per_call))
        await asyncio.wait_for(retry_log.event.wait(), 10)  # refused twice, still trying
        assert not publish.done()
        tcp_proxy.refuse(False)
        result = await asyncio.wait_for(publish, 10)
    finally:
        await publisher.close()
    assert result.status == "confirmed"
    assert publisher.metrics.retried == 0  # the connection was retried, not the publish
    assert (await broker.get(queue)).body == b'"after the outage"'


async def test_get_connection_retries_connecting_with_transport_options(
    tcp_proxy: TcpProxy, retry_log: _RetryLogged
) -> None:
    """get_connection(uri, None, None, TRANSPORT_OPTIONS) keeps trying to connect while the broker is down."""
    tcp_proxy.refuse()

    async def connect() -> bool:
        async with get_connection(tcp_proxy.url(), None, None, TRANSPORT_OPTIONS) as connection:
            return not connection.is_closed

    try:
        opening = asyncio.create_task(connect())
        await asyncio.wait_for(retry_log.event.wait(), 10)  # refused twice, still trying
        assert not opening.done()
        tcp_proxy.refuse(False)
        assert await asyncio.wait_for(opening, 10)
    finally:
        await aiopublish.close_pools()


async def test_without_transport_options_a_down_broker_fails_at_once_with_retry_off(tcp_proxy: TcpProxy) -> None:
    """The contrast: no TRANSPORT_OPTIONS and retry=False, the first refused connection is the error."""
    tcp_proxy.refuse()
    publisher = Publisher(tcp_proxy.url(), retry=False)
    try:
        with pytest.raises(ConnectionFailed):
            await asyncio.wait_for(publisher.publish("x"), 10)
    finally:
        await publisher.close()


async def test_transport_options_max_retries_runs_out() -> None:
    """max_retries=N makes N+1 tries to connect, then the connection error surfaces."""
    publisher = Publisher(DEAD_URL, retry=False, transport_options={"max_retries": 2, **NO_WAIT})
    tries: list[str] = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "(transport options)" in record.getMessage():
                tries.append(record.getMessage())

    handler = Count()
    logging.getLogger("aiopublish").addHandler(handler)
    try:
        with pytest.raises(ConnectionFailed, match=r"127\.0\.0\.1:1\b"):
            await publisher.publish("x")
    finally:
        logging.getLogger("aiopublish").removeHandler(handler)
        await publisher.close()
    assert len(tries) == 2  # 3 tries, 2 retries logged


def test_transport_options_are_checked() -> None:
    """kombu's keys are accepted; a bad value, an unknown key and a contradicting confirm_publish are refused."""
    Publisher(
        "amqp://localhost/", transport_options={"max_retries": None, "interval_start": 2, "confirm_publish": True}
    )
    with pytest.raises(ValueError, match="max_retries"):
        Publisher("amqp://localhost/", transport_options={"max_retries": -1})
    with pytest.raises(ValueError, match=r"unknown transport option.*bogus"):
        Publisher("amqp://localhost/", transport_options={"bogus": 1})
    with pytest.raises(ValueError, match="confirm_publish=False contradicts use_confirms=True"):
        Publisher("amqp://localhost/", transport_options={"confirm_publish": False})


async def test_per_call_transport_options_cannot_reshape_the_connection(amqp_url: str) -> None:
    """A publish's heartbeat differing from the publisher's is a ValueError naming it, before anything is sent."""
    async with Publisher(amqp_url, transport_options={"heartbeat": 30}) as publisher:
        with pytest.raises(ValueError, match=r"'heartbeat'.*set it on the Publisher"):
            await publisher.publish("x", transport_options={"heartbeat": 10})
        with pytest.raises(ValueError, match="confirm_publish"):
            await publisher.publish("x", transport_options={"confirm_publish": False})
        await publisher.publish("x", routing_key="", transport_options={"heartbeat": 30, "max_retries": 1})
        with pytest.raises(TypeError, match=r"unexpected keyword argument.*'transport_options'"):
            await publisher.publish_many(["x"], transport_options={})  # type: ignore[call-arg]


async def test_unknown_publish_keyword_is_a_type_error(amqp_url: str) -> None:
    """Kept on purpose: kombu drops an unknown keyword silently, aiopublish names it before sending."""
    async with Publisher(amqp_url) as publisher:
        with pytest.raises(TypeError, match="'routing_kye'"):
            await publisher.publish("x", routing_kye="orders")  # type: ignore[call-arg]
        assert publisher.metrics.published == 0


# -- 8. use_confirms=False publishes on a channel without confirm mode ---------------------------

_METHOD = 1
_CONFIRM_SELECT = (85, 10)
_BASIC_PUBLISH = (60, 40)
_BASIC_ACK = (60, 80)


def methods(stream: bytes) -> list[tuple[int, tuple[int, int]]]:
    """(channel, (class id, method id)) of every method frame in one direction of an AMQP connection."""
    if stream.startswith(b"AMQP"):
        stream = stream[8:]  # the client's protocol header
    found, offset = [], 0
    while offset + 7 <= len(stream):
        kind, channel, size = struct.unpack_from(">BHI", stream, offset)
        if offset + 8 + size > len(stream):
            break
        if kind == _METHOD:
            found.append((channel, struct.unpack_from(">HH", stream, offset + 7)))
        offset += 8 + size  # header, payload, frame-end octet
    return found


async def test_unconfirmed_publishes_go_on_a_channel_the_broker_never_acks(tcp_proxy: TcpProxy, broker: Broker) -> None:
    """use_confirms=False: publishes go on a channel without confirm.select, and no basic.ack ever comes back."""
    queue = await broker.queue()
    tcp_proxy.recordings = []
    async with Publisher(tcp_proxy.url(), routing_key=queue) as publisher:
        await publisher.publish("confirmed")
        for n in range(3):
            assert (await publisher.publish(n, use_confirms=False)).status == "sent"
        await publisher.publish("confirmed again")
        await until_depth(broker, queue, 5)  # the unconfirmed ones have no ack to wait for
    assert sorted(m.body for m in await broker.get_all(queue)) == [
        b'"confirmed again"',
        b'"confirmed"',
        b"0",
        b"1",
        b"2",
    ]
    (to_broker, from_broker) = tcp_proxy.recordings[0]
    sent, received = methods(bytes(to_broker)), methods(bytes(from_broker))
    publishes = [channel for channel, method in sent if method == _BASIC_PUBLISH]
    confirming = {channel for channel, method in sent if method == _CONFIRM_SELECT}
    unconfirmed = publishes[1]
    assert publishes == [publishes[0], unconfirmed, unconfirmed, unconfirmed, publishes[0]]
    assert publishes[0] in confirming and unconfirmed not in confirming
    acked_channels = {channel for channel, method in received if method == _BASIC_ACK}
    assert acked_channels == {publishes[0]}  # acks only where the confirmed publishes went


async def test_unconfirmed_publisher_warns_about_mandatory_and_still_publishes(amqp_url: str, broker: Broker) -> None:
    """use_confirms=False with mandatory: nameko's UserWarning, and the message goes out."""
    queue = await broker.queue()
    async with Publisher(amqp_url, use_confirms=False, routing_key=queue) as publisher:
        with pytest.warns(UserWarning, match="cannot be detected without publish confirms"):
            await publisher.publish("m", mandatory=True)
        results = await publisher.publish_many(["a", "b"])
        assert [r.status for r in results] == ["sent", "sent"]
        await until_depth(broker, queue, 3)


async def until_depth(broker: Broker, queue: str, depth: int, within: float = 10.0) -> None:
    """Unconfirmed publishes have no ack to wait on: read the queue's depth until it is reached (or fail)."""
    async with asyncio.timeout(within):
        while await broker.depth(queue) < depth:  # noqa: ASYNC110 - the broker announces no depth
            await asyncio.sleep(0.02)


# -- 4. nameko's AMQP_SSL (py-amqp's keys): checked when the Publisher is built -----------------


@pytest.mark.parametrize("option", ["ca_certs", "cafile", "certfile", "keyfile"])
def test_a_missing_tls_file_is_an_error_naming_option_and_path(option: str, tmp_path: Path) -> None:
    """A CA, certificate or key file that does not exist is a ValueError at construction, naming both."""
    missing = tmp_path / f"{option}.pem"
    settings: dict[str, object] = {option: str(missing)}
    if option == "keyfile":
        settings["certfile"] = str(tmp_path / "also-missing-cert.pem")
        missing = tmp_path / "also-missing-cert.pem"
        option = "certfile"
    with pytest.raises(ValueError, match=rf"ssl option '{option}': no such file: '{re.escape(str(missing))}'"):
        Publisher("amqps://localhost/", ssl=settings)


def test_py_amqp_ssl_keys_make_the_context_they_mean() -> None:
    """cert_reqs, ssl_version and ciphers of nameko's AMQP_SSL turn into the SSLContext's settings."""
    none = Publisher("amqps://localhost/", ssl={"cert_reqs": ssl.CERT_NONE})._params.context
    assert none is not None and (none.verify_mode, none.check_hostname) == (ssl.CERT_NONE, False)
    pinned = Publisher(
        "amqps://localhost/",
        ssl={"cert_reqs": ssl.CERT_REQUIRED, "ssl_version": ssl.PROTOCOL_TLSv1_2, "ciphers": "ECDHE+AESGCM"},
    )._params.context
    assert pinned is not None and pinned.verify_mode == ssl.CERT_REQUIRED and pinned.check_hostname
    assert (pinned.minimum_version, pinned.maximum_version) == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ValueError, match="'ciphers'"):
        Publisher("amqps://localhost/", ssl={"ciphers": "NO-SUCH-CIPHER"})
    with pytest.raises(ValueError, match="name the same thing"):
        Publisher("amqps://localhost/", ssl={"ca_certs": "a.pem", "cafile": "b.pem"})
    with pytest.raises(ValueError, match="contradict"):
        Publisher("amqps://localhost/", ssl={"verify": True, "cert_reqs": ssl.CERT_NONE})
