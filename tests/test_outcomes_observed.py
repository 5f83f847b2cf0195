"""An outcome is observed, never inferred: the write path dies under a batch or a publish (in-memory broker).

The in-memory channel is made to behave as a real one whose connection is lost while its
write buffer is backed up: after `cut_after` messages, waiting for the buffer to drain
raises what asyncio's StreamWriter.drain raises then (ConnectionResetError), and the
channel is closed. Only what the broker recorded may be reported "confirmed".
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiopublish import AiopublishError, ConnectionFailed, Publisher, Queue, RetryPolicy
from aiopublish.retry import stop_after_attempt, wait_none
from aiopublish.testing import InMemoryBroker, MemoryChannel, get_broker


class _Cut:
    """After `after` sends, the channel says it is backed up and its drain raises, once, as on a lost connection."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.sends = 0
        self.cuts = 0
        self.cut: asyncio.Future[None] | None = None  # resolved when the connection goes


@pytest.fixture
def cut(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Cut]:
    state = _Cut(after=600)
    send = MemoryChannel.send

    def counting_send(self: MemoryChannel, *args: object, **kwargs: object) -> object:
        state.sends += 1
        return send(self, *args, **kwargs)  # type: ignore[arg-type]

    def backed_up(self: MemoryChannel) -> bool:
        return state.cuts == 0 and state.sends >= state.after

    async def wait_writable(self: MemoryChannel) -> None:
        if not backed_up(self):
            return
        # Every publish waiting on the drain when the connection goes fails together, as on a real one.
        if state.cut is None:
            state.cut = asyncio.get_running_loop().create_future()
            state.cut.get_loop().call_soon(state.cut.set_result, None)
        await state.cut
        if not self.is_closed:
            state.cuts += 1
            self.close()
        raise ConnectionResetError("Connection lost")

    monkeypatch.setattr(MemoryChannel, "send", counting_send)
    monkeypatch.setattr(MemoryChannel, "backed_up", property(backed_up))
    monkeypatch.setattr(MemoryChannel, "wait_writable", wait_writable)
    yield state


def _url() -> tuple[str, InMemoryBroker]:
    url = f"memory://{uuid.uuid4().hex[:8]}"
    return url, get_broker(url)


ONE_RETRY = RetryPolicy(stop=stop_after_attempt(3), wait=wait_none())


@pytest.mark.parametrize("retry", [True, False], ids=["retry", "no-retry"])
async def test_publish_many_confirms_only_what_the_broker_recorded(cut: _Cut, retry: bool) -> None:
    """1,000 messages, the connection lost at the 600th write's drain: "confirmed" only for the recorded ones."""
    url, broker = _url()
    async with Publisher(url, declare=[Queue("q")], routing_key="q", retry=retry, retry_policy=ONE_RETRY) as p:
        results = await p.publish_many(range(1000))
        metrics = p.metrics
    recorded = {message.message_id for message in broker.messages("q")}
    confirmed = {result.message_id for result in results if result.status == "confirmed"}
    assert cut.cuts == 1, "the drain never failed: nothing was tested"
    assert confirmed <= recorded, f"{len(confirmed - recorded)} reported confirmed were never recorded"
    assert metrics.confirmed == len(confirmed)
    if retry:
        assert len(confirmed) == 1000
    else:
        failed = [result for result in results if result.status != "confirmed"]
        assert failed, "the cut failed no message: nothing was tested"
        assert all(isinstance(result.error, ConnectionFailed) for result in failed), failed[0]
        assert len(confirmed) + len(failed) == 1000


async def test_publish_many_confirms_off_reports_sent_only_when_written(cut: _Cut) -> None:
    """Confirms off, no retry: "sent" only for messages the broker got, the rest "failed" with aiopublish's error."""
    url, broker = _url()
    async with Publisher(url, declare=[Queue("q")], routing_key="q", retry=False, use_confirms=False) as p:
        results = await p.publish_many(range(1000))
    recorded = {message.message_id for message in broker.messages("q")}
    sent = {result.message_id for result in results if result.status == "sent"}
    assert sent <= recorded
    failed = [result for result in results if result.status == "failed"]
    assert failed and all(isinstance(result.error, AiopublishError) for result in failed)


@pytest.mark.parametrize("retry", [True, False], ids=["retry", "no-retry"])
async def test_publish_raises_aiopublish_error_when_the_drain_fails(cut: _Cut, retry: bool) -> None:
    """A publish that meets a lost connection at its drain is retried, or raises ConnectionFailed: never OSError."""
    cut.after = 1  # the first send makes the channel backed up: the next publish waits for the drain
    url, broker = _url()
    async with Publisher(url, declare=[Queue("q")], routing_key="q", retry=retry, retry_policy=ONE_RETRY) as p:
        await p.publish("first")
        if retry:
            result = await p.publish("second")
            assert result.status == "confirmed"
        else:
            with pytest.raises(ConnectionFailed, match="Connection lost"):
                await p.publish("second")
    assert cut.cuts == 1
    payloads = [message.payload for message in broker.messages("q")]
    assert payloads == (["first", "second"] if retry else ["first"])


async def test_relay_deletes_only_rows_whose_ack_was_read(cut: _Cut, tmp_path: Path) -> None:
    """An outbox relay over a connection lost mid-batch: every row it marks done is a message the broker has."""
    from aiopublish.outbox import Outbox

    url, broker = _url()
    outbox = Outbox(f"sqlite:///{tmp_path}/outbox.db", routing_key="q")
    ids = [await outbox.add({"n": n}) for n in range(1000)]
    async with (
        Publisher(url, declare=[Queue("q")], retry=False) as publisher,
        outbox.relay(publisher, keep_done=3600) as relay,
    ):
        await relay.wait_idle()
    assert cut.cuts == 1, "the drain never failed: nothing was tested"
    assert relay.metrics.deferred > 0, "no row was left for later: the cut failed nothing"
    recorded = Counter(message.message_id for message in broker.messages("q"))
    assert set(recorded) == set(ids)
    assert (await outbox.stats()).pending == 0
    await outbox.close()


async def test_a_lost_connection_logs_one_retry_line_not_one_per_publish(
    cut: _Cut, caplog: pytest.LogCaptureFixture
) -> None:
    """200 publishes retried together after one connection loss: one WARNING line stands for them all."""
    cut.after = 1
    url, broker = _url()
    caplog.set_level(logging.WARNING, logger="aiopublish")
    async with Publisher(url, declare=[Queue("q")], routing_key="q", retry_policy=ONE_RETRY) as p:
        await p.publish("first")
        results = await asyncio.gather(*(p.publish(n) for n in range(200)))
        retried = p.metrics.retried
    assert all(result.status == "confirmed" for result in results)
    assert retried >= 100, f"only {retried} retries: the loss did not hit the publishes together"
    lines = [r for r in caplog.records if "failed on attempt" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert len(broker.messages("q")) == 201
