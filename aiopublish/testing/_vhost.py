"""One RabbitMQ vhost's state in memory: exchanges, queues, bindings, and what it refuses.

`Vhost` declares like RabbitMQ (the amq.* exchanges predeclared, server-named queues,
exclusive queues owned by a connection, an inequivalent redeclaration refused with
RabbitMQ's reply code and text), routes a message to its queues with the rules of
`_routing` (alternate exchanges followed), and says whether a publish is refused
(a missing or internal exchange, a user_id that is not the login, a body over the
version's default max_message_size). `InMemoryBroker` adds what is published and the
assertions on top.

It imitates one RabbitMQ version (``memory://?rabbitmq=3.10``; default `DEFAULT_RABBITMQ`,
the newest CI tests): 4.x's 16 MiB default body limit, 4.1's least frame_max, and the
deprecated features 4.3 denies by default (`DENIED_FROM_4_3`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pamqp import decode as pamqp_decode
from pamqp import encode as pamqp_encode
from yarl import URL

from .._broker_limits import BrokerLimits
from .._declarations import Binding, Entity, Exchange, Queue, describe, expand, normalize_declare
from .._exceptions import (
    AccessRefused,
    ChannelError,
    NotFound,
    PreconditionFailed,
    UnsupportedByBroker,
    deprecated_feature_message,
)
from ._records import RecordedMessage
from ._routing import RULES, X_MATCH_MODES, comparable

__all__ = ["DEFAULT_LOGIN", "DEFAULT_RABBITMQ", "DEFAULT_URL", "Vhost", "rabbitmq_limits"]

DEFAULT_URL = "memory://"
DEFAULT_LOGIN = "guest"
# The RabbitMQ imitated unless the URL says (memory://?rabbitmq=4.0): the newest version CI tests
# against (tests/rabbitmq_chroots.py VERSIONS; tests/test_rabbitmq4_parity.py keeps them in step).
DEFAULT_RABBITMQ = "4.3.6"
# Queue arguments whose deprecated feature RabbitMQ 4.3 denies by default (it closes the connection, 541).
DENIED_FROM_4_3 = {"x-queue-master-locator": "queue_master_locator"}


def rabbitmq_limits(version: str) -> BrokerLimits:
    """What a RabbitMQ of `version` ("4.3", "3.10.8") announces; ValueError naming a version that is not one."""
    if not isinstance(version, str) or not all(part.isdigit() for part in version.split(".")) or version.count(".") > 2:
        raise ValueError(f"rabbitmq= must be a RabbitMQ version such as 4.3 or 3.10.8, not {version!r}")
    return BrokerLimits.from_server_properties({"product": "RabbitMQ", "version": version})


def _denied_text(feature: str) -> str:
    """RabbitMQ 4.3's connection.close text for a denied feature, cut at 255 bytes as the broker cuts it."""
    text = (
        f"INTERNAL_ERROR - Feature `{feature}` is deprecated.\nBy default, this feature is not permitted anymore.\n"
        "The feature will be removed from a future major RabbitMQ version, regardless of the configuration; "
        "actual version to be determined.\nTo continue using it, set the deprecated_features.permit setting."
    )
    return text[:252] + "..."


# The exchanges every RabbitMQ vhost has: (name, type, internal). All durable.
_PREDECLARED = (
    ("amq.direct", "direct", False),
    ("amq.fanout", "fanout", False),
    ("amq.topic", "topic", False),
    ("amq.headers", "headers", False),
    ("amq.match", "headers", False),
    ("amq.rabbitmq.trace", "topic", True),
)
# Queue arguments RabbitMQ compares on a redeclaration (others are ignored, as there).
_QUEUE_EQUIVALENCE_ARGS = (
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
    "x-delivery-limit",
)
_EXCHANGE_EQUIVALENCE_ARGS = ("alternate-exchange",)
_OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
# RabbitMQ's names for the AMQP field types, by pamqp's type tag.
_FIELD_TYPE_NAMES = {
    "t": "bool",
    "b": "byte",
    "s": "short",
    "u": "unsignedshort",
    "I": "signedint",
    "i": "unsignedint",
    "l": "long",
    "f": "float",
    "d": "double",
    "D": "decimal",
    "S": "longstr",
    "T": "timestamp",
    "F": "table",
    "A": "array",
    "x": "binary",
    "V": "void",
}
_ROUTED_TYPES = tuple(RULES)


def _normalize_table(arguments: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Arguments as the broker stores them: encoded and decoded again as an AMQP table."""
    table = dict(arguments)
    if not table:
        return {}
    try:
        encoded = pamqp_encode.field_table(table)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"arguments cannot be sent as an AMQP table: {exc}") from None
    return pamqp_decode.field_table(encoded)[1]


def _field_type(value: Any) -> str:
    try:
        tag = chr(pamqp_encode.encode_table_value(value)[0])
    except (TypeError, ValueError):
        return type(value).__name__
    return _FIELD_TYPE_NAMES.get(tag, tag)


def _describe_argument(arguments: Mapping[str, Any], key: str) -> str:
    if key not in arguments:
        return "none"
    value = arguments[key]
    shown = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if isinstance(shown, bool):
        shown = str(shown).lower()
    return f"the value '{shown}' of type '{_field_type(value)}'"


def _flag(value: bool) -> str:
    return "true" if value else "false"


@dataclass
class _QueueState:
    definition: Queue
    arguments: dict[str, Any]
    owner: object | None
    messages: list[RecordedMessage] = field(default_factory=list)
    size: int = 0  # body bytes in the queue, for x-max-length-bytes

    def overflow(self) -> str:
        return str(self.arguments.get("x-overflow", "drop-head"))

    def full_for(self, body_size: int) -> bool:
        """Whether a reject-publish queue refuses one more message of this size."""
        max_length = self.arguments.get("x-max-length")
        max_bytes = self.arguments.get("x-max-length-bytes")
        if max_length is not None and len(self.messages) >= max_length:
            return True
        return max_bytes is not None and self.size + body_size > max_bytes

    def enqueue(self, message: RecordedMessage) -> None:
        self.messages.append(message)
        self.size += len(message.body)
        max_length = self.arguments.get("x-max-length")
        max_bytes = self.arguments.get("x-max-length-bytes")
        # drop-head: the oldest messages go until the queue fits its limits again.
        while self.messages and (
            (max_length is not None and len(self.messages) > max_length)
            or (max_bytes is not None and self.size > max_bytes)
        ):
            self.size -= len(self.messages.pop(0).body)


@dataclass(frozen=True)
class _Bound:
    queue: str
    routing_key: str
    arguments: tuple[tuple[str, Any], ...]
    table: dict[str, Any] = field(compare=False, hash=False)


class Vhost:
    """The declared entities of one vhost and the broker's rules for them (no messages recorded here)."""

    def __init__(self, url: str = DEFAULT_URL, rabbitmq: str = DEFAULT_RABBITMQ) -> None:
        self.url = url
        #: The RabbitMQ this vhost imitates: its version and default limits (see `rabbitmq_limits`).
        self.rabbitmq: BrokerLimits = rabbitmq_limits(rabbitmq)
        path = URL(url).path
        self.vhost: str = path[1:] if len(path) > 1 else "/"
        self._exchanges: dict[str, Exchange] = {}
        self._exchange_arguments: dict[str, dict[str, Any]] = {}
        self._bindings: dict[str, list[_Bound]] = {}
        self._queues: dict[str, _QueueState] = {}
        self._last_queue: dict[int, str] = {}  # id(owner) -> the queue it declared last
        for name, type_, internal in _PREDECLARED:
            self._add_exchange(Exchange(name, type_, internal=internal))

    # -- declaring -----------------------------------------------------------------------------

    @property
    def exchanges(self) -> Mapping[str, Exchange]:
        """The declared exchanges by name, RabbitMQ's amq.* ones included (a copy)."""
        return dict(self._exchanges)

    @property
    def queues(self) -> Mapping[str, Queue]:
        """The declared queues by name, as first declared (a copy)."""
        return {name: state.definition for name, state in self._queues.items()}

    def bindings(self, exchange: str) -> list[tuple[str, str, dict[str, Any]]]:
        """The bindings of `exchange` as (queue, routing key, arguments), in the order they were made."""
        return [(bound.queue, bound.routing_key, dict(bound.table)) for bound in self._bindings.get(exchange, [])]

    def declare(self, *entities: Any) -> None:
        """Declare exchanges and queues (a queue's exchanges and bindings too), as a Publisher's `declare` does.

        Takes aiopublish's or kombu's Exchange and Queue objects. Raises PreconditionFailed
        for a redeclaration with other properties, like RabbitMQ.
        """
        for step in expand(normalize_declare(entities, "declare()")):
            self.declare_step(step)

    def bind(
        self, queue: str, exchange: str, routing_key: str = "", arguments: Mapping[str, Any] | None = None
    ) -> None:
        """Bind an existing queue to an existing exchange (NotFound when either is missing)."""
        self._bind(queue, exchange, routing_key, tuple(sorted((arguments or {}).items())))

    def delete_queue(self, name: str) -> None:
        """Delete a queue, its messages and its bindings (nothing happens if it does not exist)."""
        self._queues.pop(name, None)
        for exchange, bindings in self._bindings.items():
            self._bindings[exchange] = [bound for bound in bindings if bound.queue != name]

    def delete_exchange(self, name: str) -> None:
        """Delete an exchange and its bindings (nothing happens if it does not exist)."""
        self._exchanges.pop(name, None)
        self._exchange_arguments.pop(name, None)
        self._bindings.pop(name, None)

    def declare_step(self, step: Entity, owner: object | None = None) -> None:
        """Declare one step of `aiopublish._declarations.expand`; `owner` stands for the connection."""
        if isinstance(step, Exchange):
            self._declare_exchange(step)
        elif isinstance(step, Queue):
            self._declare_queue(step, owner)
        else:
            queue, binding = step
            if queue == "":  # RabbitMQ reads "" as the queue this channel declared last
                queue = self._last_queue.get(id(owner), "")
            self._declare_binding(queue, binding)

    def _add_exchange(self, exchange: Exchange) -> None:
        self._exchanges[exchange.name] = exchange
        self._exchange_arguments[exchange.name] = _normalize_table(exchange.arguments)
        self._bindings.setdefault(exchange.name, [])

    def _resource(self, kind: str, name: str) -> str:
        return f"{kind} '{name}' in vhost '{self.vhost}'"

    def _inequivalent(self, kind: str, name: str, arg: str, received: str, current: str) -> PreconditionFailed:
        return PreconditionFailed(
            406,
            f"PRECONDITION_FAILED - inequivalent arg '{arg}' for {self._resource(kind, name)}: "
            f"received {received} but current is {current}",
        )

    def _declare_exchange(self, exchange: Exchange) -> None:
        name = exchange.name
        if name == "":  # the default exchange always exists and cannot be declared
            return
        if exchange.type not in _ROUTED_TYPES:
            raise NotImplementedError(
                f"the in-memory broker routes only {', '.join(_ROUTED_TYPES)} exchanges, "
                f"not {exchange.type!r} (exchange {name!r})"
            )
        current = self._exchanges.get(name)
        if current is None:
            if name.startswith("amq."):
                raise AccessRefused(403, f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'")
            self._add_exchange(exchange)
            return
        for arg, received, now in (
            ("type", f"'{exchange.type}'", f"'{current.type}'"),
            ("durable", f"'{_flag(exchange.durable)}'", f"'{_flag(current.durable)}'"),
            ("auto_delete", f"'{_flag(exchange.auto_delete)}'", f"'{_flag(current.auto_delete)}'"),
            ("internal", f"'{_flag(exchange.internal)}'", f"'{_flag(current.internal)}'"),
        ):
            if received != now:
                raise self._inequivalent("exchange", name, arg, received, now)
        self._check_arguments(
            "exchange", name, self._exchange_arguments[name], exchange.arguments, _EXCHANGE_EQUIVALENCE_ARGS
        )

    def _check_arguments(
        self,
        kind: str,
        name: str,
        current: Mapping[str, Any],
        requested: Iterable[tuple[str, Any]],
        keys: Iterable[str],
    ) -> None:
        wanted = _normalize_table(requested)
        for key in keys:
            if key not in current and key not in wanted:
                continue
            if key in current and key in wanted and comparable(current[key]) == comparable(wanted[key]):
                continue
            raise self._inequivalent(kind, name, key, _describe_argument(wanted, key), _describe_argument(current, key))

    def _declare_queue(self, queue: Queue, owner: object | None) -> None:
        if self.rabbitmq.version >= (4, 3):
            for key, feature in DENIED_FROM_4_3.items():
                if key in dict(queue.arguments):
                    what = describe(queue)
                    message = deprecated_feature_message(feature, _denied_text(feature), what)
                    raise UnsupportedByBroker(message, feature=feature, declaration=what)
        name = queue.name
        server_named = name == ""
        if server_named:
            # A server-named queue, as RabbitMQ names them.
            name = f"amq.gen-{os.urandom(11).hex()}"
            queue = Queue(
                name,
                durable=queue.durable,
                exclusive=queue.exclusive,
                auto_delete=queue.auto_delete,
                arguments=dict(queue.arguments),
            )
        self._last_queue[id(owner)] = name
        current = self._queues.get(name)
        wanted_owner = owner if queue.exclusive else None
        if current is None:
            if name.startswith("amq.") and not server_named:
                raise AccessRefused(403, f"ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'")
            arguments = _normalize_table(queue.arguments)
            self._validate_queue_arguments(name, arguments)
            self._queues[name] = _QueueState(queue, arguments, wanted_owner)
            return
        definition = current.definition
        for arg, received, now in (
            ("durable", queue.durable, definition.durable),
            ("auto_delete", queue.auto_delete, definition.auto_delete),
        ):
            if received != now:
                raise self._inequivalent("queue", name, arg, f"'{_flag(received)}'", f"'{_flag(now)}'")
        self._check_arguments("queue", name, current.arguments, queue.arguments, _QUEUE_EQUIVALENCE_ARGS)
        if current.owner is not wanted_owner:
            raise ChannelError(
                405,
                f"RESOURCE_LOCKED - cannot obtain exclusive access to locked {self._resource('queue', name)}. "
                "It could be originally declared on another connection or the exclusive property value does not "
                "match that of the original declaration.",
            )

    def _validate_queue_arguments(self, name: str, arguments: Mapping[str, Any]) -> None:
        def invalid(key: str, reason: str) -> PreconditionFailed:
            return PreconditionFailed(
                406, f"PRECONDITION_FAILED - invalid arg '{key}' for {self._resource('queue', name)}: {reason}"
            )

        for key in ("x-max-length", "x-max-length-bytes"):
            if key not in arguments:
                continue
            value = arguments[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise invalid(key, f'"expected integer, got {_field_type(value)}"')
            if value < 0:
                raise invalid(key, f"{{value_negative,{value}}}")
        if "x-overflow" in arguments and arguments["x-overflow"] not in _OVERFLOW_MODES:
            raise invalid("x-overflow", "invalid_overflow")

    def _declare_binding(self, queue: str, binding: Binding) -> None:
        if binding.exchange.name == "":  # every queue is bound to the default exchange already
            return
        self._bind(queue, binding.exchange.name, binding.routing_key, binding.arguments)

    def _bind(self, queue: str, exchange: str, routing_key: str, arguments: tuple[tuple[str, Any], ...]) -> None:
        if exchange not in self._exchanges:
            raise NotFound(404, f"NOT_FOUND - no {self._resource('exchange', exchange)}")
        if queue not in self._queues:
            raise NotFound(404, f"NOT_FOUND - no {self._resource('queue', queue)}")
        table = _normalize_table(arguments)
        if self._exchanges[exchange].type == "headers" and "x-match" in table:
            x_match = table["x-match"]
            if not isinstance(x_match, str):
                raise PreconditionFailed(
                    406,
                    f"PRECONDITION_FAILED - Invalid x-match field type {_field_type(x_match)} (value {x_match}); "
                    "expected longstr",
                )
            if x_match not in X_MATCH_MODES:
                raise PreconditionFailed(
                    406,
                    f'PRECONDITION_FAILED - Invalid x-match field value <<"{x_match}">>; '
                    "expected all, any, all-with-x, or any-with-x",
                )
        bound = _Bound(queue, routing_key, tuple(sorted(arguments)), table)
        bindings = self._bindings[exchange]
        if bound not in bindings:
            bindings.append(bound)

    def release(self, owner: object) -> None:
        """A connection closed: its exclusive queues go, as on RabbitMQ."""
        for name in [name for name, state in self._queues.items() if state.owner is owner]:
            self.delete_queue(name)

    # -- routing -------------------------------------------------------------------------------

    def route(self, exchange: str, routing_key: str, headers: Mapping[str, Any] | None = None) -> list[str]:
        """The queues a message to `exchange` with this routing key and headers goes to, in binding order.

        Follows alternate exchanges; an exchange that does not exist routes nowhere.
        """
        if exchange == "":
            return [routing_key] if routing_key in self._queues else []
        queues: list[str] = []
        seen: set[str] = set()
        name: str | None = exchange
        while name is not None and name in self._exchanges and name not in seen:
            seen.add(name)
            for queue in self._match(name, routing_key, headers):
                if queue not in queues:
                    queues.append(queue)
            if queues:
                break
            alternate = self._exchange_arguments[name].get("alternate-exchange")
            name = alternate if isinstance(alternate, str) else None
        return queues

    def _match(self, exchange: str, routing_key: str, headers: Mapping[str, Any] | None) -> Iterator[str]:
        rule = RULES[self._exchanges[exchange].type]
        for bound in self._bindings.get(exchange, []):
            if bound.queue in self._queues and rule(bound.routing_key, bound.table, routing_key, headers):
                yield bound.queue

    def accepting(
        self, exchange: str, routing_key: str, headers: Mapping[str, Any] | None, body_size: int
    ) -> tuple[list[str], bool]:
        """The routed queues that take a message of this size, and whether any routed queue refused it.

        A full queue whose x-overflow is reject-publish(-dlx) refuses; a drop-head one takes
        the message and drops its oldest.
        """
        targets = self.route(exchange, routing_key, headers)
        accepted = [
            name
            for name in targets
            if self._queues[name].overflow() == "drop-head" or not self._queues[name].full_for(body_size)
        ]
        return accepted, len(accepted) < len(targets)

    def enqueue(self, queues: Iterable[str], message: RecordedMessage) -> None:
        """Put `message` in each of these queues (as returned by `accepting`)."""
        for name in queues:
            self._queues[name].enqueue(message)

    def queued(self, queue: str) -> list[RecordedMessage]:
        """The messages now in `queue`, oldest first (a copy). LookupError if no such queue was declared."""
        state = self._queues.get(queue)
        if state is None:
            known = ", ".join(repr(name) for name in self._queues) or "none"
            raise LookupError(f"no queue {queue!r} was declared on {self.url} (declared: {known})")
        return list(state.messages)

    def empty_queues(self) -> None:
        """Drop every queued message; queues, exchanges and bindings stay."""
        for state in self._queues.values():
            state.messages.clear()
            state.size = 0

    # -- refusing -------------------------------------------------------------------------------

    def refusal(self, exchange: str, user_id: str | None, login: str, body_size: int = 0) -> ChannelError | None:
        """The channel error RabbitMQ closes the channel with for this publish, or None if it takes it."""
        # RabbitMQ's order: the size is checked first, then the exchange must exist and must not be
        # internal, then the user_id is checked.
        limit = self.rabbitmq.max_message_size
        if body_size > limit:
            return PreconditionFailed(
                406, f"PRECONDITION_FAILED - message size {body_size} is larger than configured max size {limit}"
            )
        if exchange != "":
            current = self._exchanges.get(exchange)
            if current is None:
                return NotFound(404, f"NOT_FOUND - no {self._resource('exchange', exchange)}")
            if current.internal:
                return AccessRefused(
                    403, f"ACCESS_REFUSED - cannot publish to internal {self._resource('exchange', exchange)}"
                )
        if user_id is not None and user_id != login:
            return PreconditionFailed(
                406,
                f"PRECONDITION_FAILED - user_id property set to '{user_id}' but authenticated user was '{login}'",
            )
        return None
