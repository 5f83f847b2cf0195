"""TLS: publishing over amqps:// with each login method, certificate verification failures, no secret leaks.

Against a private node (fixture ``tls_rabbit``) with a TLS listener whose server
certificate comes from a private CA (tests/faults/tls.py). What arrived is read
back over the node's plain port; which user, login method and TLS version the
broker saw is read from ``rabbitmqctl list_connections``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import traceback
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiormq
import pytest

from aiopublish import AuthenticationError, ConnectionFailed, Publisher, Queue, TLSError
from tests.internals import connection_of

if TYPE_CHECKING:  # imported by pytest_plugins below; importing it first would skip its assertion rewriting
    from tests.faults.fixtures_tls_cluster import TlsRabbit

# Registered here until tests/conftest.py imports them; registering twice is harmless.
pytest_plugins = ["tests.faults.fixtures", "tests.faults.fixtures_tls_cluster"]

pytestmark = pytest.mark.slow


def unique(what: str = "q") -> str:
    return f"t-tls-{what}-{uuid.uuid4().hex[:10]}"


async def get_all(url: str, queue: str) -> list[aiormq.abc.DeliveredMessage]:
    """Every message in `queue` (read over a separate plain connection), then delete the queue."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        messages = []
        while True:
            message = await channel.basic_get(queue, no_ack=True)
            if isinstance(message.delivery, aiormq.spec.Basic.GetEmpty):
                break
            messages.append(message)
        await channel.queue_delete(queue)
    finally:
        await connection.close()
    return messages


async def payloads(url: str, queue: str) -> list[Any]:
    """The JSON payloads in `queue`, in order (compared decoded: orjson and json differ in spacing)."""
    return [json.loads(message.body) for message in await get_all(url, queue)]


async def broker_view(rabbit: TlsRabbit, publisher: Publisher) -> dict[str, Any]:
    """How the broker sees the publisher's connection (user, auth_mechanism, ssl, ...), found by client port."""
    client_port = connection_of(publisher).stream_writer.get_extra_info("sockname")[1]
    out = await rabbit.node.ctl(
        "-q", "list_connections", "peer_port", "user", "auth_mechanism", "ssl", "ssl_protocol",
        "peer_cert_subject", "--formatter", "json",
    )  # fmt: skip
    for row in json.loads(out):
        if row["peer_port"] == client_port:
            return dict(row)
    raise AssertionError(f"the broker lists no connection from port {client_port}: {out}")


def ssl_object(publisher: Publisher) -> ssl.SSLObject:
    obj = connection_of(publisher).stream_writer.get_extra_info("ssl_object")
    assert obj is not None, "the connection is not TLS"
    return obj  # type: ignore[no-any-return]


# -- publishing over TLS ----------------------------------------------------------------------


@pytest.mark.parametrize("login_method", ["PLAIN", "AMQPLAIN", "EXTERNAL"])
async def test_publish_over_tls_with_each_login_method(tls_rabbit: TlsRabbit, login_method: str) -> None:
    """amqps:// with our CA and a client certificate: each login method logs in as expected, the message arrives."""
    queue = unique(login_method.lower())
    if login_method == "EXTERNAL":
        # No password: the broker takes the user from the client certificate's CN.
        url, user = tls_rabbit.url(tls_rabbit.cert_user, password=None), tls_rabbit.cert_user
    else:
        url, user = tls_rabbit.url("guest", "guest"), "guest"
    message_id = uuid.uuid4().hex
    async with Publisher(
        url, ssl=tls_rabbit.pki.client_ssl(), login_method=login_method, declare=[Queue(queue)], routing_key=queue
    ) as publisher:
        # user_id is checked by the broker against the login: a wrong user would be a channel error.
        await publisher.publish({"via": login_method}, message_id=message_id, user_id=user)
        assert ssl_object(publisher).version() in ("TLSv1.2", "TLSv1.3")
        seen = await broker_view(tls_rabbit, publisher)
        login = user if login_method == "EXTERNAL" else f"{user}:******"
        assert publisher.node == f"amqps://{login}@localhost:{tls_rabbit.node.tls_port}/"
    assert seen["user"] == user
    assert seen["auth_mechanism"] == login_method
    assert seen["ssl"] is True
    assert "CN=aiopublish-cert-user" in seen["peer_cert_subject"]  # the client certificate was presented
    messages = await get_all(tls_rabbit.node.url(), queue)
    assert [(json.loads(m.body), m.header.properties.message_id) for m in messages] == [
        ({"via": login_method}, message_id)
    ]


async def test_tls_to_ip_address_and_server_hostname_override(tls_rabbit: TlsRabbit) -> None:
    """The certificate's IP SAN matches amqps://127.0.0.1; server_hostname=localhost is honoured as well."""
    queue = unique("ip")
    ca_only = {"cafile": str(tls_rabbit.pki.ca_cert)}
    for ssl_options in (ca_only, {**ca_only, "server_hostname": "localhost"}):
        async with Publisher(
            tls_rabbit.url(host="127.0.0.1"), ssl=ssl_options, declare=[Queue(queue)], routing_key=queue
        ) as publisher:
            await publisher.publish(ssl_options.get("server_hostname", "ip"))
            seen = await broker_view(tls_rabbit, publisher)
            assert seen["ssl"] is True and seen["peer_cert_subject"] == ""  # no client certificate sent
    assert await payloads(tls_rabbit.node.url(), queue) == ["ip", "localhost"]


async def test_ssl_option_on_an_amqp_url_means_tls(tls_rabbit: TlsRabbit) -> None:
    """An amqp:// URL with an ssl option (and an explicit port) connects with TLS to that port."""
    queue = unique("amqp-url")
    url = f"amqp://guest:guest@localhost:{tls_rabbit.node.tls_port}/"
    async with Publisher(url, ssl=tls_rabbit.pki.client_ssl(), declare=[Queue(queue)], routing_key=queue) as publisher:
        await publisher.publish("tls anyway")
        assert (await broker_view(tls_rabbit, publisher))["ssl"] is True
    assert await payloads(tls_rabbit.node.url(), queue) == ["tls anyway"]


async def test_verify_false_connects_without_trusting_the_ca(tls_rabbit: TlsRabbit) -> None:
    """ssl={"verify": False} is the explicit downgrade: no CA given, still TLS, the message arrives."""
    queue = unique("noverify")
    async with Publisher(
        tls_rabbit.url(), ssl={"verify": False}, declare=[Queue(queue)], routing_key=queue
    ) as publisher:
        await publisher.publish("unverified")
        assert ssl_object(publisher).version() in ("TLSv1.2", "TLSv1.3")
        assert (await broker_view(tls_rabbit, publisher))["ssl"] is True
    assert await payloads(tls_rabbit.node.url(), queue) == ["unverified"]


# -- verification failures ------------------------------------------------------------------------


async def connect_error(url: str, **options: Any) -> ConnectionFailed:
    """The error connect() raises: TLSError (a ConnectionFailed, not an AuthenticationError) within 5 s."""
    publisher = Publisher(url, **options)
    started = time.monotonic()
    try:
        with pytest.raises(ConnectionFailed) as caught:
            await publisher.connect()
    finally:
        await publisher.close()
    assert time.monotonic() - started < 5
    assert not isinstance(caught.value, AuthenticationError)
    assert isinstance(caught.value, TLSError)
    assert str(caught.value).startswith("TLS failed connecting to")
    return caught.value


async def test_system_ca_store_rejects_our_private_ca(tls_rabbit: TlsRabbit) -> None:
    """ssl=True verifies against the system CA store: our private CA is not in it, so connecting fails clearly."""
    error = await connect_error(tls_rabbit.url(), ssl=True)
    assert "certificate verify failed" in str(error)
    assert f"localhost:{tls_rabbit.node.tls_port}" in str(error)

    # A publish with retry on gives the same error at once: retrying cannot fix a certificate.
    publisher = Publisher(tls_rabbit.url(), ssl=True, retry_policy={"max_retries": 10, "interval_start": 5})
    started = time.monotonic()
    try:
        with pytest.raises(TLSError, match="certificate verify failed"):
            await publisher.publish("never sent", routing_key=unique())
    finally:
        await publisher.close()
    assert time.monotonic() - started < 5
    assert publisher.metrics.retried == 0


async def test_amqps_url_without_ssl_option_verifies_too(tls_rabbit: TlsRabbit) -> None:
    """amqps:// alone (no ssl option) means TLS with verification against the system store, not a silent downgrade."""
    error = await connect_error(tls_rabbit.url())
    assert "certificate verify failed" in str(error)


async def test_wrong_ca_fails_verification(tls_rabbit: TlsRabbit) -> None:
    """Trusting only an unrelated CA (with our client certificate) fails certificate verification."""
    error = await connect_error(
        tls_rabbit.url(), ssl=tls_rabbit.pki.client_ssl(cafile=str(tls_rabbit.pki.other_ca_cert))
    )
    assert "certificate verify failed" in str(error)


async def test_hostname_mismatch_fails(tls_rabbit: TlsRabbit) -> None:
    """A server_hostname the certificate does not name fails with a hostname mismatch, even with the right CA."""
    error = await connect_error(
        tls_rabbit.url(host="127.0.0.1"),
        ssl={"cafile": str(tls_rabbit.pki.ca_cert), "server_hostname": "not-the-broker.example"},
    )
    assert "certificate verify failed" in str(error)
    assert "Hostname mismatch" in str(error) and "not-the-broker.example" in str(error)


async def test_external_without_client_certificate_is_refused_at_once(tls_rabbit: TlsRabbit) -> None:
    """EXTERNAL with no client certificate: the broker refuses the login, an AuthenticationError, not retried."""
    publisher = Publisher(
        tls_rabbit.url(tls_rabbit.cert_user, password=None),
        ssl={"cafile": str(tls_rabbit.pki.ca_cert)},
        login_method="EXTERNAL",
    )
    started = time.monotonic()
    try:
        with pytest.raises(AuthenticationError, match="refused the login"):
            await publisher.publish("no", routing_key=unique())
    finally:
        await publisher.close()
    assert time.monotonic() - started < 1.0  # never retried


# -- secrets ----------------------------------------------------------------------------------------


async def test_password_never_in_logs_or_errors(tls_rabbit: TlsRabbit, caplog: pytest.LogCaptureFixture) -> None:
    """Connect, publish, a forced disconnect and reconnect, TLS and login failures: the password shows nowhere.

    Every logger is captured at DEBUG (aiormq's included); the password holds characters a URL must
    quote, and neither spelling may appear in log text, exception text, tracebacks or reprs.
    """
    caplog.set_level(logging.DEBUG)
    queue = unique("secret")
    texts: list[str] = []
    wrong_password = f"Wrong@{uuid.uuid4().hex[:8]}#pw"

    def record(publisher: Publisher | None = None, error: BaseException | None = None) -> None:
        if publisher is not None:
            texts.extend([repr(publisher), str(publisher.node)])
        if error is not None:
            texts.extend([str(error), repr(error), "".join(traceback.format_exception(error))])

    for login_method in ("PLAIN", "AMQPLAIN"):
        async with Publisher(
            tls_rabbit.secret_url(),
            ssl=tls_rabbit.pki.client_ssl(),
            login_method=login_method,
            declare=[Queue(queue)],
            routing_key=queue,
        ) as publisher:
            await publisher.publish(login_method)
            assert (await broker_view(tls_rabbit, publisher))["user"] == tls_rabbit.user
            if login_method == "PLAIN":
                opened = publisher.state.connections_opened
                first = connection_of(publisher)
                await tls_rabbit.node.ctl("close_all_connections", "forced by the test")
                await asyncio.wait([first.closing])
                await publisher.publish("after the forced close")
                assert publisher.state.connections_opened > opened  # on a new connection
            record(publisher)

    failures: list[tuple[str, dict[str, Any]]] = [
        (tls_rabbit.secret_url(), {"ssl": {"cafile": str(tls_rabbit.pki.other_ca_cert)}}),  # wrong CA
        (tls_rabbit.secret_url(), {"ssl": True}),  # system store
        (tls_rabbit.url(tls_rabbit.user, wrong_password), {"ssl": {"cafile": str(tls_rabbit.pki.ca_cert)}}),
        (
            tls_rabbit.url(tls_rabbit.user, wrong_password),
            {"ssl": {"cafile": str(tls_rabbit.pki.ca_cert)}, "login_method": "AMQPLAIN"},
        ),
    ]
    for url, options in failures:
        publisher = Publisher(url, retry_policy={"max_retries": 1, "interval_start": 0.05}, **options)
        try:
            with pytest.raises(ConnectionFailed) as caught:
                await publisher.publish("never", routing_key=queue)
            record(publisher, caught.value)
        finally:
            await publisher.close()

    texts.append(caplog.text)
    texts.extend(record.getMessage() for record in caplog.records)
    everything = "\n".join(texts)
    assert "connected to" in everything and "disconnected from" in everything and "reconnected to" in everything
    assert "certificate verify failed" in everything and "refused the login" in everything
    for secret in (*tls_rabbit.password_spellings, wrong_password, quote(wrong_password, safe="")):
        assert secret not in everything, f"a password ({secret[:3]}...) leaked"
    assert "******" in everything
    assert await payloads(tls_rabbit.node.url(), queue) == ["PLAIN", "after the forced close", "AMQPLAIN"]
