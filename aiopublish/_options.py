"""Publish options: which keywords exist, how each is checked, and how they combine.

Every option resolves as: per-call keyword > attribute assigned later on the
instance > constructor argument > class attribute (the attributes: _attributes.py).
Headers merge (constructor, then per-call `headers`, then
`extra_headers`) and declarations append (constructor list, then per-call list);
nothing a call passes outlives the call. Everything is checked here, before a
byte is sent, and a bad value raises TypeError/ValueError naming the option.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from itertools import count
from typing import Any

from . import _wire
from ._declarations import Exchange, Queue, exchange_name, normalize_declare
from ._durations import seconds
from ._serialization import Compressor, Serializer, compress, encode_body, get_compressor, get_serializer
from .retry import RetryPolicy

__all__ = ["MESSAGE_PROPERTIES", "PUBLISH_OPTIONS", "Options", "Prepared", "check_publish_kwargs", "check_routing_key"]

# AMQP basic properties a caller may set directly.
MESSAGE_PROPERTIES = (
    "content_type",
    "content_encoding",
    "reply_to",
    "correlation_id",
    "message_id",
    "type",
    "app_id",
    "user_id",
    "timestamp",
    "cluster_id",
)
# Options the constructor names explicitly (each also accepted per call).
NAMED_OPTIONS = (
    "use_confirms",
    "serializer",
    "compression",
    "delivery_mode",
    "mandatory",
    "priority",
    "expiration",
    "declare",
    "retry",
    "retry_policy",
)
PUBLISH_OPTIONS = frozenset(
    (
        *NAMED_OPTIONS,
        "exchange",
        "routing_key",
        "headers",
        "extra_headers",
        "timeout",
        "max_message_size",
        "retry_nacked",
        *MESSAGE_PROPERTIES,
    )
)
# What **publish_kwargs of the constructor may hold: everything per-call except the named options.
CONSTRUCTOR_PUBLISH_KWARGS = PUBLISH_OPTIONS - set(NAMED_OPTIONS)
# publish() only, taken off before the options are resolved: nameko's per-call transport options.
CALL_ONLY_OPTIONS = frozenset({"transport_options"})

# Options the properties template holds: changing one needs templates of its own. (content_type,
# content_encoding and compression are in the templates' key; the rest only reach the method frame.)
_TEMPLATE_FIELDS = frozenset(
    {"headers", "extra_headers", "delivery_mode", "priority", "expiration", *MESSAGE_PROPERTIES} - {"message_id"}
)

# No max_message_size option: the broker's default applies, known once connected (16 MiB on
# RabbitMQ 4.x, 128 MiB on 3.x: see _broker_limits.BrokerLimits); the channel checks it before writing.
DEFAULT_MAX_MESSAGE_SIZE = None
# RabbitMQ refuses a per-message TTL over ten years (406 "invalid expiration ... value_too_large").
MAX_EXPIRATION_MS = 10 * 365 * 24 * 3600 * 1000
_DELIVERY_MODES = {1: 1, 2: 2, "transient": 1, "persistent": 2}
# Bodies up to this size are copied once: orjson hands its bytes back in a buffer malloc'ed for
# 1 KiB and shrunk in place, so each body a batch keeps (for retries) holds a fresh malloc chunk
# (page faults, fragmentation): 1.7 us per message for 40,000 kept, against 0.2 us for the copy,
# which lives in Python's small-object allocator while orjson's buffer is freed (and reused) at once.
_SMALL_BODY = 480
_RAW = get_serializer("raw")


def check_publish_kwargs(kwargs: Mapping[str, Any], allowed: frozenset[str] | set[str], where: str) -> None:
    """TypeError naming every keyword that `where` does not take."""
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise TypeError(f"{where} got unexpected keyword argument(s) {names}")


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def _check_optional_str(name: str, value: Any) -> str | None:
    return None if value is None else _check_str(name, value)


def _check_delivery_mode(name: str, value: Any) -> int:
    try:
        return _DELIVERY_MODES[value]
    except (KeyError, TypeError):
        raise ValueError(f"{name} must be 1, 2, 'transient' or 'persistent', not {value!r}") from None


def _check_priority(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ValueError(f"{name} must be an int from 0 to 255, not {value!r}")
    return value


def _check_expiration(name: str, value: Any) -> str | None:
    if value is None:
        return None
    # Seconds on the API, milliseconds as a string on the wire: what nameko sends.
    milliseconds = int(seconds(value, name) * 1000)
    if milliseconds > MAX_EXPIRATION_MS:
        raise ValueError(f"{name} is {value!r} s; RabbitMQ refuses more than {MAX_EXPIRATION_MS // 1000} s (10 years)")
    return str(milliseconds)


def _check_serializer(name: str, value: Any) -> Serializer:
    return get_serializer(_check_str(name, value))


def _check_compression(name: str, value: Any) -> Compressor | None:
    return None if value is None else get_compressor(_check_str(name, value))


def _check_retry_policy(name: str, value: Any) -> RetryPolicy:
    policy = RetryPolicy.coerce(value)
    if policy is None:
        raise TypeError(f"{name} must be a RetryPolicy or a dict, not None")
    return policy


def _check_timeout(name: str, value: Any) -> float | None:
    if value is None:
        return None
    result = seconds(value, name)
    if result == 0:
        raise ValueError(f"{name} must be > 0 seconds (or None for no limit)")
    return result


def _check_exchange(name: str, value: Any) -> str:
    return exchange_name(value)  # a str, an Exchange (aiopublish's or kombu's) or None


def _check_routing_key(name: str, value: Any) -> str:
    if value is None:
        return ""
    _wire.short_string(value, name)  # TypeError for a non-str, ValueError over 255 bytes: before sending
    return str(value)


check_routing_key = _check_routing_key


def _check_headers(name: str, value: Any) -> dict[str, Any]:
    # Only the shape here; every value is checked when the headers are encoded (once per option set).
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be str, not {key!r}")
    return dict(value)


def _check_timestamp(name: str, value: Any) -> int | None:
    # Whole seconds once here (naive datetimes are UTC, as py-amqp reads them), not per message.
    return None if value is None else _wire.timestamp_seconds(value, name)


def _check_max_message_size(name: str, value: Any) -> int | None:
    if value is None:
        return None  # the broker's default
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (bytes), not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1 byte, not {value!r}")
    return value


# Option name -> check: each takes (name, value) and returns the normalised value or raises
# TypeError/ValueError naming the option. `declare` is normalised apart (it appends, not replaces).
_VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "use_confirms": _check_bool,
    "mandatory": _check_bool,
    "retry": _check_bool,
    "retry_nacked": _check_bool,
    "delivery_mode": _check_delivery_mode,
    "priority": _check_priority,
    "expiration": _check_expiration,
    "serializer": _check_serializer,
    "compression": _check_compression,
    "retry_policy": _check_retry_policy,
    "timeout": _check_timeout,
    "exchange": _check_exchange,
    "routing_key": _check_routing_key,
    "headers": _check_headers,
    "extra_headers": _check_headers,
    "max_message_size": _check_max_message_size,
    **{name: _check_optional_str for name in MESSAGE_PROPERTIES if name != "timestamp"},
    "timestamp": _check_timestamp,
}


def _check(name: str, value: Any) -> Any:
    """Check and normalise one option's value (None is passed through where it means 'unset')."""
    return _VALIDATORS[name](name, value)


_id_prefix = os.urandom(8).hex()
_id_counter = count(1)


def new_message_id() -> str:
    """A message id unique across processes (random prefix) and cheap to make (a counter)."""
    return f"{_id_prefix}-{next(_id_counter):x}"


class Prepared:
    """One message, encoded and ready for the wire, the same for every attempt of its publish.

    `user_id` and `expiration` are kept beside the encoded properties so a channel error
    that names one of them can be blamed on the right publish (see _blame).
    """

    # Written out rather than a dataclass: generating a dataclass's methods at import costs more
    # than the rest of this module (see tests/test_import_cost.py).
    __slots__ = (
        "body",
        "broker_limit",
        "exchange",
        "expiration",
        "mandatory",
        "message_id",
        "properties",
        "routing_key",
        "user_id",
    )
    exchange: str
    routing_key: str
    mandatory: bool
    message_id: str
    user_id: str | None
    properties: bytes
    body: bytes
    expiration: str | None
    broker_limit: bool

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        mandatory: bool,
        message_id: str,
        user_id: str | None,
        properties: bytes,
        body: bytes,
        expiration: str | None = None,
        broker_limit: bool = True,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.mandatory = mandatory
        self.message_id = message_id
        self.user_id = user_id
        self.properties = properties
        self.body = body
        self.expiration = expiration
        # No max_message_size option was given: the channel holds the body to the broker's default.
        self.broker_limit = broker_limit

    def __repr__(self) -> str:
        return (
            f"Prepared(exchange={self.exchange!r}, routing_key={self.routing_key!r}, "
            f"message_id={self.message_id!r}, body={len(self.body)} bytes)"
        )


# Options' defaults, copied into each instance (see Options.__init__).
_OPTION_DEFAULTS: dict[str, Any] = {
    "exchange": "",
    "routing_key": "",
    "declare": (),
    "call_declare": (),
    "use_confirms": True,
    "delivery_mode": 2,
    "mandatory": False,
    "priority": 0,
    "expiration": None,
    "serializer": _RAW,
    "compression": None,
    "retry": True,
    "retry_policy": None,
    "retry_nacked": False,
    "timeout": None,
    "content_type": None,
    "content_encoding": None,
    "reply_to": None,
    "correlation_id": None,
    "message_id": None,
    "type": None,
    "app_id": None,
    "user_id": None,
    "timestamp": None,
    "cluster_id": None,
    "max_message_size": DEFAULT_MAX_MESSAGE_SIZE,
}


class Options:
    """A fully resolved set of publish options.

    Not a dataclass: generating the methods of one with 28 fields cost more at import than
    the whole module does now. An instance is built once per set of options (build, override).
    """

    exchange: str
    routing_key: str
    headers: dict[str, Any]
    # The constructor's list extended by the call's; the link declares the constructor's part itself,
    # so a publish only has to make sure of `call_declare` (kept apart: no per-publish scan of the rest).
    declare: tuple[Exchange | Queue, ...]
    call_declare: tuple[Exchange | Queue, ...]
    use_confirms: bool
    delivery_mode: int
    mandatory: bool
    priority: int
    expiration: str | None
    serializer: Serializer
    compression: Compressor | None
    retry: bool
    retry_policy: RetryPolicy | None
    # A nacked publish is retried under the retry policy (quorum-queue leader elections, reject-publish).
    retry_nacked: bool
    timeout: float | None
    content_type: str | None
    content_encoding: str | None
    reply_to: str | None
    correlation_id: str | None
    message_id: str | None
    type: str | None
    app_id: str | None
    user_id: str | None
    timestamp: int | None  # whole seconds since the epoch
    cluster_id: str | None
    max_message_size: int | None  # None: the broker's default (see above)
    # properties templates by (content_type, content_encoding, compression header)
    _templates: dict[tuple[str, str, str | None], _wire.PropertiesTemplate]

    def __init__(self, **values: Any) -> None:
        """Options with `values` (checked already: see build) over the defaults. TypeError for an unknown name."""
        unknown = values.keys() - _OPTION_DEFAULTS.keys() - {"headers", "_templates"}
        if unknown:
            raise TypeError(f"Options() got unexpected keyword argument(s) {', '.join(sorted(unknown))}")
        attributes = self.__dict__
        attributes.update(_OPTION_DEFAULTS)
        attributes["headers"] = {}
        attributes["_templates"] = {}
        attributes.update(values)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.__dict__.items() if name != "_templates")
        return f"Options({shown})"

    def _replace(self, changes: Mapping[str, Any]) -> Options:
        """A copy with `changes` applied (its own templates only when `changes` gives them)."""
        copy = object.__new__(Options)
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(changes)
        return copy

    @classmethod
    def build(cls, named: Mapping[str, Any], publish_kwargs: Mapping[str, Any]) -> Options:
        """Options from the constructor's resolved named options and its **publish_kwargs."""
        values: dict[str, Any] = {name: _check(name, named[name]) for name in NAMED_OPTIONS if name != "declare"}
        values["declare"] = normalize_declare(named["declare"], "Publisher(...)")
        headers = _check("headers", publish_kwargs.get("headers"))
        headers.update(_check("extra_headers", publish_kwargs.get("extra_headers")))
        if headers:
            _wire.field_table(headers)  # the constructor's headers are refused here, not at the first publish
        values["headers"] = headers
        for name, value in publish_kwargs.items():
            if name not in ("headers", "extra_headers"):
                values[name] = _check(name, value)
        return cls(**values)

    def override(self, kwargs: Mapping[str, Any]) -> Options:
        """A copy with one call's keywords applied (the caller checked the names).

        A copy that differs only in what the properties do not hold (routing key, exchange,
        mandatory, timeout, ...) shares this one's templates: they would come out the same.
        """
        changes: dict[str, Any] = {}
        if not _TEMPLATE_FIELDS.isdisjoint(kwargs):
            changes["_templates"] = {}
        if "headers" in kwargs or "extra_headers" in kwargs:
            headers = dict(self.headers)
            headers.update(_check("headers", kwargs.get("headers")))
            headers.update(_check("extra_headers", kwargs.get("extra_headers")))
            changes["headers"] = headers
        for name, value in kwargs.items():
            if name in ("headers", "extra_headers"):
                continue
            if name == "declare":
                call_declare = normalize_declare(value, "publish()")
                changes["declare"] = self.declare + call_declare
                changes["call_declare"] = call_declare
            else:
                changes[name] = _check(name, value)
        return self._replace(changes)

    def prepare(
        self, payload: Any, routing_key: str | None = None, headers: Mapping[str, Any] | None = None
    ) -> Prepared:
        """Serialize, compress and build the properties; nothing is sent.

        `routing_key` (checked by the caller, see check_routing_key) replaces the options' one;
        `headers` are one message's own, merged over the options' headers like `extra_headers`:
        only they are encoded, spliced into the options' template.

        Raises SerializationError (the payload), ValueError (a body over the max_message_size option) and
        TypeError/ValueError naming a header or property that cannot be encoded.
        """
        content_type, content_encoding, body = encode_body(
            payload, self.serializer, self.content_type, self.content_encoding
        )
        compression = None
        if self.compression is not None:
            body, compression = compress(body, self.compression)
        limit = self.max_message_size
        if limit is not None and len(body) > limit:
            raise ValueError(
                f"the message body is {len(body)} bytes{' compressed' if compression else ''}; "
                f"max_message_size is {limit} (the option given to aiopublish); nothing was sent"
            )
        if len(body) <= _SMALL_BODY:
            body = b"%s" % body  # see _SMALL_BODY
        key = (content_type, content_encoding, compression)
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = self._template(content_type, content_encoding, compression)
        message_id = self.message_id or new_message_id()
        if headers:
            properties = self._with_headers(template, message_id, headers, compression)
        else:
            properties = template.encode(message_id)
        return Prepared(
            self.exchange,
            self.routing_key if routing_key is None else routing_key,
            self.mandatory,
            message_id,
            self.user_id,
            properties,
            body,
            self.expiration,
            limit is None,
        )

    def _with_headers(
        self, template: _wire.PropertiesTemplate, message_id: str, headers: Mapping[str, Any], compression: str | None
    ) -> bytes:
        if type(headers) is not dict and not isinstance(headers, Mapping):
            raise TypeError(f"headers must be a dict, not {type(headers).__name__}")
        if template.header_keys.isdisjoint(headers):
            return template.encode_with_headers(message_id, _wire.table_entries(headers))
        # A message's header replaces the options' one of that name, in its place; compression stays last.
        merged = {**self.headers, **headers}
        if compression is not None:
            merged = {**merged, "compression": compression}
        return template.encode_with_headers(message_id, _wire.table_entries(merged), replace=True)

    def _template(self, content_type: str, content_encoding: str, compression: str | None) -> _wire.PropertiesTemplate:
        headers = self.headers
        if compression is not None:
            headers = {**headers, "compression": compression}
        return _wire.PropertiesTemplate(
            {
                "content_type": content_type,
                "content_encoding": content_encoding,
                "headers": headers,
                "delivery_mode": self.delivery_mode,
                "priority": self.priority,
                "correlation_id": self.correlation_id,
                "reply_to": self.reply_to,
                "expiration": self.expiration,
                "timestamp": self.timestamp,
                "type": self.type,
                "user_id": self.user_id,
                "app_id": self.app_id,
                "cluster_id": self.cluster_id,
            }
        )
