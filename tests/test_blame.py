"""One bad publish among hundreds: only it gets its error, every other one its own true outcome.

Each test starts 500 valid publishes and one bad one in the middle of the stream on one
Publisher, several rounds, then reads the queue back and counts per message id: the bad
publish raises its specific error, every valid one returns normally and is in the queue
exactly as often as it was confirmed (duplicates allowed, loss not), and the connection
survived (no reconnect).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from yarl import URL

from aiopublish import (
    AccessRefused,
    ChannelError,
    ConnectionFailed,
    NotFound,
    PreconditionFailed,
    Publisher,
    PublishResult,
    _blame,
)
from tests.admin import broker_admin
from tests.broker import Broker

VALID = 500
ROUNDS = 3


async def _round(
    publisher: Publisher, tag: str, bad: dict[str, Any], valid: dict[str, Any] | None = None
) -> tuple[list[Any], BaseException | PublishResult]:
    """500 valid publishes with the bad one in the middle; the valid results (in order) and the bad one's."""
    valid = valid or {}
    calls = [publisher.publish({"n": i}, message_id=f"{tag}-{i}", **valid) for i in range(VALID)]
    calls.insert(VALID // 2, publisher.publish({"bad": True}, message_id=f"{tag}-bad", **bad))
    results = await asyncio.gather(*calls, return_exceptions=True)
    bad_result = results.pop(VALID // 2)
    return results, bad_result


async def _check_rounds(
    broker: Broker,
    publisher: Publisher,
    queue: str,
    bad: dict[str, Any],
    expected: type[BaseException],
    valid: dict[str, Any] | None = None,
) -> None:
    for round_number in range(ROUNDS):
        tag = f"r{round_number}-{uuid.uuid4().hex[:6]}"
        results, bad_result = await _round(publisher, tag, bad, valid)
        wrong = [r for r in results if not isinstance(r, PublishResult)]
        assert wrong == [], f"round {round_number}: {len(wrong)} valid publishes raised, first: {wrong[:1]!r}"
        assert isinstance(bad_result, expected), f"round {round_number}: the bad publish gave {bad_result!r}"
        stored = Counter(message.header.properties.message_id for message in await broker.get_all(queue))
        missing = [i for i in range(VALID) if stored[f"{tag}-{i}"] == 0]
        assert missing == [], f"round {round_number}: {len(missing)} confirmed publishes are not in the queue"
        assert stored[f"{tag}-bad"] == 0
    assert publisher.metrics.reconnects == 0


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        pytest.param({"exchange": "aiopublish-no-such-exchange"}, NotFound, id="missing-exchange"),
        pytest.param({"user_id": "mallory"}, PreconditionFailed, id="foreign-user_id"),
    ],
)
async def test_only_the_bad_publish_gets_the_broker_error(
    amqp_url: str, broker: Broker, bad: dict[str, Any], expected: type[ChannelError]
) -> None:
    """A broker refusal of one publish among 500 is raised by it alone; the 500 are confirmed and stored."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await _check_rounds(broker, publisher, queue, bad, expected)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"headers": {"f": float("nan")}}, id="nan-header"),
        pytest.param({"headers": {"f": float("-inf")}}, id="inf-header"),
        pytest.param({"headers": {"big": "x" * 200_000}}, id="header-over-frame_max"),
        pytest.param({"headers": {"t": {"k": {3: "x"}}}}, id="nested-non-str-key"),
        pytest.param({"max_message_size": 10}, id="body-over-max_message_size"),
        pytest.param({"expiration": 1e20}, id="expiration-over-what-the-broker-takes"),
    ],
)
async def test_only_the_bad_publish_gets_its_value_error(amqp_url: str, broker: Broker, bad: dict[str, Any]) -> None:
    """A value that cannot go on the wire is refused before sending (TypeError/ValueError): nothing else notices."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await _check_rounds(broker, publisher, queue, bad, (TypeError, ValueError))  # type: ignore[arg-type]


async def test_foreign_user_id_among_valid_user_ids(amqp_url: str, broker: Broker) -> None:
    """Others sending the valid user_id ("guest", which the broker's text quotes too) are not blamed."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await _check_rounds(broker, publisher, queue, {"user_id": "mallory"}, PreconditionFailed, {"user_id": "guest"})


async def test_suspects_are_isolated_when_the_text_matches_nothing(
    amqp_url: str, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the broker's text tells no publish apart, every in-flight one is tried again alone: only the culprit fails.

    The blame is made to read nothing from the text, so all 501 publishes are suspects
    and the outcome must come from publishing each again on the isolated channel.
    """
    from aiopublish import _blame

    monkeypatch.setattr(_blame, "facts_of", lambda error: None)
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await _check_rounds(broker, publisher, queue, {"exchange": broker.name("missing")}, NotFound)


async def test_a_body_the_broker_finds_too_large_blames_only_it(amqp_url: str, broker: Broker) -> None:
    """A body over the broker's max_message_size (the client's limit raised above it) fails alone with 406."""
    queue = await broker.queue()
    big = "x" * (130 * 1024 * 1024)  # over RabbitMQ 3.x's 128 MiB default
    async with Publisher(
        amqp_url, routing_key=queue, serializer="raw", max_message_size=256 * 1024 * 1024, timeout=120
    ) as publisher:
        tag = uuid.uuid4().hex[:6]
        calls = [publisher.publish(b"small", message_id=f"{tag}-{i}") for i in range(200)]
        calls.insert(100, publisher.publish(big.encode(), message_id=f"{tag}-big"))
        results = await asyncio.gather(*calls, return_exceptions=True)
        bad = results.pop(100)
        assert isinstance(bad, PreconditionFailed) and "message size" in str(bad)
        assert all(isinstance(r, PublishResult) for r in results)
        stored = Counter(m.header.properties.message_id for m in await broker.get_all(queue))
        assert all(stored[f"{tag}-{i}"] >= 1 for i in range(200))
        assert publisher.metrics.reconnects == 0


async def test_with_retry_off_innocents_never_get_the_other_error(amqp_url: str, broker: Broker) -> None:
    """retry=False: the culprit raises its error; an innocent returns or raises a retriable error, never NotFound."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, retry=False) as publisher:
        for _ in range(ROUNDS):
            tag = uuid.uuid4().hex[:6]
            results, bad = await _round(publisher, tag, {"exchange": "aiopublish-no-such-exchange"})
            assert isinstance(bad, NotFound)
            for result in results:
                assert isinstance(result, PublishResult) or (
                    isinstance(result, ConnectionFailed) and not isinstance(result, ChannelError)
                ), result
            stored = Counter(m.header.properties.message_id for m in await broker.get_all(queue))
            returned = [i for i, r in enumerate(results) if isinstance(r, PublishResult)]
            assert all(stored[f"{tag}-{i}"] >= 1 for i in returned)
        assert publisher.metrics.reconnects == 0


async def test_publish_many_with_one_refused_message(amqp_url: str, broker: Broker) -> None:
    """A batch whose one message the broker refuses (size) gives exactly one failed result, the rest confirmed."""
    queue = await broker.queue()
    payloads: list[bytes] = [b"small"] * 500
    payloads[250] = b"x" * (130 * 1024 * 1024)
    async with Publisher(
        amqp_url, routing_key=queue, serializer="raw", max_message_size=256 * 1024 * 1024, timeout=120
    ) as publisher:
        results = await publisher.publish_many(payloads)
        failed = [r for r in results if not r.ok]
        assert [r.index for r in failed] == [250]
        assert isinstance(failed[0].error, PreconditionFailed)
        stored = Counter(m.header.properties.message_id for m in await broker.get_all(queue))
        assert all(stored[r.message_id] >= 1 for r in results if r.ok)
        assert stored[results[250].message_id] == 0
        assert publisher.metrics.reconnects == 0


# -- 403 on the default exchange: a user of our own, with write permission everywhere but there ---------


@pytest_asyncio.fixture
async def limited_user(amqp_url: str) -> AsyncIterator[str]:
    """A uniquely named user that may write to every exchange of "/" except the default one (amq.default)."""
    name = f"aiopublish-test-{uuid.uuid4().hex[:8]}"
    admin = broker_admin(amqp_url)
    await asyncio.to_thread(admin.add_user, name, "pw-" + name)
    try:
        await asyncio.to_thread(admin.set_permissions, "/", name, ".*", r"^t-.*", ".*")
        url = URL(amqp_url).with_user(name).with_password("pw-" + name)
        yield str(url)
    finally:
        await asyncio.to_thread(admin.delete_user, name)


async def test_403_on_the_default_exchange_blames_only_it(broker: Broker, limited_user: str) -> None:
    """The broker calls the default exchange amq.default: a 403 there is the default-exchange publish's alone."""
    queue = await broker.queue()
    exchange = await broker.exchange("fanout")
    await broker.bind(queue, exchange)
    async with Publisher(limited_user, exchange=exchange) as publisher:
        await _check_rounds(broker, publisher, queue, {"exchange": "", "routing_key": queue}, AccessRefused)


async def test_a_channel_error_never_costs_the_connection(amqp_url: str, broker: Broker) -> None:
    """Publishes streaming in over many loop turns while the broker closes the channel: the connection survives.

    A publish frame written on the channel after our close-ok would make the broker close
    the whole connection (504 CHANNEL_ERROR); here writes keep coming turn after turn while
    five bad publishes close the channel, so any such frame shows up as a reconnect.
    """
    queue = await broker.queue()
    tag = uuid.uuid4().hex[:6]
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        tasks: list[asyncio.Task[PublishResult]] = []
        bad: list[asyncio.Task[PublishResult]] = []
        for i in range(2000):
            tasks.append(asyncio.create_task(publisher.publish(i, message_id=f"{tag}-{i}")))
            if i % 400 == 200:
                bad.append(asyncio.create_task(publisher.publish("bad", exchange=broker.name("missing"))))
            await asyncio.sleep(0)  # one publish per loop turn: frames keep being written meanwhile
        results = await asyncio.gather(*tasks, return_exceptions=True)
        bad_results = await asyncio.gather(*bad, return_exceptions=True)
        assert all(isinstance(r, NotFound) for r in bad_results), bad_results
        assert [r for r in results if not isinstance(r, PublishResult)] == []
        assert publisher.metrics.reconnects == 0
    stored = Counter(m.header.properties.message_id for m in await broker.get_all(queue))
    assert all(stored[f"{tag}-{i}"] >= 1 for i in range(2000))


@pytest.mark.parametrize(
    "bad_headers",
    [
        pytest.param({1: "non-str key"}, id="non-str-key"),
        pytest.param({"nested": {"ok": {2: "deep non-str key"}}}, id="nested-non-str-key"),
        pytest.param({"f": float("nan")}, id="nan"),
        pytest.param({"f": float("inf")}, id="inf"),
        pytest.param({"big": "x" * 200_000}, id="over-frame_max"),
    ],
)
async def test_publish_many_refuses_one_bad_header_alone(
    amqp_url: str, broker: Broker, bad_headers: dict[Any, Any]
) -> None:
    """A header that cannot go on the wire fails its message alone (TypeError/ValueError); 500 others confirmed."""
    queue = await broker.queue()
    headers: list[dict[Any, Any] | None] = [{"n": i} for i in range(501)]
    headers[250] = bad_headers
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        results = await publisher.publish_many(range(501), headers=headers)
        failed = [r for r in results if not r.ok]
        assert [r.index for r in failed] == [250]
        assert isinstance(failed[0].error, (TypeError, ValueError)) and "payload 250" in str(failed[0].error)
        assert publisher.metrics.reconnects == 0
        await publisher.publish("after")
    bodies = sorted(m.body for m in await broker.get_all(queue))
    assert len(bodies) == 501 and b'"after"' in bodies


@pytest.mark.parametrize(
    ("error", "facts"),
    [
        (NotFound(404, "NOT_FOUND - no exchange 'shop' in vhost '/'"), _blame.Facts(exchange="shop")),
        (
            AccessRefused(403, "ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'u'"),
            _blame.Facts(exchange="amq.default"),
        ),
        (
            PreconditionFailed(
                406, "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'"
            ),
            _blame.Facts(user_id="bob"),
        ),
        (
            PreconditionFailed(406, "PRECONDITION_FAILED - invalid expiration '-5': {value_negative,-5}"),
            _blame.Facts(expiration="-5"),
        ),
        (
            PreconditionFailed(
                406, "PRECONDITION_FAILED - message size 209715200 is larger than configured max size 134217728"
            ),
            _blame.Facts(body_size=209715200),
        ),
        (PreconditionFailed(406, "PRECONDITION_FAILED - something new"), None),
    ],
)
def test_what_the_broker_text_names(error: ChannelError, facts: _blame.Facts | None) -> None:
    """The facts read from RabbitMQ 3.10's texts (as the broker sends them) name what was refused."""
    assert _blame.facts_of(error) == facts


def test_a_declaration_error_blames_no_publish() -> None:
    """An inequivalent redeclaration (a declare's 406) makes every in-flight publish a bystander."""
    from aiopublish._options import Prepared

    message = Prepared("", "q", False, "id", None, b"", b"body")
    error = PreconditionFailed(406, "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'x' in vhost '/'")
    assert _blame.culprits(error, [message]) == []
    assert _blame.culprits(NotFound(404, "NOT_FOUND - no exchange 'q2' in vhost '/'"), [message]) == []
    assert _blame.culprits(NotFound(404, "NOT_FOUND - no exchange '' in vhost '/'"), [message]) == [0]
    assert _blame.culprits(error, [message], isolated=True) == [0]
