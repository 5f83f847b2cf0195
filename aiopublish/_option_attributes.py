"""The Publisher's options as nameko has them: attributes read at every publish, checked when assigned.

Precedence: class attribute < constructor argument < attribute assigned later on the
instance < publish() keyword. The options of a publish without keywords are built once
(`_defaults`, with their pre-encoded properties) and rebuilt when an option attribute is
assigned (on the instance, a subclass or the class: see _attributes); a call's keywords
make options of their own, cached for the simple ones that calls repeat (`_options_for`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Unpack

from ._connection import ConnectionParams, call_connect_retry
from ._link import CALL_CONNECT_RETRY
from ._options import CONSTRUCTOR_PUBLISH_KWARGS, NAMED_OPTIONS, PUBLISH_OPTIONS, Options, check_publish_kwargs
from ._result import PublishResult

if TYPE_CHECKING:
    from ._types import PublishOptions

__all__ = ["CONNECTION_ATTRIBUTES", "KWARG_ATTRIBUTES", "OptionAttributes", "check_confirm_publish"]

# Options that differ per message: calls passing them get options of their own, never cached.
_PER_MESSAGE_OPTIONS = frozenset(
    {"message_id", "correlation_id", "timestamp", "headers", "extra_headers", "declare", "retry_policy"}
)
_OVERRIDE_CACHE_SIZE = 256


# What the connection is made with: assignable until the publisher first connects.
CONNECTION_ATTRIBUTES = frozenset({"amqp_uri", "ssl", "login_method", "transport_options"})
# Defaults the constructor takes among **publish_kwargs, which are also class attributes.
KWARG_ATTRIBUTES = ("timeout", "retry_nacked")


def check_confirm_publish(transport_options: Mapping[str, Any], use_confirms: bool) -> None:
    # nameko writes use_confirms over kombu's confirm_publish; one that says otherwise would be ignored.
    confirm_publish = transport_options.get("confirm_publish")
    if confirm_publish is not None and confirm_publish != use_confirms:
        raise ValueError(
            f"transport option confirm_publish={confirm_publish!r} contradicts use_confirms={use_confirms!r}: "
            "use_confirms decides whether the channel confirms (as in nameko); set that instead"
        )


class OptionAttributes:
    """The option attributes' side of a Publisher (a mixin: the Publisher supplies the engine and the state)."""

    _params: ConnectionParams
    _mask: Callable[[str], str]
    _defaults: Options
    _override_cache: dict[tuple[Any, ...], Options]
    _link_declare: tuple[Any, ...] | None
    _options_given: dict[str, Any]
    publish_kwargs: dict[str, Any]

    async def publish(self, payload: Any, **kwargs: Unpack[PublishOptions]) -> PublishResult:
        raise NotImplementedError  # the Publisher's

    def _has_connected(self) -> bool:
        """Whether the publisher has been opened (its connection made with the current settings)."""
        raise NotImplementedError

    def _rebuild_engine(self) -> None:
        """Make the link and engine anew (declarations or connection settings changed before connecting)."""
        raise NotImplementedError

    def _connection_params(self, changes: Mapping[str, Any]) -> ConnectionParams:
        def value(name: str) -> Any:
            return changes[name] if name in changes else getattr(self, name)

        return ConnectionParams.build(
            value("amqp_uri"), value("ssl"), value("login_method"), value("transport_options") or None
        )

    def _build_defaults(self, changes: Mapping[str, Any]) -> Options:
        """The options of a publish without keywords, from the attributes with `changes` applied; checks them all."""

        def value(name: str) -> Any:
            return changes[name] if name in changes else getattr(self, name)

        publish_kwargs = value("publish_kwargs")
        if not isinstance(publish_kwargs, Mapping):
            raise TypeError(f"publish_kwargs must be a dict, not {type(publish_kwargs).__name__}")
        check_publish_kwargs(publish_kwargs, CONSTRUCTOR_PUBLISH_KWARGS, "Publisher()")
        kwargs = {name: value(name) for name in KWARG_ATTRIBUTES}
        kwargs.update(publish_kwargs)
        for name in KWARG_ATTRIBUTES:
            if name in changes:  # assigned now: wins over (and is copied into) publish_kwargs
                kwargs[name] = changes[name]
        options = Options.build({name: value(name) for name in NAMED_OPTIONS}, kwargs)
        if self._link_declare is not None:
            # Declarations assigned after the link was made: every publish makes sure of them.
            options.call_declare = tuple(entity for entity in options.declare if entity not in self._link_declare)
        transport = value("transport_options") or {}
        check_confirm_publish(transport, options.use_confirms)
        return options

    def _option_changed(self, name: str, value: Any) -> None:
        """An option attribute assigned on this instance: check it, then take it for the next publish."""
        self._apply(name, {name: value})
        own = self._options_given
        own[name] = value
        if name in KWARG_ATTRIBUTES and name in self.publish_kwargs:
            self.publish_kwargs[name] = value  # the two say the same thing
        if name == "publish_kwargs":
            for key in KWARG_ATTRIBUTES:
                if key in value:
                    own[key] = value[key]

    def _class_option_changed(self, name: str) -> None:
        """A class default changed: it applies unless this instance has its own value."""
        if name not in self._options_given:
            self._apply(name, {})

    def _apply(self, name: str, changes: Mapping[str, Any]) -> None:
        rebuild_link = name in CONNECTION_ATTRIBUTES or name in ("declare", "retry_policy")
        if rebuild_link and self._has_connected():
            if name in CONNECTION_ATTRIBUTES:
                raise AttributeError(
                    f"{name} cannot change once the publisher has connected (its connection was made with it); "
                    "create a new Publisher"
                )
            rebuild_link = False
        params = self._connection_params(changes) if name in CONNECTION_ATTRIBUTES else self._params
        link_declare = self._link_declare
        if rebuild_link:
            self._link_declare = None
        try:
            defaults = self._build_defaults(changes)
        finally:
            self._link_declare = link_declare
        # Checked: take it.
        self._params, self._mask, self._defaults = params, params.mask, defaults
        self._override_cache.clear()
        if rebuild_link:
            self._rebuild_engine()

    def _options_for(self, kwargs: Mapping[str, Any], where: str = "publish()") -> Options:
        """The options of a call with these keywords; shared between calls that pass the same simple ones.

        Calls that repeat `routing_key=...` or `exchange=...` then share one Options and its
        encoded-properties templates instead of building both per call (and, for publishes
        queued past max_in_flight, holding a copy each). The key holds each value's type
        beside it: `priority=True` and `priority=1` are equal but must not share a check. A
        cached entry's names were checked when it was made, so a hit costs one dict look-up.
        """
        key: tuple[Any, ...] | None
        try:
            if len(kwargs) == 1:  # the usual call, routing_key=... alone: no sort, no tuple of tuples
                ((name, value),) = kwargs.items()
                key = (name, type(value), value)
            else:
                key = tuple(sorted((name, type(value), value) for name, value in kwargs.items()))
            options = self._override_cache.get(key)
        except TypeError:  # an unhashable value
            options = key = None
        if options is not None:
            return options
        check_publish_kwargs(kwargs, PUBLISH_OPTIONS, where)
        if key is None or kwargs.keys() & _PER_MESSAGE_OPTIONS:
            return self._defaults.override(kwargs)
        options = self._defaults.override(kwargs)
        if len(self._override_cache) >= _OVERRIDE_CACHE_SIZE:
            self._override_cache.clear()
        self._override_cache[key] = options
        return options

    async def _publish_with_transport_options(self, payload: Any, kwargs: Mapping[str, Any]) -> PublishResult:
        """publish() with nameko's per-call `transport_options`: this call's connection-establishment retries.

        The keys that shape a connection (heartbeat, connection_name, ...) must be the
        publisher's own: a publish cannot change the connection it shares (nameko would take
        another pooled connection); kombu's retry keys apply if this publish has to connect.
        """
        rest = dict(kwargs)
        transport = rest.pop("transport_options")
        if transport is not None:
            if not isinstance(transport, Mapping):
                raise TypeError(f"transport_options must be a dict, not {type(transport).__name__}")
            policy = call_connect_retry(transport, self._params)
            use_confirms = rest.get("use_confirms", self._defaults.use_confirms)
            check_confirm_publish(transport, use_confirms)
            token = CALL_CONNECT_RETRY.set(policy)
            try:
                return await self.publish(payload, **rest)
            finally:
                CALL_CONNECT_RETRY.reset(token)
        return await self.publish(payload, **rest)
