"""The test harness administers the broker under test, whichever it is (tests/admin.py)."""

from __future__ import annotations

import asyncio
import socket
import uuid

import aiormq
import pytest
from yarl import URL

from tests.admin import AdminError, AdminUnavailable, CtlAdmin, HttpAdmin, admin_for, broker_admin
from tests.broker import until
from tests.faults.rabbit_node import RabbitNode

pytestmark = pytest.mark.timeout(300)


def test_a_remote_broker_without_an_admin_url_gets_a_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker on another host, no AIOPUBLISH_TEST_ADMIN_URL: AdminUnavailable saying what to set."""
    monkeypatch.delenv("AIOPUBLISH_TEST_ADMIN_URL", raising=False)
    with pytest.raises(AdminUnavailable) as caught:
        admin_for("amqp://guest:guest@rabbit.example:5672/")
    message = str(caught.value)
    assert "rabbit.example:5672" in message
    assert "AIOPUBLISH_TEST_ADMIN_URL=http://" in message and "rabbitmq_management" in message


def test_an_admin_url_picks_the_management_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """AIOPUBLISH_TEST_ADMIN_URL wins for any broker; a URL that is not http(s) is refused with a sentence."""
    monkeypatch.setenv("AIOPUBLISH_TEST_ADMIN_URL", "http://admin:s3cret@rabbit.example:15672/")
    admin = admin_for("amqp://guest:guest@127.0.0.1:5672/")
    assert isinstance(admin, HttpAdmin)
    assert admin.api == "http://rabbit.example:15672/api" and "s3cret" not in admin.where
    monkeypatch.setenv("AIOPUBLISH_TEST_ADMIN_URL", "rabbit.example:15672")
    with pytest.raises(AdminUnavailable, match="management API's http"):
        admin_for("amqp://guest:guest@127.0.0.1:5672/")


def test_the_machine_broker_gets_rabbitmqctl(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's broker (loopback:5672) is administered with the machine's rabbitmqctl."""
    monkeypatch.delenv("AIOPUBLISH_TEST_ADMIN_URL", raising=False)
    admin = admin_for("amqp://guest:guest@127.0.0.1:5672/")
    assert isinstance(admin, CtlAdmin) and admin.command[-1].endswith("rabbitmqctl")


async def _exercise(admin: CtlAdmin | HttpAdmin, url: str) -> None:
    """Each operation of `admin`, its effect observed on the broker at `url` through AMQP."""
    tag = uuid.uuid4().hex[:8]
    vhost, user, password, queue = f"t-admin-{tag}", f"t-admin-{tag}", f"pw-{tag}", f"t-admin-q-{tag}"
    own = str(URL(url).with_user(user).with_password(password).with_path("/" + vhost))
    await asyncio.to_thread(admin.add_vhost, vhost)
    try:
        await asyncio.to_thread(admin.add_user, user, password)
        try:
            with pytest.raises(aiormq.exceptions.AMQPError):  # no permissions yet: refused
                await (await aiormq.connect(own)).close()
            await asyncio.to_thread(admin.set_permissions, vhost, user, ".*", ".*", ".*")
            connection = await aiormq.connect(str(URL(own).update_query(name=f"t-admin-conn-{tag}")))
            channel = await connection.channel()
            await asyncio.to_thread(admin.set_policy, vhost, f"p-{tag}", f"^{queue}$", {"max-length": 1})
            await channel.queue_declare(queue, durable=True)
            policies = {row["name"]: row["policy"] for row in await asyncio.to_thread(admin.listing, "queues", vhost)}
            for _ in range(50):  # the broker applies a policy to existing queues in the background
                if policies.get(queue) == f"p-{tag}":
                    break
                await asyncio.sleep(0.2)
                rows = await asyncio.to_thread(admin.listing, "queues", vhost)
                policies = {row["name"]: row["policy"] for row in rows}
            assert policies.get(queue) == f"p-{tag}"
            await asyncio.to_thread(admin.clear_policy, vhost, f"p-{tag}")
            assert f"t-admin-conn-{tag}" in await asyncio.to_thread(admin.connection_names)
            assert await asyncio.to_thread(admin.close_connections, f"t-admin-conn-{tag}") == 1
            await until(lambda: connection.is_closed, what="the named connection closed by the broker")
        finally:
            await asyncio.to_thread(admin.delete_user, user)
    finally:
        await asyncio.to_thread(admin.delete_vhost, vhost)
    with pytest.raises(AdminError, match=vhost):  # a refusal carries the broker's words
        await asyncio.to_thread(admin.delete_vhost, vhost)


async def test_the_broker_under_test_is_administered(amqp_url: str) -> None:
    """vhost, user, permissions, policy, listing and closing a connection, on the broker under test."""
    admin = broker_admin(amqp_url)
    assert isinstance(admin, CtlAdmin | HttpAdmin)
    await _exercise(admin, amqp_url)


@pytest.mark.slow
async def test_the_management_api_administers_a_broker() -> None:
    """The HTTP API way (AIOPUBLISH_TEST_ADMIN_URL), against a private node with rabbitmq_management."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        http_port = sock.getsockname()[1]
    node = RabbitNode(
        plugins=["rabbitmq_management"],
        config=["management.tcp.ip = 127.0.0.1", f"management.tcp.port = {http_port}"],
    )
    try:
        await node.start(timeout=120)
        admin = HttpAdmin(f"http://guest:guest@127.0.0.1:{http_port}/")
        # The HTTP listener may open a moment after AMQP does.
        for _ in range(100):
            try:
                await asyncio.to_thread(admin.request, "GET", "/overview")
                break
            except AdminError:
                await asyncio.sleep(0.2)
        await _exercise(admin, node.url())
    finally:
        await node.cleanup()
