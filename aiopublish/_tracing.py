"""OpenTelemetry tracing of publishes (placeholder: tracing off until the otel extra is wired in)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

enabled = False


class PublishSpan:
    """The span of one publish."""

    def headers(self) -> dict[str, str]:
        """The trace context to put in the message headers."""
        return {}

    def set_message(self, message_id: str, body_size: int) -> None:
        """Record the message id and body size."""

    def set_outcome(self, outcome: str) -> None:
        """Record confirmed / sent / returned / nacked / failed."""


@contextmanager
def publish_span(exchange: str, routing_key: str) -> Iterator[PublishSpan]:
    """A span around one publish."""
    yield PublishSpan()
