"""Serializer and compressor logic without a broker: orjson equivalence, registration, errors."""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid
from typing import Any

import orjson
import pytest

from aiopublish import SerializationError, _serialization, register_compressor, register_serializer
from aiopublish._serialization import compress, encode_body, get_compressor, get_serializer

PAYLOADS: list[Any] = [
    {"id": 1, "body": "x" * 120},
    {"text": "héllo ✓", "nested": {"list": [1, 2.5, None, True, False], "empty": {}}},
    [1, "two", 3.0],
    "a string",
    42,
    None,
    {1: "int key", "b": [{"c": 1}]},
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_orjson_and_stdlib_decode_the_same(payload: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With orjson the json body differs only in whitespace and escapes: it decodes to the same value."""
    fast = encode_body(payload, "json", None, None)
    monkeypatch.setattr(_serialization, "_orjson", None)
    slow = encode_body(payload, "json", None, None)
    assert slow[2] == json.dumps(payload).encode()
    assert fast[:2] == slow[:2] == ("application/json", "utf-8")
    assert json.loads(fast[2]) == json.loads(slow[2])
    assert fast[2] == orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    "payload",
    [datetime.datetime(2026, 1, 1), Point(1), {1, 2}, uuid.uuid4(), object()],
    ids=["datetime", "dataclass", "set", "uuid", "object"],
)
@pytest.mark.parametrize("use_orjson", [True, False])
def test_payloads_the_stdlib_refuses_are_refused_either_way(
    payload: Any, use_orjson: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """orjson never accepts what json.dumps would refuse: both raise SerializationError naming json."""
    if not use_orjson:
        monkeypatch.setattr(_serialization, "_orjson", None)
    if isinstance(payload, uuid.UUID) and use_orjson:
        # orjson has no pass-through for UUID: it writes the canonical string, the one documented difference.
        assert encode_body(payload, "json", None, None)[2] == f'"{payload}"'.encode()
        return
    with pytest.raises(SerializationError, match="json"):
        encode_body(payload, "json", None, None)


def test_big_ints_fall_back_to_the_stdlib() -> None:
    """An int beyond 64 bits, which orjson refuses, is encoded by json.dumps."""
    assert encode_body({"n": 2**70}, "json", None, None)[2] == json.dumps({"n": 2**70}).encode()


def test_register_serializer_and_compressor() -> None:
    """Registered codecs are used by name and set their content type and header."""
    register_serializer("upper", lambda payload: str(payload).upper(), "text/x-upper", "ascii")
    assert encode_body("abc", "upper", None, None) == ("text/x-upper", "ascii", b"ABC")
    register_compressor("reverse", lambda body: body[::-1], "application/x-reverse", aliases=("rev",))
    assert compress(b"abc", "rev") == (b"cba", "application/x-reverse")


def test_unknown_names_list_the_known_ones() -> None:
    """An unknown serializer or compression is a ValueError that lists what exists."""
    with pytest.raises(ValueError, match=r"unknown serializer .yaml.*json"):
        get_serializer("yaml")
    with pytest.raises(ValueError, match=r"unknown compression .rar.*gzip"):
        get_compressor("rar")


def test_raw_serializer_rules() -> None:
    """raw sends bytes as binary and str as utf-8, both application/data; anything else is refused."""
    assert encode_body(b"\x00", "raw", None, None) == ("application/data", "binary", b"\x00")
    assert encode_body("é", "raw", None, None) == ("application/data", "utf-8", "é".encode())
    with pytest.raises(SerializationError, match="raw"):
        encode_body(1, "raw", None, None)


def test_explicit_content_type_with_bad_encoding() -> None:
    """A str body with an unknown content_encoding is a SerializationError naming the encoding."""
    with pytest.raises(SerializationError, match="no-such-codec"):
        encode_body("x", "json", "text/plain", "no-such-codec")
