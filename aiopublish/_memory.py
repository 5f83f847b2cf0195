"""The in-memory broker behind ``memory://`` URLs: RabbitMQ's routing rules and refusals, no network.

`InMemoryBroker` keeps exchanges, queues and bindings the way one RabbitMQ vhost
does and routes each publish with the broker's rules (default, direct, fanout,
topic and headers exchanges, alternate exchanges, x-max-length overflow). It
refuses what RabbitMQ refuses, with the same reply codes and texts: a missing
exchange (404), a user_id that is not the login (406), a publish to an internal
exchange (403), an inequivalent redeclaration (406).

`MemoryLink` and `MemoryChannel` are the `LinkLike` and `PublishChannel` a
Publisher uses for a ``memory://`` URL. The channel decodes the encoded
properties with pamqp, so what is recorded is exactly what would be on the wire,
and settles each publish at once: an ack, a return, a nack or a channel error,
as RabbitMQ would settle it. Publishers do not await anything in here, so the
result of a publish never depends on timing.

Not simulated: consumers, connection loss, blocking (connection.blocked), message
TTL and expiry, priorities, dead-lettering, exchange-to-exchange bindings and
exchange types from plugins.
"""

from __future__ import annotations

import asyncio
import bz2
import json
import lzma
import os
import pickle
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any, Literal

from pamqp import commands as spec
from pamqp import encode as pamqp_encode
from pamqp.header import ContentHeader
from yarl import URL

from ._blame import ChannelInterrupted, facts_of
from ._channel import Batch, PublishChannel
from ._connection import ConnectionParams
from ._declarations import Binding, Entity, Exchange, Queue, expand
from ._exceptions import (
    AccessRefused,
    ChannelError,
    NotFound,
    PreconditionFailed,
    PublisherClosed,
    UndeliverableMessage,
)
from ._metrics import Metrics
from ._options import Prepared

__all__ = [
    "InMemoryBroker",
    "MemoryChannel",
    "MemoryLink",
    "Outcome",
    "RecordedMessage",
    "broker_key",
    "decode_payload",
    "get_broker",
    "headers_match",
    "register_decoder",
    "register_decompressor",
    "reset",
    "topic_matches",
]

DEFAULT_URL = "memory://"
DEFAULT_LOGIN = "guest"

Outcome = Literal["routed", "unroutable", "returned", "nacked", "refused"]

# The exchanges every RabbitMQ vhost has: (name, type, internal). All durable.
_PREDECLARED = (
    ("amq.direct", "direct", False),
    ("amq.fanout", "fanout", False),
    ("amq.topic", "topic", False),
    ("amq.headers", "headers", False),
    ("amq.match", "headers", False),
    ("amq.rabbitmq.trace", "topic", True),
)
_ROUTED_TYPES = ("direct", "fanout", "topic", "headers")
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
_X_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")
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
# AMQP basic properties in wire order: (pamqp attribute, name aiopublish uses).
_PROPERTY_NAMES = tuple((name, "type" if name == "message_type" else name) for name in spec.Basic.Properties.__slots__)


# -- payload decoding --------------------------------------------------------------------------


def _zstd_decompress(body: bytes) -> bytes:
    import io

    import zstandard

    # A stream reader also reads frames that do not record their content size (as kombu does).
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
        data: bytes = reader.read()
    return data


def _msgpack_loads(body: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(body, raw=False)


def _text(body: bytes, encoding: str | None) -> str:
    return body.decode(encoding or "utf-8")


_decompressors: dict[str, Callable[[bytes], bytes]] = {
    # kombu's "gzip" is zlib, named by this content type: the same pairs as kombu.compression.
    "application/x-gzip": zlib.decompress,
    "application/x-bz2": bz2.decompress,
    "application/x-lzma": lzma.decompress,
    "application/zstd": _zstd_decompress,
}
_decoders: dict[str, Callable[[bytes], Any]] = {
    "application/json": lambda body: json.loads(body),
    "application/x-python-serialize": lambda body: pickle.loads(body),
    "application/x-msgpack": _msgpack_loads,
}


def register_decompressor(content_type: str, decompress: Callable[[bytes], bytes]) -> None:
    """Undo `compression` headers of this content type (for a compressor added with register_compressor)."""
    _decompressors[content_type] = decompress


def register_decoder(content_type: str, decode: Callable[[bytes], Any]) -> None:
    """Decode bodies of this content type into `RecordedMessage.payload` (for a serializer of your own)."""
    _decoders[content_type] = decode


def decode_payload(body: bytes, content_type: str | None, content_encoding: str | None, compression: Any) -> Any:
    """The payload a kombu consumer would get: decompressed, then deserialized by content type.

    json, pickle and msgpack become objects; text/* (and any body with a content_encoding
    other than "binary") becomes str; anything else stays bytes. When the compression or
    the body cannot be decoded, the payload is the body as sent.
    """
    if compression:
        decompress = _decompressors.get(str(compression))
        if decompress is None:
            return body
        try:
            body = decompress(body)
        except Exception:
            return body
    decoder = _decoders.get(content_type or "")
    try:
        if decoder is not None:
            return decoder(body)
        if (content_type or "").startswith("text/"):
            return _text(body, content_encoding)
        if content_encoding and content_encoding.lower() not in ("binary", "ascii-8bit"):
            return _text(body, content_encoding)
    except Exception:
        return body
    return body


def decode_properties(properties: bytes, body_size: int) -> dict[str, Any]:
    """Every property set in an encoded property list (flags + values), by aiopublish's names."""
    header = ContentHeader()
    header.unmarshal(struct.pack(">HHQ", spec.Basic.frame_id, 0, body_size) + properties)
    (flags,) = struct.unpack_from(">H", properties)
    decoded = header.properties
    return {
        name: getattr(decoded, attribute)
        for attribute, name in _PROPERTY_NAMES
        if flags & spec.Basic.Properties.flags[attribute]
    }


# -- recorded messages -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RecordedMessage:
    """One publish as the in-memory broker received it.

    `body` is the bytes sent; `payload` is the body decompressed and deserialized
    (see `decode_payload`); `properties` holds every AMQP property that was set,
    by the names `publish()` takes (`headers` and `message_id` included);
    `queues` are the queues that took the message, in binding order. `outcome`
    says what the broker did: "routed", "unroutable" (dropped: no queue matched),
    "returned" (mandatory and no queue matched), "nacked" (a queue refused it,
    e.g. x-overflow reject-publish) or "refused" (the broker closed the channel:
    `error` says why; such messages are in `InMemoryBroker.refused`, not `published`).
    """

    exchange: str
    routing_key: str
    body: bytes
    payload: Any
    properties: dict[str, Any]
    headers: dict[str, Any]
    message_id: str | None
    queues: tuple[str, ...] = ()
    mandatory: bool = False
    outcome: Outcome = "routed"
    error: ChannelError | None = field(default=None, repr=False)

    def describe(self) -> str:
        """One line naming the destination, the payload and the headers (for assertion messages)."""
        text = (
            f"exchange={self.exchange!r} routing_key={self.routing_key!r} queues={list(self.queues)!r} "
            f"payload={self.payload!r} headers={self.headers!r} message_id={self.message_id!r}"
        )
        if self.outcome != "routed":
            text += f" outcome={self.outcome}"
        if self.error is not None:
            text += f" error={type(self.error).__name__}({self.error})"
        return text


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


# -- routing rules -----------------------------------------------------------------------------


def _words(key: str) -> tuple[str, ...]:
    # RabbitMQ splits "" into no words at all, and "a." into "a" and "".
    return tuple(key.split(".")) if key else ()


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """RabbitMQ's topic rule: words split on ".", `*` matches one word, `#` zero or more."""
    pattern_words = _words(pattern)
    words = _words(routing_key)

    @cache
    def match(p: int, w: int) -> bool:
        if p == len(pattern_words):
            return w == len(words)
        word = pattern_words[p]
        if word == "#":
            return match(p + 1, w) or (w < len(words) and match(p, w + 1))
        if w == len(words):
            return False
        return (word == "*" or word == words[w]) and match(p + 1, w + 1)

    return match(0, 0)


def _comparable(value: Any) -> Any:
    """A header value as RabbitMQ compares it: strings and binaries alike, booleans apart from numbers."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, Decimal):
        return ("decimal", value)
    if isinstance(value, dict):
        return ("table", tuple((key, _comparable(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(_comparable(item) for item in value))
    return value


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any] | None) -> bool:
    """RabbitMQ's headers-exchange rule for one binding's arguments and a message's headers.

    `x-match` is all (the default), any, all-with-x or any-with-x. With all and any,
    binding arguments whose names start with "x-" are ignored; the -with-x modes
    compare them too. An argument without a value (None, AMQP void) matches any value.
    """
    mode = arguments.get("x-match", "all")
    if mode not in _X_MATCH_MODES:
        mode = "all"  # RabbitMQ's fallback for a legacy binding it did not validate
    with_x = mode.endswith("-with-x")
    want_all = mode.startswith("all")
    data = headers or {}
    matched_any = False
    for key, expected in arguments.items():
        if key == "x-match" or (key.startswith("x-") and not with_x):
            continue
        hit = key in data and (expected is None or _comparable(expected) == _comparable(data[key]))
        if hit:
            matched_any = True
            if not want_all:
                return True
        elif want_all:
            return False
    return want_all or matched_any


# -- broker state ------------------------------------------------------------------------------


def _normalize_table(arguments: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Arguments as the broker stores them: encoded and decoded again as an AMQP table."""
    table = dict(arguments)
    if not table:
        return {}
    from pamqp import decode as pamqp_decode

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


class InMemoryBroker:
    """One RabbitMQ vhost in memory: declared entities, routing, queues, and everything published.

    Publishers reach it through a ``memory://`` URL (see `get_broker`). Tests read it
    back with `messages(queue)`, `published`, `refused` and the `assert_*` helpers.
    """

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.url = url
        path = URL(url).path
        self.vhost = path[1:] if len(path) > 1 else "/"
        #: Every message an exchange accepted, in publish order (unroutable, returned and nacked ones too).
        self.published: list[RecordedMessage] = []
        #: Publishes the broker refused with a channel error (missing exchange, wrong user_id, ...).
        self.refused: list[RecordedMessage] = []
        self._exchanges: dict[str, Exchange] = {}
        self._exchange_arguments: dict[str, dict[str, Any]] = {}
        self._bindings: dict[str, list[_Bound]] = {}
        self._queues: dict[str, _QueueState] = {}
        self._last_queue: dict[int, str] = {}  # id(owner) -> the queue it declared last
        for name, type_, internal in _PREDECLARED:
            self._add_exchange(Exchange(name, type_, internal=internal))

    def __repr__(self) -> str:
        return (
            f"<InMemoryBroker {self.url} exchanges={len(self._exchanges)} queues={len(self._queues)} "
            f"published={len(self.published)}>"
        )

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

    def declare(self, *entities: Exchange | Queue) -> None:
        """Declare exchanges and queues (a queue's exchanges and bindings too), as a Publisher's `declare` does.

        Raises PreconditionFailed for a redeclaration with other properties, like RabbitMQ.
        """
        for step in expand(entities):
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
            if key in current and key in wanted and _comparable(current[key]) == _comparable(wanted[key]):
                continue
            raise self._inequivalent(kind, name, key, _describe_argument(wanted, key), _describe_argument(current, key))

    def _declare_queue(self, queue: Queue, owner: object | None) -> None:
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
            if x_match not in _X_MATCH_MODES:
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
        type_ = self._exchanges[exchange].type
        for bound in self._bindings.get(exchange, []):
            if bound.queue not in self._queues:
                continue
            if type_ == "fanout":
                hit = True
            elif type_ == "direct":
                hit = bound.routing_key == routing_key
            elif type_ == "topic":
                hit = topic_matches(bound.routing_key, routing_key)
            else:
                hit = headers_match(bound.table, headers)
            if hit:
                yield bound.queue

    # -- publishing ----------------------------------------------------------------------------

    def receive(
        self,
        *,
        exchange: str,
        routing_key: str,
        mandatory: bool,
        properties: bytes,
        body: bytes,
        login: str = DEFAULT_LOGIN,
    ) -> RecordedMessage:
        """Take one basic.publish as RabbitMQ would: refuse it, or route, enqueue and record it.

        `properties` are the encoded property flags and list of the content header. The
        result's `outcome` says how the broker settled it and `error` holds the channel
        error of a refused publish.
        """
        props = decode_properties(properties, len(body))
        headers = dict(props.get("headers") or {})
        payload = decode_payload(
            body, props.get("content_type"), props.get("content_encoding"), headers.get("compression")
        )

        def record(queues: tuple[str, ...], outcome: Outcome, error: ChannelError | None = None) -> RecordedMessage:
            return RecordedMessage(
                exchange=exchange,
                routing_key=routing_key,
                body=body,
                payload=payload,
                properties=props,
                headers=headers,
                message_id=props.get("message_id"),
                queues=queues,
                mandatory=mandatory,
                outcome=outcome,
                error=error,
            )

        error = self._refusal(exchange, props.get("user_id"), login)
        if error is not None:
            message = record((), "refused", error)
            self.refused.append(message)
            return message
        targets = [self._queues[name] for name in self.route(exchange, routing_key, headers)]
        accepted = [state for state in targets if not (state.overflow() != "drop-head" and state.full_for(len(body)))]
        outcome: Outcome
        if len(accepted) < len(targets):
            outcome = "nacked"
        elif targets:
            outcome = "routed"
        else:
            outcome = "returned" if mandatory else "unroutable"
        message = record(tuple(state.definition.name for state in accepted), outcome)
        for state in accepted:
            state.enqueue(message)
        self.published.append(message)
        return message

    def _refusal(self, exchange: str, user_id: str | None, login: str) -> ChannelError | None:
        # RabbitMQ's order: the exchange must exist, must not be internal, then the user_id is checked.
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

    # -- reading back --------------------------------------------------------------------------

    def messages(self, queue: str) -> list[RecordedMessage]:
        """The messages now in `queue`, oldest first (a copy). LookupError if no such queue was declared."""
        state = self._queues.get(queue)
        if state is None:
            known = ", ".join(repr(name) for name in self._queues) or "none"
            raise LookupError(f"no queue {queue!r} was declared on {self.url} (declared: {known})")
        return list(state.messages)

    def clear(self) -> None:
        """Forget every message (published, refused and queued); declared entities stay."""
        self.published.clear()
        self.refused.clear()
        for state in self._queues.values():
            state.messages.clear()
            state.size = 0

    def find(
        self,
        *,
        queue: Any = UNSET,
        exchange: Any = UNSET,
        routing_key: Any = UNSET,
        payload: Any = UNSET,
        body: Any = UNSET,
        headers: Any = UNSET,
        message_id: Any = UNSET,
        properties: Any = UNSET,
    ) -> list[RecordedMessage]:
        """The published messages matching every filter given (headers and properties: these keys have these values)."""
        expected = _Expected(queue, exchange, routing_key, payload, body, headers, message_id, properties)
        return [message for message in self.published if not expected.differences(message)]

    def assert_published_once(
        self,
        *,
        queue: Any = UNSET,
        exchange: Any = UNSET,
        routing_key: Any = UNSET,
        payload: Any = UNSET,
        body: Any = UNSET,
        headers: Any = UNSET,
        message_id: Any = UNSET,
        properties: Any = UNSET,
    ) -> RecordedMessage:
        """Return the one published message matching the filters; AssertionError listing what was published otherwise.

        `queue` must be one of the queues the message reached; `headers` and `properties`
        must be subsets of the message's; the other filters must be equal.
        """
        expected = _Expected(queue, exchange, routing_key, payload, body, headers, message_id, properties)
        matches = [message for message in self.published if not expected.differences(message)]
        if len(matches) == 1:
            return matches[0]
        lines = [f"expected exactly one published message with {expected.describe()}; found {len(matches)}."]
        lines += self._report(expected)
        raise AssertionError("\n".join(lines))

    def assert_nothing_published(self) -> None:
        """AssertionError listing every message if anything was published (refused publishes included)."""
        if self.published or self.refused:
            lines = [f"expected nothing published on {self.url}, but:"]
            lines += self._report(None)
            raise AssertionError("\n".join(lines))

    def _report(self, expected: _Expected | None) -> list[str]:
        lines: list[str] = []
        if not self.published:
            lines.append("Nothing was published.")
        else:
            lines.append(f"Published ({len(self.published)}):")
            for index, message in enumerate(self.published, 1):
                lines.append(f"  #{index} {message.describe()}")
                if expected is not None:
                    differences = expected.differences(message)
                    lines += [f"      - {text}" for text in differences] or ["      (matches)"]
        if self.refused:
            lines.append(f"Refused by the broker ({len(self.refused)}):")
            for index, message in enumerate(self.refused, 1):
                lines.append(f"  #{index} {message.describe()}")
        return lines


@dataclass(frozen=True)
class _Expected:
    queue: Any
    exchange: Any
    routing_key: Any
    payload: Any
    body: Any
    headers: Any
    message_id: Any
    properties: Any

    def given(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if value is not UNSET}

    def describe(self) -> str:
        given = self.given()
        return ", ".join(f"{name}={value!r}" for name, value in given.items()) if given else "any content"

    def differences(self, message: RecordedMessage) -> list[str]:
        """What in `message` differs from the expectation, one readable line each."""
        out: list[str] = []
        for name, wanted in self.given().items():
            if name == "queue":
                if wanted not in message.queues:
                    out.append(f"queue: {wanted!r} not among the queues it reached {list(message.queues)!r}")
            elif name in ("headers", "properties"):
                actual = message.headers if name == "headers" else message.properties
                for key, value in dict(wanted).items():
                    if key not in actual:
                        out.append(f"{name}[{key!r}]: missing, expected {value!r}")
                    elif actual[key] != value:
                        out.append(f"{name}[{key!r}]: {actual[key]!r} != expected {value!r}")
            else:
                actual = getattr(message, name)
                if actual != wanted:
                    out.append(f"{name}: {actual!r} != expected {wanted!r}")
        return out


# -- the registry of brokers by URL ------------------------------------------------------------

_brokers: dict[str, InMemoryBroker] = {}


def broker_key(url: str) -> str:
    """The registry key of a memory:// URL: host and path (the vhost), without credentials or query."""
    parsed = URL(url)
    if parsed.scheme != "memory":
        raise ValueError(f"an in-memory broker needs a memory:// URL, not {url!r}")
    host = parsed.host or ""
    port = f":{parsed.explicit_port}" if parsed.explicit_port is not None else ""
    path = parsed.raw_path.rstrip("/")
    return f"memory://{host}{port}{path}"


def get_broker(url: str = DEFAULT_URL) -> InMemoryBroker:
    """The broker every Publisher on this memory:// URL uses (created on first use)."""
    key = broker_key(url)
    broker = _brokers.get(key)
    if broker is None:
        broker = _brokers[key] = InMemoryBroker(key)
    return broker


def reset() -> None:
    """Forget every in-memory broker: the next use of any memory:// URL starts empty."""
    _brokers.clear()


# -- what a Publisher uses ---------------------------------------------------------------------


class MemoryChannel:
    """A `PublishChannel` that hands each publish to an InMemoryBroker and settles it at once."""

    def __init__(self, broker: InMemoryBroker, number: int, login: str) -> None:
        self.broker = broker
        self.number = number
        self.login = login
        #: The channel error the broker closed this channel with, if it did.
        self.closed_by: ChannelError | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MemoryChannel {self.number} on {self.broker.url} {state}>"

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        return 0  # every publish is settled before send() returns

    def close(self, error: ChannelError | None = None) -> None:
        self._closed = True
        if error is not None and self.closed_by is None:
            self.closed_by = error

    def send(
        self, message: Prepared, *, track: bool, batch: Batch | None = None, index: int = 0
    ) -> asyncio.Future[None] | None:
        """Publish now and settle the confirm at once: a done future when `track` (or entry `index` of `batch`).

        After the broker closed this channel for an error, later publishes on it (a
        publish_many streaming on) are dropped unseen, as frames already on the wire when
        the close arrives: each fails with the channel's error if that error concerns it
        (same exchange, same user_id), else with a retriable ChannelInterrupted.
        """
        if self._closed and self.closed_by is None:
            raise ChannelInterrupted("the channel is closed; nothing was sent")
        error: BaseException | None
        if self.closed_by is not None:
            error = _blame(self.closed_by, message)
        else:
            recorded = self.broker.receive(
                exchange=message.exchange,
                routing_key=message.routing_key,
                mandatory=message.mandatory,
                properties=message.properties,
                body=message.body,
                login=self.login,
            )
            error = None
            if recorded.error is not None:
                # RabbitMQ closes the channel; the publisher opens (and declares on) a new one.
                self.close(recorded.error)
                error = _copy(recorded.error)
            elif recorded.outcome in ("returned", "nacked"):
                returned = recorded.outcome == "returned"
                error = UndeliverableMessage(
                    recorded.outcome,
                    exchange=message.exchange,
                    routing_key=message.routing_key,
                    message_id=message.message_id,
                    reply_code=312 if returned else None,
                    reply_text="NO_ROUTE" if returned else None,
                )
        if not track:
            return None
        if batch is not None:
            batch.remaining += 1
            batch.settle(index, error)
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
        return future

    async def wait_writable(self) -> None:
        return None

    def forget(self, future: asyncio.Future[None]) -> None:
        return None


def _copy(error: ChannelError) -> ChannelError:
    return type(error)(error.reply_code, error.reply_text)


def _blame(error: ChannelError, message: Prepared) -> BaseException:
    """The error of a publish sent on a channel the broker already closed: its own if it would cause it.

    The same judgement as the real channel's (aiopublish._blame), on what the error names.
    """
    facts = facts_of(error)
    if facts is None or facts.could_cause(message):
        return _copy(error)
    return ChannelInterrupted(
        f"the channel closed before the broker confirmed the message ({type(error).__name__}: {error}); "
        "it may or may not have been stored"
    )


class MemoryLink:
    """A `LinkLike` on an in-memory broker: declares like the real link, never blocks or disconnects.

    The broker is looked up by URL whenever a channel is needed, so a publisher that
    outlives `reset()` (a module-level one) declares everything again on the new broker.
    """

    def __init__(
        self,
        params: ConnectionParams,
        declare: Iterable[Exchange | Queue],
        metrics: Metrics,
        *,
        broker_url: str | None = None,
    ) -> None:
        self.params = params
        self.metrics = metrics
        self.broker_url = broker_url or params.url
        broker_key(self.broker_url)  # a bad URL fails here, in the Publisher's constructor
        # What the broker takes as the login: the URL's user, "guest" when it names none (as aiormq).
        self.login = URL(params.url).user or DEFAULT_LOGIN
        self._steps: list[Entity] = expand(declare)
        self._declared: list[Entity] = []
        self._channel: MemoryChannel | None = None
        self._channels_opened = 0
        self.node: str | None = None
        self.closed = False

    def __repr__(self) -> str:
        return f"<MemoryLink {self.broker_url}>"

    @property
    def broker(self) -> InMemoryBroker:
        return get_broker(self.broker_url)

    @property
    def is_blocked(self) -> bool:
        return False

    @property
    def blocked_reason(self) -> str | None:
        return None

    def ready_channel(self) -> MemoryChannel | None:
        channel = self._channel
        if channel is not None and not channel.is_closed and channel.broker is self.broker:
            return channel
        return None

    async def channel(self) -> MemoryChannel:
        channel = self.ready_channel()
        if channel is not None:
            return channel
        if self.closed:
            raise PublisherClosed("the publisher is closed")
        broker = self.broker
        self._channels_opened += 1
        channel = MemoryChannel(broker, self._channels_opened, self.login)
        self._declared = []
        for step in self._steps:
            broker.declare_step(step, owner=self)
            self._declared.append(step)
        self._channel = channel
        self.node = broker.url
        return channel

    async def ensure_declared(self, channel: PublishChannel, entities: Iterable[Exchange | Queue]) -> None:
        steps = [step for step in expand(entities) if step not in self._declared]
        if not steps:
            return
        if not isinstance(channel, MemoryChannel) or channel.is_closed:
            raise ChannelInterrupted("the channel is closed; nothing was declared")
        for step in steps:
            if step in self._declared:
                continue
            try:
                channel.broker.declare_step(step, owner=self)
            except ChannelError as exc:
                channel.close(exc)
                raise
            self._declared.append(step)
            if step not in self._steps:
                self._steps.append(step)

    async def probe(self, message: Prepared) -> None:
        """Publish `message` again on a fresh channel (the in-memory broker blames exactly: rarely used)."""
        future = (await self.channel()).send(message, track=True)
        if future is not None:
            await future

    async def wait_unblocked(self) -> None:
        return None

    def check_alive(self, since: float) -> None:
        return None  # an in-memory link is always alive

    async def close(self, drain_timeout: float | None) -> None:
        self.abandon()

    def abandon(self) -> None:
        self.closed = True
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()
            channel.broker.release(self)
