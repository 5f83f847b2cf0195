"""The connection dies while the client's write buffer is backed up: every reported outcome is true.

A proxy stops forwarding (the broker reads nothing more, the kernel buffers fill, then
the client's own buffer passes its high-water mark and writes wait for it to drain),
then cuts the connection. Whatever publish() and publish_many() report is compared,
message id by message id, with what the queue really holds:

- every message reported "confirmed" is in the queue (loss = 0);
- with retry on, every message ends confirmed (duplicates allowed);
- with retry off, every message that is not confirmed has an error status, and every
  error is aiopublish's own (never a raw OSError or ConnectionResetError).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

import pytest

from aiopublish import AiopublishError, Publisher, RetryPolicy
from aiopublish.retry import stop_after_delay, wait_exponential
from tests.broker import Broker, until
from tests.faults.proxy import TcpProxy
from tests.faults.scenario import Report, count_queue

FAST_RETRY = RetryPolicy(stop=stop_after_delay(60), wait=wait_exponential(multiplier=0.05, max=0.5))

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _small_proxy_buffer(tcp_proxy: TcpProxy) -> None:
    """The proxy reads the client through a 64 KiB kernel buffer: stalled, it backs the client up soon.

    Left to itself Linux grows that buffer up to tcp_rmem's maximum (32 MiB on this machine),
    which 20,000 messages of 1 KB might never fill.
    """
    tcp_proxy.limit_receive_buffer(64 * 1024)


async def _stall_then_cut(
    broker: Broker, queue: str, proxy: TcpProxy, publisher: Publisher, work: asyncio.Future[object], count: int
) -> None:
    """Once the queue holds a tenth, stop forwarding until the publisher's write buffer is backed up, then cut."""
    # The proxy runs in this event loop beside the publisher: what was written is not yet
    # forwarded, so the queue itself says when the broker has taken a part of the work.
    while await broker.depth(queue) < count // 10:
        assert not work.done(), "the work ended before the broker had a tenth of it"
        await asyncio.sleep(0.005)
    proxy.go_silent(True)
    await until(
        lambda: publisher.state.backed_up or work.done(),
        within=60,
        every=0.01,
        what="the publisher's write buffer backed up past its high-water mark",
    )
    assert not work.done(), "the work ended before the write buffer backed up: nothing was tested"
    proxy.go_silent(False)  # connections accepted from now on are forwarded again
    proxy.drop_all()


async def _in_queue(broker: Broker, queue: str) -> Counter[str]:
    report = await count_queue(broker.url, queue, Report())
    return report.in_queue


def _check(statuses: dict[str, str], errors: list[BaseException], in_queue: Counter[str], retry: bool) -> None:
    confirmed = {message_id for message_id, status in statuses.items() if status == "confirmed"}
    absent = confirmed - set(in_queue)
    assert not absent, f"{len(absent)} of {len(confirmed)} messages reported confirmed are not in the queue"
    raw = [error for error in errors if not isinstance(error, AiopublishError)]
    assert not raw, f"{len(raw)} errors are not aiopublish's own, e.g. {raw[0]!r}"
    if retry:
        others = Counter(status for status in statuses.values() if status != "confirmed")
        assert not others, f"with retry on, messages ended {dict(others)} instead of confirmed"
    else:
        # Unconfirmed messages each have an error status; some did fail, or nothing was tested.
        assert set(statuses.values()) <= {"confirmed", "failed"}, Counter(statuses.values())
        assert len(errors) == sum(1 for status in statuses.values() if status == "failed") > 0


@pytest.mark.parametrize("retry", [True, False], ids=["retry", "no-retry"])
@pytest.mark.parametrize(
    ("count", "size", "max_in_flight"),
    [(100_000, 1024, 50_000), (3_000, 64 * 1024, None)],
    ids=["100k-x-1KB", "3k-x-64KB"],
)
async def test_publish_many_cut_while_backed_up(
    broker: Broker, tcp_proxy: TcpProxy, retry: bool, count: int, size: int, max_in_flight: int | None
) -> None:
    """publish_many: cut while the buffer is backed up; "confirmed" only for what the queue holds."""
    queue = await broker.queue()
    body = os.urandom(size // 2).hex()
    async with Publisher(
        tcp_proxy.url(), retry=retry, retry_policy=FAST_RETRY, max_in_flight=max_in_flight, timeout=120
    ) as publisher:
        await publisher.connect()
        work = asyncio.ensure_future(publisher.publish_many([body] * count, routing_key=queue, serializer="raw"))
        await _stall_then_cut(broker, queue, tcp_proxy, publisher, work, count)
        results = await work
    statuses = {result.message_id: result.status for result in results}
    assert len(statuses) == count
    errors = [result.error for result in results if result.error is not None]
    _check(statuses, errors, await _in_queue(broker, queue), retry)


@pytest.mark.parametrize("retry", [True, False], ids=["retry", "no-retry"])
async def test_concurrent_publishes_cut_while_backed_up(broker: Broker, tcp_proxy: TcpProxy, retry: bool) -> None:
    """20,000 concurrent publish() x 4 KB: cut while backed up; no false confirm, no raw OSError."""
    queue = await broker.queue()
    # 4 KB each: 80 MB. With 1 KB (20 MB) the broker's own socket buffer (up to tcp_rmem's 32 MiB)
    # sometimes took everything before the queue held a tenth, and the client never backed up.
    body = os.urandom(2048).hex()
    count = 20_000
    async with Publisher(
        tcp_proxy.url(), retry=retry, retry_policy=FAST_RETRY, max_in_flight=count, timeout=120
    ) as publisher:
        await publisher.connect()
        ids = [f"m-{index}" for index in range(count)]
        work = asyncio.gather(
            *(publisher.publish(body, routing_key=queue, serializer="raw", message_id=i) for i in ids),
            return_exceptions=True,
        )
        await _stall_then_cut(broker, queue, tcp_proxy, publisher, work, count)
        outcomes = await work
    statuses: dict[str, str] = {}
    errors: list[BaseException] = []
    for message_id, outcome in zip(ids, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            statuses[message_id] = "failed"
            errors.append(outcome)
        else:
            statuses[message_id] = outcome.status
    _check(statuses, errors, await _in_queue(broker, queue), retry)


async def test_relay_deletes_only_rows_whose_ack_was_read(broker: Broker, tcp_proxy: TcpProxy, tmp_path: Path) -> None:
    """An outbox relay cut while backed up: every row it deletes is a message the queue holds; none is lost."""
    from aiopublish.outbox import Outbox

    queue = await broker.queue()
    count = 20_000
    outbox = Outbox(f"sqlite:///{tmp_path}/outbox.db", routing_key=queue, serializer="raw")
    # 2 KB each: 40 MB, well past what the kernel's buffers and the 4 MiB high-water mark hold.
    body = os.urandom(1024).hex()
    ids = [await outbox.add(body) for _ in range(count)]
    never: asyncio.Future[object] = asyncio.get_running_loop().create_future()  # the relay runs until stopped
    async with Publisher(tcp_proxy.url(), retry=False, max_in_flight=count, timeout=120) as publisher:
        async with outbox.relay(publisher, batch_size=count) as relay:
            await _stall_then_cut(broker, queue, tcp_proxy, publisher, never, count)
            await relay.wait_idle()
        assert relay.metrics.deferred > 0, "the cut left no row for later: nothing was tested"
    never.cancel()
    assert (await outbox.stats()).pending == 0
    await outbox.close()
    in_queue = await _in_queue(broker, queue)
    missing = set(ids) - set(in_queue)
    assert not missing, f"{len(missing)} rows were deleted as relayed but are not in the queue"
