"""RabbitMQ 4.0's refusal of an attach by ending the session, replayed by the scripted peer (no broker needed).

4.0 answers an attach to a missing queue or exchange with an `end` of the whole session
(amqp:not-found) where 4.1+ detaches the link alone: the publish whose attach it was
gets NotFound, and every other publish in flight on that session is retried on a new
one. CI's 4.0 run tests this against 4.0 itself (test_broker.py); here it runs on every
run, whatever the broker. Each test also counts, by message-id, what the peer accepted:
nothing may be reported confirmed that it did not accept.
"""

from __future__ import annotations

import asyncio

import pytest

from aiopublish import NotFound, Publisher, PublishResult
from tests.amqp1.stub import StubPeer

# Retried at once: the retries here are of a session the peer ended, not of a broker away.
NO_WAIT = {"max_retries": 3, "interval_start": 0, "interval_step": 0}


def assert_confirmed_only_what_was_accepted(results: list[PublishResult], peer: StubPeer) -> None:
    unaccepted = [r.message_id for r in results if r.status == "confirmed" and not peer.accepted.get(r.message_id)]
    assert unaccepted == []


async def test_the_refused_publish_is_not_found_and_the_others_in_flight_are_retried() -> None:
    """Five publishes in flight (three written and unconfirmed, two waiting for credit) when the
    session ends for a refused attach: that publish raises NotFound without a retry, the five are
    published again on a new session and confirmed, each accepted once."""
    async with (
        StubPeer(initial_credit=3, missing=("/queues/missing",)) as peer,
        Publisher(peer.url, routing_key="q", timeout=10, retry_policy=NO_WAIT) as publisher,
    ):
        peer.hold = True  # the first session confirms nothing: its deliveries are all in flight at its end
        good = [asyncio.ensure_future(publisher.publish(b"%d" % i, message_id=f"good-{i}")) for i in range(5)]
        await peer.wait_for_transfers(3)
        assert publisher.state.in_flight == 5
        peer.hold = False
        peer.attached.clear()
        with pytest.raises(NotFound, match=r"amqp:not-found: no queue 'missing' in vhost '/'"):
            await publisher.publish(b"refused", routing_key="missing", message_id="refused")
        await peer.attached.wait()  # the new session's link, with 3 credit: 2 more for the rest
        peer.grant(2)
        results = list(await asyncio.gather(*good))
        assert [r.status for r in results] == ["confirmed"] * 5
        assert_confirmed_only_what_was_accepted(results, peer)
        assert peer.accepted == {f"good-{i}": 1 for i in range(5)}
        assert peer.sessions_ended == 1  # the refused publish was not retried: it would have attached again
        assert publisher.state.in_flight == 0


async def test_the_publisher_goes_on_after_the_session_ended() -> None:
    """After the refusal the publisher publishes on a new session, and a second refusal is NotFound again."""
    async with (
        StubPeer(initial_credit=100, missing=("/exchanges/gone",)) as peer,
        Publisher(peer.url, routing_key="q", timeout=10, retry_policy=NO_WAIT) as publisher,
    ):
        assert (await publisher.publish(b"before", message_id="before")).status == "confirmed"
        with pytest.raises(NotFound, match=r"amqp:not-found: no exchange 'gone' in vhost '/'"):
            await publisher.publish(b"refused", exchange="gone", routing_key="k", message_id="refused-1")
        after = await publisher.publish(b"after", message_id="after")
        assert after.status == "confirmed"
        with pytest.raises(NotFound, match=r"no exchange 'gone'"):
            await publisher.publish(b"refused", exchange="gone", routing_key="k", message_id="refused-2")
        again = await publisher.publish(b"again", message_id="again")
        assert again.status == "confirmed"
        assert peer.accepted == {"before": 1, "after": 1, "again": 1}
        assert peer.sessions_ended == 2
        assert publisher.state.in_flight == 0


async def test_a_batch_in_flight_gets_the_truth_per_message() -> None:
    """publish_many to a good queue and a missing one: the message to the missing queue fails
    with NotFound, the rest (lost with the session) are retried and confirmed, each accepted once."""
    keys = ["q", "q", "q-missing", "q", "q"]
    async with (
        StubPeer(initial_credit=100, missing=("/queues/q-missing",)) as peer,
        Publisher(peer.url, timeout=10, retry_policy=NO_WAIT) as publisher,
    ):
        results = await publisher.publish_many([b"%d" % i for i in range(5)], routing_keys=keys)
        assert [r.status for r in results] == ["confirmed", "confirmed", "failed", "confirmed", "confirmed"]
        assert isinstance(results[2].error, NotFound)
        assert "no queue 'q-missing'" in str(results[2].error)
        assert_confirmed_only_what_was_accepted(results, peer)
        assert peer.accepted == {r.message_id: 1 for r in results if r.status == "confirmed"}
        assert peer.sessions_ended == 1
        assert publisher.state.in_flight == 0


async def test_a_link_still_attaching_to_a_good_queue_is_retried_not_refused() -> None:
    """The missing queue's attach goes first, a good queue's second: the good one was still waiting
    for its attach when the session ended, and is published again, not failed with NotFound. Its
    name is a part of the missing one's: the refusal goes by the whole name."""
    async with (
        StubPeer(initial_credit=100, missing=("/queues/q-missing",)) as peer,
        Publisher(peer.url, timeout=10, retry_policy=NO_WAIT) as publisher,
    ):
        results = await publisher.publish_many([b"refused", b"good"], routing_keys=["q-missing", "q"])
        assert [r.status for r in results] == ["failed", "confirmed"]
        assert isinstance(results[0].error, NotFound)
        assert peer.accepted == {results[1].message_id: 1}
        assert peer.sessions_ended == 1


async def test_a_queue_named_as_the_missing_exchange_is_retried_not_refused() -> None:
    """The missing exchange x and a good queue x attaching together: "no exchange 'x' in vhost '/'"
    refuses the exchange's publish alone, the queue's is published again on a new session."""
    async with (
        StubPeer(initial_credit=100, missing=("/exchanges/x",)) as peer,
        Publisher(peer.url, timeout=10, retry_policy=NO_WAIT) as publisher,
    ):
        refused = asyncio.ensure_future(publisher.publish(b"refused", exchange="x", routing_key="k"))
        good = asyncio.ensure_future(publisher.publish(b"good", routing_key="x", message_id="good"))
        with pytest.raises(NotFound, match=r"no exchange 'x'"):
            await refused
        assert (await good).status == "confirmed"
        assert peer.accepted == {"good": 1}
        assert peer.sessions_ended == 1
