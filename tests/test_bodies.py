"""Serializers, explicit content types and compression, as a nameko/kombu consumer would read them."""

from __future__ import annotations

import bz2
import json
import lzma
import pickle
import zlib

import msgpack
import pytest
import zstandard

from aiopublish import Publisher, SerializationError, _serialization
from tests.broker import Broker


async def test_json_body_is_json_dumps(amqp_url: str, broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without orjson the json serializer sends json.dumps' exact bytes (kombu's format), utf-8."""
    monkeypatch.setattr(_serialization, "_orjson", None)
    queue = await broker.queue()
    payload = {"id": 1, "text": "héllo", "items": [1, 2.5, None, True]}
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish(payload)
    message = await broker.get(queue)
    assert message.body == json.dumps(payload).encode("utf-8")
    assert message.header.properties.content_type == "application/json"


async def test_pickle_body(amqp_url: str, broker: Broker) -> None:
    """serializer="pickle" sends pickle bytes labelled application/x-python-serialize, binary."""
    queue = await broker.queue()
    payload = {"set": {1, 2}, "tuple": (1, "a")}
    async with Publisher(amqp_url, routing_key=queue, serializer="pickle") as publisher:
        await publisher.publish(payload)
    message = await broker.get(queue)
    assert pickle.loads(message.body) == payload
    assert message.header.properties.content_type == "application/x-python-serialize"
    assert message.header.properties.content_encoding == "binary"


async def test_msgpack_body(amqp_url: str, broker: Broker) -> None:
    """serializer="msgpack" (optional extra) sends msgpack bytes."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish({"a": [1, 2]}, serializer="msgpack")
    message = await broker.get(queue)
    assert msgpack.unpackb(message.body) == {"a": [1, 2]}
    assert message.header.properties.content_type == "application/x-msgpack"


async def test_raw_serializer_passes_bytes_through(amqp_url: str, broker: Broker) -> None:
    """serializer="raw" sends bytes unchanged as application/data, binary."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, serializer="raw") as publisher:
        await publisher.publish(b"\x00\x01raw")
    message = await broker.get(queue)
    assert message.body == b"\x00\x01raw"
    assert message.header.properties.content_type == "application/data"
    assert message.header.properties.content_encoding == "binary"


async def test_raw_bytes_with_content_type_arrive_unchanged(amqp_url: str, broker: Broker) -> None:
    """bytes with content_type image/gif go byte for byte with content_encoding "binary"."""
    queue = await broker.queue()
    gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01"
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish(gif, content_type="image/gif")
    message = await broker.get(queue)
    assert message.body == gif
    assert message.header.properties.content_type == "image/gif"
    assert message.header.properties.content_encoding == "binary"


async def test_str_with_content_type_and_encoding(amqp_url: str, broker: Broker) -> None:
    """A str with content_type application/text and content_encoding utf-16 decodes as utf-16."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("¿hola?", content_type="application/text", content_encoding="utf-16")
        await publisher.publish("plain", content_type="text/plain")
    first, second = await broker.get_all(queue)
    assert first.body.decode("utf-16") == "¿hola?"
    assert first.header.properties.content_encoding == "utf-16"
    assert second.body == b"plain"
    assert second.header.properties.content_encoding == "utf-8"


@pytest.mark.parametrize(
    ("name", "header", "decompress"),
    [
        ("gzip", "application/x-gzip", zlib.decompress),
        ("bzip2", "application/x-bz2", bz2.decompress),
        ("lzma", "application/x-lzma", lzma.decompress),
        ("xz", "application/x-lzma", lzma.decompress),
        ("zstd", "application/zstd", lambda data: zstandard.ZstdDecompressor().decompress(data)),
    ],
)
async def test_compression_matches_kombu(
    amqp_url: str, broker: Broker, name: str, header: str, decompress: object
) -> None:
    """Each compression sets kombu's `compression` header and a body kombu's decompressor reads."""
    queue = await broker.queue()
    payload = {"text": "aaaa" * 100}
    async with Publisher(amqp_url, routing_key=queue, compression=name) as publisher:
        await publisher.publish(payload, headers={"keep": "me"})
    message = await broker.get(queue)
    assert message.header.properties.headers == {"compression": header, "keep": "me"}
    assert json.loads(decompress(message.body)) == payload  # type: ignore[operator]
    assert message.header.properties.content_type == "application/json"


async def test_unencodable_payload_raises_and_sends_nothing(amqp_url: str, broker: Broker) -> None:
    """A payload json cannot encode raises SerializationError (a ValueError) and nothing is published."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        with pytest.raises(SerializationError, match="json"):
            await publisher.publish({"obj": object()})
        with pytest.raises(ValueError, match="content_type"):
            await publisher.publish(12345, content_type="text/plain")
        await publisher.publish("after")
    bodies = [m.body for m in await broker.get_all(queue)]
    assert bodies == [b'"after"']
