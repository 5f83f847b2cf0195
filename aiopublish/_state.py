"""A read-only snapshot of a Publisher's link, for applications that debug and tests that check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["PublisherState"]


@dataclass(frozen=True, slots=True)
class PublisherState:
    """What a Publisher holds at one moment (`Publisher.state`); a copy, never updated.

    lifecycle: "unopened" before the first connect or publish, "open", "closing" while
    close() drains, "closed". connected: a channel is open and ready for publishes now.
    node: the URL of the node in use (password masked), None before connecting.
    channel_number: the publishing channel's number, None while none is open.
    in_flight: publishes written and waiting for their confirm. blocked: the broker is
    blocking publishers (connection.blocked). backed_up: the socket's write buffer is over
    its high-water mark, so writes wait for it to drain (a slow, blocked or silent network).
    connections_opened: connections opened since the Publisher was created (in this event
    loop); it grows by one at each reconnect, so two snapshots tell whether the connection
    is still the same one.
    """

    lifecycle: Literal["unopened", "open", "closing", "closed"]
    connected: bool
    node: str | None
    channel_number: int | None
    in_flight: int
    blocked: bool
    backed_up: bool
    connections_opened: int
