"""What the in-memory broker records of each publish, and how a test's expectation is compared with it.

`RecordedMessage` is one publish as received; `Expected` holds the filters of
`find`/`assert_published_once` and says, line by line, how a message differs from
them; `report` writes the listing an assertion failure shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .._exceptions import ChannelError

__all__ = ["UNSET", "Expected", "Outcome", "RecordedMessage", "report"]

Outcome = Literal["routed", "unroutable", "returned", "nacked", "refused"]


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


#: The default of every filter: "not given", so that None can be looked for.
UNSET: Any = _Unset()


def _subset_differences(name: str, wanted: Any, actual: dict[str, Any]) -> list[str]:
    out = []
    for key, value in dict(wanted).items():
        if key not in actual:
            out.append(f"{name}[{key!r}]: missing, expected {value!r}")
        elif actual[key] != value:
            out.append(f"{name}[{key!r}]: {actual[key]!r} != expected {value!r}")
    return out


@dataclass(frozen=True)
class Expected:
    """The filters of one find/assert call; UNSET ones are not compared."""

    queue: Any = UNSET
    exchange: Any = UNSET
    routing_key: Any = UNSET
    payload: Any = UNSET
    body: Any = UNSET
    headers: Any = UNSET
    message_id: Any = UNSET
    properties: Any = UNSET

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
            elif name == "headers":
                out += _subset_differences(name, wanted, message.headers)
            elif name == "properties":
                out += _subset_differences(name, wanted, message.properties)
            else:
                actual = getattr(message, name)
                if actual != wanted:
                    out.append(f"{name}: {actual!r} != expected {wanted!r}")
        return out


def report(
    published: Sequence[RecordedMessage],
    refused: Sequence[RecordedMessage],
    expected: Expected | None,
    notes: Sequence[str] = (),
) -> list[str]:
    """The lines of an assertion failure: every message (with its differences from `expected`), then `notes`.

    `notes` are shown only when nothing at all was recorded: they explain why that may be.
    """
    lines: list[str] = []
    if not published:
        lines.append("Nothing was published.")
    else:
        lines.append(f"Published ({len(published)}):")
        for index, message in enumerate(published, 1):
            lines.append(f"  #{index} {message.describe()}")
            if expected is not None:
                differences = expected.differences(message)
                lines += [f"      - {text}" for text in differences] or ["      (matches)"]
    if refused:
        lines.append(f"Refused by the broker ({len(refused)}):")
        for index, message in enumerate(refused, 1):
            lines.append(f"  #{index} {message.describe()}")
    if not published and not refused:
        lines += notes
    return lines
