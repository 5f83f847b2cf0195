"""Exchanges, queues and bindings a publisher declares, and how they reach the broker.

Declaring a Queue that names an exchange declares that exchange, the queue and the
binding, in that order, as kombu does. Entities are immutable and compare by value,
so "declared already on this connection" is a plain membership test.

kombu's own `Exchange`, `Queue` and `binding` objects (what nameko code passes) are
accepted wherever ours are and converted by their attributes, so kombu is never
imported: see `from_kombu`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import FrozenInstanceError
from typing import Any, Protocol, TypeAlias

import aiormq.exceptions as amqp_errors
from aiormq.abc import AbstractChannel

from ._exceptions import UnsupportedByBroker, deprecated_feature, deprecated_feature_message
from ._value import ValueRecord

__all__ = [
    "Declarable",
    "ExchangeLike",
    "KombuExchange",
    "KombuQueue",
    "Binding",
    "Entity",
    "Exchange",
    "Queue",
    "declare",
    "describe",
    "exchange_name",
    "expand",
    "from_kombu",
    "normalize_declare",
]

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")


class KombuExchange(Protocol):
    """What a type checker sees of a kombu ``Exchange``: its class attributes (the rest is read at run time)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def durable(self) -> bool: ...
    @property
    def auto_delete(self) -> bool: ...


class KombuQueue(Protocol):
    """What a type checker sees of a kombu ``Queue``."""

    @property
    def name(self) -> str: ...
    @property
    def routing_key(self) -> str: ...
    @property
    def durable(self) -> bool: ...
    @property
    def exclusive(self) -> bool: ...
    @property
    def auto_delete(self) -> bool: ...


# What `exchange=` and `declare=` take, for signatures (typing only: checked at run time by
# exchange_name and normalize_declare).
ExchangeLike: TypeAlias = "Exchange | KombuExchange | str"
Declarable: TypeAlias = "Exchange | Queue | KombuExchange | KombuQueue"


def _frozen_arguments(arguments: Mapping[str, Any] | None, what: str) -> tuple[tuple[str, Any], ...]:
    if arguments is None:
        return ()
    if not isinstance(arguments, Mapping):
        raise TypeError(f"{what} arguments must be a dict, not {type(arguments).__name__}")
    return tuple(sorted(arguments.items()))


class _Entity(ValueRecord):
    """Immutable, compared and hashed by value, shown as a dataclass is (ValueRecord: not a dataclass).

    `_fields` names the attributes in order.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    # copy, deepcopy and pickle: their default would restore the slots through __setattr__.
    def __getstate__(self) -> tuple[Any, ...]:
        return self._values()

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self._fields, state, strict=True):
            object.__setattr__(self, name, value)


class Exchange(_Entity):
    """An exchange. Defaults as kombu's: type "direct", durable.

    `no_declare=True` (kombu's name): never declared, it must exist already (a queue naming
    it is still declared and bound).
    """

    _fields = ("name", "type", "durable", "auto_delete", "internal", "arguments", "no_declare")
    __slots__ = __match_args__ = _fields
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: tuple[tuple[str, Any], ...]
    no_declare: bool

    def __init__(
        self,
        name: str,
        type: str = "direct",
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
        no_declare: bool = False,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"exchange name must be a str, not {name.__class__.__name__}")
        if type not in EXCHANGE_TYPES and not type.startswith("x-"):
            raise ValueError(f"exchange type must be one of {', '.join(EXCHANGE_TYPES)}, not {type!r}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "durable", durable)
        object.__setattr__(self, "auto_delete", auto_delete)
        object.__setattr__(self, "internal", internal)
        object.__setattr__(self, "arguments", _frozen_arguments(arguments, "exchange"))
        object.__setattr__(self, "no_declare", bool(no_declare))


class Binding(_Entity):
    """A binding of a queue to `exchange` (an Exchange, kombu's, or a name: a direct exchange)
    with a routing key (and headers-exchange arguments)."""

    _fields = ("exchange", "routing_key", "arguments")
    __slots__ = __match_args__ = _fields
    exchange: Exchange
    routing_key: str
    arguments: tuple[tuple[str, Any], ...]

    def __init__(
        self, exchange: ExchangeLike, routing_key: str = "", arguments: Mapping[str, Any] | None = None
    ) -> None:
        if not isinstance(routing_key, str):
            raise TypeError(f"a Binding's routing_key must be a str, not {type(routing_key).__name__}")
        object.__setattr__(self, "exchange", _as_exchange(exchange, "a Binding"))
        object.__setattr__(self, "routing_key", routing_key)
        object.__setattr__(self, "arguments", _frozen_arguments(arguments, "binding"))


class Queue(_Entity):
    """A queue, optionally bound to `exchange` with `routing_key` and to more `bindings`. Durable by default.

    `exchange` is an Exchange (ours or kombu's) or, as in kombu, a name: a direct exchange of that
    name. `no_declare=True` (kombu's name): neither the queue nor its exchanges and bindings are
    declared.
    """

    _fields = (
        "name",
        "exchange",
        "routing_key",
        "durable",
        "exclusive",
        "auto_delete",
        "arguments",
        "bindings",
        "no_declare",
    )
    __slots__ = __match_args__ = _fields
    name: str
    exchange: Exchange | None
    routing_key: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: tuple[tuple[str, Any], ...]
    bindings: tuple[Binding, ...]
    no_declare: bool

    def __init__(
        self,
        name: str,
        exchange: ExchangeLike | None = None,
        routing_key: str = "",
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        bindings: Iterable[Binding | Any] = (),  # Any: kombu's binding objects, checked at run time
        no_declare: bool = False,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"queue name must be a str, not {type(name).__name__}")
        if not isinstance(routing_key, str):
            raise TypeError(f"Queue(routing_key=...) must be a str, not {type(routing_key).__name__}")
        if exchange is not None:
            exchange = _as_exchange(exchange, "Queue(exchange=...)")
        bindings = tuple(_as_binding(binding) for binding in bindings)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "exchange", exchange)
        object.__setattr__(self, "routing_key", routing_key)
        object.__setattr__(self, "durable", durable)
        object.__setattr__(self, "exclusive", exclusive)
        object.__setattr__(self, "auto_delete", auto_delete)
        object.__setattr__(self, "arguments", _frozen_arguments(arguments, "queue"))
        object.__setattr__(self, "bindings", bindings)
        object.__setattr__(self, "no_declare", bool(no_declare))

    @property
    def all_bindings(self) -> tuple[Binding, ...]:
        first = (Binding(self.exchange, self.routing_key),) if self.exchange is not None else ()
        return first + self.bindings


# A declaration step: an Exchange, a Queue (declared alone) or a (queue name, Binding) pair.
Entity = Exchange | Queue | tuple[str, Binding]


# -- kombu's objects, by their attributes (kombu is never imported) ------------------------------

# kombu's Queue options that become queue arguments, as kombu's pyamqp transport sends them
# (kombu.transport.base.to_rabbitmq_queue_arguments): seconds become int milliseconds.
_KOMBU_QUEUE_OPTIONS: tuple[tuple[str, str, Callable[[Any], int]], ...] = (
    ("expires", "x-expires", lambda seconds: int(float(seconds) * 1000.0)),
    ("message_ttl", "x-message-ttl", lambda seconds: int(float(seconds) * 1000.0)),
    ("max_length", "x-max-length", int),
    ("max_length_bytes", "x-max-length-bytes", int),
    ("max_priority", "x-max-priority", int),
)


def _has(value: Any, *names: str) -> bool:
    return all(hasattr(value, name) for name in names)


def _is_kombu_queue(value: Any) -> bool:
    return _has(value, "name", "queue_arguments", "binding_arguments", "bindings")


def _is_kombu_exchange(value: Any) -> bool:
    return _has(value, "name", "type", "durable", "auto_delete", "arguments") and not _is_kombu_queue(value)


def _is_kombu_binding(value: Any) -> bool:
    return _has(value, "exchange", "routing_key", "arguments", "unbind_arguments")


def _kombu_name(value: Any, what: str) -> str:
    name = value.name or ""  # kombu's default is "", None is possible when set by hand
    if not isinstance(name, str):
        raise TypeError(f"kombu {what} name must be a str, not {type(name).__name__}")
    return name


def _kombu_exchange(value: Any) -> Exchange:
    name = _kombu_name(value, "Exchange")
    if getattr(value, "passive", False):
        raise ValueError(
            f"kombu Exchange {name!r} has passive=True (only check that it exists), which aiopublish does not do: "
            "drop passive to declare it, or set no_declare=True to leave it undeclared"
        )
    # kombu never declares the default exchange or an amq.* one (Exchange._can_declare).
    no_declare = bool(getattr(value, "no_declare", False)) or name.startswith("amq.")
    return Exchange(
        name,
        value.type or "direct",
        durable=bool(value.durable),
        auto_delete=bool(value.auto_delete),
        internal=bool(getattr(value, "internal", False)),  # not a kombu 5 attribute; honoured if set
        arguments=value.arguments or None,
        no_declare=no_declare,
    )


def _kombu_binding(value: Any) -> Binding:
    if value.exchange is None:
        raise TypeError("a kombu binding needs an exchange, not None")
    return Binding(value.exchange, value.routing_key or "", value.arguments or None)


def _kombu_queue(value: Any) -> Queue:
    name = _kombu_name(value, "Queue")
    if getattr(value, "on_declared", None) is not None:
        raise ValueError(f"kombu Queue {name!r} has an on_declared callback, which aiopublish never calls")
    arguments = dict(value.queue_arguments or {})
    for attribute, key, convert in _KOMBU_QUEUE_OPTIONS:
        option = getattr(value, attribute, None)
        if option is not None:
            arguments[key] = convert(option)
    bindings: list[Binding] = []
    exchange = getattr(value, "exchange", None)
    if exchange is not None and getattr(exchange, "name", None):  # kombu binds only to a named exchange
        bindings.append(Binding(exchange, value.routing_key or "", value.binding_arguments or None))
    # kombu keeps bindings in a set: sorted here so that one Queue always converts the same way.
    extra = sorted((_as_binding(item) for item in value.bindings or ()), key=repr)
    return Queue(
        name,
        durable=bool(value.durable),
        exclusive=bool(value.exclusive),
        auto_delete=bool(value.auto_delete),
        arguments=arguments or None,
        bindings=[*bindings, *extra],
        no_declare=bool(getattr(value, "no_declare", False)),
    )


def from_kombu(value: Any) -> Exchange | Queue:
    """aiopublish's Exchange or Queue for a kombu `Exchange`/`Queue` (or ours, unchanged).

    Honoured: name, type, durable, auto_delete, arguments, no_declare (and amq.* names, which
    kombu never declares), internal if set; for a Queue also exclusive, routing_key,
    queue_arguments, binding_arguments (on the binding to `exchange`), bindings, and expires,
    message_ttl, max_length, max_length_bytes, max_priority as kombu's x- arguments. Refused with
    a ValueError: passive exchanges and on_declared callbacks. Consumer-side attributes
    (consumer_arguments, no_ack, alias) and an Exchange's delivery_mode, which nameko's
    Publisher always overrides with its own, play no part in declaring and are ignored.
    """
    if isinstance(value, (Exchange, Queue)):
        return value
    if _is_kombu_queue(value):
        return _kombu_queue(value)
    if _is_kombu_exchange(value):
        return _kombu_exchange(value)
    raise TypeError(f"expected an Exchange or a Queue (aiopublish's or kombu's), not {type(value).__name__}")


def _as_exchange(value: Any, where: str) -> Exchange:
    if isinstance(value, Exchange):
        return value
    if isinstance(value, str):
        return Exchange(value)  # kombu: Queue(exchange="name") is a direct, durable exchange
    if _is_kombu_exchange(value):
        return _kombu_exchange(value)
    raise TypeError(f"{where} must be an Exchange or an exchange name, not {type(value).__name__}")


def _as_binding(value: Any) -> Binding:
    if isinstance(value, Binding):
        return value
    if _is_kombu_binding(value):
        return _kombu_binding(value)
    raise TypeError(f"Queue(bindings=...) holds Binding objects (aiopublish's or kombu's), not {type(value).__name__}")


def exchange_name(value: Any) -> str:
    """The name to publish to for `exchange=`: a str, an Exchange (ours or kombu's), or None (the default)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, Exchange):
        return value.name
    if _is_kombu_exchange(value):
        return _kombu_name(value, "Exchange")
    raise TypeError(f"exchange must be a str, an Exchange or None, not {type(value).__name__}")


def normalize_declare(declare: Any, where: str) -> tuple[Exchange | Queue, ...]:
    """Check a `declare` argument: an iterable of Exchange and Queue objects, aiopublish's or kombu's."""
    if declare is None:
        return ()
    if isinstance(declare, (Exchange, Queue)) or _is_kombu_queue(declare) or _is_kombu_exchange(declare):
        raise TypeError(f"{where} declare must be a list of Exchange/Queue objects, not a single one")
    try:
        items = tuple(declare)
    except TypeError:
        raise TypeError(f"{where} declare must be a list, not {type(declare).__name__}") from None
    entities: list[Exchange | Queue] = []
    for item in items:
        if isinstance(item, (Exchange, Queue)):
            entities.append(item)
        elif _is_kombu_queue(item) or _is_kombu_exchange(item):
            entities.append(from_kombu(item))
        elif isinstance(item, Binding) or _is_kombu_binding(item):
            raise TypeError(f"{where} declare cannot hold a binding: put it in Queue(..., bindings=[...])")
        else:
            raise TypeError(
                f"{where} declare holds Exchange or Queue objects (aiopublish's or kombu's), not {type(item).__name__}"
            )
    return tuple(entities)


def expand(entities: Iterable[Exchange | Queue]) -> list[Entity]:
    """The declaration steps for `entities`, in order: a queue's exchanges before it, its bindings after.

    What is marked no_declare is left out: a queue with its exchanges and bindings, an exchange
    on its own (a queue bound to it is still declared and bound).
    """
    steps: list[Entity] = []
    for entity in entities:
        if entity.no_declare:
            continue
        if isinstance(entity, Queue):
            for binding in entity.all_bindings:
                if not binding.exchange.no_declare:
                    steps.append(binding.exchange)
            steps.append(entity)
            for binding in entity.all_bindings:
                steps.append((entity.name, binding))
        else:
            steps.append(entity)
    return steps


async def declare(channel: AbstractChannel, step: Entity) -> None:
    """Send one declaration step and wait for the broker's answer.

    A declaration using a deprecated feature the broker denies (RabbitMQ 4.3: a queue's
    x-queue-master-locator) makes it close the whole connection with 541; that raises
    UnsupportedByBroker naming the feature and this declaration, which no retry can help.
    """
    try:
        await _declare(channel, step)
    except amqp_errors.ConnectionClosed as exc:
        feature = deprecated_feature(exc)
        if feature is None:
            raise
        text = str(getattr(exc, "strerror", None) or exc)
        what = describe(step)
        raise UnsupportedByBroker(
            deprecated_feature_message(feature, text, what), feature=feature, declaration=what
        ) from None


def describe(step: Entity) -> str:
    """One declaration step in words, for errors: its kind, name and arguments."""
    if isinstance(step, Exchange):
        kind, name, arguments = "exchange", step.name, step.arguments
    elif isinstance(step, Queue):
        kind, name, arguments = "queue", step.name, step.arguments
    else:
        queue, binding = step
        kind, name, arguments = "binding", f"{queue} to {binding.exchange.name}", binding.arguments
    shown = f" with arguments {dict(arguments)!r}" if arguments else ""
    return f"the declaration of {kind} {name!r}{shown}"


async def _declare(channel: AbstractChannel, step: Entity) -> None:
    if isinstance(step, Exchange):
        if step.name == "":  # the default exchange always exists and cannot be declared
            return
        await channel.exchange_declare(
            step.name,
            exchange_type=step.type,
            durable=step.durable,
            auto_delete=step.auto_delete,
            internal=step.internal,
            arguments=dict(step.arguments) or None,
        )
    elif isinstance(step, Queue):
        await channel.queue_declare(
            step.name,
            durable=step.durable,
            exclusive=step.exclusive,
            auto_delete=step.auto_delete,
            arguments=dict(step.arguments) or None,
        )
    else:
        queue, binding = step
        if binding.exchange.name == "":  # every queue is bound to the default exchange already
            return
        await channel.queue_bind(
            queue,
            binding.exchange.name,
            routing_key=binding.routing_key,
            arguments=dict(binding.arguments) or None,
        )
