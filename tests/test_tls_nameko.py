"""nameko's AMQP_SSL settings (py-amqp's keys) against the private TLS node.

nameko users keep kombu/py-amqp's `ssl` dict under the `AMQP_SSL` config key:
`ca_certs`, `cert_reqs`, `certfile`, `keyfile` (and `server_hostname`, ...). Passed
as `ssl=` unchanged, they connect with the meaning py-amqp gives them: what the
broker saw (TLS, the client certificate, the login) is read from `rabbitmqctl`.
"""

from __future__ import annotations

import ssl
import uuid
from typing import TYPE_CHECKING

import pytest

from aiopublish import Publisher, Queue, TLSError
from tests.test_tls import broker_view, payloads

if TYPE_CHECKING:
    from tests.faults.fixtures_tls_cluster import TlsRabbit

pytest_plugins = ["tests.faults.fixtures", "tests.faults.fixtures_tls_cluster"]

pytestmark = pytest.mark.slow


def amqp_ssl(rabbit: TlsRabbit, **extra: object) -> dict[str, object]:
    """An AMQP_SSL setting as nameko's docs write it: py-amqp's keys."""
    return {
        "ca_certs": str(rabbit.pki.ca_cert),
        "cert_reqs": ssl.CERT_REQUIRED,
        "certfile": str(rabbit.pki.client.cert),
        "keyfile": str(rabbit.pki.client.key),
        **extra,
    }


async def test_amqp_ssl_settings_connect_with_the_client_certificate(tls_rabbit: TlsRabbit) -> None:
    """ca_certs/cert_reqs/certfile/keyfile connect over TLS, present the certificate, and log in with EXTERNAL."""
    queue = f"t-tls-nameko-{uuid.uuid4().hex[:10]}"
    url = tls_rabbit.url(tls_rabbit.cert_user, password=None)
    async with Publisher(
        url, ssl=amqp_ssl(tls_rabbit), login_method="EXTERNAL", declare=[Queue(queue)], routing_key=queue
    ) as publisher:
        await publisher.publish("via AMQP_SSL", user_id=tls_rabbit.cert_user)
        seen = await broker_view(tls_rabbit, publisher)
    assert (seen["ssl"], seen["auth_mechanism"], seen["user"]) == (True, "EXTERNAL", tls_rabbit.cert_user)
    assert "CN=aiopublish-cert-user" in seen["peer_cert_subject"]
    assert await payloads(tls_rabbit.node.url(), queue) == ["via AMQP_SSL"]


async def test_cert_reqs_is_honoured_both_ways(tls_rabbit: TlsRabbit) -> None:
    """With an unrelated CA, cert_reqs=CERT_REQUIRED refuses the broker (TLSError, not retried); CERT_NONE connects."""
    settings = {"ca_certs": str(tls_rabbit.pki.other_ca_cert)}
    refused = Publisher(tls_rabbit.url(), ssl={**settings, "cert_reqs": ssl.CERT_REQUIRED}, timeout=20)
    try:
        with pytest.raises(TLSError, match="certificate verify failed"):
            await refused.connect()
    finally:
        await refused.close()
    assert refused.metrics.retried == 0
    queue = f"t-tls-nameko-{uuid.uuid4().hex[:10]}"
    async with Publisher(
        tls_rabbit.url(), ssl={**settings, "cert_reqs": ssl.CERT_NONE}, declare=[Queue(queue)], routing_key=queue
    ) as publisher:
        await publisher.publish("unverified, as asked")
        assert (await broker_view(tls_rabbit, publisher))["ssl"] is True
    assert await payloads(tls_rabbit.node.url(), queue) == ["unverified, as asked"]
