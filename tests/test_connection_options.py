"""Connection arguments: login methods, transport options, TLS switch, failures with masked secrets."""

from __future__ import annotations

import pytest
from yarl import URL

from aiopublish import AuthenticationError, ConnectionFailed, Publisher
from tests.broker import Broker
from tests.internals import connection_of


@pytest.mark.parametrize("method", ["PLAIN", "AMQPLAIN", "plain"])
async def test_login_methods(amqp_url: str, broker: Broker, method: str) -> None:
    """PLAIN and AMQPLAIN logins both publish (case-insensitive names)."""
    queue = await broker.queue()
    async with Publisher(amqp_url, login_method=method, routing_key=queue) as publisher:
        await publisher.publish(method)
    assert (await broker.get(queue)).body == f'"{method}"'.encode()


async def test_external_without_tls_is_a_clear_auth_error(amqp_url: str) -> None:
    """EXTERNAL on a listener that does not offer it fails with AuthenticationError naming the method."""
    publisher = Publisher(amqp_url, login_method="EXTERNAL", retry=True)
    with pytest.raises(AuthenticationError, match="EXTERNAL"):
        await publisher.publish("x")
    await publisher.close()


async def test_wrong_password_is_not_retried_and_masked(amqp_url: str) -> None:
    """A refused login raises AuthenticationError at once (no retry loop); the password is not shown."""
    url = str(URL(amqp_url).with_password("wrong-s3cret"))
    publisher = Publisher(url, retry_policy={"max_retries": 50, "interval_start": 5})
    with pytest.raises(AuthenticationError) as info:
        await publisher.publish("x", timeout=20)
    assert "wrong-s3cret" not in str(info.value)
    assert "wrong-s3cret" not in repr(info.value)
    assert publisher.state.connections_opened == 0
    await publisher.close()


async def test_transport_options_reach_the_connection(amqp_url: str) -> None:
    """heartbeat and connection_name from transport_options are what the connection negotiates and sends."""
    options = {"heartbeat": 7, "connection_name": "aiopublish-test", "client_properties": {"team": "x"}}
    async with Publisher(amqp_url, transport_options=options) as publisher:
        connection = connection_of(publisher)
        assert connection.connection_tune.heartbeat == 7
        sent = connection._client_properties()
        assert sent["connection_name"] == "aiopublish-test"


def test_unknown_transport_option_is_rejected() -> None:
    """An unknown transport option is a ValueError naming it."""
    with pytest.raises(ValueError, match="bogus"):
        Publisher("amqp://localhost/", transport_options={"bogus": 1})


def test_bad_login_method_is_rejected() -> None:
    """An unsupported login method is a ValueError naming it."""
    with pytest.raises(ValueError, match="CRAM-MD5"):
        Publisher("amqp://localhost/", login_method="CRAM-MD5")


async def test_ssl_true_connects_with_tls(amqp_url: str) -> None:
    """ssl=True switches to TLS on port 5671: with no TLS listener the connect fails, never plaintext."""
    url = URL(amqp_url)
    publisher = Publisher(f"amqp://guest:guest@{url.host}/", ssl=True, retry=False)
    with pytest.raises(ConnectionFailed, match="5671"):
        await publisher.publish("x")
    await publisher.close()


async def test_refused_connection_error_masks_password() -> None:
    """Connecting to a port nobody listens on raises ConnectionFailed without the password in it."""
    publisher = Publisher("amqp://user:hunter2-secret@127.0.0.1:1/", retry=False)
    with pytest.raises(ConnectionFailed) as info:
        await publisher.publish("x")
    assert "hunter2-secret" not in str(info.value)
    assert "127.0.0.1" in str(info.value)
    await publisher.close()
