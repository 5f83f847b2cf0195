"""The in-memory broker imitates the RabbitMQ version under test: one table of 4.x cases, run on both.

The memory broker is created with the version the real broker announces
(``memory://...?rabbitmq=4.3.6``), so on CI's 3.10, 4.0 and 4.3 runs each case must come out the
same on both: the default body limit (refused before sending), the broker's own size refusal
(406, with the option raised above it), a declaration using a feature 4.3 denies, and a frame_max
below 4.1's least.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from aiopublish import Publisher, Queue
from aiopublish.testing import get_broker, reset
from aiopublish.testing._vhost import DEFAULT_RABBITMQ
from tests.broker import Broker
from tests.rabbitmq_chroots import VERSIONS, announced_version
from tests.test_routing_parity import outcome

MiB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    """One publish: what to publish with which options; the outcome expected by the broker's version."""

    id: str
    body: Callable[[tuple[int, ...]], bytes]
    expect: Callable[[tuple[int, ...]], str | None]
    options: dict[str, Any] = field(default_factory=dict)
    declare_arguments: dict[str, Any] = field(default_factory=dict)


def default_limit(version: tuple[int, ...]) -> int:
    return 16 * MiB if version >= (4,) else 128 * MiB


CASES = [
    Case("small body", lambda v: b"ok", lambda v: None),
    Case("body at the default limit", lambda v: b"x" * default_limit(v), lambda v: None),
    Case("one byte over the default limit", lambda v: b"x" * (default_limit(v) + 1), lambda v: "ValueError"),
    Case(
        "17 MiB with max_message_size 64 MiB",
        lambda v: b"x" * (17 * MiB),
        lambda v: "PreconditionFailed 406" if v >= (4,) else None,
        options={"max_message_size": 64 * MiB},
    ),
    Case(
        "x-queue-master-locator",
        lambda v: b"ok",
        lambda v: "UnsupportedByBroker" if v >= (4, 3) else None,
        declare_arguments={"x-queue-master-locator": "client-local"},
    ),
    Case(
        "frame_max 4096",
        lambda v: b"ok",
        lambda v: "UnsupportedByBroker" if v >= (4, 1) else None,
        options={"transport_options": {"frame_max": 4096}},
    ),
]


async def _run(url: str, queue: str, case: Case, version: tuple[int, ...]) -> tuple[str | None, str]:
    """Publish the case's body to `queue` (declared by the publish); the outcome and the error's text."""
    transport = case.options.get("transport_options")
    options = {key: value for key, value in case.options.items() if key != "transport_options"}
    declare = [Queue(queue, durable=True, arguments=case.declare_arguments or None)]
    publisher = Publisher(url, routing_key=queue, serializer="raw", timeout=60, transport_options=transport)
    try:
        await publisher.publish(case.body(version), declare=declare, **options)
    except Exception as exc:
        return outcome(exc), str(exc)
    finally:
        await publisher.close()
    return None, ""


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_memory_broker_matches_the_rabbitmq_under_test(amqp_url: str, broker: Broker, case: Case) -> None:
    """Each case ends the same way, with the same words, on the real broker and the memory broker of its version."""
    announced = announced_version(amqp_url)
    memory = get_broker(f"memory://parity-{uuid.uuid4().hex[:8]}?rabbitmq={announced}")
    version = memory.rabbitmq.version
    queue = broker.name("v")
    try:
        real, real_text = await _run(amqp_url, queue, case, version)
        imitated, imitated_text = await _run(memory.url, queue, case, version)
        assert (real, imitated) == (case.expect(version), case.expect(version))
        assert imitated_text == real_text
        stored = [len(message.body) for message in await broker.get_all(queue)] if await broker.exists(queue) else []
        kept = [len(message.body) for message in memory.messages(queue)] if queue in memory.queues else []
        assert kept == stored == ([] if real else [len(case.body(version))])
    finally:
        reset()


def test_the_default_imitates_the_newest_version_tested() -> None:
    """memory:// imitates the newest RabbitMQ series CI runs (tests/rabbitmq_chroots.py VERSIONS)."""
    newest = max(VERSIONS, key=lambda series: tuple(map(int, series.split("."))))
    assert DEFAULT_RABBITMQ.startswith(newest + ".")
    reset()
    try:
        assert get_broker("memory://").rabbitmq.name == f"RabbitMQ {DEFAULT_RABBITMQ}"
        assert get_broker("memory://old?rabbitmq=3.10").rabbitmq.max_message_size == 128 * MiB
    finally:
        reset()


async def test_a_bad_or_conflicting_version_is_refused() -> None:
    """A version that is not one is refused before anything is published; another version for an existing
    broker is refused."""
    publisher = Publisher("memory://?rabbitmq=latest", routing_key="q")
    try:
        with pytest.raises(ValueError, match=r"rabbitmq= must be a RabbitMQ version such as 4\.3"):
            await publisher.publish(b"never")
    finally:
        await publisher.close()
    reset()
    try:
        get_broker("memory://v?rabbitmq=4.0")
        with pytest.raises(ValueError, match=r"asks for RabbitMQ 3\.10, but the in-memory broker .* imitates"):
            get_broker("memory://v?rabbitmq=3.10")
        assert get_broker("memory://v").rabbitmq.version == (4, 0)  # no version: whichever it imitates
    finally:
        reset()
