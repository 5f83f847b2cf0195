"""Which link a Publisher talks through, chosen by its URL's scheme, and the hook a test double uses.

A link factory takes ``(params, declare, reconnect_policy, metrics)`` and returns a
`LinkLike`. ``amqp``, ``amqps`` and kombu's ``pyamqp`` and ``librabbitmq`` give the real
`Link`; a module adds a scheme with `register_link_factory`. ``memory`` is provided by
the in-memory broker: the registry knows only the name of the module that registers
it and imports that module the first time a memory:// URL is used, so the core never
imports the test double itself.

A Publisher does not build its link in its constructor. `link_for` returns a
`DeferredLink`, which builds the real one at first use (`connect()` or the first
publish). That is what lets `override_links` catch publishers created at import time:

    with override_links(factory) as override:
        ...  # every link first used in here is factory(params, declare, policy, metrics)

While the block is active every link resolved uses `factory`, whatever the URL; when it
ends, those links are forgotten (and handed to `on_forget`), so the next use outside
resolves again by scheme. A link already resolved when the block begins is left alone:
`override.bypassed` counts those connected to a broker, for the double to report.
`aiopublish.testing.patch_publisher` is built on this hook.
"""

from __future__ import annotations

import contextlib
import importlib
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._blame import ChannelInterrupted
from ._channel import PublishChannel
from ._connection import ConnectionParams
from ._declarations import Exchange, Queue
from ._exceptions import PublisherClosed
from ._link import Link, LinkLike
from ._metrics import Metrics
from ._options import Prepared
from .retry import RetryPolicy

__all__ = [
    "DeferredLink",
    "UnconfirmedLink",
    "LinkFactory",
    "LinkOverride",
    "link_for",
    "override_links",
    "register_link_factory",
]

LinkFactory = Callable[[ConnectionParams, Iterable[Exchange | Queue], RetryPolicy, Metrics], LinkLike]


def _amqp1_link(
    params: ConnectionParams, declare: Iterable[Exchange | Queue], policy: RetryPolicy, metrics: Metrics
) -> LinkLike:
    # Imported here: only amqp1:// publishers need AMQP 1.0 (a tenth of `import aiopublish` otherwise).
    from ._amqp1 import amqp1_link

    return amqp1_link(params, declare, policy, metrics)


_factories: dict[str, LinkFactory] = {
    "amqp": Link,
    "amqps": Link,
    # kombu's names for amqp (nameko's usual AMQP_URI); TLS comes from `ssl`, as with kombu.
    "pyamqp": Link,
    "librabbitmq": Link,
    # AMQP 1.0 (RabbitMQ 4.x), on the same port as 0-9-1; amqp1s:// is TLS.
    "amqp1": _amqp1_link,
    "amqp1s": _amqp1_link,
}
# Schemes registered by a module when it is imported: the core names the module, never imports it.
_PROVIDERS = {"memory": "aiopublish.testing"}


def register_link_factory(scheme: str, factory: LinkFactory) -> None:
    """Make Publishers on ``scheme://`` URLs use links built by `factory` (replacing any earlier one)."""
    if not isinstance(scheme, str) or not scheme or "://" in scheme:
        raise ValueError(f"scheme must be a URL scheme such as 'amqp', not {scheme!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, not {type(factory).__name__}")
    _factories[scheme.lower()] = factory


def _factory_for(scheme: str) -> LinkFactory:
    factory = _factories.get(scheme)
    if factory is None and scheme in _PROVIDERS:
        importlib.import_module(_PROVIDERS[scheme])  # registers its schemes as it is imported
        factory = _factories.get(scheme)
    if factory is None:
        known = ", ".join(f"{name}://" for name in sorted({*_factories, *_PROVIDERS}))
        raise ValueError(f"no link is registered for {scheme}:// URLs (known: {known})")
    return factory


def link_for(
    params: ConnectionParams, declare: Iterable[Exchange | Queue], policy: RetryPolicy, metrics: Metrics
) -> LinkLike:
    """The link of a new Publisher: its factory is chosen now (by the first URL's scheme), the link at first use."""
    scheme = params.url.partition("://")[0].lower()
    return DeferredLink(_factory_for(scheme), params, tuple(declare), policy, metrics)


class LinkOverride:
    """One active `override_links` block."""

    factory: LinkFactory
    on_forget: Callable[[LinkLike], None] | None
    #: Links already connected to a broker (outside any override) when the block began: left alone.
    bypassed: int

    def __init__(
        self, factory: LinkFactory, on_forget: Callable[[LinkLike], None] | None = None, bypassed: int = 0
    ) -> None:
        self.factory = factory
        self.on_forget = on_forget
        self.bypassed = bypassed
        self._resolved: weakref.WeakSet[DeferredLink] = weakref.WeakSet()


# Innermost last. Module-level rather than context-local on purpose: an override must reach
# publishers used from any task (an app's background task, a fixture's event loop).
_overrides: list[LinkOverride] = []
_deferred_links: weakref.WeakSet[DeferredLink] = weakref.WeakSet()


@contextlib.contextmanager
def override_links(
    factory: LinkFactory, *, on_forget: Callable[[LinkLike], None] | None = None
) -> Iterator[LinkOverride]:
    """Inside this block every link resolved (first used) is built by `factory`; see the module docstring."""
    bypassed = sum(1 for link in list(_deferred_links) if link.connected_outside_override)
    override = LinkOverride(factory, on_forget, bypassed)
    _overrides.append(override)
    try:
        yield override
    finally:
        _overrides.remove(override)
        for deferred in list(override._resolved):
            link = deferred._forget(override)
            if link is not None and on_forget is not None:
                on_forget(link)


def _no_channel() -> PublishChannel | None:
    return None


class DeferredLink:
    """A `LinkLike` that picks its link at first use: the active override's, or else its scheme's.

    The scheme's link is built once and kept: after an override that was in use ends, the
    next use goes to it (a link an override built is never reused). Publishes call the
    resolved link's own `ready_channel` (bound here once resolved: no extra call);
    `is_blocked` costs one property call more than the link's.
    """

    def __init__(
        self,
        factory: LinkFactory,
        params: ConnectionParams,
        declare: tuple[Exchange | Queue, ...],
        policy: RetryPolicy,
        metrics: Metrics,
    ) -> None:
        self._factory = factory
        self._params = params
        self._declare = declare
        self._policy = policy
        self._metrics = metrics
        self._link: LinkLike | None = None  # the link in use, None until the first use
        self._override: LinkOverride | None = None  # the override that built `_link`, if one did
        self._default: LinkLike | None = None  # the scheme's link, built once it is needed
        self._closed = False
        #: The resolved link's ready_channel itself, so a publish calls it directly.
        self.ready_channel: Callable[[], PublishChannel | None] = _no_channel
        _deferred_links.add(self)

    def __repr__(self) -> str:
        return f"<DeferredLink {self._params.masked_url} -> {self._link!r}>"

    def _default_link(self) -> LinkLike:
        link = self._default
        if link is None:
            link = self._default = self._factory(self._params, self._declare, self._policy, self._metrics)
        return link

    @property
    def resolved(self) -> LinkLike | None:
        """The link in use, or None before the first use (and after an override that built it ended)."""
        return self._link

    @property
    def connected_outside_override(self) -> bool:
        link = self._link
        return link is not None and self._override is None and not self._closed and link.node is not None

    def _resolve(self) -> LinkLike:
        if self._closed:
            raise PublisherClosed("the publisher is closed")
        override = _overrides[-1] if _overrides else None
        if override is None:
            link = self._default_link()
        else:
            link = override.factory(self._params, self._declare, self._policy, self._metrics)
        self._link, self._override = link, override
        self.ready_channel = link.ready_channel
        if override is not None:
            override._resolved.add(self)
        return link

    def _forget(self, override: LinkOverride) -> LinkLike | None:
        """Drop the link `override` built (None if it was not built by it)."""
        if self._override is not override:
            return None
        link, self._link, self._override = self._link, None, None
        self.ready_channel = _no_channel
        return link

    # -- for a look inside (tests, debugging); no __getattr__: it would slow every attribute here

    @property
    def current(self) -> LinkLike:
        """The link in use, or before the first use the scheme's own link (built for the look)."""
        return self._link or self._default_link()

    @property
    def connection(self) -> Any:
        """The real link's connection (None before connecting, or on a link that has none)."""
        return getattr(self.current, "connection", None)

    @property
    def connections_opened(self) -> int:
        return int(getattr(self.current, "connections_opened", 0))

    @property
    def _declared(self) -> Any:
        return getattr(self.current, "_declared", None)

    # -- LinkLike ----------------------------------------------------------------------------

    @property
    def node(self) -> str | None:
        link = self._link
        return None if link is None else link.node

    @property
    def is_blocked(self) -> bool:
        link = self._link
        return link is not None and link.is_blocked

    @property
    def blocked_reason(self) -> str | None:
        link = self._link
        return None if link is None else link.blocked_reason

    async def channel(self) -> PublishChannel:
        link = self._link
        if link is None:
            link = self._resolve()
        return await link.channel()

    async def ensure_declared(self, channel: PublishChannel, entities: Iterable[Exchange | Queue]) -> None:
        link = self._link
        if link is None:
            # The override that built the channel's link ended meanwhile; a retry resolves anew.
            raise ChannelInterrupted("the publisher's link was replaced; nothing was declared")
        await link.ensure_declared(channel, entities)

    async def wait_unblocked(self) -> None:
        link = self._link
        if link is not None:
            await link.wait_unblocked()

    async def probe(self, message: Prepared) -> None:
        link = self._link
        if link is None:
            raise ChannelInterrupted("the publisher's link was replaced; nothing was sent")
        await link.probe(message)

    def check_alive(self, since: float) -> None:
        link = self._link
        if link is not None:
            link.check_alive(since)

    def abandon(self) -> None:
        self._closed = True
        for link in {id(x): x for x in (self._link, self._default) if x is not None}.values():
            link.abandon()

    async def close(self, drain_timeout: float | None) -> None:
        self._closed = True
        link = self._link
        if link is not None:
            await link.close(drain_timeout)
        if self._default is not None and self._default is not link:
            await self._default.close(drain_timeout)  # built for a look at it, never used: nothing to drain


class UnconfirmedLink:
    """A publisher's link as its use_confirms=False publishes see it: a channel NOT in confirm mode.

    nameko publishes unconfirmed messages through a producer whose channel has no confirms,
    so the broker sends no ack per message. Same connection, same declarations (made on the
    confirm channel: exchanges and queues belong to the broker, not to a channel); a link
    that has no such channel (a test double) gives its one channel, which sends untracked.
    """

    def __init__(self, link: LinkLike) -> None:
        self._link = link
        self._bound_to: Any = None  # the resolved link _ready_channel belongs to
        self._ready_channel: Callable[[], PublishChannel | None] = _no_channel

    def _real(self) -> Any:
        link = self._link
        return link.resolved if isinstance(link, DeferredLink) else link

    @property
    def node(self) -> str | None:
        return self._link.node

    @property
    def is_blocked(self) -> bool:
        return self._link.is_blocked

    @property
    def blocked_reason(self) -> str | None:
        return self._link.blocked_reason

    def ready_channel(self) -> PublishChannel | None:
        real = self._real()
        if real is not self._bound_to:  # resolved (again): bind its method once, not per publish
            self._bound_to = real
            self._ready_channel = getattr(real, "ready_unconfirmed_channel", None) or self._link.ready_channel
        return self._ready_channel()

    async def channel(self) -> PublishChannel:
        channel = await self._link.channel()  # connected, declarations made
        opener = getattr(self._real(), "unconfirmed_channel", None)
        return channel if opener is None else await opener()

    async def ensure_declared(self, channel: PublishChannel, entities: Iterable[Exchange | Queue]) -> None:
        await self._link.ensure_declared(await self._link.channel(), entities)

    async def wait_unblocked(self) -> None:
        await self._link.wait_unblocked()

    async def probe(self, message: Prepared) -> None:
        await self._link.probe(message)

    def check_alive(self, since: float) -> None:
        self._link.check_alive(since)

    async def close(self, drain_timeout: float | None) -> None:
        pass  # the publisher closes its link itself

    def abandon(self) -> None:
        pass
