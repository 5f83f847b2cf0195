"""The AMQP 1.0 codec against the specification's encodings, and round trips (no broker needed)."""

from __future__ import annotations

import random
import struct
import uuid

import pytest

from aiopublish._amqp1 import _performatives as p
from aiopublish._amqp1._codec import (
    DecodeError,
    Described,
    Symbol,
    Timestamp,
    decode,
    encode_array_symbols,
    encode_binary,
    encode_bool,
    encode_described,
    encode_fields,
    encode_list,
    encode_map,
    encode_string,
    encode_symbol,
    encode_ubyte,
    encode_uint,
    encode_ulong,
    encode_ushort,
    encode_value,
)
from aiopublish._amqp1._frames import AMQP_HEADER, SASL_HEADER, TYPE_SASL, FrameReader, frame

# (encoding per OASIS AMQP 1.0 part 1.6 / the figures of part 1.2, the bytes, the decoded value)
SPEC_TABLE = [
    ("null", b"\x40", None),
    ("true", b"\x41", True),
    ("false", b"\x42", False),
    ("boolean 0x56 true", b"\x56\x01", True),
    ("boolean 0x56 false", b"\x56\x00", False),
    ("ubyte", b"\x50\xff", 255),
    ("ushort", b"\x60\x01\x02", 0x0102),
    ("uint0", b"\x43", 0),
    ("smalluint", b"\x52\x07", 7),
    ("uint", b"\x70\x00\x01\x00\x00", 65536),
    ("ulong0", b"\x44", 0),
    ("smallulong", b"\x53\x10", 0x10),
    ("ulong", b"\x80" + struct.pack(">Q", 2**40), 2**40),
    ("byte", b"\x51\xff", -1),
    ("short", b"\x61\xff\xfe", -2),
    ("int", b"\x71\xff\xff\xff\xfd", -3),
    ("smallint", b"\x54\xfc", -4),
    ("long", b"\x81" + struct.pack(">q", -(2**40)), -(2**40)),
    ("smalllong", b"\x55\x05", 5),
    ("double", b"\x82" + struct.pack(">d", 1.5), 1.5),
    ("timestamp", b"\x83" + struct.pack(">q", 1311704463521), 1311704463521),
    ("uuid", b"\x98" + bytes(range(16)), uuid.UUID(bytes=bytes(range(16)))),
    ("vbin8", b"\xa0\x03abc", b"abc"),
    ("vbin32", b"\xb0\x00\x00\x00\x03abc", b"abc"),
    ("str8-utf8", b"\xa1\x06h\xc3\xa9llo", "héllo"),
    ("str32-utf8", b"\xb1\x00\x00\x00\x02hi", "hi"),
    ("sym8", b"\xa3\x0eamqp:not-found", Symbol("amqp:not-found")),
    ("sym32", b"\xb3\x00\x00\x00\x01x", Symbol("x")),
    ("list0", b"\x45", []),
    ("list8", b"\xc0\x03\x02\x41\x43", [True, 0]),
    ("list32", b"\xd0\x00\x00\x00\x06\x00\x00\x00\x02\x41\x43", [True, 0]),
    ("map8", b"\xc1\x05\x02\xa1\x01k\x41", {"k": True}),
    ("map32", b"\xd1\x00\x00\x00\x08\x00\x00\x00\x02\xa1\x01k\x41", {"k": True}),
    ("array8 of sym8", b"\xe0\x07\x02\xa3\x02ab\x01c", [Symbol("ab"), Symbol("c")]),
    ("array32 of uint", b"\xf0\x00\x00\x00\x0d\x00\x00\x00\x02\x70\x00\x00\x00\x01\x00\x00\x00\x02", [1, 2]),
    # Part 1.2, "described format code": a str8 descriptor "URL" and a str8 value.
    (
        "described (spec figure)",
        b"\x00\xa1\x03URL\xa1\x1ehttp://example.org/hello-world",
        Described("URL", "http://example.org/hello-world"),
    ),
]


@pytest.mark.parametrize(("name", "data", "value"), SPEC_TABLE, ids=[row[0] for row in SPEC_TABLE])
def test_decodes_the_specifications_encodings(name: str, data: bytes, value: object) -> None:
    """Every encoding of the specification's type table decodes to its value and consumes all its bytes."""
    decoded, end = decode(data)
    assert decoded == value
    assert type(decoded) is type(value) or isinstance(decoded, type(value))
    assert end == len(data)


def test_symbols_and_timestamps_keep_their_type() -> None:
    """A symbol is told apart from a string, a timestamp from an integer."""
    assert isinstance(decode(b"\xa3\x01a")[0], Symbol)
    assert not isinstance(decode(b"\xa1\x01a")[0], Symbol)
    assert isinstance(decode(b"\x83" + struct.pack(">q", 5))[0], Timestamp)


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (encode_bool(True), b"\x41"),
        (encode_ubyte(1), b"\x50\x01"),
        (encode_ushort(256), b"\x60\x01\x00"),
        (encode_uint(0), b"\x43"),
        (encode_uint(255), b"\x52\xff"),
        (encode_uint(256), b"\x70\x00\x00\x01\x00"),
        (encode_ulong(0), b"\x44"),
        (encode_ulong(0x10), b"\x53\x10"),
        (encode_ulong(256), b"\x80\x00\x00\x00\x00\x00\x00\x01\x00"),
        (encode_binary(b"ab"), b"\xa0\x02ab"),
        (encode_binary(b"x" * 256), b"\xb0\x00\x00\x01\x00" + b"x" * 256),
        (encode_string("é"), b"\xa1\x02\xc3\xa9"),
        (encode_symbol("PLAIN"), b"\xa3\x05PLAIN"),
        (encode_list([]), b"\x45"),
        (encode_list([b"\x41", b"\x43"]), b"\xc0\x03\x02\x41\x43"),
        (encode_map([(b"\xa1\x01k", b"\x41")]), b"\xc1\x05\x02\xa1\x01k\x41"),
        (encode_array_symbols(["ab", "c"]), b"\xe0\x07\x02\xa3\x02ab\x01c"),
        (encode_described(0x10, b"\x45"), b"\x00\x53\x10\x45"),
        (encode_fields([b"\x41", b"\x40", b"\x40"]), b"\xc0\x02\x01\x41"),
    ],
)
def test_encodes_the_shortest_form(encoded: bytes, expected: bytes) -> None:
    """Each encoder writes the shortest encoding the specification allows, byte for byte."""
    assert encoded == expected


def test_headers_are_the_specifications() -> None:
    """The protocol headers (part 2.2, part 5.3.1) and an empty frame (part 2.4.5) are byte-exact."""
    assert AMQP_HEADER == b"AMQP\x00\x01\x00\x00"
    assert SASL_HEADER == b"AMQP\x03\x01\x00\x00"
    assert frame(0, b"") == b"\x00\x00\x00\x08\x02\x00\x00\x00"
    assert frame(3, b"\x45", TYPE_SASL) == b"\x00\x00\x00\x09\x02\x01\x00\x03\x45"


def test_open_is_encoded_as_the_broker_reads_it() -> None:
    """An open performative decodes back to its fields with the numeric descriptor 0x10."""
    body = p.open_("c1", "vhost:/", 65536, 0, 0)
    assert body[:3] == b"\x00\x53\x10"
    decoded, end = decode(body)
    assert end == len(body)
    assert p.descriptor_code(decoded) == p.OPEN
    assert decoded.value == ["c1", "vhost:/", 65536, 0]


def test_attach_names_a_sender_link_and_its_target_address() -> None:
    """attach: role sender (false), mixed settle mode, the v2 address in the target, delivery count 0."""
    decoded, _ = decode(p.attach("l", 3, "/queues/a%20b"))
    assert p.descriptor_code(decoded) == p.ATTACH
    assert p.field(decoded, 0) == "l"
    assert p.field(decoded, 1) == 3
    assert p.field(decoded, 2) is False
    assert p.field(decoded, 3) == p.SND_MIXED
    target = p.field(decoded, 6)
    assert p.descriptor_code(target) == 0x29 and p.field(target, 0) == "/queues/a%20b"
    assert p.field(decoded, 9) == 0


def test_transfer_continuations_carry_only_handle_and_more() -> None:
    """The first frame of a delivery names its id and tag; a continuation only its handle and `more`."""
    first, _ = decode(p.transfer(1, 7, b"\x00\x00\x00\x07", False, True))
    assert first.value == [1, 7, b"\x00\x00\x00\x07", 0, False, True]
    continuation, _ = decode(p.transfer(1, None, None, False, False))
    assert continuation.value == [1, None, None, None, None, False]


def test_symbolic_descriptors_are_understood() -> None:
    """A peer may describe a performative by its symbolic name: it is the same performative."""
    value = Described(Symbol("amqp:rejected:list"), [])
    assert p.descriptor_code(value) == p.REJECTED
    error = Described(Symbol("amqp:error:list"), [Symbol("amqp:resource-limit-exceeded"), "full"])
    assert p.error_text(error) == ("amqp:resource-limit-exceeded", "full")


def _random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 3 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randrange(-(2**63), 2**63)
    if kind == 3:
        return rng.choice([0, 1, -1, 127, 128, -129, 2**31, 2**63 - 1])
    if kind == 4:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.choice([0, 3, 300])))
    if kind == 5:
        return rng.randbytes(rng.choice([0, 5, 255, 256, 70000]))
    if kind == 6:
        return rng.uniform(-1e9, 1e9)
    if kind == 7:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(0, 40))]
    return {f"k{i}": _random_value(rng, depth + 1) for i in range(rng.randrange(0, 40))}


@pytest.mark.parametrize("seed", range(200))
def test_round_trips(seed: int) -> None:
    """encode_value then decode gives the value back, for nested lists and maps of every size class."""
    rng = random.Random(seed)
    value = _random_value(rng)
    data = encode_value(value)
    decoded, end = decode(data)
    assert decoded == value
    assert end == len(data)


@pytest.mark.parametrize("seed", range(50))
def test_frames_split_anywhere_are_read_whole(seed: int) -> None:
    """Frames fed to the reader in pieces of random sizes come out whole, in order."""
    rng = random.Random(seed)
    bodies = [b"", p.flow(1, 100, 2, 100), p.detach(4, True), p.close(), encode_described(0x15, b"\x45")]
    frames = [(rng.randrange(4), rng.choice(bodies)) for _ in range(30)]
    data = b"".join(frame(channel, body) for channel, body in frames)
    reader = FrameReader(4096)
    read = []
    offset = 0
    while offset < len(data):
        step = rng.randrange(1, 40)
        read.extend(reader.feed(data[offset : offset + step]))
        offset += step
    assert [(f.channel, f.performative is None) for f in read] == [(c, not b) for c, b in frames]
    for item, (_, body) in zip(read, frames, strict=True):
        if body:
            assert item.performative == decode(body)[0]


@pytest.mark.parametrize(
    "data",
    [b"\xa1\x05ab", b"\xc0\x05\x02\x41", b"\xe0", b"\x70\x00", b"\xff", b"\xa1\x02\xff\xfe", b"\xc1\x02\x01\x41"],
)
def test_malformed_input_is_a_decode_error(data: bytes) -> None:
    """Truncated or invalid encodings raise DecodeError, never IndexError or a wrong value."""
    with pytest.raises(DecodeError):
        decode(data)


def test_a_frame_over_the_announced_size_is_refused() -> None:
    """A frame larger than the max-frame-size we announced ends the connection (DecodeError)."""
    with pytest.raises(DecodeError, match="max-frame-size"):
        FrameReader(512).feed(frame(0, b"\x40" * 600))


@pytest.mark.parametrize(("handle", "delivery_id"), [(0, 0), (3, 255), (70000, 2**32 - 1)])
@pytest.mark.parametrize(("settled", "more"), [(False, False), (True, False), (False, True)])
def test_the_fixed_width_transfer_means_the_same(handle: int, delivery_id: int, settled: bool, more: bool) -> None:
    """first_transfer (one pack, fixed widths) decodes to the same fields as the shortest-form transfer."""
    tag = delivery_id.to_bytes(4, "big")
    fast, end = decode(p.first_transfer(handle, delivery_id, settled, more))
    assert end == len(p.first_transfer(handle, delivery_id, settled, more))
    assert fast == decode(p.transfer(handle, delivery_id, tag, settled, more))[0]
