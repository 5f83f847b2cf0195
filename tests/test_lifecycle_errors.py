"""Every connection failure is an aiopublish exception naming its cause: the error map, missing and deleted vhosts."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import Iterator

import aiormq.exceptions
import pamqp.exceptions
import pytest
from yarl import URL

from aiopublish import (
    AiopublishError,
    ConnectionFailed,
    Publisher,
    RetryPolicy,
    VhostNotFound,
    get_connection,
    get_producer,
)
from aiopublish._exceptions import LOWER_ERRORS, mapped_errors, translate
from aiopublish.retry import stop_after_delay, wait_fixed
from tests.admin import Admin, AdminError, broker_admin
from tests.broker import Broker, until

RETRY_FOR_10_S = RetryPolicy(stop=stop_after_delay(10), wait=wait_fixed(0.1))


def _exception_classes(module: object) -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == getattr(module, "__name__", "")
    ]


def _instance(cls: type[BaseException]) -> BaseException:
    """An instance of `cls`: built with (code, text), (text,) or nothing, else bare (as a reader might see it)."""
    for args in ((530, "NOT_ALLOWED - s3cret"), ("s3cret text",), ()):
        try:
            return cls(*args)
        except (TypeError, AttributeError, AssertionError):
            continue
    bare = cls.__new__(cls)
    bare.args = ("s3cret text",)
    return bare


@pytest.mark.parametrize("module", [aiormq.exceptions, pamqp.exceptions], ids=lambda m: m.__name__)
def test_every_lower_library_exception_class_is_mapped(module: object) -> None:
    """Like httpx's: fails when aiormq or pamqp grows an exception class the map does not decide on."""
    classes = _exception_classes(module)
    assert len(classes) > 10
    missing = sorted(cls.__name__ for cls in classes if cls not in LOWER_ERRORS)
    assert missing == [], f"add these to aiopublish._exceptions.LOWER_ERRORS: {missing}"
    for cls in classes:
        mapped = translate(_instance(cls))
        assert isinstance(mapped, AiopublishError), f"{cls.__name__} maps to {type(mapped).__name__}"


def test_mapped_errors_never_lets_a_lower_error_through() -> None:
    """Inside mapped_errors(), each aiormq/pamqp class comes out as an aiopublish exception, secrets masked."""
    for cls in _exception_classes(aiormq.exceptions) + _exception_classes(pamqp.exceptions):
        with pytest.raises(AiopublishError) as caught, mapped_errors(lambda text: text.replace("s3cret", "******")):
            raise _instance(cls)
        assert "s3cret" not in str(caught.value)


def test_connection_close_texts_name_the_vhost() -> None:
    """The broker's 530 'vhost X not found' and 320 'vhost X is deleted' both become VhostNotFound(vhost=X)."""
    missing = translate(aiormq.exceptions.ConnectionNotAllowed(530, "NOT_ALLOWED - vhost orders not found"))
    assert isinstance(missing, VhostNotFound) and missing.vhost == "orders"
    deleted = translate(aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED - vhost 'orders' is deleted"))
    assert isinstance(deleted, VhostNotFound) and deleted.vhost == "orders"
    other = translate(aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED - broker forced connection closure"))
    assert type(other) is ConnectionFailed


def _url_with_vhost(url: str, vhost: str) -> str:
    return str(URL(url).with_path("/" + vhost))


async def test_missing_vhost_fails_at_once_naming_it(amqp_url: str) -> None:
    """A URL naming a vhost that does not exist: VhostNotFound naming it, at once, although retry is on."""
    vhost = f"t-missing-{uuid.uuid4().hex[:8]}"
    publisher = Publisher(_url_with_vhost(amqp_url, vhost), retry_policy=RETRY_FOR_10_S)
    started = time.monotonic()
    with pytest.raises(VhostNotFound, match=f"no vhost '{vhost}'") as caught:
        await publisher.connect()
    assert caught.value.vhost == vhost
    with pytest.raises(VhostNotFound, match=vhost):
        await publisher.publish("x")
    with pytest.raises(VhostNotFound, match=vhost):
        async with Publisher(_url_with_vhost(amqp_url, vhost)):
            pass
    results = await publisher.publish_many(["a", "b"])
    assert [type(r.error) for r in results] == [VhostNotFound, VhostNotFound]
    assert time.monotonic() - started < 2.0
    assert publisher.metrics.retried == 0
    await publisher.close()


async def test_pool_helpers_raise_aiopublish_errors(amqp_url: str) -> None:
    """get_connection() / get_producer() on a missing vhost raise an aiopublish ConnectionFailed, not aiormq's."""
    url = _url_with_vhost(amqp_url, f"t-missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ConnectionFailed):
        async with get_connection(url):
            pass
    with pytest.raises(ConnectionFailed):
        async with get_producer(url):
            pass


@pytest.fixture
def admin(amqp_url: str) -> Admin:
    return broker_admin(amqp_url)


@pytest.fixture
def own_vhost(admin: Admin) -> Iterator[str]:
    """A vhost of this test's own on the broker under test (guest may use it), deleted afterwards."""
    vhost = f"t-vhost-{uuid.uuid4().hex[:8]}"
    admin.add_vhost(vhost)
    try:
        admin.set_permissions(vhost, "guest", ".*", ".*", ".*")
        yield vhost
    finally:
        with contextlib.suppress(AdminError):  # the test deletes it itself
            admin.delete_vhost(vhost)


async def test_vhost_deleted_while_publishing_ends_the_publishes(amqp_url: str, admin: Admin, own_vhost: str) -> None:
    """Deleting the vhost under 20 publishing workers ends every publish within seconds, with VhostNotFound."""
    url = _url_with_vhost(amqp_url, own_vhost)
    probe = Broker(url)
    queue = await probe.queue()
    await probe.cleanup()
    outcomes: dict[str, int] = {}
    deleted = asyncio.Event()

    async with Publisher(url, routing_key=queue, retry_policy=RETRY_FOR_10_S, timeout=30) as publisher:

        async def worker() -> None:
            while True:
                try:
                    await publisher.publish("m")
                except Exception as exc:
                    outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
                    if deleted.is_set():
                        return
                else:
                    outcomes["ok"] = outcomes.get("ok", 0) + 1

        workers = [asyncio.create_task(worker()) for _ in range(20)]
        await until(lambda: outcomes.get("ok", 0) >= 200)
        await asyncio.to_thread(admin.delete_vhost, own_vhost)
        deleted.set()
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*workers), timeout=20)
        ended_within = time.monotonic() - started
        with pytest.raises(VhostNotFound, match=own_vhost):
            await publisher.publish("after")
    print(f"\nvhost deleted under the publisher: {outcomes}, workers ended within {ended_within:.2f} s")
    # While the vhost is going away the broker may refuse a publish on it (403) before it closes the connection.
    assert set(outcomes) <= {"ok", "VhostNotFound", "AccessRefused"}, outcomes
    assert outcomes.get("VhostNotFound", 0) >= 20
    assert ended_within < 5.0
