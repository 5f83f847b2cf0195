"""What publish() and publish_many() report for each message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._exceptions import UndeliverableMessage

__all__ = ["PublishResult", "PublishStatus", "result_of"]

#: confirmed: the broker has it; sent: written with confirms off; returned / nacked: the broker
#: refused it; failed: `error` says why (the connection died before the confirm, a channel
#: error, a timeout); spooled: the broker could not be reached in time, the message is in the
#: publisher's spool (durable, published when the broker answers again).
PublishStatus = Literal["confirmed", "sent", "returned", "nacked", "failed", "spooled"]


@dataclass(slots=True)
class PublishResult:
    """The outcome of one message: its id, its status and, unless it went through, the error.

    publish() returns one (status "confirmed", or "sent" with confirms off) and raises
    instead of returning a failure; publish_many() returns one per payload, failures
    included. Read-only by convention (not frozen: a frozen dataclass costs three times
    as much to build, once per publish).
    """

    index: int
    message_id: str
    status: PublishStatus
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when the message went through (confirmed, or sent with confirms off) or is in the spool."""
        return self.error is None


def result_of(index: int, message_id: str, error: BaseException | None, confirms: bool) -> PublishResult:
    """The result for a message that ended with `error` (None: it went through)."""
    if error is None:
        return PublishResult(index, message_id, "confirmed" if confirms else "sent")
    if isinstance(error, UndeliverableMessage):
        return PublishResult(index, message_id, "returned" if error.reason == "returned" else "nacked", error)
    return PublishResult(index, message_id, "failed", error)
