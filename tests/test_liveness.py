"""Liveness, not a stalled-link rule: one publish's short timeout never drops a connection that still answers."""

from __future__ import annotations

import asyncio
import time

import pytest

from aiopublish import Publisher, PublishTimeout
from tests.broker import Broker, until
from tests.faults.proxy import TcpProxy
from tests.internals import connection_of, liveness_probe

MEGABYTE = b"x" * (1024 * 1024)


async def test_one_hasty_publish_among_big_ones_costs_no_reconnect(amqp_url: str, broker: Broker) -> None:
    """50 x 1 MB publishes plus one with timeout=0.005, three rounds: the hasty one times out, 0 reconnects."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, serializer="raw", timeout=30) as publisher:
        opened = publisher.state.connections_opened
        hasty_timeouts = 0
        for _ in range(3):
            big = [asyncio.create_task(publisher.publish(MEGABYTE)) for _ in range(50)]
            await asyncio.sleep(0)  # the big ones are written first
            try:
                await publisher.publish(b"hasty", timeout=0.005)
            except PublishTimeout:
                hasty_timeouts += 1
            await asyncio.gather(*big)
            liveness = liveness_probe(publisher)
            if liveness is not None:
                await liveness  # the probe the timeout started has answered
        metrics = publisher.metrics
        assert publisher.state.connections_opened == opened  # still the same connection
    assert hasty_timeouts == 3
    assert metrics.reconnects == 0 and metrics.retried == 0
    # The hasty ones were written before they timed out: the broker may or may not have them.
    assert 150 <= await broker.depth(queue) <= 153


async def test_tiny_timeout_on_an_idle_channel_keeps_the_connection(amqp_url: str, broker: Broker) -> None:
    """timeout=1e-9 on an idle connection times out; the liveness probe answers and the connection stays."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue) as publisher:
        opened = publisher.state.connections_opened
        with pytest.raises(PublishTimeout):
            await publisher.publish("too hasty", timeout=1e-9)
        probe = liveness_probe(publisher)
        assert probe is not None
        await probe
        await publisher.publish("next")
        assert publisher.state.connections_opened == opened  # still the same connection
        assert publisher.metrics.reconnects == 0


async def test_silent_network_is_dropped_by_the_probe_and_reconnected(broker: Broker, tcp_proxy: TcpProxy) -> None:
    """A silent network: the publish ends at its timeout, the probe gets no answer, the connection is replaced."""
    queue = await broker.queue()
    async with Publisher(tcp_proxy.url(), routing_key=queue) as publisher:
        await publisher.publish("before")
        opened = publisher.state.connections_opened
        first = connection_of(publisher)
        tcp_proxy.go_silent(True)
        started = time.monotonic()
        with pytest.raises(PublishTimeout):
            await publisher.publish("into the void", timeout=0.5)
        assert time.monotonic() - started < 1.5
        tcp_proxy.go_silent(False)  # new connections work again; the frozen one stays frozen
        await until(lambda: first.is_closed, within=8)
        await publisher.publish("after", timeout=10)
        assert publisher.state.connections_opened > opened  # on a new connection
    bodies = [m.body for m in await broker.get_all(queue)]
    assert bodies[0] == b'"before"' and bodies[-1] == b'"after"'
