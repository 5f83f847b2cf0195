"""Option precedence and validation: pure logic, no broker (nothing here connects)."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

import pytest

from aiopublish import Exchange, Publisher, Queue, RetryPolicy
from aiopublish._options import Options

URL = "amqp://guest:guest@127.0.0.1:5672/"


def resolved(publisher: Publisher, **kwargs: object) -> Options:
    return publisher._defaults.override(kwargs) if kwargs else publisher._defaults


@pytest.mark.parametrize(
    ("option", "class_value", "ctor_value", "call_value", "wire"),
    [
        ("use_confirms", True, False, True, lambda o: o.use_confirms),
        ("delivery_mode", 2, 1, "persistent", lambda o: o.delivery_mode),
        ("mandatory", False, True, False, lambda o: o.mandatory),
        ("priority", 0, 5, 0, lambda o: o.priority),
        ("expiration", None, 10, 2.5, lambda o: o.expiration),
        ("serializer", "json", "pickle", "json", lambda o: o.serializer.name),
        ("compression", None, "gzip", "bzip2", lambda o: o.compression and o.compression.name),
        ("retry", True, False, True, lambda o: o.retry),
    ],
)
def test_precedence_class_constructor_call(
    option: str, class_value: object, ctor_value: object, call_value: object, wire: object
) -> None:
    """Each option resolves per call > constructor > class attribute, and falsy values still win."""
    get = wire  # type: ignore[assignment]

    class Sub(Publisher):
        pass

    setattr(Sub, option, ctor_value)
    from_class = Sub(URL)
    from_ctor = Publisher(URL, **{option: ctor_value})
    plain = Publisher(URL)
    assert get(resolved(from_class)) == get(resolved(from_ctor))  # type: ignore[operator]
    assert get(resolved(plain)) != get(resolved(from_ctor))  # type: ignore[operator]
    per_call = get(resolved(from_ctor, **{option: call_value}))  # type: ignore[operator]
    assert per_call == get(resolved(Publisher(URL, **{option: call_value})))  # type: ignore[operator]
    # The call did not change the publisher's own defaults.
    assert get(resolved(from_ctor)) == get(resolved(Publisher(URL, **{option: ctor_value})))  # type: ignore[operator]


def test_class_defaults_are_nameko_defaults() -> None:
    """A plain Publisher has confirms on, json, persistent, not mandatory, priority 0, retry on."""
    options = resolved(Publisher(URL))
    assert options.use_confirms is True
    assert options.serializer.name == "json"
    assert options.compression is None
    assert options.delivery_mode == 2
    assert options.mandatory is False
    assert options.priority == 0
    assert options.expiration is None
    assert options.retry is True
    assert options.declare == ()


def test_false_and_zero_in_constructor_are_kept() -> None:
    """use_confirms=False, retry=False and priority=0 given to the constructor are not treated as unset."""

    class Loud(Publisher):
        priority = 9
        use_confirms = True

    options = resolved(Loud(URL, use_confirms=False, retry=False, priority=0))
    assert (options.use_confirms, options.retry, options.priority) == (False, False, 0)


def test_publish_kwargs_defaults_and_overrides() -> None:
    """Constructor publish kwargs are defaults; a call overrides one (reply_to) and adds others."""
    publisher = Publisher(URL, reply_to="ctor", routing_key="rk")
    options = resolved(publisher, reply_to="call", correlation_id="c")
    assert (options.reply_to, options.correlation_id, options.routing_key) == ("call", "c", "rk")
    assert resolved(publisher).reply_to == "ctor"
    assert resolved(publisher).correlation_id is None


def test_expiration_conversion() -> None:
    """expiration seconds become a millisecond string; negative is an error."""
    publisher = Publisher(URL)
    assert resolved(publisher, expiration=10).expiration == "10000"
    assert resolved(publisher, expiration=timedelta(seconds=0.25)).expiration == "250"
    with pytest.raises(ValueError, match="expiration"):
        resolved(publisher, expiration=-1)
    with pytest.raises(TypeError, match="expiration"):
        resolved(publisher, expiration="10")


def test_exchange_forms() -> None:
    """exchange may be None (default exchange), a name, or an Exchange object."""
    publisher = Publisher(URL)
    assert resolved(publisher, exchange=None).exchange == ""
    assert resolved(publisher, exchange="x").exchange == "x"
    assert resolved(publisher, exchange=Exchange("y", "topic")).exchange == "y"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"delivery_mode": 3}, ValueError, "delivery_mode"),
        ({"delivery_mode": "durable"}, ValueError, "delivery_mode"),
        ({"priority": 256}, ValueError, "priority"),
        ({"priority": -1}, ValueError, "priority"),
        ({"serializer": "yaml-nope"}, ValueError, "serializer"),
        ({"compression": "rar"}, ValueError, "compression"),
        ({"use_confirms": "yes"}, TypeError, "use_confirms"),
        ({"headers": ["a"]}, TypeError, "headers"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"retry_policy": {"max_retries": 1, "bogus": 2}}, ValueError, "bogus"),
        ({"declare": Queue("q")}, TypeError, "declare"),
        ({"declare": ["q"]}, TypeError, "declare"),
        ({"routing_key": 5}, TypeError, "routing_key"),
    ],
)
def test_bad_values_are_named(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    """A bad option value raises an error naming the option, per call and in the constructor."""
    publisher = Publisher(URL)
    with pytest.raises(error, match=match):
        resolved(publisher, **kwargs)
    named = {
        "delivery_mode",
        "priority",
        "serializer",
        "compression",
        "use_confirms",
        "retry_policy",
        "declare",
    }
    if set(kwargs) <= named:
        with pytest.raises(error, match=match):
            Publisher(URL, **kwargs)  # type: ignore[arg-type]


async def test_unknown_keyword_is_a_type_error_before_sending() -> None:
    """An unknown keyword to publish() or the constructor is a TypeError naming it; nothing connects."""
    publisher = Publisher("amqp://guest:guest@127.0.0.1:1/")
    with pytest.raises(TypeError, match="'routng_key'"):
        await publisher.publish("x", routng_key="q")
    assert publisher.state.connections_opened == 0
    with pytest.raises(TypeError, match="'colour'"):
        Publisher(URL, colour="blue")
    with pytest.raises(TypeError, match="'declare_later'"):
        Publisher(URL, declare_later=1)
    await publisher.close()


def test_retry_policy_accepts_dict_or_policy() -> None:
    """retry_policy takes a RetryPolicy or nameko's dict."""
    assert isinstance(resolved(Publisher(URL, retry_policy={"max_retries": 1})).retry_policy, RetryPolicy)
    policy = RetryPolicy.from_dict({"max_retries": 2})
    assert resolved(Publisher(URL), retry_policy=policy).retry_policy is policy
    with pytest.raises(TypeError):
        Publisher(URL, retry_policy=3)  # type: ignore[arg-type]


def test_subclass_declare_default() -> None:
    """A subclass's declare list is the default; the constructor's replaces it."""
    queue = Queue("a")

    class WithQueue(Publisher):
        declare: ClassVar[list[Queue]] = [queue]

    assert resolved(WithQueue(URL)).declare == (queue,)
    assert resolved(WithQueue(URL, declare=[])).declare == ()
