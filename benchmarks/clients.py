"""Client modes for the publisher benchmark.

Every mode publishes ``n`` persistent ~150-byte JSON messages to ``queue`` through the
default exchange with publisher confirms on, and returns once every message is
confirmed. Connection and channel set-up happen before the clock starts; the clock
stops when the last confirm has arrived. Each client library is imported lazily,
inside its mode, so that a worker process only loads the library it measures (and so
that the time-to-first-publish modes really include the import).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

WINDOW = 512
CONTENT_TYPE = "application/json"


def installed_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Each distribution's installed version, None for one that is not installed (for the results files)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def payload(i: int) -> dict[str, Any]:
    """The message of the workload, as the application holds it."""
    return {"id": i, "body": "x" * 120}


def body(i: int) -> bytes:
    """The message of the workload, serialised (about 150 bytes)."""
    return json.dumps(payload(i)).encode()


def maxrss_kb() -> int:
    """Peak resident set size of this process so far, in KiB (Linux units)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@dataclass
class Outcome:
    """What one mode measured inside its worker process."""

    wall_s: float
    cpu_s: float
    confirmed: int
    failures: int = 0
    latencies: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Clock:
    """Wall and process-CPU time of the measured section."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def stop(self, n: int, failures: int = 0, latencies: list[float] | None = None) -> Outcome:
        wall = time.perf_counter() - self.wall0
        cpu = time.process_time() - self.cpu0
        return Outcome(wall, cpu, confirmed=n - failures, failures=failures, latencies=latencies)


PublishOne = Callable[[int], Awaitable[bool]]


async def run_sequential(one: PublishOne, n: int) -> Outcome:
    """One publish at a time, each awaited until confirmed; records per-message latency."""
    latencies: list[float] = []
    failures = 0
    perf = time.perf_counter
    clock = Clock()
    for i in range(n):
        t0 = perf()
        if not await one(i):
            failures += 1
        latencies.append(perf() - t0)
    return clock.stop(n, failures, latencies)


async def run_window(one: PublishOne, n: int, window: int = WINDOW) -> Outcome:
    """``window`` concurrent tasks, each publishing-and-awaiting the next message in turn.

    At most ``window`` publishes are unconfirmed at any time, and a slot is only freed
    when its confirm has arrived.
    """
    indices: Iterator[int] = iter(range(n))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for i in indices:
            if not await one(i):
                failures += 1

    clock = Clock()
    await asyncio.gather(*(worker() for _ in range(min(window, n))))
    return clock.stop(n, failures)


async def closed_loop(
    open_client: Callable[[str, str], contextlib.AbstractAsyncContextManager[PublishOne]],
    url: str,
    queue: str,
    n: int,
    window: int,
) -> Outcome:
    """A throughput run with one of the open_* clients below: one publish at a time, or `window` at once."""
    async with open_client(url, queue) as one:
        if window == 1:
            return await run_sequential(one, n)
        return await run_window(one, n, window)


# --------------------------------------------------------------------------- aio-pika


async def aiopika(url: str, queue: str, n: int, window: int) -> Outcome:
    return await closed_loop(open_aiopika, url, queue, n, window)


# --------------------------------------------------------------------------- aiormq


async def aiormq_mode(url: str, queue: str, n: int, window: int) -> Outcome:
    return await closed_loop(open_aiormq, url, queue, n, window)


# --------------------------------------------------------------------------- FastStream


async def faststream(url: str, queue: str, n: int, window: int) -> Outcome:
    return await closed_loop(open_faststream, url, queue, n, window)


# --------------------------------------------------------------------------- kombu

# nameko's DEFAULT_RETRY_POLICY; nameko's Publisher passes retry=True with it.
NAMEKO_RETRY_POLICY = {"max_retries": 3}


def kombu_mode(url: str, queue: str, n: int) -> Outcome:
    import importlib

    kombu: Any = importlib.import_module("kombu")  # untyped library

    # What nameko's get_producer() does: transport_options={"confirm_publish": True} makes
    # py-amqp put every channel in confirm mode and wait for the Basic.Ack (or raise
    # MessageNacked) inside each basic_publish. nameko also acquires the producer from
    # kombu's pools on every publish; one producer is reused here, so this is slightly
    # faster than nameko itself.
    with kombu.Connection(url, transport_options={"confirm_publish": True}) as connection:
        connection.connect()
        producer = kombu.Producer(connection.channel())
        latencies: list[float] = []
        perf = time.perf_counter
        clock = Clock()
        for i in range(n):
            t0 = perf()
            producer.publish(
                payload(i),
                exchange="",
                routing_key=queue,
                serializer="json",
                delivery_mode=2,
                mandatory=False,
                retry=True,
                retry_policy=NAMEKO_RETRY_POLICY,
            )
            latencies.append(perf() - t0)
        return clock.stop(n, 0, latencies)


# --------------------------------------------------------------------------- pika


def pika_mode(url: str, queue: str, n: int) -> Outcome:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        # confirm_delivery(): basic_publish blocks until the broker's ack and raises
        # NackError / UnroutableError otherwise.
        channel.confirm_delivery()
        properties = pika.BasicProperties(content_type=CONTENT_TYPE, delivery_mode=pika.DeliveryMode.Persistent)
        latencies: list[float] = []
        perf = time.perf_counter
        clock = Clock()
        for i in range(n):
            t0 = perf()
            channel.basic_publish(exchange="", routing_key=queue, body=body(i), properties=properties)
            latencies.append(perf() - t0)
        return clock.stop(n, 0, latencies)
    finally:
        connection.close()


# --------------------------------------------------------------------------- rawlimit


async def rawlimit_mode(url: str, queue: str, n: int, window: int) -> Outcome:
    import rawlimit

    clocks: list[Clock] = []
    nacks = await rawlimit.publish(url, queue, n, window, body, on_ready=lambda: clocks.append(Clock()))
    return clocks[0].stop(n, nacks)


# --------------------------------------------------------------------------- aiopublish


async def aiopublish_mode(url: str, queue: str, n: int, window: int) -> Outcome:
    return await closed_loop(open_aiopublish, url, queue, n, window)


async def aiopublish_many(url: str, queue: str, n: int) -> Outcome:
    from aiopublish import Publisher

    async with Publisher(url) as publisher:
        clock = Clock()
        results = await publisher.publish_many([payload(i) for i in range(n)], routing_key=queue)
        failures = sum(isinstance(result, BaseException) for result in results)
        failures += max(0, n - len(results))
        return clock.stop(n, failures)


# --------------------------------------------------------------------------- extras


async def ttfp_aiopika(url: str, queue: str, spawn_time: float) -> Outcome:
    """Process start to first confirmed publish with aio-pika, import and connect included."""
    t_import = time.perf_counter()
    import aio_pika
    from pamqp.commands import Basic

    t_connect = time.perf_counter()
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        t_publish = time.perf_counter()
        message = aio_pika.Message(body(0), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        ok = isinstance(await channel.default_exchange.publish(message, routing_key=queue), Basic.Ack)
        return _ttfp_outcome(spawn_time, t_import, t_connect, t_publish, ok)
    finally:
        await connection.close()


async def ttfp_aiopublish(url: str, queue: str, spawn_time: float) -> Outcome:
    """Process start to first confirmed publish with aiopublish, import and connect included."""
    t_import = time.perf_counter()
    from aiopublish import Publisher

    t_connect = time.perf_counter()
    async with Publisher(url) as publisher:
        t_publish = time.perf_counter()
        await publisher.publish(payload(0), routing_key=queue)
        return _ttfp_outcome(spawn_time, t_import, t_connect, t_publish, True)


def _ttfp_outcome(spawn_time: float, t_import: float, t_connect: float, t_publish: float, ok: bool) -> Outcome:
    done_wall = time.time()
    done = time.perf_counter()
    outcome = Outcome(
        wall_s=done_wall - spawn_time,
        cpu_s=time.process_time(),
        confirmed=int(ok),
        failures=int(not ok),
    )
    outcome.extra = {
        "ttfp_s": done_wall - spawn_time,
        "startup_s": (done_wall - spawn_time) - (done - t_import),
        "import_s": t_connect - t_import,
        "connect_s": t_publish - t_connect,
        "first_publish_s": done - t_publish,
    }
    return outcome


async def rss_aiopublish(url: str, queue: str, n: int) -> Outcome:
    """Start ``n`` publishes at once (one asyncio.gather) and wait for all confirms."""
    from aiopublish import Publisher

    async with Publisher(url) as publisher:
        rss_before = maxrss_kb()
        clock = Clock()
        results = await asyncio.gather(
            *(publisher.publish(payload(i), routing_key=queue) for i in range(n)), return_exceptions=True
        )
        outcome = clock.stop(n, sum(isinstance(r, BaseException) for r in results))
        outcome.extra = {"rss_before_kb": rss_before}
        return outcome


async def rss_aiopika(url: str, queue: str, n: int) -> Outcome:
    """The same as rss_aiopublish with aio-pika, as a baseline."""
    import aio_pika
    from pamqp.commands import Basic

    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        rss_before = maxrss_kb()

        async def one(i: int) -> Any:
            message = aio_pika.Message(
                body(i), delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type=CONTENT_TYPE
            )
            return await exchange.publish(message, routing_key=queue)

        clock = Clock()
        results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        outcome = clock.stop(n, sum(not isinstance(r, Basic.Ack) for r in results))
        outcome.extra = {"rss_before_kb": rss_before}
        return outcome
    finally:
        await connection.close()


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Mode:
    name: str
    library: str  # distribution name, for the version and for "not available" messages
    run: Callable[[str, str, int, float], Outcome]  # (url, queue, n, spawn_time)
    sequential: bool = False
    kind: str = "throughput"  # "throughput", "ttfp" or "rss"


def _async(
    factory: Callable[..., Coroutine[Any, Any, Outcome]], *extra: Any
) -> Callable[[str, str, int, float], Outcome]:
    def run(url: str, queue: str, n: int, spawn_time: float) -> Outcome:
        return asyncio.run(factory(url, queue, n, *extra))

    return run


def _sync(function: Callable[[str, str, int], Outcome]) -> Callable[[str, str, int, float], Outcome]:
    def run(url: str, queue: str, n: int, spawn_time: float) -> Outcome:
        return function(url, queue, n)

    return run


def _ttfp(
    factory: Callable[[str, str, float], Coroutine[Any, Any, Outcome]],
) -> Callable[[str, str, int, float], Outcome]:
    def run(url: str, queue: str, n: int, spawn_time: float) -> Outcome:
        return asyncio.run(factory(url, queue, spawn_time))

    return run


THROUGHPUT_MODES: tuple[Mode, ...] = (
    Mode("aiopika-seq", "aio-pika", _async(aiopika, 1), sequential=True),
    Mode("aiopika-512", "aio-pika", _async(aiopika, WINDOW)),
    Mode("aiormq-seq", "aiormq", _async(aiormq_mode, 1), sequential=True),
    Mode("aiormq-512", "aiormq", _async(aiormq_mode, WINDOW)),
    Mode("faststream-seq", "faststream", _async(faststream, 1), sequential=True),
    Mode("kombu-seq", "kombu", _sync(kombu_mode), sequential=True),
    Mode("pika-seq", "pika", _sync(pika_mode), sequential=True),
    Mode("rawlimit", "pamqp", _async(rawlimit_mode, WINDOW)),
    Mode("aiopublish-seq", "aiopublish", _async(aiopublish_mode, 1), sequential=True),
    Mode("aiopublish-512", "aiopublish", _async(aiopublish_mode, WINDOW)),
    Mode("aiopublish-many", "aiopublish", _async(aiopublish_many)),
)

EXTRA_MODES: tuple[Mode, ...] = (
    Mode("ttfp-aiopublish", "aiopublish", _ttfp(ttfp_aiopublish), kind="ttfp"),
    Mode("ttfp-aiopika", "aio-pika", _ttfp(ttfp_aiopika), kind="ttfp"),
    Mode("rss-aiopublish", "aiopublish", _async(rss_aiopublish), kind="rss"),
    Mode("rss-aiopika", "aio-pika", _async(rss_aiopika), kind="rss"),
)

MODES: dict[str, Mode] = {mode.name: mode for mode in THROUGHPUT_MODES + EXTRA_MODES}


# --------------------------------------------------------------------------- open-loop clients (latency.py)

# Each yields `one(i)`: publish message i and return True once it is confirmed. The
# connection is open before the first call and closed after the last. latency.py calls
# `one` at fixed offered rates without waiting for earlier calls (an open loop).


@contextlib.asynccontextmanager
async def open_aiopublish(url: str, queue: str) -> AsyncIterator[PublishOne]:
    from aiopublish import Publisher

    async with Publisher(url) as publisher:

        async def one(i: int) -> bool:
            await publisher.publish(payload(i), routing_key=queue)
            return True

        yield one


@contextlib.asynccontextmanager
async def open_aiopika(url: str, queue: str) -> AsyncIterator[PublishOne]:
    import aio_pika
    from pamqp.commands import Basic

    connection = await aio_pika.connect(url)
    try:
        exchange = (await connection.channel(publisher_confirms=True)).default_exchange

        async def one(i: int) -> bool:
            message = aio_pika.Message(
                body(i), delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type=CONTENT_TYPE
            )
            # Exchange.publish defaults to mandatory=True; an unroutable message would come
            # back as a DeliveredMessage instead of a Basic.Ack.
            return isinstance(await exchange.publish(message, routing_key=queue), Basic.Ack)

        yield one
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def open_aiormq(url: str, queue: str) -> AsyncIterator[PublishOne]:
    import aiormq
    from aiormq import spec

    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)

        async def one(i: int) -> bool:
            confirmation = await channel.basic_publish(
                body(i),
                routing_key=queue,
                # A fresh properties object per message: aiormq writes into it.
                properties=spec.Basic.Properties(delivery_mode=2, content_type=CONTENT_TYPE),
            )
            return isinstance(confirmation, spec.Basic.Ack)

        yield one
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def open_faststream(url: str, queue: str) -> AsyncIterator[PublishOne]:
    from faststream.rabbit import RabbitBroker

    # RabbitBroker's default channel is faststream.rabbit.schemas.Channel(), whose
    # publisher_confirms field defaults to True: the aio-pika channel is opened with
    # publisher_confirms=True and broker.publish() awaits the Basic.Ack. It is made
    # explicit here so the benchmark does not depend on that default.
    from faststream.rabbit.schemas import Channel
    from pamqp.commands import Basic

    broker = RabbitBroker(url, default_channel=Channel(publisher_confirms=True))
    await broker.connect()
    try:

        async def one(i: int) -> bool:
            # persist=True is delivery_mode 2 (FastStream's default is transient); the dict
            # is serialised to JSON by FastStream, as an application would use it.
            return isinstance(await broker.publish(payload(i), queue=queue, persist=True), Basic.Ack)

        yield one
    finally:
        await broker.stop()


OPEN_LOOP_CLIENTS: dict[str, Callable[[str, str], contextlib.AbstractAsyncContextManager[PublishOne]]] = {
    "aiopublish": open_aiopublish,
    "aio-pika": open_aiopika,
    "aiormq": open_aiormq,
    "faststream": open_faststream,
}
