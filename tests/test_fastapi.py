"""aiopublish.fastapi against the real broker: the lifespan, the dependency, and draining at shutdown."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI

from aiopublish import ConnectionFailed, Publisher, RetryPolicy
from aiopublish.fastapi import (
    PublisherDep,
    publisher_dependency,
    publisher_lifespan,
    publisher_state,
)
from aiopublish.retry import stop_after_delay, wait_exponential
from examples.fastapi_app import create_app
from tests.broker import Broker, until
from tests.faults.proxy import TcpProxy

# At module level: with postponed annotations FastAPI resolves a parameter's annotation in the module.
EventsPublisher = Annotated[Publisher, Depends(publisher_dependency("events"))]


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app between its startup and its shutdown, with a client that calls it in-process."""
    async with app.router.lifespan_context(app), client(app) as http:
        yield http


class Server:
    """Runs an app's lifespan in a task of its own, so a test can start its shutdown while requests are under way."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._up = asyncio.Event()
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        async with self.app.router.lifespan_context(self.app):
            self._up.set()
            await self._stop.wait()

    async def started(self) -> None:
        up = asyncio.create_task(self._up.wait())
        await asyncio.wait([up, self.task], return_when=asyncio.FIRST_COMPLETED)
        up.cancel()
        if self.task.done():
            self.task.result()

    def begin_shutdown(self) -> None:
        self._stop.set()


async def test_example_route_returns_after_confirm(amqp_url: str, broker: Broker) -> None:
    """POST /orders of the example answers 202 with a message id, and that message is already in the queue."""
    queue = await broker.queue()
    app = create_app(amqp_url, queue)
    async with serving(app) as http:
        response = await http.post("/orders", json={"order": 42, "status": "paid"})
        assert response.status_code == 202, response.text
        message = await broker.get(queue)
    assert response.json()["status"] == "confirmed"
    assert message.header.properties.message_id == response.json()["message_id"]
    assert json.loads(message.body) == {"order": 42, "status": "paid"}


async def test_example_concurrent_requests_share_one_publisher(amqp_url: str, broker: Broker) -> None:
    """Fifty concurrent POST /orders are all confirmed through the app's one publisher, each with its own id."""
    queue = await broker.queue()
    app = create_app(amqp_url, queue)
    async with serving(app) as http:
        responses = await asyncio.gather(*(http.post("/orders", json={"order": n}) for n in range(50)))
        metrics = app.state.publisher.metrics
    assert [r.status_code for r in responses] == [202] * 50
    assert (metrics.confirmed, metrics.failed) == (50, 0)
    ids = {m.header.properties.message_id for m in await broker.get_all(queue)}
    assert ids == {r.json()["message_id"] for r in responses}


async def test_example_background_publish_is_in_queue_after_shutdown(amqp_url: str, broker: Broker) -> None:
    """POST /orders/deferred answers 202 at once; after shutdown its message is in the queue."""
    queue = await broker.queue()
    app = create_app(amqp_url, queue)
    async with serving(app) as http:
        response = await http.post("/orders/deferred", json={"order": 7})
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    message = await broker.get(queue)
    assert message.header.properties.message_id == response.json()["message_id"]
    assert json.loads(message.body) == {"order": 7, "status": "new"}


async def test_shutdown_drains_background_publishes(amqp_url: str, broker: Broker) -> None:
    """Shutdown begun while background tasks still have 200 publishes to make waits for all: each is confirmed."""
    queue = await broker.queue()
    gate = asyncio.Event()
    started = 0
    requests, per_request = 20, 10
    app = FastAPI(lifespan=publisher_lifespan(amqp_url, routing_key=queue))

    @app.post("/batch/{n}", status_code=202)
    async def batch(n: int, publisher: PublisherDep, background: BackgroundTasks) -> dict[str, int]:
        async def publish_all() -> None:
            nonlocal started
            started += 1
            await gate.wait()
            await asyncio.gather(*(publisher.publish({"r": n, "i": i}) for i in range(per_request)))

        background.add_task(publish_all)
        return {"n": n}

    server = Server(app)
    await server.started()
    publisher: Publisher = app.state.publisher
    state = publisher_state(app)
    async with client(app) as http:
        calls = [asyncio.create_task(http.post(f"/batch/{n}")) for n in range(requests)]
        await until(lambda: started == requests)
        server.begin_shutdown()
        await until(lambda: state.draining)
        assert not publisher.is_closed
        assert state.in_use == requests
        gate.set()
        responses = await asyncio.gather(*calls)
        await server.task
    assert [r.status_code for r in responses] == [202] * requests
    assert publisher.is_closed
    assert publisher.metrics.confirmed == requests * per_request
    bodies = [json.loads(m.body) for m in await broker.get_all(queue)]
    assert sorted((b["r"], b["i"]) for b in bodies) == [(r, i) for r in range(requests) for i in range(per_request)]


async def test_requests_during_drain_get_503(amqp_url: str, broker: Broker) -> None:
    """While shutdown waits for a request's background publish, a new request for the publisher gets 503."""
    queue = await broker.queue()
    gate = asyncio.Event()
    app = FastAPI(lifespan=publisher_lifespan(amqp_url, routing_key=queue))

    @app.post("/later", status_code=202)
    async def later(publisher: PublisherDep, background: BackgroundTasks) -> None:
        async def publish() -> None:
            await gate.wait()
            await publisher.publish("late")

        background.add_task(publish)

    server = Server(app)
    await server.started()
    state = publisher_state(app)
    async with client(app) as http:
        first = asyncio.create_task(http.post("/later"))
        await until(lambda: state.in_use == 1)
        server.begin_shutdown()
        await until(lambda: state.draining)
        refused = await http.post("/later")
        gate.set()
        assert (await first).status_code == 202
        await server.task
    assert refused.status_code == 503
    assert [m.body for m in await broker.get_all(queue)] == [b'"late"']


async def test_factory_and_custom_state_key(amqp_url: str, broker: Broker) -> None:
    """A factory lifespan under state_key="events" serves publisher_dependency("events") and leaves app.state after."""
    queue = await broker.queue()
    app = FastAPI(lifespan=publisher_lifespan(lambda: Publisher(amqp_url, routing_key=queue), state_key="events"))

    @app.post("/event", status_code=202)
    async def event(publisher: EventsPublisher) -> None:
        await publisher.publish({"kind": "event"})

    async with serving(app) as http:
        assert isinstance(app.state.events, Publisher)
        assert (await http.post("/event")).status_code == 202
        publisher = app.state.events
    assert not hasattr(app.state, "events")
    assert publisher.is_closed
    assert [json.loads(m.body) for m in await broker.get_all(queue)] == [{"kind": "event"}]


async def test_composed_into_an_existing_lifespan(amqp_url: str, broker: Broker) -> None:
    """publisher_lifespan(...)(app) entered inside an app's own lifespan runs the publisher for that lifespan."""
    queue = await broker.queue()
    steps: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        steps.append("own startup")
        async with publisher_lifespan(amqp_url, routing_key=queue)(app):
            yield
        steps.append(f"own shutdown, publisher closed: {app_publisher.is_closed}")

    app = FastAPI(lifespan=lifespan)

    @app.post("/hello", status_code=202)
    async def hello(publisher: PublisherDep) -> None:
        await publisher.publish("hello")

    async with serving(app) as http:
        app_publisher: Publisher = app.state.publisher
        assert (await http.post("/hello")).status_code == 202
    assert steps == ["own startup", "own shutdown, publisher closed: True"]
    assert [m.body for m in await broker.get_all(queue)] == [b'"hello"']


async def test_startup_fails_when_broker_unreachable() -> None:
    """With retry off and no broker at the URL the app does not start: ConnectionFailed at once, password masked."""
    app = FastAPI(lifespan=publisher_lifespan("amqp://guest:s3cret-pw@127.0.0.1:1/", retry=False))
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as info:
        async with app.router.lifespan_context(app):
            pass
    assert time.monotonic() - started < 1.0
    assert "s3cret-pw" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)
    assert not hasattr(app.state, "publisher")


async def test_startup_waits_for_a_late_broker(broker: Broker, tcp_proxy: TcpProxy) -> None:
    """The lifespan's start-up retries while the broker refuses connections; once it answers the app serves."""
    queue = await broker.queue()
    tcp_proxy.refuse(True)
    retry = RetryPolicy(stop=stop_after_delay(30), wait=wait_exponential(multiplier=0.05, max=0.5))
    instance = Publisher(tcp_proxy.url(), routing_key=queue, retry_policy=retry)
    app = FastAPI(lifespan=publisher_lifespan(lambda: instance))

    @app.post("/hello", status_code=202)
    async def hello(publisher: PublisherDep) -> dict[str, str]:
        return {"message_id": (await publisher.publish("hello")).message_id}

    server = Server(app)
    await until(lambda: instance.metrics.retried >= 3)
    assert not server.task.done() and not hasattr(app.state, "publisher")
    tcp_proxy.refuse(False)
    await server.started()
    async with client(app) as http:
        assert (await http.post("/hello")).status_code == 202
    server.begin_shutdown()
    await server.task
    assert [m.body for m in await broker.get_all(queue)] == [b'"hello"']


async def test_dependency_without_lifespan_says_what_is_missing() -> None:
    """A route asking for the publisher in an app without publisher_lifespan fails with a RuntimeError saying so."""
    app = FastAPI()

    @app.post("/x")
    async def x(publisher: PublisherDep) -> None:
        raise AssertionError("not reached")

    async with client(app) as http:
        with pytest.raises(RuntimeError, match="publisher_lifespan"):
            await http.post("/x")


def test_factory_and_keywords_together_are_a_type_error() -> None:
    """publisher_lifespan(factory, routing_key=...) is refused: the keywords would be silently ignored."""
    with pytest.raises(TypeError, match="not both"):
        publisher_lifespan(lambda: Publisher("amqp://localhost/"), routing_key="x")
