"""Bad input is refused by name before anything is sent; URLs never show their password.

Each bad value is tried twice: on a Publisher whose broker does not exist (proving nothing
connects), and on the real broker between two good publishes (proving the publisher goes on).
"""

from __future__ import annotations

import math
import traceback
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from yarl import URL

from aiopublish import Publisher, RetryPolicy
from aiopublish._connection import ConnectionParams
from aiopublish._options import _VALIDATORS, DEFAULT_MAX_MESSAGE_SIZE, PUBLISH_OPTIONS
from aiopublish.retry import stop_after_delay, wait_exponential, wait_fixed, wait_incrementing, wait_random
from tests.broker import Broker

NOWHERE = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens: a publish that connects fails
WEST = timezone(timedelta(hours=-5))

# (publish keywords, exception, text the message must hold): the issue's "also seen" list and more.
BAD_VALUES: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("NaN header", {"headers": {"ratio": math.nan}}, ValueError, r"headers\['ratio'\] is nan"),
    ("inf header", {"headers": {"ratio": math.inf}}, ValueError, r"headers\['ratio'\] is inf"),
    ("-inf header", {"headers": {"ratio": -math.inf}}, ValueError, r"headers\['ratio'\] is -inf"),
    ("nested NaN", {"headers": {"a": {"b": [1, math.nan]}}}, ValueError, r"headers\['a'\]\['b'\]\[1\] is nan"),
    ("NaN in extra_headers", {"extra_headers": {"x": math.nan}}, ValueError, r"headers\['x'\]"),
    ("key over 128 bytes", {"headers": {"k" * 129: 1}}, ValueError, r"headers has a key 129 bytes long"),
    ("nested long key", {"headers": {"a": {"é" * 65: 1}}}, ValueError, r"headers\['a'\] has a key 130 bytes"),
    ("non-str top key", {"headers": {1: "x"}}, TypeError, r"headers keys must be str, not 1"),
    ("non-str nested key", {"headers": {"a": {"b": {2: "x"}}}}, TypeError, r"headers\['a'\]\['b'\] has a key 2"),
    ("non-str key in array", {"headers": {"a": [{None: 1}]}}, TypeError, r"headers\['a'\]\[0\] has a key None"),
    ("int over 64 bits", {"headers": {"n": 2**63}}, ValueError, r"headers\['n'\] is 9223372036854775808"),
    ("pre-1970 datetime header", {"headers": {"t": datetime(1969, 7, 20)}}, ValueError, r"headers\['t'\]"),
    ("datetime.max west of UTC", {"headers": {"t": datetime.max.replace(tzinfo=WEST)}}, ValueError, r"headers\['t'\]"),
    ("Decimal NaN", {"headers": {"d": Decimal("NaN")}}, ValueError, r"headers\['d'\] is Decimal\('NaN'\)"),
    ("Decimal too precise", {"headers": {"d": Decimal("1e-300")}}, ValueError, r"headers\['d'\].*scale"),
    ("Decimal too large", {"headers": {"d": Decimal(2**40)}}, ValueError, r"headers\['d'\].*32-bit"),
    ("set header", {"headers": {"s": {1, 2}}}, TypeError, r"headers\['s'\] is a set"),
    ("date header", {"headers": {"d": datetime(2026, 1, 1).date()}}, TypeError, r"headers\['d'\] is a date"),
    ("lone surrogate", {"headers": {"s": "\ud800"}}, ValueError, r"headers\['s'\] is not valid UTF-8"),
    ("headers not a dict", {"headers": [("a", 1)]}, TypeError, r"headers must be a dict"),
    ("timestamp 2**64", {"timestamp": 2**64}, ValueError, r"timestamp 18446744073709551616 is outside"),
    ("timestamp 1e30", {"timestamp": 1e30}, ValueError, r"timestamp 1e\+30 is outside"),
    ("timestamp -1", {"timestamp": -1}, ValueError, r"timestamp -1 is outside"),
    ("timestamp inf", {"timestamp": math.inf}, ValueError, r"timestamp must be a finite number"),
    ("timestamp NaN", {"timestamp": math.nan}, ValueError, r"timestamp must be a finite number"),
    ("pre-1970 timestamp", {"timestamp": datetime(1960, 1, 1)}, ValueError, r"timestamp 1960-01-01T00:00:00 is before"),
    ("aware pre-1970", {"timestamp": datetime(1970, 1, 1, tzinfo=WEST) - timedelta(hours=6)}, ValueError, "before"),
    ("timestamp True", {"timestamp": True}, TypeError, r"timestamp must be a datetime"),
    ("timestamp str", {"timestamp": "2026-01-01"}, TypeError, r"timestamp must be a datetime"),
    ("expiration 1e20", {"expiration": 1e20}, ValueError, r"expiration is 1e\+20 s; RabbitMQ refuses more"),
    ("expiration over 10 years", {"expiration": 315_360_000.001}, ValueError, r"expiration .* refuses more"),
    ("expiration negative", {"expiration": -1}, ValueError, r"expiration must be >= 0"),
    ("expiration inf", {"expiration": math.inf}, ValueError, r"expiration must be a finite"),
    ("expiration NaN", {"expiration": math.nan}, ValueError, r"expiration must be a finite"),
    ("expiration True", {"expiration": True}, TypeError, r"expiration must be a number"),
    ("expiration huge int", {"expiration": 10**400}, ValueError, r"expiration must be a finite"),
    ("timeout inf", {"timeout": math.inf}, ValueError, r"timeout must be a finite"),
    ("timeout NaN", {"timeout": math.nan}, ValueError, r"timeout must be a finite"),
    ("priority True", {"priority": True}, ValueError, r"priority must be an int"),
    ("mandatory 1", {"mandatory": 1}, TypeError, r"mandatory must be True or False"),
    ("max_message_size 0", {"max_message_size": 0}, ValueError, r"max_message_size must be >= 1"),
    ("max_message_size True", {"max_message_size": True}, TypeError, r"max_message_size must be an int"),
    ("max_message_size float", {"max_message_size": 1e6}, TypeError, r"max_message_size must be an int"),
    ("body over max_message_size", {"max_message_size": 4}, ValueError, r"body is 5 bytes; max_message_size is 4"),
    ("user_id over 255 bytes", {"user_id": "u" * 256}, ValueError, r"user_id is 256 bytes long"),
]
IDS = [case[0] for case in BAD_VALUES]
CASES = [case[1:] for case in BAD_VALUES]


@pytest.mark.parametrize(("kwargs", "error", "match"), CASES, ids=IDS)
async def test_bad_value_raises_before_connecting(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    """Each bad value raises its TypeError/ValueError naming it, and the publisher never tried to connect."""
    publisher = Publisher(NOWHERE, serializer="raw", retry=False)
    with pytest.raises(error, match=match) as caught:
        await publisher.publish(b"hello", **kwargs)
    assert type(caught.value) is error  # not struct.error, OverflowError or AttributeError dressed up
    assert publisher.state.connections_opened == 0
    await publisher.close()


@pytest.mark.parametrize(("kwargs", "error", "match"), CASES, ids=IDS)
async def test_bad_value_on_the_broker_leaves_the_publisher_working(
    broker: Broker, amqp_url: str, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Between two good publishes a bad one raises by name; the good ones arrive, with no reconnect."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, serializer="raw", retry=False) as publisher:
        await publisher.publish(b"before", message_id="before")
        with pytest.raises(error, match=match):
            await publisher.publish(b"hello", message_id="bad", **kwargs)
        await publisher.publish(b"after", message_id="after")
        assert publisher.metrics.reconnects == 0
    assert [m.header.properties.message_id for m in await broker.get_all(queue)] == ["before", "after"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"headers": {"ratio": math.nan}}, r"headers\['ratio'\]"),
        ({"headers": {"a": {1: 2}}}, r"headers\['a'\] has a key 1"),
        ({"timestamp": 2**64}, "timestamp"),
        ({"max_message_size": 0}, "max_message_size"),
        ({"expiration": 1e20}, "expiration"),
    ],
)
def test_constructor_refuses_bad_defaults(kwargs: dict[str, Any], match: str) -> None:
    """The constructor's publish defaults (headers included, checked in depth) are refused at construction."""
    with pytest.raises((TypeError, ValueError), match=match):
        Publisher(NOWHERE, **kwargs)


def test_validation_does_not_depend_on_call_history() -> None:
    """Options refuse priority=True and mandatory=1 after priority=1 and mandatory=True were accepted."""
    options = Publisher(NOWHERE)._defaults
    assert options.override({"priority": 1}).priority == 1
    assert options.override({"mandatory": True}).mandatory is True
    with pytest.raises(ValueError, match="priority"):
        options.override({"priority": True})
    with pytest.raises(TypeError, match="mandatory"):
        options.override({"mandatory": 1})


def test_every_option_has_a_validator() -> None:
    """The validator table covers every publish keyword (declare is normalised apart, as it appends)."""
    assert set(_VALIDATORS) == PUBLISH_OPTIONS - {"declare"}


def test_max_message_size_default_and_boundary() -> None:
    """Unset, max_message_size follows the broker (checked once connected); given, a body of exactly the limit
    passes and one byte more raises before anything is sent."""
    publisher = Publisher(NOWHERE, serializer="raw", max_message_size=10)
    unset = Publisher(NOWHERE, serializer="raw")._defaults
    assert unset.max_message_size is DEFAULT_MAX_MESSAGE_SIZE is None
    assert unset.prepare(b"x" * (200 * 1024 * 1024)).broker_limit  # no limit of its own: the channel holds it
    assert publisher._defaults.prepare(b"x" * 10).body == b"x" * 10
    assert not publisher._defaults.prepare(b"x" * 10).broker_limit
    with pytest.raises(ValueError, match="body is 11 bytes; max_message_size is 10"):
        publisher._defaults.prepare(b"x" * 11)
    # The compressed size is what the broker sees and what counts.
    compressed = publisher._defaults.override({"compression": "gzip", "max_message_size": 1000})
    assert len(compressed.prepare(b"x" * 100_000).body) < 1000
    with pytest.raises(ValueError, match="compressed"):
        compressed.override({"max_message_size": 20}).prepare(b"x" * 100_000)


def test_timestamp_forms() -> None:
    """timestamp takes a naive (UTC) or aware datetime, or int/float seconds (truncated), up to 2**64-1."""
    options = Publisher(NOWHERE)._defaults
    assert options.override({"timestamp": datetime(1970, 1, 2)}).timestamp == 86400
    assert options.override({"timestamp": datetime(1970, 1, 2, tzinfo=WEST)}).timestamp == 86400 + 5 * 3600
    assert options.override({"timestamp": datetime(1970, 1, 2, tzinfo=UTC)}).timestamp == 86400
    assert options.override({"timestamp": 1.9}).timestamp == 1
    assert options.override({"timestamp": 2**64 - 1}).timestamp == 2**64 - 1


def test_expiration_limit_is_ten_years() -> None:
    """Ten years (315,360,000 s, RabbitMQ's cap) is accepted as milliseconds; more is refused."""
    options = Publisher(NOWHERE)._defaults
    assert options.override({"expiration": 315_360_000}).expiration == "315360000000"
    assert options.override({"expiration": timedelta(days=3650)}).expiration == "315360000000"
    with pytest.raises(ValueError, match="expiration"):
        options.override({"expiration": timedelta(days=3650, milliseconds=1)})


async def test_expiration_limit_matches_the_broker(broker: Broker, amqp_url: str) -> None:
    """The broker takes the largest expiration the client allows (the message arrives with it)."""
    queue = await broker.queue()
    async with Publisher(amqp_url, routing_key=queue, retry=False) as publisher:
        await publisher.publish("x", expiration=315_360_000)
    assert (await broker.get(queue)).header.properties.expiration == "315360000000"


# -- the one _seconds: options and retry refuse NaN and infinities alike ---------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_durations_refuse_nan_and_infinity_everywhere(bad: float) -> None:
    """Every duration (publish timeout, expiration, retry waits and stops, nameko's dict) refuses NaN and ±inf."""
    builders = [
        lambda: Publisher(NOWHERE, timeout=bad),
        lambda: Publisher(NOWHERE, expiration=bad),
        lambda: stop_after_delay(bad),
        lambda: wait_fixed(bad),
        lambda: wait_incrementing(start=bad),
        lambda: wait_exponential(multiplier=bad),
        lambda: wait_random(max=bad),
        lambda: RetryPolicy.from_dict({"interval_max": bad}),
    ]
    for build in builders:
        with pytest.raises(ValueError, match="must be"):
            build()


def test_incrementing_wait_keeps_infinity_as_no_cap() -> None:
    """wait_incrementing's default cap (inf) still means no cap, and -inf as a cap is refused."""
    assert repr(wait_incrementing()) == "wait_incrementing(start=1.0, increment=1.0, max=inf)"
    with pytest.raises(ValueError, match="max must be a finite"):
        wait_incrementing(max=-math.inf)


# -- URLs ----------------------------------------------------------------------------------------------

PASSWORD = "S3cr3t/#?x"


def _chain(exc: BaseException) -> str:
    """The exception, its causes and contexts, and its formatted traceback, as one text."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: BaseException | None = exc
    while seen is not None:
        texts.append(repr(seen))
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


@pytest.mark.parametrize(
    "url",
    [
        f"amqp://guest:{PASSWORD}@127.0.0.1/",
        f"amqp://guest:{PASSWORD}@127.0.0.1:5672/vhost",
        "amqp://guest:S3cr3t#x@127.0.0.1/",
        "amqp://guest:S3cr3t?x@127.0.0.1/",
        "amqp://guest:S3cr3t/x@127.0.0.1/",
        "amqp://guest:S3cr3t/x@@127.0.0.1/",
        "amqp://guest:S3cr3t",  # "@host" forgotten: yarl reads the password as a port
        f"pyamqp://guest:{PASSWORD}@127.0.0.1//",
        f"amqp://127.0.0.1/,amqp://guest:{PASSWORD}@127.0.0.2/",
        f"ftp://guest:{PASSWORD}@127.0.0.1/",
    ],
)
def test_unparseable_url_never_shows_the_password(url: str) -> None:
    """A password with unquoted '/', '#', '?' or '@' is refused with a ValueError whose text and chain omit it."""
    with pytest.raises(ValueError, match="amqp_uri") as caught:
        Publisher(url)
    text = _chain(caught.value)
    assert "S3cr3t" not in text
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_unquoted_colon_and_at_in_a_password_still_parse() -> None:
    """A password with ':' and '@' (unambiguous: the last '@' before the host ends it) is read as written."""
    params = ConnectionParams.build("amqp://guest:S3:cr@3t@127.0.0.1/")
    assert URL(params.url).password == "S3:cr@3t"
    assert "S3" not in params.masked_url


def test_quoted_password_round_trips() -> None:
    """The same password percent-quoted is accepted and decodes to itself."""
    params = ConnectionParams.build(f"amqp://guest:{quote(PASSWORD, safe='')}@127.0.0.1/")
    assert URL(params.url).password == PASSWORD
    assert "S3cr3t" not in params.masked_url and "S3cr3t" not in repr(Publisher(params.url))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("pyamqp://guest:guest@127.0.0.1//", "amqp://guest:guest@127.0.0.1//"),
        ("pyamqp://127.0.0.1", "amqp://127.0.0.1"),
        ("pyamqp://guest:guest@localhost", "amqp://guest:guest@localhost"),
        ("librabbitmq://user:pw@rabbit:5673/orders", "amqp://user:pw@rabbit:5673/orders"),
        ("PyAMQP://h/", "amqp://h/"),
        ("pyamqp://", "amqp://localhost"),
        ("pyamqp://:5673//", "amqp://localhost:5673//"),
        ("pyamqp://u:p@/v", "amqp://u:p@localhost/v"),
    ],
)
def test_kombu_schemes_are_amqp(url: str, expected: str) -> None:
    """kombu's pyamqp:// and librabbitmq:// become amqp://, kept as written (localhost when no host)."""
    assert ConnectionParams.build(url).urls == (expected,)


def test_kombu_scheme_with_ssl_uses_tls_on_5671() -> None:
    """pyamqp:// with ssl=True connects with TLS on port 5671 unless a port is given, as kombu does."""
    tls = ConnectionParams.build("pyamqp://guest:guest@rabbit//", ssl=True)._connection_url()
    assert (tls.scheme, tls.port) == ("amqps", 5671)
    given = ConnectionParams.build("pyamqp://guest:guest@rabbit:5000//", ssl=True)._connection_url()
    assert (given.scheme, given.port) == ("amqps", 5000)
    plain = ConnectionParams.build("pyamqp://rabbit")._connection_url()
    assert (plain.scheme, plain.port) == ("amqp", None)  # aiormq's default for amqp: 5672


async def test_kombu_urls_publish_to_the_broker(broker: Broker, amqp_url: str) -> None:
    """pyamqp://guest:guest@host//, pyamqp://host (guest login, port 5672, vhost /) and librabbitmq:// publish."""
    parsed = URL(amqp_url)
    if (parsed.user or "guest", parsed.password or "guest", parsed.path) not in (
        ("guest", "guest", "/"),
        ("guest", "guest", ""),
    ):
        pytest.skip("the kombu defaults (guest:guest, vhost /) only reach a broker that has them")
    host = parsed.host
    urls = [f"pyamqp://guest:guest@{host}//", f"pyamqp://{host}", f"librabbitmq://{host}/"]
    if parsed.port not in (None, 5672):
        urls = [f"pyamqp://guest:guest@{host}:{parsed.port}//", f"pyamqp://{host}:{parsed.port}"]
    queue = await broker.queue()
    for url in urls:
        async with Publisher(url, routing_key=queue, retry=False) as publisher:
            await publisher.publish(url)
    assert [m.body.decode() for m in await broker.get_all(queue)] == [f'"{url}"' for url in urls]


def test_list_with_a_non_url_never_shows_the_others() -> None:
    """A list of URLs holding a non-str is a TypeError naming types, not the URLs and their passwords."""
    urls = ["amqp://guest:S3cr3t@127.0.0.1/", None]
    with pytest.raises(TypeError, match="not a list holding NoneType, str") as caught:
        Publisher(urls)  # type: ignore[arg-type]
    assert "S3cr3t" not in _chain(caught.value)
