"""Exchanges, queues and bindings a publisher declares, and how they reach the broker.

Declaring a Queue that names an exchange declares that exchange, the queue and the
binding, in that order, as kombu does. Entities are immutable and compare by value,
so "declared already on this connection" is a plain membership test.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiormq.abc import AbstractChannel

__all__ = ["Binding", "Entity", "Exchange", "Queue", "expand", "normalize_declare"]

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")


def _frozen_arguments(arguments: Mapping[str, Any] | None, what: str) -> tuple[tuple[str, Any], ...]:
    if arguments is None:
        return ()
    if not isinstance(arguments, Mapping):
        raise TypeError(f"{what} arguments must be a dict, not {type(arguments).__name__}")
    return tuple(sorted(arguments.items()))


@dataclass(frozen=True)
class Exchange:
    """An exchange. Defaults as kombu's: type "direct", durable."""

    name: str
    type: str = "direct"
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: tuple[tuple[str, Any], ...] = field(default=())

    def __init__(
        self,
        name: str,
        type: str = "direct",
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
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


@dataclass(frozen=True)
class Binding:
    """A binding of a queue to `exchange` with a routing key (and headers-exchange arguments)."""

    exchange: Exchange
    routing_key: str = ""
    arguments: tuple[tuple[str, Any], ...] = field(default=())

    def __init__(self, exchange: Exchange, routing_key: str = "", arguments: Mapping[str, Any] | None = None) -> None:
        if not isinstance(exchange, Exchange):
            raise TypeError(f"a Binding needs an Exchange, not {type(exchange).__name__}")
        object.__setattr__(self, "exchange", exchange)
        object.__setattr__(self, "routing_key", routing_key)
        object.__setattr__(self, "arguments", _frozen_arguments(arguments, "binding"))


@dataclass(frozen=True)
class Queue:
    """A queue, optionally bound to `exchange` with `routing_key` and to more `bindings`. Durable by default."""

    name: str
    exchange: Exchange | None = None
    routing_key: str = ""
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: tuple[tuple[str, Any], ...] = field(default=())
    bindings: tuple[Binding, ...] = field(default=())

    def __init__(
        self,
        name: str,
        exchange: Exchange | None = None,
        routing_key: str = "",
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        bindings: Iterable[Binding] = (),
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"queue name must be a str, not {type(name).__name__}")
        if exchange is not None and not isinstance(exchange, Exchange):
            raise TypeError(f"Queue(exchange=...) must be an Exchange, not {type(exchange).__name__}")
        bindings = tuple(bindings)
        for binding in bindings:
            if not isinstance(binding, Binding):
                raise TypeError(f"Queue(bindings=...) holds Binding objects, not {type(binding).__name__}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "exchange", exchange)
        object.__setattr__(self, "routing_key", routing_key)
        object.__setattr__(self, "durable", durable)
        object.__setattr__(self, "exclusive", exclusive)
        object.__setattr__(self, "auto_delete", auto_delete)
        object.__setattr__(self, "arguments", _frozen_arguments(arguments, "queue"))
        object.__setattr__(self, "bindings", bindings)

    @property
    def all_bindings(self) -> tuple[Binding, ...]:
        first = (Binding(self.exchange, self.routing_key),) if self.exchange is not None else ()
        return first + self.bindings


# A declaration step: an Exchange, a Queue (declared alone) or a (queue name, Binding) pair.
Entity = Exchange | Queue | tuple[str, Binding]


def normalize_declare(declare: Any, where: str) -> tuple[Exchange | Queue, ...]:
    """Check a `declare` argument: an iterable of Exchange and Queue objects."""
    if declare is None:
        return ()
    if isinstance(declare, (Exchange, Queue)):
        raise TypeError(f"{where} declare must be a list of Exchange/Queue objects, not a single one")
    try:
        items = tuple(declare)
    except TypeError:
        raise TypeError(f"{where} declare must be a list, not {type(declare).__name__}") from None
    for item in items:
        if not isinstance(item, (Exchange, Queue)):
            raise TypeError(f"{where} declare holds Exchange or Queue objects, not {type(item).__name__}")
    return items


def expand(entities: Iterable[Exchange | Queue]) -> list[Entity]:
    """The declaration steps for `entities`, in order: a queue's exchanges before it, its bindings after."""
    steps: list[Entity] = []
    for entity in entities:
        if isinstance(entity, Queue):
            for binding in entity.all_bindings:
                steps.append(binding.exchange)
            steps.append(entity)
            for binding in entity.all_bindings:
                steps.append((entity.name, binding))
        else:
            steps.append(entity)
    return steps


async def declare(channel: AbstractChannel, step: Entity) -> None:
    """Send one declaration step and wait for the broker's answer."""
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
