"""OpenTelemetry spans against the real broker: semantic conventions 1.44 names, headers, failures, retries, batches."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

import aiopublish
from aiopublish import NotFound, Publisher, SerializationError, UndeliverableMessage, _tracing
from aiopublish import _otel_semconv as semconv
from aiopublish.retry import RetryPolicy, stop_after_delay, wait_fixed
from tests.broker import Broker, until
from tests.faults.fixtures import ProxyFactory
from tests.faults.proxy import TcpProxy


class Otel:
    """aiopublish instrumented with an SDK tracer provider of the test's own (the global one is never set)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        # A meter provider of its own too, so no span test feeds the global (proxy) one.
        self.meters = MeterProvider()

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def only(self) -> ReadableSpan:
        finished = self.spans()
        assert len(finished) == 1, [s.name for s in finished]
        return finished[0]


@pytest.fixture
def otel() -> Iterator[Otel]:
    """Instrument aiopublish for one test; put back the state the suite had before."""
    saved = (_tracing.enabled, _tracing._providers, _tracing._instruments)
    otel = Otel()
    aiopublish.instrument(tracer_provider=otel.provider, meter_provider=otel.meters)
    try:
        yield otel
    finally:
        _tracing.enabled, _tracing._providers, _tracing._instruments = saved
        otel.provider.shutdown()
        otel.meters.shutdown()


def server(amqp_url: str) -> tuple[str, int]:
    parts = urlsplit(amqp_url)
    return parts.hostname or "127.0.0.1", parts.port or 5672


def traceparent_ids(value: object) -> tuple[int, int]:
    """(trace id, span id) of a W3C traceparent header."""
    version, trace_id, span_id, flags = str(value).split("-")
    assert (version, len(trace_id), len(span_id), len(flags)) == ("00", 32, 16, 2)
    return int(trace_id, 16), int(span_id, 16)


# -- the conventions' rules, as plain functions -------------------------------------------------


def test_destination_name_follows_rabbitmq_md() -> None:
    """messaging.destination.name is exchange:key when both are set, the one set otherwise, amq.default for neither."""
    assert semconv.destination_name("orders", "created") == "orders:created"
    assert semconv.destination_name("orders", "") == "orders"
    assert semconv.destination_name("", "tasks") == "tasks"
    assert semconv.destination_name("", "") == "amq.default"


def test_span_destination_is_low_cardinality() -> None:
    """The span name's destination drops the routing key of a named exchange and broker-named reply queues."""
    assert semconv.span_destination("orders", "created.12345") == "orders"
    assert semconv.span_destination("", "tasks") == "tasks"
    assert semconv.span_destination("", "amq.gen-JzTY20BRgKO-HjmUJj0wLg") == "amq.default"
    assert semconv.span_destination("", "") == "amq.default"


def test_stability_opt_in_parsing() -> None:
    """Only messaging/dup in OTEL_SEMCONV_STABILITY_OPT_IN (a comma list) asks for the old names too."""
    assert semconv.wants_duplicates({"OTEL_SEMCONV_STABILITY_OPT_IN": "http, messaging/dup"})
    assert not semconv.wants_duplicates({"OTEL_SEMCONV_STABILITY_OPT_IN": "messaging"})
    assert not semconv.wants_duplicates({"OTEL_SEMCONV_STABILITY_OPT_IN": "messaging/duplicate"})
    assert not semconv.wants_duplicates({})


def test_server_of_a_node_url() -> None:
    """server.address/port come from the node URL, with AMQP's default ports when the URL names none."""
    assert semconv.server_of("amqp://u:p@rabbit-2.example:5673/vh") == ("rabbit-2.example", 5673)
    assert semconv.server_of("amqp://rabbit") == ("rabbit", 5672)
    assert semconv.server_of("amqps://rabbit/") == ("rabbit", 5671)
    assert semconv.server_of(None) is None


def test_on_only_with_an_sdk_and_not_turned_off() -> None:
    """Without instrument(), tracing is on only with the SDK installed and no variable turning it off."""
    assert _tracing.auto_enabled({}, sdk=True)
    assert not _tracing.auto_enabled({}, sdk=False)  # the API alone (e.g. installed by FastAPI)
    assert not _tracing.auto_enabled({"OTEL_SDK_DISABLED": "TRUE"}, sdk=True)
    assert not _tracing.auto_enabled({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "redis, aiopublish"}, sdk=True)
    assert _tracing.auto_enabled({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "aiopublisher"}, sdk=True)


def test_instrument_refuses_what_is_not_a_provider(otel: Otel) -> None:
    """instrument() given something that is not a provider raises TypeError naming the argument."""
    with pytest.raises(TypeError, match="tracer_provider must be an OpenTelemetry TracerProvider"):
        aiopublish.instrument(tracer_provider="console")
    with pytest.raises(TypeError, match="meter_provider must be an OpenTelemetry MeterProvider"):
        aiopublish.instrument(meter_provider=otel.provider)


# -- spans of publish() -------------------------------------------------------------------------


async def test_named_exchange_with_routing_key(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """To a named exchange: span "publish <exchange>", destination exchange:key, node, peer and delivery tags."""
    queue = await broker.queue()
    exchange = await broker.exchange("direct")
    await broker.bind(queue, exchange, "rk")
    async with Publisher(amqp_url) as publisher:
        await publisher.publish({"n": 1}, exchange=exchange, routing_key="rk")
        await publisher.publish({"n": 2}, exchange=exchange, routing_key="rk")
    first, second = await broker.get_all(queue)
    spans = otel.spans()
    assert [s.name for s in spans] == [f"publish {exchange}"] * 2
    span = spans[0]
    assert span.kind is SpanKind.PRODUCER
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "aiopublish"
    assert span.instrumentation_scope.schema_url == "https://opentelemetry.io/schemas/1.44.0"
    host, port = server(amqp_url)
    attributes = dict(span.attributes or {})
    peer = attributes.pop("network.peer.address")
    assert peer == host if host == "127.0.0.1" else isinstance(peer, str) and peer
    assert attributes == {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.destination.name": f"{exchange}:rk",
        "messaging.rabbitmq.destination.routing_key": "rk",
        "messaging.message.id": first.header.properties.message_id,
        "messaging.message.body.size": len(first.body),
        "messaging.rabbitmq.message.delivery_tag": 1,
        "server.address": host,
        "server.port": port,
        "network.peer.port": port,
        "aiopublish.outcome": "confirmed",
    }
    assert span.status.status_code is StatusCode.UNSET
    later = spans[1].attributes or {}
    assert later["messaging.rabbitmq.message.delivery_tag"] == 2
    assert later["messaging.message.id"] == second.header.properties.message_id


async def test_sampler_attributes_at_span_start(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """A sampler sees system, operation, destination and (once connected) server.* when the span starts."""
    seen: list[dict[str, object]] = []

    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class Recording(Sampler):
        def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None):  # type: ignore[no-untyped-def]
            seen.append(dict(attributes or {}))
            return SamplingResult(Decision.DROP)

        def get_description(self) -> str:
            return "records"

    provider = TracerProvider(sampler=Recording())
    aiopublish.instrument(tracer_provider=provider, meter_provider=otel.meters)
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("x")
    provider.shutdown()
    host, port = server(amqp_url)
    assert seen == [
        {
            "messaging.system": "rabbitmq",
            "messaging.operation.name": "publish",
            "messaging.operation.type": "send",
            "messaging.destination.name": queue,
            "messaging.rabbitmq.destination.routing_key": queue,
            "server.address": host,
            "server.port": port,
        }
    ]
    assert otel.spans() == ()


async def test_default_exchange(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """To the default exchange the destination is the queue (the routing key); with no key it is amq.default."""
    queue = await broker.queue()
    async with Publisher(amqp_url) as publisher:
        await publisher.publish("to the queue", routing_key=queue)
        await publisher.publish("to nowhere")  # the default exchange drops it; the broker still confirms
    assert len(await broker.get_all(queue)) == 1
    to_queue, to_nowhere = otel.spans()
    assert to_queue.name == f"publish {queue}"
    assert (to_queue.attributes or {})["messaging.destination.name"] == queue
    assert to_nowhere.name == "publish amq.default"
    attributes = to_nowhere.attributes or {}
    assert attributes["messaging.destination.name"] == "amq.default"
    assert "messaging.rabbitmq.destination.routing_key" not in attributes


async def test_correlation_id_is_the_conversation_id(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """A publish with a correlation id records it as messaging.message.conversation_id; one without does not."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("asked", correlation_id="order-17")
        await publisher.publish("plain")
    asked, plain = await broker.get_all(queue)
    assert plain.header.properties.correlation_id is None
    assert asked.header.properties.correlation_id == "order-17"
    with_id, without = otel.spans()
    assert (with_id.attributes or {})["messaging.message.conversation_id"] == "order-17"
    assert "messaging.message.conversation_id" not in (without.attributes or {})


async def test_traceparent_header_is_the_span(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """The message read back carries a traceparent whose trace id and span id are the publish span's."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, headers={"from": "constructor"}) as publisher:
        await publisher.publish("x", extra_headers={"extra": "1"})
    headers = (await broker.get(queue)).header.properties.headers or {}
    span = otel.only()
    assert span.context is not None
    assert traceparent_ids(headers["traceparent"]) == (span.context.trace_id, span.context.span_id)
    assert (headers["from"], headers["extra"]) == ("constructor", "1")


async def test_publish_inside_a_span_is_its_child(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """A publish made inside an application span is a child of it, in the same trace the message carries."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        with otel.provider.get_tracer("app").start_as_current_span("handle request") as parent:
            await publisher.publish("x")
    headers = (await broker.get(queue)).header.properties.headers or {}
    publish = next(s for s in otel.spans() if s.name.startswith("publish "))
    assert publish.parent is not None
    assert publish.parent.span_id == parent.get_span_context().span_id
    assert traceparent_ids(headers["traceparent"])[0] == parent.get_span_context().trace_id


async def test_tracestate_travels(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """An incoming trace's tracestate is sent along with the traceparent."""
    queue = await broker.queue()
    incoming = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1")]),
    )
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        with trace.use_span(NonRecordingSpan(incoming)):
            await publisher.publish("x")
    headers = (await broker.get(queue)).header.properties.headers or {}
    assert headers["tracestate"] == "vendor=v1"
    assert traceparent_ids(headers["traceparent"])[0] == incoming.trace_id
    assert otel.only().parent == incoming


async def test_returned_publish(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """A mandatory publish no queue takes: error.type "returned", an ERROR status naming NO_ROUTE, the exception."""
    exchange = await broker.exchange("direct")
    async with Publisher(amqp_url) as publisher:
        with pytest.raises(UndeliverableMessage, match="returned"):
            await publisher.publish("x", exchange=exchange, routing_key="nowhere", mandatory=True)
    span = otel.only()
    attributes = span.attributes or {}
    assert attributes["aiopublish.outcome"] == "returned"
    assert attributes["error.type"] == "returned"
    assert attributes["messaging.destination.name"] == f"{exchange}:nowhere"
    assert span.status.status_code is StatusCode.ERROR
    assert "NO_ROUTE" in (span.status.description or "")
    assert [event.name for event in span.events] == ["exception"]


async def test_nacked_publish(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """A publish a full queue rejects (x-max-length 0, reject-publish) is nacked: error.type "nacked"."""
    queue = await broker.queue(**{"x-max-length": 0, "x-overflow": "reject-publish"})
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        with pytest.raises(UndeliverableMessage, match="nack"):
            await publisher.publish("refused")
    assert await broker.depth(queue) == 0
    attributes = otel.only().attributes or {}
    assert (attributes["aiopublish.outcome"], attributes["error.type"]) == ("nacked", "nacked")
    assert otel.only().status.status_code is StatusCode.ERROR


async def test_not_found(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """A publish to a missing exchange ends its span with error.type NotFound and the exception recorded."""
    missing = broker.name("x")
    async with Publisher(amqp_url) as publisher:
        with pytest.raises(NotFound):
            await publisher.publish("x", exchange=missing, routing_key="k")
    span = otel.only()
    attributes = span.attributes or {}
    assert (attributes["aiopublish.outcome"], attributes["error.type"]) == ("failed", "NotFound")
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].name == "exception"
    assert (span.events[0].attributes or {})["exception.type"].endswith("NotFound")  # type: ignore[union-attr]


async def test_retry_after_a_dropped_connection_fails_over(
    broker: Broker, tcp_proxy: TcpProxy, tcp_proxy_to: ProxyFactory, otel: Otel
) -> None:
    """A publish whose connection drops before its confirm is retried on the next node: a retry event, its server."""
    queue = await broker.queue()
    second = await tcp_proxy_to(tcp_proxy.target_host, tcp_proxy.target_port)
    urls = [tcp_proxy.url(), second.url(tcp_proxy.user, tcp_proxy.password, tcp_proxy.vhost)]
    policy = RetryPolicy(stop=stop_after_delay(20), wait=wait_fixed(0.05))
    async with Publisher(urls, routing_key=queue, retry_policy=policy) as publisher:
        await publisher.publish("warm up")
        tcp_proxy.go_silent(True)  # the next publish is written but never reaches the broker
        stuck = asyncio.create_task(publisher.publish("moved"))
        await until(lambda: publisher.in_flight == 1)
        tcp_proxy.refuse(True)
        tcp_proxy.drop_all()
        await stuck
        assert publisher.node is not None and f":{second.port}" in publisher.node
    assert [m.body for m in await broker.get_all(queue)] == [b'"warm up"', b'"moved"']
    warm, moved = otel.spans()
    assert (warm.attributes or {})["server.port"] == tcp_proxy.port
    attributes = moved.attributes or {}
    assert attributes["server.port"] == second.port
    assert attributes["network.peer.port"] == second.port
    assert attributes["messaging.rabbitmq.message.delivery_tag"] == 1  # the first publish on the new channel
    assert attributes["aiopublish.outcome"] == "confirmed"
    assert "error.type" not in attributes
    retries = [event for event in moved.events if event.name == "aiopublish.retry"]
    assert len(retries) >= 1
    first = retries[0].attributes or {}
    assert first["aiopublish.retry.attempt"] == 1
    assert first["error.type"] == first["exception.type"]
    assert first["error.type"] in ("ConnectionFailed", "ChannelInterrupted", "ConnectionLost")
    assert "guest@" not in str(first["exception.message"])
    assert moved.status.status_code is StatusCode.UNSET


# -- publish_many -------------------------------------------------------------------------------


async def test_publish_many_is_one_span_with_outcome_counts(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """A batch of confirmed, returned and nacked messages makes one span counting each outcome; all carry it."""
    exchange = await broker.exchange("direct")
    ok = await broker.queue()
    full = await broker.queue(**{"x-max-length": 0, "x-overflow": "reject-publish"})
    await broker.bind(ok, exchange, "ok")
    await broker.bind(full, exchange, "full")
    keys = ["ok"] * 10 + ["full"] * 3 + ["nowhere"] * 2
    keys[5], keys[13] = "nowhere", "ok"  # mixed order: outcomes are counted, not positions
    async with Publisher(amqp_url, exchange=exchange, mandatory=True) as publisher:
        results = await publisher.publish_many(list(range(len(keys))), routing_keys=keys)
    statuses = [r.status for r in results]
    assert statuses.count("confirmed") == 10 and statuses.count("nacked") == 3 and statuses.count("returned") == 2
    delivered = await broker.get_all(ok)
    assert len(delivered) == 10
    span = otel.only()
    assert span.name == f"publish {exchange}"
    attributes = span.attributes or {}
    assert attributes["messaging.batch.message_count"] == 15
    assert attributes["messaging.destination.name"] == exchange  # the keys differ: only the exchange is common
    assert "messaging.rabbitmq.destination.routing_key" not in attributes
    assert "messaging.message.id" not in attributes
    counts = {o: attributes[f"aiopublish.batch.{o}"] for o in ("confirmed", "sent", "returned", "nacked", "failed")}
    assert counts == {"confirmed": 10, "sent": 0, "returned": 2, "nacked": 3, "failed": 0}
    first_failure = next(r for r in results if not r.ok)
    assert attributes["error.type"] == first_failure.status
    assert span.status.status_code is StatusCode.ERROR
    assert "5 of 15 messages failed" in (span.status.description or "")
    assert span.context is not None
    for message in delivered:
        headers = message.header.properties.headers or {}
        assert traceparent_ids(headers["traceparent"]) == (span.context.trace_id, span.context.span_id)


async def test_publish_many_with_one_routing_key(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """A batch whose messages share a routing key names it in the destination; all confirmed: no error."""
    queue = await broker.queue()
    async with Publisher(amqp_url) as publisher:
        results = await publisher.publish_many(["a", "b", "c"], routing_key=queue)
    assert [r.status for r in results] == ["confirmed"] * 3
    span = otel.only()
    attributes = span.attributes or {}
    assert span.name == f"publish {queue}"
    assert attributes["messaging.destination.name"] == queue
    assert attributes["messaging.rabbitmq.destination.routing_key"] == queue
    assert attributes["aiopublish.batch.confirmed"] == 3
    assert "error.type" not in attributes
    assert span.status.status_code is StatusCode.UNSET


async def test_publish_many_bad_payload_is_counted_failed(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """A payload refused while encoding fails alone: the batch span counts it failed and names its error."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        results = await publisher.publish_many(["fine", object()])
    assert [r.status for r in results] == ["confirmed", "failed"]
    assert isinstance(results[1].error, SerializationError)
    assert await broker.depth(queue) == 1
    attributes = otel.only().attributes or {}
    assert attributes["error.type"] == "SerializationError"
    assert attributes["aiopublish.batch.failed"] == 1 and attributes["aiopublish.batch.confirmed"] == 1


# -- switching -------------------------------------------------------------------------------


async def test_uninstrument_stops_spans_and_headers(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """After uninstrument() no span and no trace header, even inside a trace; instrument() turns it back on."""
    queue = await broker.queue()
    incoming = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        aiopublish.uninstrument()
        with trace.use_span(NonRecordingSpan(incoming)):
            await publisher.publish("off", headers={"kept": "yes"})
        assert otel.spans() == ()
        aiopublish.instrument(tracer_provider=otel.provider, meter_provider=otel.meters)
        await publisher.publish("on")
    off, on = await broker.get_all(queue)
    assert off.header.properties.headers == {"kept": "yes"}
    assert "traceparent" in (on.header.properties.headers or {})
    assert len(otel.spans()) == 1


async def test_semconv_dup_keeps_the_old_names(
    amqp_url: str, broker: Broker, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_SEMCONV_STABILITY_OPT_IN=messaging/dup: the old span name and destination, the new attributes too."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "messaging/dup")
    aiopublish.instrument(tracer_provider=otel.provider, meter_provider=otel.meters)
    exchange = await broker.exchange("direct")
    async with Publisher(amqp_url) as publisher:
        await publisher.publish("x", exchange=exchange, routing_key="rk")
        await publisher.publish("y", routing_key="some-queue")
    named, default = otel.spans()
    assert named.name == f"{exchange} publish"
    assert (named.attributes or {})["messaging.destination.name"] == exchange
    assert (named.attributes or {})["messaging.rabbitmq.destination.routing_key"] == "rk"
    assert "server.address" in (named.attributes or {})
    assert default.name == "amq.default publish"
    assert (default.attributes or {})["messaging.destination.name"] == "amq.default"


async def test_global_providers_not_set_only_pass_on_a_trace(amqp_url: str, broker: Broker, otel: Otel) -> None:
    """On with the global providers still unset: no span, no trace header, except an incoming trace, unchanged."""
    # The suite hands its providers to aiopublish alone (instrument()), never globally.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider), "no global tracer provider may be set"
    aiopublish.instrument()
    queue = await broker.queue()
    incoming = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        await publisher.publish("alone")
        with trace.use_span(NonRecordingSpan(incoming)):
            await publisher.publish("inside")
            await publisher.publish_many(["batch"])
    alone, inside, batch = await broker.get_all(queue)
    assert alone.header.properties.headers in (None, {})
    for message in (inside, batch):
        assert traceparent_ids((message.header.properties.headers or {})["traceparent"]) == (0x1234, 0x5678)
    assert otel.spans() == ()


_API_ONLY_PROGRAM = """
import asyncio, importlib.abc, json, sys

class NoSdk(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "opentelemetry.sdk" or name.startswith("opentelemetry.sdk."):
            raise ModuleNotFoundError(name)

sys.meta_path.insert(0, NoSdk())
from opentelemetry import trace  # the API is there, as FastAPI would bring it
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
import aiopublish
from aiopublish import _tracing

async def main():
    async with aiopublish.Publisher(sys.argv[1], routing_key=sys.argv[2]) as publisher:
        incoming = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        with trace.use_span(NonRecordingSpan(incoming)):
            await publisher.publish("api only")
    print(json.dumps({"enabled": _tracing.enabled, "record": "aiopublish._otel_record" in sys.modules}))

asyncio.run(main())
"""


async def test_api_only_is_off(amqp_url: str, broker: Broker) -> None:
    """With opentelemetry-api but no SDK, aiopublish stays off: no record module loaded, no trace header."""
    queue = await broker.queue()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _API_ONLY_PROGRAM, amqp_url, queue, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    assert json.loads(out.decode().strip().splitlines()[-1]) == {"enabled": False, "record": False}
    message = await broker.get(queue)
    assert message.body == b'"api only"'
    assert message.header.properties.headers in (None, {})
