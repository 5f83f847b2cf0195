"""Which publish caused the broker's channel error: one rule for the real and the in-memory channel.

When RabbitMQ closes a channel for a publish (404 no exchange, 403 access refused,
406 user_id / expiration / message size), every publish still waiting for its
confirm on that channel ends, but only one of them caused the close, and the
broker's text does not say which delivery tag it was. The text does say *what*
was refused (an exchange name, a user_id, an expiration, a size), so:

- a publish that does not carry the refused value cannot have caused it: it is
  a bystander, and fails with `Bystander`, a retriable ChannelInterrupted (with
  retry on it is published again at once on a new channel, without waiting or
  spending an attempt; with retry off it is raised as such);
- when exactly one publish carries it, that publish is the culprit and gets the
  broker's error;
- when several could have caused it (or the text says nothing we can match),
  each of them is a *suspect*: it is published again alone on an isolated
  channel (Link.probe), where an error can only be its own.

Publishes that were still in the client's write buffer when the close arrived
never reached the broker: always innocent.
"""

from __future__ import annotations

import re

from ._exceptions import AccessRefused, ChannelError, ChannelInterrupted, NotFound, PreconditionFailed
from ._options import Prepared
from ._value import ValueRecord

__all__ = [
    "BYSTANDER_REPUBLISHES",
    "Bystander",
    "ChannelInterrupted",
    "Facts",
    "Suspect",
    "culprits",
    "default_exchange",
    "describe",
    "facts_of",
]


#: How often a bystander is published again at once, before the retry policy's waits apply.
BYSTANDER_REPUBLISHES = 3


class Bystander(ChannelInterrupted):
    """The broker closed the channel for another publish's error; this message was not the cause."""


class Suspect(ChannelInterrupted):
    """Internal: this publish may have caused `error`; it must be published again alone to find out."""

    def __init__(self, error: ChannelError) -> None:
        self.error = error
        super().__init__(f"the channel closed with {type(error).__name__}: {error}; publishing again alone")


# The broker names the default exchange "amq.default" in its texts; publishes name it "".
def default_exchange(name: str) -> str:
    return "" if name == "amq.default" else name


class Facts(ValueRecord):
    """What the broker's text says was refused; None fields are not mentioned. Read-only by convention."""

    _fields = ("exchange", "user_id", "expiration", "body_size")
    __slots__ = _fields
    exchange: str | None
    user_id: str | None
    expiration: str | None
    body_size: int | None

    def __init__(
        self,
        exchange: str | None = None,
        user_id: str | None = None,
        expiration: str | None = None,
        body_size: int | None = None,
    ) -> None:
        self.exchange = exchange
        self.user_id = user_id
        self.expiration = expiration
        self.body_size = body_size

    def __repr__(self) -> str:
        named = zip(self._fields, self._values(), strict=True)
        return f"Facts({', '.join(f'{name}={value!r}' for name, value in named if value is not None)})"

    def could_cause(self, message: Prepared) -> bool:
        if self.exchange is not None and default_exchange(self.exchange) != message.exchange:
            return False
        if self.user_id is not None and message.user_id != self.user_id:
            return False
        if self.expiration is not None and message.expiration != self.expiration:
            return False
        return self.body_size is None or len(message.body) == self.body_size


_NO_PUBLISH_FACTS = Facts(exchange="\0")  # a refusal no publish can have caused (e.g. a declaration's)
# Patterns as text, compiled (and cached by `re`) at their first use: an error path, not the import.
_TEXTS: tuple[tuple[type[ChannelError], str, str], ...] = (
    (NotFound, r"no exchange '(.*)' in vhost", "exchange"),
    (AccessRefused, r"access to exchange '(.*)' in vhost '.*' refused", "exchange"),
    (AccessRefused, r"internal exchange '(.*)' in vhost", "exchange"),
    (PreconditionFailed, r"user_id property set to '(.*)' but authenticated user was", "user_id"),
    (PreconditionFailed, r"invalid expiration '(.*?)'", "expiration"),
    (PreconditionFailed, r"message size (\d+) is larger than", "body_size"),
)
# 406s a publish never causes: redeclarations with other arguments, unknown/invalid arguments.
_DECLARATION_ONLY = r"inequivalent arg|unknown exchange type|invalid arg"


def facts_of(error: ChannelError) -> Facts | None:
    """What `error` says was refused, or None when its text says nothing we can match."""
    text = error.reply_text or ""
    for cls, pattern, field in _TEXTS:
        if isinstance(error, cls):
            match = re.search(pattern, text)
            if match is not None:
                value: str | int = int(match.group(1)) if field == "body_size" else match.group(1)
                return Facts(**{field: value})  # type: ignore[arg-type]
    if isinstance(error, PreconditionFailed) and re.search(_DECLARATION_ONLY, text):
        return _NO_PUBLISH_FACTS
    return None


def culprits(error: ChannelError, sent: list[Prepared], *, isolated: bool = False) -> list[int]:
    """Indexes (into `sent`) of the publishes that may have caused `error`.

    On an isolated channel (one publish at a time) the only publish is the culprit.
    """
    if isolated:
        return list(range(len(sent)))
    facts = facts_of(error)
    if facts is None:
        return list(range(len(sent)))
    return [index for index, message in enumerate(sent) if facts.could_cause(message)]


def describe(reason: BaseException | None) -> str:
    """A short text for why a channel or connection closed."""
    if reason is None:
        return "closed"
    text = str(reason)
    return f"{type(reason).__name__}: {text}" if text else type(reason).__name__
