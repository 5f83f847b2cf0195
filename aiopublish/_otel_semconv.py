"""The names and value rules of the OpenTelemetry messaging conventions aiopublish follows (no otel import).

Followed: semantic-conventions v1.44.0, docs/messaging/messaging-spans.md,
messaging-metrics.md and rabbitmq.md ("Send span (producer)"). Kept apart from
the recorders so the rules are plain functions a unit test can pin, and so that
importing them never needs opentelemetry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from ._exceptions import UndeliverableMessage

__all__ = [
    "DEFAULT_EXCHANGE",
    "DURATION_BUCKETS",
    "SEMCONV_VERSION",
    "destination_name",
    "error_type",
    "legacy_destination",
    "peer_of",
    "server_of",
    "span_destination",
    "wants_duplicates",
]

SEMCONV_VERSION = "1.44.0"
SYSTEM = "rabbitmq"
OPERATION_NAME = "publish"
OPERATION_TYPE = "send"
#: What RabbitMQ calls the default exchange (whose real name is the empty string).
DEFAULT_EXCHANGE = "amq.default"
#: messaging-metrics.md: messaging.client.operation.duration SHOULD use these bucket boundaries (seconds).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# Queues the broker names itself (exclusive reply queues): one per client, never a stable destination.
_SERVER_NAMED_PREFIX = "amq.gen-"
_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


def destination_name(exchange: str, routing_key: str) -> str:
    """rabbitmq.md's `messaging.destination.name` for a producer.

    `{exchange}:{routing key}` when both are non-empty, the non-empty one otherwise,
    `amq.default` for the default exchange without a routing key.
    """
    if exchange and routing_key:
        return f"{exchange}:{routing_key}"
    return exchange or routing_key or DEFAULT_EXCHANGE


def span_destination(exchange: str, routing_key: str) -> str:
    """The low-cardinality `{destination}` of the span name `publish {destination}`.

    The exchange (routing keys often carry ids, the exchange does not); for the default
    exchange the routing key, which is the queue's name, unless the broker named that
    queue (`amq.gen-...`, one per client); `amq.default` when there is neither.
    """
    if exchange:
        return exchange
    if routing_key and not routing_key.startswith(_SERVER_NAMED_PREFIX):
        return routing_key
    return DEFAULT_EXCHANGE


def legacy_destination(exchange: str) -> str:
    """The destination of aiopublish's spans before the current conventions: the exchange, or amq.default."""
    return exchange or DEFAULT_EXCHANGE


def wants_duplicates(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether OTEL_SEMCONV_STABILITY_OPT_IN asks for `messaging/dup` (old names beside the current ones)."""
    values = environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    return "messaging/dup" in {value.strip() for value in values.split(",")}


def server_of(url: str | None) -> tuple[str, int] | None:
    """(host, port) of a node URL, for server.address / server.port; None when not connected yet."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, port or _DEFAULT_PORTS.get(parts.scheme, 5672)


def peer_of(connection: object) -> tuple[str, int | None] | None:
    """(address, port) of the socket peer of an aiormq connection, for network.peer.*; None if unknown."""
    writer = getattr(connection, "stream_writer", None)
    if writer is None:
        return None
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    if isinstance(peer, str) and peer:  # a Unix socket
        return peer, None
    return None


def error_type(exc: BaseException) -> str:
    """Low-cardinality `error.type`: `returned` / `nacked` for an UndeliverableMessage, else the class name."""
    if isinstance(exc, UndeliverableMessage):
        return "returned" if exc.reason == "returned" else "nacked"
    return type(exc).__qualname__
