"""Link credit: a publish without credit waits on its link, and times out by its `timeout` (no broker needed).

RabbitMQ withholds credit only under conditions a shared test broker must not be put in
(memory alarms, overloaded queues), so a scripted peer (stub.py) grants it instead.
"""

from __future__ import annotations

import asyncio

import pytest

from aiopublish import Publisher, PublishTimeout
from tests.amqp1.stub import StubPeer


async def test_publishes_beyond_the_credit_wait_then_time_out() -> None:
    """With credit for 2, two publishes are confirmed; the third waits unsent and raises PublishTimeout."""
    async with StubPeer(initial_credit=2) as peer, Publisher(peer.url, routing_key="q", timeout=5) as publisher:
        assert (await publisher.publish(b"1")).status == "confirmed"
        assert (await publisher.publish(b"2")).status == "confirmed"
        with pytest.raises(PublishTimeout):
            await publisher.publish(b"3", timeout=0.3)
        assert peer.transfers == 2


async def test_a_waiting_publish_goes_when_credit_arrives() -> None:
    """Without credit a publish waits; the broker's flow granting credit sends it and it is confirmed."""
    async with StubPeer(initial_credit=0) as peer, Publisher(peer.url, routing_key="q", timeout=10) as publisher:
        task = asyncio.ensure_future(publisher.publish(b"x"))
        await peer.attached.wait()
        assert not peer.transfer_seen.is_set()
        peer.grant(1)
        result = await task
        assert result.status == "confirmed"
        assert peer.transfers == 1


async def test_a_timed_out_publish_is_never_sent_later() -> None:
    """A publish that timed out waiting for credit is dropped: credit granted afterwards goes to the next one."""
    async with StubPeer(initial_credit=0) as peer, Publisher(peer.url, routing_key="q", timeout=10) as publisher:
        with pytest.raises(PublishTimeout):
            await publisher.publish(b"late", timeout=0.2)
        peer.grant(1)
        assert (await publisher.publish(b"next")).status == "confirmed"
        assert peer.transfers == 1


async def test_a_cancelled_publish_leaves_nothing_behind() -> None:
    """A publish cancelled while it waits for credit is never sent, and nothing of it stays in flight."""
    async with StubPeer(initial_credit=0) as peer, Publisher(peer.url, routing_key="q", timeout=10) as publisher:
        task = asyncio.ensure_future(publisher.publish(b"cancelled"))
        await peer.attached.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert publisher.state.in_flight == 0
        peer.grant(1)
        assert (await publisher.publish(b"next")).status == "confirmed"
        assert peer.transfers == 1


async def test_a_timed_out_batch_never_sends_what_waited_for_credit() -> None:
    """publish_many past the credit: the messages left waiting time out, and credit granted later never sends them."""
    async with StubPeer(initial_credit=2) as peer, Publisher(peer.url, routing_key="q", timeout=10) as publisher:
        results = await publisher.publish_many([b"1", b"2", b"3", b"4", b"5"], timeout=0.3)
        assert [r.status for r in results] == ["confirmed", "confirmed", "failed", "failed", "failed"]
        assert all(isinstance(r.error, PublishTimeout) for r in results[2:])
        assert publisher.state.in_flight == 0
        peer.grant(10)
        assert (await publisher.publish(b"next")).status == "confirmed"
        assert peer.transfers == 3


async def test_a_timed_out_batch_without_confirms_is_not_reported_sent() -> None:
    """use_confirms=False: what waited for credit when the batch timed out is "failed", not "sent", and never goes."""
    async with StubPeer(initial_credit=2) as peer, Publisher(peer.url, routing_key="q", timeout=10) as publisher:
        results = await publisher.publish_many([b"1", b"2", b"3", b"4"], timeout=0.3, use_confirms=False)
        assert [r.status for r in results] == ["sent", "sent", "failed", "failed"]
        peer.grant(10)
        assert (await publisher.publish(b"next")).status == "confirmed"
        assert peer.transfers == 3


async def test_a_publish_without_confirms_is_sent_only_once_written() -> None:
    """use_confirms=False: "sent" means the transfer was written, so without credit the publish waits for it."""
    async with StubPeer(initial_credit=0) as peer, Publisher(peer.url, routing_key="q", timeout=10) as publisher:
        task = asyncio.ensure_future(publisher.publish(b"x", use_confirms=False))
        await peer.attached.wait()
        await asyncio.sleep(0)  # the publish has had its turn: it must still be waiting, not "sent"
        assert not task.done()
        assert publisher.state.in_flight == 1
        peer.grant(1)
        result = await task
        assert result.status == "sent"
        await peer.transfer_seen.wait()
        assert peer.transfers == 1
        assert publisher.metrics.confirmed == 0  # written is not confirmed
        assert publisher.state.in_flight == 0


async def test_a_publish_without_confirms_that_timed_out_is_never_sent_later() -> None:
    """use_confirms=False and no credit: PublishTimeout by its timeout, and credit granted later never sends it."""
    async with StubPeer(initial_credit=0) as peer, Publisher(peer.url, routing_key="q", timeout=10) as publisher:
        with pytest.raises(PublishTimeout):
            await publisher.publish(b"late", timeout=0.2, use_confirms=False)
        assert publisher.state.in_flight == 0
        peer.grant(1)
        assert (await publisher.publish(b"next")).status == "confirmed"
        assert peer.transfers == 1
