"""The AMQP 1.0 performatives, SASL frames, outcomes and message sections a publisher uses.

Encoders write the fields a sender needs, in specification order, with trailing
nulls dropped. What the broker sends is decoded generically (`_codec.decode`) into a
`Described` whose value is the field list; `field` reads a field by position with
the specification's default, so a peer that omits trailing fields is understood.
"""

from __future__ import annotations

import struct
from typing import Any

from ._codec import (
    NULL,
    Described,
    encode_binary,
    encode_bool,
    encode_described,
    encode_fields,
    encode_map,
    encode_string,
    encode_symbol,
    encode_ubyte,
    encode_uint,
    encode_ushort,
)

__all__ = [
    "ACCEPTED",
    "ATTACH",
    "BEGIN",
    "CLOSE",
    "DETACH",
    "DISPOSITION",
    "END",
    "FLOW",
    "MODIFIED",
    "OPEN",
    "REJECTED",
    "RELEASED",
    "SASL_INIT",
    "SASL_MECHANISMS",
    "SASL_OUTCOME",
    "TRANSFER",
    "attach",
    "begin",
    "close",
    "descriptor_code",
    "detach",
    "end",
    "error_text",
    "data_section",
    "field",
    "first_transfer",
    "flow",
    "link_flow",
    "management_attach",
    "map_section",
    "open_",
    "sasl_init",
    "section",
    "transfer",
]

# Descriptor codes (domain 0x00000000): part 2 (transport), 3 (messaging), 5 (security).
SASL_MECHANISMS = 0x40
SASL_INIT = 0x41
SASL_CHALLENGE = 0x42
SASL_RESPONSE = 0x43
SASL_OUTCOME = 0x44
OPEN = 0x10
BEGIN = 0x11
ATTACH = 0x12
FLOW = 0x13
TRANSFER = 0x14
DISPOSITION = 0x15
DETACH = 0x16
END = 0x17
CLOSE = 0x18
ERROR = 0x1D
RECEIVED = 0x23
ACCEPTED = 0x24
REJECTED = 0x25
RELEASED = 0x26
MODIFIED = 0x27
SOURCE = 0x28
TARGET = 0x29

# Message sections (part 3.2).
HEADER = 0x70
DELIVERY_ANNOTATIONS = 0x71
MESSAGE_ANNOTATIONS = 0x72
PROPERTIES = 0x73
APPLICATION_PROPERTIES = 0x74
DATA = 0x75
AMQP_SEQUENCE = 0x76
AMQP_VALUE = 0x77
FOOTER = 0x78

# The symbolic descriptors a peer may use instead of the numeric ones.
_SYMBOLIC = {
    "amqp:sasl-mechanisms:list": SASL_MECHANISMS,
    "amqp:sasl-outcome:list": SASL_OUTCOME,
    "amqp:sasl-challenge:list": SASL_CHALLENGE,
    "amqp:open:list": OPEN,
    "amqp:begin:list": BEGIN,
    "amqp:attach:list": ATTACH,
    "amqp:flow:list": FLOW,
    "amqp:transfer:list": TRANSFER,
    "amqp:disposition:list": DISPOSITION,
    "amqp:detach:list": DETACH,
    "amqp:end:list": END,
    "amqp:close:list": CLOSE,
    "amqp:error:list": ERROR,
    "amqp:received:list": RECEIVED,
    "amqp:accepted:list": ACCEPTED,
    "amqp:rejected:list": REJECTED,
    "amqp:released:list": RELEASED,
    "amqp:modified:list": MODIFIED,
    "amqp:source:list": SOURCE,
    "amqp:target:list": TARGET,
}

# Sender settle mode: unsettled (the receiver settles with an outcome), settled (pre-settled).
SND_UNSETTLED = 0
SND_SETTLED = 1
SND_MIXED = 2


def descriptor_code(value: Any) -> int | None:
    """The numeric descriptor of a described value (symbolic ones mapped), None when not described."""
    if not isinstance(value, Described):
        return None
    descriptor = value.descriptor
    if isinstance(descriptor, int):
        return descriptor
    return _SYMBOLIC.get(descriptor) if isinstance(descriptor, str) else None


def field(performative: Described, index: int, default: Any = None) -> Any:
    """Field `index` of a performative or section, `default` when absent or null."""
    fields = performative.value
    if not isinstance(fields, list) or index >= len(fields) or fields[index] is None:
        return default
    return fields[index]


def error_text(error: Any) -> tuple[str, str]:
    """(condition, description) of an `error` field ("" where missing)."""
    if descriptor_code(error) != ERROR:
        return ("", "")
    return (str(field(error, 0, "")), str(field(error, 1, "")))


# -- SASL (part 5.3) ---------------------------------------------------------------------------


def sasl_init(mechanism: str, initial_response: bytes | None, hostname: str | None) -> bytes:
    return encode_described(
        SASL_INIT,
        encode_fields(
            [
                encode_symbol(mechanism),
                NULL if initial_response is None else encode_binary(initial_response),
                NULL if hostname is None else encode_string(hostname),
            ]
        ),
    )


# -- transport (part 2.7) ----------------------------------------------------------------------


def open_(container_id: str, hostname: str, max_frame_size: int, channel_max: int, idle_timeout_ms: int) -> bytes:
    return encode_described(
        OPEN,
        encode_fields(
            [
                encode_string(container_id),
                encode_string(hostname),
                encode_uint(max_frame_size),
                encode_ushort(channel_max),
                encode_uint(idle_timeout_ms) if idle_timeout_ms else NULL,
            ]
        ),
    )


def begin(next_outgoing_id: int, incoming_window: int, outgoing_window: int, handle_max: int) -> bytes:
    return encode_described(
        BEGIN,
        encode_fields(
            [
                NULL,  # remote-channel: null, we begin the session
                encode_uint(next_outgoing_id),
                encode_uint(incoming_window),
                encode_uint(outgoing_window),
                encode_uint(handle_max),
            ]
        ),
    )


def attach(name: str, handle: int, address: str | None, snd_settle_mode: int = SND_MIXED) -> bytes:
    """A sender link's attach to `address` (None: the anonymous terminus), delivery count from 0."""
    target = encode_described(TARGET, encode_fields([NULL if address is None else encode_string(address)]))
    source = encode_described(SOURCE, encode_fields([]))
    return encode_described(
        ATTACH,
        encode_fields(
            [
                encode_string(name),
                encode_uint(handle),
                encode_bool(False),  # role: sender
                encode_ubyte(snd_settle_mode),
                encode_ubyte(0),  # rcv-settle-mode: first
                source,
                target,
                NULL,  # unsettled
                NULL,  # incomplete-unsettled
                encode_uint(0),  # initial-delivery-count
            ]
        ),
    )


def management_attach(name: str, handle: int, *, receiver: bool) -> bytes:
    """One half of RabbitMQ's management link pair: both halves share `name`, address /management,
    pre-settled transfers and the ``paired`` property (RabbitMQ's HTTP-over-AMQP 1.0 node)."""
    terminus = encode_fields([encode_string("/management")])
    fields = [
        encode_string(name),
        encode_uint(handle),
        encode_bool(receiver),
        encode_ubyte(SND_SETTLED),
        encode_ubyte(0),
        encode_described(SOURCE, terminus),
        encode_described(TARGET, terminus),
        NULL,
        NULL,
        NULL if receiver else encode_uint(0),  # initial-delivery-count: a sender's only
        NULL,
        NULL,
        NULL,
        encode_map([(encode_symbol("paired"), encode_bool(True))]),
    ]
    return encode_described(ATTACH, encode_fields(fields))


def link_flow(
    next_incoming_id: int,
    incoming_window: int,
    next_outgoing_id: int,
    outgoing_window: int,
    handle: int,
    delivery_count: int,
    link_credit: int,
    *,
    drain: bool = False,
) -> bytes:
    """A flow about one link: its delivery count and the credit (ours to give on a receiving link)."""
    return encode_described(
        FLOW,
        encode_fields(
            [
                encode_uint(next_incoming_id),
                encode_uint(incoming_window),
                encode_uint(next_outgoing_id),
                encode_uint(outgoing_window),
                encode_uint(handle),
                encode_uint(delivery_count),
                encode_uint(link_credit),
                NULL,
                encode_bool(drain),
            ]
        ),
    )


def flow(next_incoming_id: int | None, incoming_window: int, next_outgoing_id: int, outgoing_window: int) -> bytes:
    """A session-level flow (no handle): tells the peer our windows."""
    return encode_described(
        FLOW,
        encode_fields(
            [
                NULL if next_incoming_id is None else encode_uint(next_incoming_id),
                encode_uint(incoming_window),
                encode_uint(next_outgoing_id),
                encode_uint(outgoing_window),
            ]
        ),
    )


def transfer(handle: int, delivery_id: int | None, delivery_tag: bytes | None, settled: bool, more: bool) -> bytes:
    """A transfer's performative; the first frame of a delivery names it, continuations only its handle."""
    if delivery_id is None:
        fields = [encode_uint(handle), NULL, NULL, NULL, NULL, encode_bool(more)]
    else:
        fields = [
            encode_uint(handle),
            encode_uint(delivery_id),
            encode_binary(delivery_tag or b""),
            encode_uint(0),  # message-format 0: an AMQP message
            encode_bool(settled),
            encode_bool(more),
        ]
    return encode_described(TRANSFER, encode_fields(fields))


# A delivery's first transfer with fixed-width fields (uint handle and id, a 4-byte tag): one pack.
_TRANSFER_HEAD = b"\x00\x53\x14\xc0\x14\x06\x70"
_TRANSFER_FIELDS = struct.Struct(">IBIHI")
_TRANSFER_TAILS = {
    (settled, more): b"\x43" + encode_bool(settled) + encode_bool(more)
    for settled in (False, True)
    for more in (False, True)
}


def first_transfer(handle: int, delivery_id: int, settled: bool, more: bool) -> bytes:
    """`transfer(handle, delivery_id, delivery_id as 4 bytes, settled, more)`, encoded at the cost of one pack.

    Fixed-width fields instead of the shortest ones: the same values, as the specification allows.
    """
    return (
        _TRANSFER_HEAD
        + _TRANSFER_FIELDS.pack(handle, 0x70, delivery_id, 0xA004, delivery_id)
        + _TRANSFER_TAILS[settled, more]
    )


def detach(handle: int, closed: bool) -> bytes:
    return encode_described(DETACH, encode_fields([encode_uint(handle), encode_bool(closed)]))


def end() -> bytes:
    return encode_described(END, encode_fields([]))


def close() -> bytes:
    return encode_described(CLOSE, encode_fields([]))


# -- message sections (part 3.2) ----------------------------------------------------------------


def section(code: int, fields: list[bytes]) -> bytes:
    """A list-valued section (header, properties), trailing nulls dropped; b"" when all are null."""
    if all(item == NULL for item in fields):
        return b""
    return encode_described(code, encode_fields(fields))


def map_section(code: int, pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A map-valued section (message-annotations, application-properties); b"" when empty."""
    return encode_described(code, encode_map(pairs)) if pairs else b""


def data_section(body: bytes) -> bytes:
    return encode_described(DATA, encode_binary(body))
