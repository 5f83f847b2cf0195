"""FastAPI integration (the `fastapi` extra, `pip install ".[fastapi]"` from a clone): one Publisher per app.

    from fastapi import FastAPI
    from aiopublish.fastapi import PublisherDep, publisher_lifespan

    app = FastAPI(lifespan=publisher_lifespan("amqp://guest:guest@localhost/", routing_key="orders"))

    @app.post("/orders", status_code=202)
    async def create_order(order: dict, publisher: PublisherDep) -> dict:
        await publisher.publish(order)          # returns once the broker confirmed it
        return {"status": "accepted"}

The lifespan creates the Publisher at startup and connects it under its retry
policy (a broker that comes up a few seconds after the app is waited for, within
the publish `timeout`; with `retry=False`, or a refused login, a TLS failure or a
missing vhost, the app fails to start at once) and puts it in `app.state.publisher`. The
dependency hands it to routes and counts the requests holding it; FastAPI keeps a
request's dependencies open until its `BackgroundTasks` have run, so at shutdown
the lifespan first waits (up to `drain_timeout`) for every such request and its
background publishes to finish, then closes the Publisher, which waits for the
confirms still outstanding. Requests that ask for the publisher while it drains
get 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

try:
    from fastapi import Depends, HTTPException, Request
    from starlette.applications import Starlette
except ImportError as _missing:  # pragma: no cover - depends on the environment
    # aiopublish is installed from a clone (it is not on a package index): the extra is ".[fastapi]" there.
    raise ImportError(
        f'aiopublish.fastapi needs FastAPI 0.118+: in your aiopublish clone, pip install ".[fastapi]" ({_missing})'
    ) from _missing

from ._publisher import Publisher

__all__ = [
    "PublisherDep",
    "PublisherState",
    "get_publisher",
    "publisher_dependency",
    "publisher_lifespan",
    "publisher_state",
]

log: logging.Logger = logging.getLogger("aiopublish")

DEFAULT_STATE_KEY = "publisher"
_REGISTRY = "aiopublish_publishers"


class PublisherState:
    """An app's Publisher while the app runs, and the requests (with their background tasks) using it."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        #: Requests that hold the publisher now, their background tasks included.
        self.in_use: int = 0
        #: True once shutdown began: new requests for the publisher get 503.
        self.draining: bool = False
        self._idle = asyncio.Event()
        self._idle.set()

    def acquire(self) -> Publisher:
        """Count one more user; 503 once the app is shutting down."""
        if self.draining:
            raise HTTPException(status_code=503, detail="shutting down: not publishing any more")
        self.in_use += 1
        self._idle.clear()
        return self.publisher

    def release(self) -> None:
        """Count one user less."""
        self.in_use -= 1
        if self.in_use == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return when no request uses the publisher."""
        await self._idle.wait()


async def _drain(state: PublisherState, drain_timeout: float | None) -> None:
    """Refuse new users and wait up to `drain_timeout` seconds for the current ones."""
    state.draining = True
    if state.in_use == 0:
        return
    log.info("waiting for %d requests using the publisher before closing it", state.in_use)
    try:
        async with asyncio.timeout(drain_timeout):
            await state.wait_idle()
    except TimeoutError:
        log.warning(
            "closing the publisher after %s s with %d requests still using it; their publishes may fail",
            drain_timeout,
            state.in_use,
        )


def _registry(app: Starlette) -> dict[str, PublisherState]:
    registry: dict[str, PublisherState] | None = getattr(app.state, _REGISTRY, None)
    if registry is None:
        registry = {}
        setattr(app.state, _REGISTRY, registry)
    return registry


def publisher_state(app: Starlette, state_key: str = DEFAULT_STATE_KEY) -> PublisherState:
    """The running app's PublisherState under `state_key`; RuntimeError outside its lifespan."""
    state = _registry(app).get(state_key)
    if state is None:
        raise RuntimeError(
            f"no aiopublish Publisher {state_key!r} in this app's state: create the app with "
            f"FastAPI(lifespan=publisher_lifespan(...)) (or enter that lifespan in yours), "
            "and use the publisher only while the app runs"
        )
    return state


def publisher_lifespan(
    publisher: str | Callable[[], Publisher] | None = None,
    /,
    *,
    state_key: str = DEFAULT_STATE_KEY,
    connect: bool = True,
    drain_timeout: float | None = 30.0,
    **publisher_kwargs: Any,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """A lifespan that runs one Publisher with the app: `FastAPI(lifespan=publisher_lifespan(...))`.

    `publisher` is the broker URL (the other keywords then go to `Publisher`), a
    callable returning a new Publisher (called at each startup), or omitted with
    `amqp_uri=...` among the keywords. At startup the Publisher connects (unless
    `connect=False`) and is stored as `app.state.<state_key>`; at shutdown the
    lifespan waits up to `drain_timeout` seconds for requests using it (and their
    background tasks), then closes it. To combine it with a lifespan of your own:

        @asynccontextmanager
        async def lifespan(app):
            async with publisher_lifespan(URL)(app):
                yield
    """
    if callable(publisher):
        if publisher_kwargs:
            raise TypeError("give Publisher keywords or a factory, not both")
        factory: Callable[[], Publisher] = publisher
    elif publisher is None or isinstance(publisher, str):
        url = publisher

        def factory() -> Publisher:
            if url is None:
                return Publisher(**publisher_kwargs)
            return Publisher(url, **publisher_kwargs)

    else:
        raise TypeError(f"publisher must be a URL or a callable returning a Publisher, not {type(publisher).__name__}")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        registry = _registry(app)
        if state_key in registry:
            raise RuntimeError(f"this app already runs a publisher under {state_key!r}")
        instance = factory()
        if not isinstance(instance, Publisher):
            raise TypeError(f"the publisher factory returned {type(instance).__name__}, not a Publisher")
        state = PublisherState(instance)
        try:
            if connect:
                await instance.connect()
            registry[state_key] = state
            setattr(app.state, state_key, instance)
            yield
        finally:
            try:
                if registry.get(state_key) is state:
                    await _drain(state, drain_timeout)
            finally:
                if registry.get(state_key) is state:
                    del registry[state_key]
                    if getattr(app.state, state_key, None) is instance:
                        delattr(app.state, state_key)
                await instance.close()

    return lifespan


def publisher_dependency(state_key: str = DEFAULT_STATE_KEY) -> Callable[[Request], AsyncIterator[Publisher]]:
    """A dependency giving routes the app's Publisher under `state_key` (see `get_publisher`)."""

    async def dependency(request: Request) -> AsyncIterator[Publisher]:
        state = publisher_state(request.app, state_key)
        publisher = state.acquire()
        try:
            yield publisher
        finally:
            state.release()

    dependency.__name__ = f"get_{state_key}"
    dependency.__qualname__ = dependency.__name__
    return dependency


get_publisher: Callable[[Request], AsyncIterator[Publisher]] = publisher_dependency()
"""The dependency for the default publisher: `publisher: Publisher = Depends(get_publisher)`.

It holds the publisher for the request and its background tasks (shutdown waits for them);
it answers 503 once the app is shutting down, and raises RuntimeError when the app has no
Publisher under "publisher" (its lifespan did not run: see the testing guide).
"""

PublisherDep = Annotated[Publisher, Depends(get_publisher)]
"""A route parameter annotated with this receives the app's Publisher (`Depends(get_publisher)`)."""
