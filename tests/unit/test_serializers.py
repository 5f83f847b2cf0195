"""Serializer and compressor logic without a broker: orjson equivalence, registration, errors."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import uuid
from typing import Any

import orjson
import pytest

from aiopublish import SerializationError, _serialization, register_compressor, register_serializer
from aiopublish._serialization import (
    compress,
    decode_body,
    encode_body,
    get_compressor,
    get_serializer,
    register_decoder,
    register_decompressor,
)

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
    try:
        native = orjson.dumps(payload)
    except TypeError:  # an int key: orjson refuses it (no OPT_NON_STR_KEYS), json.dumps writes it
        assert fast[2] == slow[2]
    else:
        assert fast[2] == native


@dataclasses.dataclass
class Point:
    x: int


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    "payload",
    [{1, 2}, object(), {uuid.UUID(int=1): 1}, {datetime.date(2026, 1, 1): 1}, {Colour.RED: 1}, {"p": Point}],
    ids=["set", "object", "uuid-key", "date-key", "enum-key", "a-class"],
)
@pytest.mark.parametrize("use_orjson", [True, False])
def test_payloads_the_stdlib_refuses_are_refused_either_way(
    payload: Any, use_orjson: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """orjson never accepts what json.dumps (and so kombu) would refuse: both raise SerializationError."""
    if not use_orjson:
        monkeypatch.setattr(_serialization, "_orjson", None)
    with pytest.raises(SerializationError, match="json"):
        encode_body(payload, "json", None, None)
    with pytest.raises(SerializationError, match="json-plain"):
        encode_body(payload, "json-plain", None, None)


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


def test_register_serializer_with_a_decoder_round_trips() -> None:
    """A serializer registered with a decoder is undone by decode_body; without one (the old call) it still encodes."""
    register_serializer(
        "csv-test", lambda rows: "\n".join(",".join(row) for row in rows), "text/x-csv-test", decoder=_csv_rows
    )
    content_type, encoding, body = encode_body([["a", "b"], ["c", "d"]], "csv-test", None, None)
    assert get_serializer("csv-test").decoder is _csv_rows
    assert decode_body(body, content_type, encoding, None) == [["a", "b"], ["c", "d"]]
    register_serializer("csv-nodecoder", lambda rows: "x", "application/x-csv-nodecoder", "binary")
    assert get_serializer("csv-nodecoder").decoder is None
    assert decode_body(b"x", "application/x-csv-nodecoder", "binary", None) == b"x"
    with pytest.raises(TypeError, match="decoder must be callable"):
        register_serializer("bad", str, "text/x-bad", decoder="not callable")  # type: ignore[arg-type]


def _csv_rows(body: bytes) -> list[list[str]]:
    return [line.split(",") for line in body.decode().splitlines()]


def test_register_compressor_with_decompress_and_decoders_by_content_type() -> None:
    """decode_body decompresses by the compression header, then decodes by content type (register_decoder)."""
    register_compressor("rev-test", lambda body: body[::-1], "application/x-rev-test", decompress=lambda b: b[::-1])
    register_decoder("application/x-upper-test", lambda body: body.decode().upper())
    body, header = compress(b"hello", "rev-test")
    assert body == b"olleh"
    assert decode_body(body, "application/x-upper-test", "binary", header) == "HELLO"
    register_decompressor("application/x-double-test", lambda b: b[: len(b) // 2])
    assert decode_body(b"abab", "text/plain", None, "application/x-double-test") == "ab"
    with pytest.raises(ValueError, match="content_type"):
        register_decoder("", lambda body: body)


@pytest.mark.parametrize("compression", [None, "gzip", "bzip2", "lzma", "zstd"])
@pytest.mark.parametrize("serializer", ["json", "json-plain", "pickle", "msgpack"])
def test_decode_body_undoes_encode_body_and_compress(serializer: str, compression: str | None) -> None:
    """Every built-in serializer and compressor is undone by decode_body (what the in-memory broker shows)."""
    payload = {"id": 7, "text": "héllo", "items": [1, 2.5, None, True]}
    content_type, encoding, body = encode_body(payload, serializer, None, None)
    header = None
    if compression is not None:
        body, header = compress(body, compression)
    assert decode_body(body, content_type, encoding, header) == payload


def test_decode_body_falls_back_to_bytes_or_str() -> None:
    """Unknown types stay bytes, text becomes str, a broken body or unknown compression stays as it came."""
    assert decode_body(b"\x00\x01", "application/octet-stream", "binary", None) == b"\x00\x01"
    assert decode_body("é".encode("utf-16"), "application/text", "utf-16", None) == "é"
    assert decode_body(b"hi", "text/plain", None, None) == "hi"
    assert decode_body(b"{not json", "application/json", "utf-8", None) == b"{not json"
    assert decode_body(b"zz", "application/json", "utf-8", "application/x-unknown") == b"zz"
    assert decode_body(b"zz", "application/json", "utf-8", "application/x-gzip") == b"zz"
    assert decode_body(b'{"__type__": "nope", "__value__": 1}', "application/json", "utf-8", None) == (
        b'{"__type__": "nope", "__value__": 1}'
    )


@pytest.mark.parametrize("serializer", ["json", "json-plain", "msgpack"])
def test_a_refused_value_deep_in_a_payload_is_named_by_its_path(serializer: str) -> None:
    """A set three levels down: the error says payload["order"]["items"][2], and that it is a set."""
    payload = {"order": {"id": 1, "items": ["book", "pen", {"a", "b"}]}, "note": "x"}
    with pytest.raises(SerializationError) as refused:
        _serialization.encode_body(payload, serializer, None, None)
    assert 'payload["order"]["items"][2], a set' in str(refused.value)
    assert f"serializer {serializer!r}" in str(refused.value)


def test_the_path_names_int_keys_and_tuples_and_stops_at_a_refused_payload() -> None:
    """Non-str keys are shown by repr; a payload refused as a whole (a set) gets no path."""
    with pytest.raises(SerializationError, match=r"payload\[1\]\[0\], an object"):
        _serialization.encode_body({1: (object(),)}, "json", None, None)
    with pytest.raises(SerializationError) as refused:
        _serialization.encode_body({1, 2}, "json", None, None)
    assert "cannot encode a set:" in str(refused.value) and "payload[" not in str(refused.value)


def test_the_path_search_ends_on_a_cycle() -> None:
    """A list that holds itself: the search stops at the cycle instead of looping."""
    looped: list[object] = []
    looped.append(looped)
    with pytest.raises(SerializationError, match=r'payload\["k"\]'):
        _serialization.encode_body({"k": looped}, "json", None, None)


async def test_publish_and_publish_many_report_the_path() -> None:
    """Through the Publisher: publish() raises with the path; publish_many's failed result carries it."""
    from aiopublish import Publisher, Queue

    async with Publisher("memory://serialization-path", declare=[Queue("q")], routing_key="q") as publisher:
        with pytest.raises(SerializationError, match=r'payload\["tags"\]\[1\], a set'):
            await publisher.publish({"tags": ["a", {"b"}]})
        good, bad = await publisher.publish_many([{"ok": 1}, {"tags": ["a", {"b"}]}])
    assert good.status == "confirmed" and bad.status == "failed"
    assert 'payload["tags"][1], a set' in str(bad.error)
