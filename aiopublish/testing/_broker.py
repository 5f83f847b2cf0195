"""`InMemoryBroker`: one vhost in memory that records every publish, and the assertions tests make on it."""

from __future__ import annotations

from typing import Any

from .._exceptions import ChannelError
from ._decoding import decode_payload, decode_properties
from ._records import UNSET, Expected, Outcome, RecordedMessage, report
from ._vhost import DEFAULT_LOGIN, DEFAULT_RABBITMQ, DEFAULT_URL, Vhost

__all__ = ["InMemoryBroker"]


class InMemoryBroker(Vhost):
    """One RabbitMQ vhost in memory: declared entities, routing, queues, and everything published.

    Publishers reach it through a ``memory://`` URL (see `get_broker`). Tests read it
    back with `messages(queue)`, `published`, `refused` and the `assert_*` helpers.
    """

    def __init__(self, url: str = DEFAULT_URL, rabbitmq: str = DEFAULT_RABBITMQ) -> None:
        super().__init__(url, rabbitmq)
        #: Every message an exchange accepted, in publish order (unroutable, returned and nacked ones too).
        self.published: list[RecordedMessage] = []
        #: Publishes the broker refused with a channel error (missing exchange, wrong user_id, ...).
        self.refused: list[RecordedMessage] = []
        #: Lines an assertion failure adds when nothing was recorded (patch_publisher explains itself there).
        self.notes: list[str] = []

    def __repr__(self) -> str:
        return (
            f"<InMemoryBroker {self.url} exchanges={len(self._exchanges)} queues={len(self._queues)} "
            f"published={len(self.published)}>"
        )

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

        error = self.refusal(exchange, props.get("user_id"), login, len(body))
        if error is not None:
            message = record((), "refused", error)
            self.refused.append(message)
            return message
        accepted, some_refused = self.accepting(exchange, routing_key, headers, len(body))
        outcome: Outcome
        if some_refused:
            outcome = "nacked"
        elif accepted:
            outcome = "routed"
        else:
            outcome = "returned" if mandatory else "unroutable"
        message = record(tuple(accepted), outcome)
        self.enqueue(accepted, message)
        self.published.append(message)
        return message

    # -- reading back --------------------------------------------------------------------------

    def messages(self, queue: str) -> list[RecordedMessage]:
        """The messages now in `queue`, oldest first (a copy). LookupError if no such queue was declared."""
        return self.queued(queue)

    def clear(self) -> None:
        """Forget every message (published, refused and queued); declared entities stay."""
        self.published.clear()
        self.refused.clear()
        self.empty_queues()

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
        expected = Expected(queue, exchange, routing_key, payload, body, headers, message_id, properties)
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
        expected = Expected(queue, exchange, routing_key, payload, body, headers, message_id, properties)
        matches = [message for message in self.published if not expected.differences(message)]
        if len(matches) == 1:
            return matches[0]
        lines = [f"expected exactly one published message with {expected.describe()}; found {len(matches)}."]
        lines += report(self.published, self.refused, expected, self.notes)
        raise AssertionError("\n".join(lines))

    def assert_nothing_published(self) -> None:
        """AssertionError listing every message if anything was published (refused publishes included)."""
        if self.published or self.refused:
            lines = [f"expected nothing published on {self.url}, but:"]
            lines += report(self.published, self.refused, None)
            raise AssertionError("\n".join(lines))
