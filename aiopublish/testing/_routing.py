"""RabbitMQ's routing rules as pure functions: does a binding of this exchange type take this message?

One rule per exchange type (direct, fanout, topic, headers), each given the binding's
key and arguments and the message's routing key and headers. The broker state
(which bindings exist, alternate exchanges) lives in `_vhost`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any

__all__ = ["RULES", "X_MATCH_MODES", "comparable", "headers_match", "topic_matches"]

X_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")


def _words(key: str) -> tuple[str, ...]:
    # RabbitMQ splits "" into no words at all, and "a." into "a" and "".
    return tuple(key.split(".")) if key else ()


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """RabbitMQ's topic rule: words split on ".", `*` matches one word, `#` zero or more."""
    pattern_words = _words(pattern)
    words = _words(routing_key)

    @cache
    def match(p: int, w: int) -> bool:
        if p == len(pattern_words):
            return w == len(words)
        word = pattern_words[p]
        if word == "#":
            return match(p + 1, w) or (w < len(words) and match(p, w + 1))
        if w == len(words):
            return False
        return (word == "*" or word == words[w]) and match(p + 1, w + 1)

    return match(0, 0)


def comparable(value: Any) -> Any:
    """A header or argument value as RabbitMQ compares it: strings and binaries alike, booleans apart from numbers."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, Decimal):
        return ("decimal", value)
    if isinstance(value, dict):
        return ("table", tuple((key, comparable(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(comparable(item) for item in value))
    return value


def _x_match(arguments: Mapping[str, Any]) -> tuple[bool, bool]:
    """(want_all, with_x) for a binding's `x-match` argument."""
    mode = arguments.get("x-match", "all")
    if mode not in X_MATCH_MODES:
        mode = "all"  # RabbitMQ's fallback for a legacy binding it did not validate
    return mode.startswith("all"), mode.endswith("-with-x")


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any] | None) -> bool:
    """RabbitMQ's headers-exchange rule for one binding's arguments and a message's headers.

    `x-match` is all (the default), any, all-with-x or any-with-x. With all and any,
    binding arguments whose names start with "x-" are ignored; the -with-x modes
    compare them too. An argument without a value (None, AMQP void) matches any value.
    """
    want_all, with_x = _x_match(arguments)
    data = headers or {}
    for key, expected in arguments.items():
        if key == "x-match" or (key.startswith("x-") and not with_x):
            continue
        hit = key in data and (expected is None or comparable(expected) == comparable(data[key]))
        if hit != want_all:
            # The first hit decides "any"; the first miss decides "all".
            return hit
    # "all": nothing missed (or nothing to compare); "any": nothing hit.
    return want_all


def _direct(binding_key: str, arguments: Mapping[str, Any], routing_key: str, headers: Any) -> bool:
    return binding_key == routing_key


def _fanout(binding_key: str, arguments: Mapping[str, Any], routing_key: str, headers: Any) -> bool:
    return True


def _topic(binding_key: str, arguments: Mapping[str, Any], routing_key: str, headers: Any) -> bool:
    return topic_matches(binding_key, routing_key)


def _headers(binding_key: str, arguments: Mapping[str, Any], routing_key: str, headers: Any) -> bool:
    return headers_match(arguments, headers)


#: exchange type -> rule(binding key, binding arguments, routing key, message headers) -> routed?
RULES: dict[str, Callable[[str, Mapping[str, Any], str, Mapping[str, Any] | None], bool]] = {
    "direct": _direct,
    "fanout": _fanout,
    "topic": _topic,
    "headers": _headers,
}
