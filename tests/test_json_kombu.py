"""kombu's json both ways: kombu decodes aiopublish's bytes to equal objects, with and without orjson; json-plain;
pydantic models and dataclasses as json and msgpack payloads."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import json
import uuid
from decimal import Decimal
from typing import Any

import msgpack
import pydantic
import pytest
from kombu.serialization import dumps as kombu_dumps
from kombu.serialization import loads as kombu_loads

from aiopublish import Publisher, Queue, SerializationError, _serialization
from aiopublish._serialization import decode_body, encode_body
from tests.broker import Broker

UTC = datetime.UTC
VALUES: dict[str, Any] = {
    "datetime": datetime.datetime(2026, 1, 2, 3, 4, 5),
    "datetime-us-tz": datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    "datetime-offset": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
    "date": datetime.date(2026, 1, 2),
    "time": datetime.time(3, 4, 5, 6),
    "uuid": uuid.UUID("3f2a8c4e-1b6d-4e0f-9a7b-2c5d8e1f0a3b"),
    "decimal": Decimal("12.3400"),
    "bytes-utf8": "héllo".encode(),
    "bytes-binary": b"\xff\x00\xfe",
}


@pytest.fixture(params=[True, False], ids=["orjson", "stdlib"])
def use_orjson(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if not request.param:
        monkeypatch.setattr(_serialization, "_orjson", None)
    assert (_serialization._orjson is not None) is request.param
    return bool(request.param)


def kombu_reads(body: bytes) -> Any:
    return kombu_loads(body, "application/json", "utf-8")


@pytest.mark.parametrize("kind", list(VALUES))
def test_kombu_decodes_each_type_to_an_equal_object(kind: str, use_orjson: bool) -> None:
    """For each kombu type, alone, nested and in a list, kombu's json decoder gives back equal objects."""
    value = VALUES[kind]
    payload = {"v": value, "nested": {"list": [value, 1, "x"]}, "str": "plain"}
    content_type, encoding, body = encode_body(payload, "json", None, None)
    assert (content_type, encoding) == ("application/json", "utf-8")
    decoded = kombu_reads(body)
    assert decoded == payload
    assert type(decoded["v"]) is type(value)
    assert decode_body(body, content_type, encoding, None) == payload
    assert kombu_reads(encode_body(value, "json", None, None)[2]) == value  # at the top level too


@pytest.mark.parametrize("kind", list(VALUES))
def test_stdlib_path_is_kombus_bytes_exactly(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without orjson the body is byte for byte what kombu.serialization.dumps writes."""
    monkeypatch.setattr(_serialization, "_orjson", None)
    payload = {"v": VALUES[kind], "text": "héllo ✓", "n": [1, 2.5, None, True]}
    _, _, kombu_body = kombu_dumps(payload, "json")
    assert encode_body(payload, "json", None, None)[2] == kombu_body.encode("utf-8")


def test_orjson_path_shapes_are_kombus(use_orjson: bool) -> None:
    """With orjson the markers have kombu's exact shapes (only whitespace may differ)."""
    _, _, body = encode_body(VALUES, "json", None, None)
    _, _, kombu_body = kombu_dumps(VALUES, "json")
    assert json.loads(body) == json.loads(kombu_body)
    assert json.loads(body)["uuid"] == {"__type__": "uuid", "__value__": {"hex": VALUES["uuid"].hex}}
    assert json.loads(body)["bytes-binary"] == {"__type__": "base64", "__value__": "/wD+"}


def test_kombus_payloads_decode_in_aiopublish() -> None:
    """A body kombu wrote (each type) decodes in decode_body to the objects kombu started from."""
    content_type, encoding, body = kombu_dumps(VALUES, "json")
    assert decode_body(body.encode(encoding), content_type, encoding, None) == VALUES


def test_one_uuid_among_500_plain_messages(use_orjson: bool) -> None:
    """A UUID object in one of 500 plain dicts (some with UUID-looking strings) is marked; the strings stay strings."""
    target = uuid.UUID(int=499)
    payload: list[Any] = [{"id": i, "ref": str(uuid.UUID(int=i)), "name": f"a-{i}"} for i in range(500)]
    payload[321] = {"id": 321, "ref": target}
    decoded = kombu_reads(encode_body(payload, "json", None, None)[2])
    assert decoded[321]["ref"] == target
    assert [i for i, item in enumerate(decoded) if not isinstance(item["ref"], str)] == [321]
    assert decoded[:321] == payload[:321] and decoded[322:] == payload[322:]


def test_plain_payloads_never_reach_the_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """With orjson, plain dicts (UUID-looking strings included) are encoded without calling the default hook."""
    calls: list[Any] = []
    original = _serialization._kombu_default

    def counting(value: Any) -> Any:
        calls.append(value)
        return original(value)

    monkeypatch.setattr(_serialization, "_kombu_default", counting)
    for i in range(500):
        encode_body({"id": i, "body": "x" * 120, "ref": str(uuid.UUID(int=i))}, "json", None, None)
    assert calls == []
    encode_body({"at": VALUES["date"]}, "json", None, None)
    assert calls == [VALUES["date"]]


def test_json_plain_sends_iso_and_canonical_strings(use_orjson: bool) -> None:
    """json-plain writes the same types as plain strings (bytes as base64) under application/json."""
    content_type, encoding, body = encode_body(VALUES, "json-plain", None, None)
    assert (content_type, encoding) == ("application/json", "utf-8")
    assert json.loads(body) == {
        "datetime": "2026-01-02T03:04:05",
        "datetime-us-tz": "2026-01-02T03:04:05.678901+00:00",
        "datetime-offset": "2026-01-02T03:04:05-05:00",
        "date": "2026-01-02",
        "time": "03:04:05.000006",
        "uuid": "3f2a8c4e-1b6d-4e0f-9a7b-2c5d8e1f0a3b",
        "decimal": "12.3400",
        "bytes-utf8": base64.b64encode("héllo".encode()).decode(),
        "bytes-binary": "/wD+",
    }


class Line(pydantic.BaseModel):
    sku: str
    quantity: int
    price: Decimal


class Order(pydantic.BaseModel):
    id: uuid.UUID
    placed_at: datetime.datetime
    lines: list[Line]


@dataclasses.dataclass
class Address:
    city: str
    at: datetime.date


@dataclasses.dataclass
class Customer:
    name: str
    addresses: list[Address]
    order: Order | None = None


ORDER = Order(
    id=uuid.UUID(int=42),
    placed_at=datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    lines=[Line(sku="A-1", quantity=2, price=Decimal("9.90"))],
)


def test_pydantic_model_is_sent_as_model_dump_json(use_orjson: bool) -> None:
    """A pydantic v2 model goes as model_dump(mode="json"), nested in a dict too; kombu reads the same dict."""
    expected = ORDER.model_dump(mode="json")
    for serializer in ("json", "json-plain"):
        assert kombu_reads(encode_body(ORDER, serializer, None, None)[2]) == expected
        assert kombu_reads(encode_body({"order": ORDER}, serializer, None, None)[2]) == {"order": expected}


def test_dataclasses_nested_with_kombu_types(use_orjson: bool) -> None:
    """A dataclass goes as dataclasses.asdict (nested ones and a pydantic field too); its dates as kombu marks them."""
    customer = Customer("Ann", [Address("Oslo", datetime.date(2026, 1, 2))], ORDER)
    decoded = kombu_reads(encode_body(customer, "json", None, None)[2])
    assert decoded == {
        "name": "Ann",
        "addresses": [{"city": "Oslo", "at": datetime.date(2026, 1, 2)}],
        "order": ORDER.model_dump(mode="json"),
    }
    plain = json.loads(encode_body([customer], "json-plain", None, None)[2])
    assert plain[0]["addresses"] == [{"city": "Oslo", "at": "2026-01-02"}]


def test_msgpack_takes_models_and_dataclasses() -> None:
    """msgpack packs pydantic models and dataclasses as json does; a date inside a dataclass is still refused."""
    packed = encode_body({"order": ORDER, "line": Tag("a", [Tag("b", [])])}, "msgpack", None, None)
    assert packed[:2] == ("application/x-msgpack", "binary")
    assert msgpack.unpackb(packed[2]) == {
        "order": ORDER.model_dump(mode="json"),
        "line": {"name": "a", "children": [{"name": "b", "children": []}]},
    }
    assert decode_body(packed[2], packed[0], packed[1], None) == msgpack.unpackb(packed[2])
    with pytest.raises(SerializationError, match=r"msgpack.*Address"):
        encode_body(Address("Oslo", datetime.date(2026, 1, 2)), "msgpack", None, None)


@dataclasses.dataclass
class Tag:
    name: str
    children: list[Tag]


@pytest.mark.parametrize(
    "payload",
    [object(), {1, 2}, Order, Customer, pydantic.BaseModel],
    ids=["object", "set", "model-class", "dataclass-class", "basemodel-class"],
)
@pytest.mark.parametrize("serializer", ["json", "json-plain", "msgpack"])
def test_anything_else_is_refused(payload: Any, serializer: str, use_orjson: bool) -> None:
    """Objects that are neither kombu types nor models nor dataclasses (classes included) raise SerializationError."""
    with pytest.raises(SerializationError, match=serializer):
        encode_body({"x": payload}, serializer, None, None)


async def test_real_broker_message_decodes_in_kombu(amqp_url: str, broker: Broker) -> None:
    """A published message read back from RabbitMQ decodes in kombu to the datetime/UUID/Decimal/bytes payload."""
    queue = broker.name("q")
    payload = {"values": VALUES, "order": ORDER}
    async with Publisher(amqp_url, declare=[Queue(queue)], routing_key=queue) as publisher:
        await publisher.publish(payload)
        await publisher.publish(payload, serializer="json-plain")
    kombu_side, plain = await broker.get_all(queue)
    props = kombu_side.header.properties
    decoded = kombu_loads(kombu_side.body, props.content_type, props.content_encoding)
    assert decoded == {"values": VALUES, "order": ORDER.model_dump(mode="json")}
    assert json.loads(plain.body)["values"]["uuid"] == str(VALUES["uuid"])


class Money:
    def __init__(self, amount: str, currency: str) -> None:
        self.amount, self.currency = amount, currency

    def __json__(self) -> dict[str, Any]:
        return {"amount": Decimal(self.amount), "currency": self.currency}


def test_dunder_json_hook_as_kombu(use_orjson: bool) -> None:
    """An object with __json__() (kombu's hook) is written as what it returns, kombu's types inside marked."""
    payload = {"price": Money("9.90", "EUR")}
    assert kombu_reads(encode_body(payload, "json", None, None)[2]) == kombu_reads(
        kombu_dumps(payload, "json")[2].encode()
    )
    assert kombu_reads(encode_body(payload, "json", None, None)[2]) == {
        "price": {"amount": Decimal("9.90"), "currency": "EUR"}
    }


class Colour(enum.Enum):
    RED = "red"


def test_plain_enum_is_the_documented_orjson_difference(use_orjson: bool) -> None:
    """As the README says: with orjson a plain Enum member goes as its value; json.dumps (and kombu) refuse it."""
    if use_orjson:
        assert json.loads(encode_body({"c": Colour.RED}, "json", None, None)[2]) == {"c": "red"}
    else:
        with pytest.raises(SerializationError, match="Colour"):
            encode_body({"c": Colour.RED}, "json", None, None)
