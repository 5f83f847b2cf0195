"""What a broker's connection.start says about its limits: who it is, its default body limit, its least frame_max."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._exceptions import UnsupportedByBroker
from ._value import ValueRecord

__all__ = ["AMQP_FRAME_MIN", "BrokerLimits"]

# AMQP 0-9-1's least frame_max (frame-min-size); RabbitMQ 4.1 raised the least it accepts to 8192.
AMQP_FRAME_MIN = 4096
RABBITMQ_41_FRAME_MIN = 8192
# RabbitMQ's default max_message_size (rabbitmq.conf): 128 MiB up to 3.13, 16 MiB from 4.0.
RABBITMQ_3_MAX_MESSAGE_SIZE = 128 * 1024 * 1024
RABBITMQ_4_MAX_MESSAGE_SIZE = 16 * 1024 * 1024


def _version_numbers(text: str) -> tuple[int, ...]:
    """Up to three leading dot-separated numbers: "3.10.8" (3, 10, 8), "4.1rc1" (4, 1), "x" ().

    Read without a regex: compiling one was the costliest step of a first connect.
    """
    numbers: list[int] = []
    for part in text.split(".", 3)[:3]:
        digits = len(part) - len(part.lstrip("0123456789"))
        if not digits:
            break
        numbers.append(int(part[:digits]))
        if digits < len(part):
            break
    return tuple(numbers)


class BrokerLimits(ValueRecord):
    """What the broker's connection.start says about its limits: who it is, and its default body limit.

    The broker does not announce its max_message_size; its version tells the default. A broker
    configured otherwise needs the `max_message_size` option, which then replaces this one.
    Read-only by convention.
    """

    _fields = ("product", "version", "version_text")
    __slots__ = _fields
    product: str
    version: tuple[int, ...]
    version_text: str

    def __init__(self, product: str = "the broker", version: tuple[int, ...] = (), version_text: str = "") -> None:
        self.product = product
        self.version = version
        self.version_text = version_text

    @classmethod
    def from_server_properties(cls, properties: Mapping[str, Any] | None) -> BrokerLimits:
        properties = properties or {}

        def text(key: str) -> str:
            value = properties.get(key) or ""
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

        version_text = text("version")
        return cls(text("product") or "the broker", _version_numbers(version_text), version_text)

    @property
    def name(self) -> str:
        """E.g. "RabbitMQ 4.3.6", for messages."""
        return f"{self.product} {self.version_text}".strip()

    @property
    def is_rabbitmq(self) -> bool:
        return self.product == "RabbitMQ"

    @property
    def max_message_size(self) -> int:
        """The broker's default max_message_size: 16 MiB on RabbitMQ 4.x, else RabbitMQ 3.x's 128 MiB."""
        if self.is_rabbitmq and self.version >= (4,):
            return RABBITMQ_4_MAX_MESSAGE_SIZE
        return RABBITMQ_3_MAX_MESSAGE_SIZE

    @property
    def max_message_size_source(self) -> str:
        """Where `max_message_size` comes from, for the error that refuses a body over it."""
        if self.is_rabbitmq and self.version:
            series = "4.x" if self.version >= (4,) else "3.x"
            return f"{self.name}'s default max_message_size (RabbitMQ {series})"
        return f"RabbitMQ 3.x's default max_message_size ({self.name} did not say it is RabbitMQ 4)"

    @property
    def frame_min(self) -> int:
        """The least frame_max the broker accepts."""
        if self.is_rabbitmq and self.version >= (4, 1):
            return RABBITMQ_41_FRAME_MIN
        return AMQP_FRAME_MIN

    def body_too_large(self, size: int) -> ValueError:
        """The error for a body over the broker's default limit (the real and the in-memory channel raise it)."""
        return ValueError(
            f"the message body is {size} bytes; max_message_size is {self.max_message_size}, "
            f"{self.max_message_size_source} (a broker configured otherwise: give max_message_size=); "
            "nothing was sent"
        )

    def check_frame_max(self, wanted: int) -> None:
        """UnsupportedByBroker for a frame_max the broker would refuse (RabbitMQ 4.1+: below 8192).

        RabbitMQ closes a connection whose tune-ok asks for less: said at once, before the
        broker's close turns into a connection failure that every retry meets again.
        """
        if wanted < self.frame_min:
            raise UnsupportedByBroker(
                f"transport option frame_max={wanted} is below {self.frame_min}, the least frame_max "
                f"{self.name} accepts (RabbitMQ 4.1 and later): leave it unset or give {self.frame_min} or more",
                feature="frame_max",
            )
