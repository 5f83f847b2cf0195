"""Counters a Publisher keeps about itself, for applications to read or export."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._result import PublishResult

__all__ = ["Metrics"]


@dataclass(slots=True)
class Metrics:
    """Running totals since the publisher was created (a copy when read through `Publisher.metrics`).

    published: messages written to the broker (each attempt counts); confirmed: acked
    (not returned); returned / nacked: refused by the broker; failed: publish() calls
    that raised for any reason; retried: attempts made again after an error;
    reconnects: connections opened after the first; in_flight: waiting for a confirm now.
    """

    published: int = 0
    confirmed: int = 0
    returned: int = 0
    nacked: int = 0
    failed: int = 0
    retried: int = 0
    reconnects: int = 0
    in_flight: int = 0

    def count(self, result: PublishResult) -> None:
        """Count the outcome of one message (publish_many's results, publish()'s failures)."""
        status = result.status
        if status == "confirmed":
            self.confirmed += 1
        elif status == "returned":
            self.returned += 1
        elif status == "nacked":
            self.nacked += 1
        if result.error is not None:
            self.failed += 1
