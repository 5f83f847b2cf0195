"""Password masking: the URL's password becomes ****** wherever a URL is shown, and nothing else changes."""

from __future__ import annotations

import logging
import uuid
from urllib.parse import quote

import pytest
from yarl import URL

from aiopublish import AuthenticationError, ConnectionFailed, Publisher
from aiopublish._connection import ConnectionParams, mask_text, mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("amqp://guest:guest@rabbit/", "amqp://guest:******@rabbit/"),
        ("amqps://orders:s3cret@rabbit:5671/shop", "amqps://orders:******@rabbit:5671/shop"),
        ("amqp://guest:guest@rabbit/guest", "amqp://guest:******@rabbit/guest"),
        ("amqp://orders@rabbit/", "amqp://orders@rabbit/"),
        ("amqp://rabbit:5672/%2F", "amqp://rabbit:5672/%2F"),
        (f"amqp://u:{quote('p@ss/w:rd', safe='')}@rabbit/", "amqp://u:******@rabbit/"),
    ],
)
def test_mask_url_masks_the_password_only(url: str, masked: str) -> None:
    """mask_url replaces the password and keeps the user, host, port and vhost, even when user == password."""
    assert mask_url(url) == masked


def test_params_mask_leaves_user_names_and_broker_texts_alone() -> None:
    """With user == password, ConnectionParams.mask masks the URL's password but not the same word elsewhere."""
    params = ConnectionParams.build("amqp://guest:guest@rabbit/")
    text = "ACCESS_REFUSED - user was 'guest' connecting to amqp://guest:guest@rabbit/ (guest:guest@rabbit)"
    assert params.mask(text) == (
        "ACCESS_REFUSED - user was 'guest' connecting to amqp://guest:******@rabbit/ (guest:******@rabbit)"
    )
    assert params.mask(params.masked_url) == "amqp://guest:******@rabbit/"


def test_params_mask_catches_every_spelling_in_userinfo() -> None:
    """The plain and URL-quoted password are masked wherever they stand as userinfo, with or without a scheme."""
    secret = "p@ss/w:rd"
    quoted = quote(secret, safe="")
    params = ConnectionParams.build([f"amqp://app:{quoted}@rabbit-1/", "amqp://app:other-pw@rabbit-2/"])
    text = f"amqp://app:{quoted}@rabbit-1/ app:{secret}@rabbit-1 URL('amqp://app:other-pw@rabbit-2/') app:other-pw@x"
    masked = params.mask(text)
    for spelling in (secret, quoted, "other-pw"):
        assert spelling not in masked
    assert masked.count("app:******@") == 4


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("a amqp://u:pw@h/ and amqps://v:pw2@k:5671/x", "a amqp://u:******@h/ and amqps://v:******@k:5671/x"),
        ("redis://:pw@cache/0", "redis://:******@cache/0"),
        ("amqp://host:5672/vhost@x", "amqp://host:5672/vhost@x"),
        ("user 'guest' (guest:guest without @)", "user 'guest' (guest:guest without @)"),
    ],
)
def test_mask_text_masks_passwords_in_urls_only(text: str, masked: str) -> None:
    """mask_text masks a URL's userinfo password and leaves ports, vhosts and plain words alone."""
    assert mask_text(text) == masked


async def test_refused_connection_shows_the_user_when_it_equals_the_password() -> None:
    """A refused connection with user == password names the user and masks only the password."""
    publisher = Publisher("amqp://guest:guest@127.0.0.1:1/", retry=False)
    with pytest.raises(ConnectionFailed) as caught:
        await publisher.publish("x")
    await publisher.close()
    assert "amqp://guest:******@127.0.0.1:1/" in str(caught.value)
    assert "******:******" not in str(caught.value)


async def test_refused_login_masks_only_the_password(amqp_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A login refused by the real broker, user == password: the error and logs name the user, never the password."""
    name = f"aiopublish-mask-{uuid.uuid4().hex[:8]}"  # no such user: the broker refuses the login
    url = str(URL(amqp_url).with_user(name).with_password(name))
    caplog.set_level(logging.DEBUG)
    publisher = Publisher(url, retry=False)
    with pytest.raises(AuthenticationError) as caught:
        await publisher.publish("x")
    await publisher.close()
    # The CLI and the link mask texts again with the params (mask_text(params.mask(...))).
    shown = mask_text(ConnectionParams.build(url).mask(str(caught.value)))
    everything = "\n".join([str(caught.value), repr(caught.value), repr(publisher), caplog.text, shown])
    assert f"{name}:******@" in str(caught.value)
    assert f"{name}:******@" in shown
    assert f":{name}@" not in everything
    assert "******:******" not in everything
