"""One table of routing cases, run against the in-memory broker and against the real RabbitMQ.

Every case says which queues must receive the message and which error (if any) the
publish must raise; the `backend` fixture runs each case once per broker, so a case
passes on both only if the in-memory broker routes and refuses exactly as RabbitMQ does.
A second, smaller table does the same for declarations.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
from yarl import URL

from aiopublish import AiopublishError, Binding, ChannelError, Exchange, Publisher, Queue, UndeliverableMessage
from aiopublish.testing import InMemoryBroker
from tests.broker import Broker

# -- the two backends ----------------------------------------------------------------------------


class Backend(Protocol):
    url: str

    def unique(self, what: str) -> str: ...

    async def received(self, queue: str) -> list[bytes]: ...


class MemoryBackend:
    def __init__(self, broker: InMemoryBroker) -> None:
        self.url = "memory://"
        self.broker = broker
        self._count = itertools.count(1)

    def unique(self, what: str) -> str:
        return f"parity-{what}-{next(self._count)}"

    async def received(self, queue: str) -> list[bytes]:
        return [message.body for message in self.broker.messages(queue)]


class RabbitBackend:
    def __init__(self, url: str, probe: Broker) -> None:
        self.url = url
        self.probe = probe

    def unique(self, what: str) -> str:
        return self.probe.name(what)

    async def received(self, queue: str) -> list[bytes]:
        return [message.body for message in await self.probe.get_all(queue)]


@pytest.fixture(params=["memory", "rabbitmq"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """The in-memory broker, or the real RabbitMQ with uniquely named entities removed afterwards."""
    if request.param == "memory":
        return MemoryBackend(request.getfixturevalue("memory_broker"))
    return RabbitBackend(request.getfixturevalue("amqp_url"), request.getfixturevalue("broker"))


def outcome(error: BaseException | None) -> str | None:
    """How a publish or declaration ended, as the tables spell it: "NotFound 404", "returned 312", ..."""
    if error is None:
        return None
    if isinstance(error, UndeliverableMessage):
        return f"{error.reason} {error.reply_code}" if error.reply_code else error.reason
    if isinstance(error, ChannelError):
        return f"{type(error).__name__} {error.reply_code}"
    return type(error).__name__


# -- routing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One publish and what it must do.

    exchange_type: "direct", "fanout", "topic" or "headers"; "default" (the default
    exchange) or "missing" (a name never declared). bindings: (queue label, routing key
    or headers-binding arguments). routing_key may name a queue as "{label}"; user_id
    "{login}" is the URL's user. expected: the labels of the queues that get the message.
    """

    id: str
    exchange_type: str
    bindings: tuple[tuple[str, str | Mapping[str, Any]], ...] = ()
    routing_key: str = ""
    headers: Mapping[str, Any] | None = None
    mandatory: bool = False
    user_id: str | None = None
    use_confirms: bool = True
    internal: bool = False
    alternate: bool = False  # the exchange has an alternate (fanout) exchange with queue "ae" bound to it
    queue_arguments: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    expected: tuple[str, ...] = ()
    error: str | None = None


TOPIC = (("star", "a.*"), ("hash", "a.#"), ("all", "#"), ("mid", "*.b.#"), ("end", "#.c"), ("one", "*"))
HEADERS: tuple[tuple[str, Mapping[str, Any]], ...] = (
    ("all", {"x-match": "all", "kind": "order", "region": "eu"}),
    ("any", {"x-match": "any", "kind": "order", "region": "eu"}),
    ("x_ignored", {"x-match": "all", "x-tenant": "acme", "kind": "order"}),
    ("no_x_match", {"kind": "order"}),
    ("any_x_only", {"x-match": "any", "x-tenant": "acme"}),
    ("all_with_x", {"x-match": "all-with-x", "x-tenant": "acme", "kind": "order"}),
    ("any_with_x", {"x-match": "any-with-x", "x-tenant": "acme"}),
    ("int", {"x-match": "all", "n": 1}),
    ("present", {"x-match": "all", "trace": None}),
)
ALL_HEADERS = tuple(label for label, _ in HEADERS)

CASES = [
    # the default exchange: the routing key is a queue name
    Case("default-queue-name", "default", (("q", ""),), routing_key="{q}", expected=("q",)),
    Case("default-unknown-queue", "default", (("q", ""),), routing_key="nosuch"),
    Case(
        "default-unknown-mandatory", "default", (("q", ""),), routing_key="nosuch", mandatory=True, error="returned 312"
    ),
    # direct
    Case("direct-exact-key", "direct", (("a", "a"), ("b", "b")), routing_key="a", expected=("a",)),
    Case("direct-same-key-two-queues", "direct", (("a1", "a"), ("a2", "a")), routing_key="a", expected=("a1", "a2")),
    Case("direct-no-match", "direct", (("a", "a"),), routing_key="b"),
    Case("direct-no-match-mandatory", "direct", (("a", "a"),), routing_key="b", mandatory=True, error="returned 312"),
    Case("direct-queue-bound-twice", "direct", (("q", "a"), ("q", "b")), routing_key="a", expected=("q",)),
    Case("direct-key-is-case-sensitive", "direct", (("a", "Order"),), routing_key="order"),
    Case("direct-empty-key", "direct", (("e", ""), ("a", "a")), routing_key="", expected=("e",)),
    # fanout
    Case("fanout-ignores-key", "fanout", (("x", "x"), ("y", "y")), routing_key="z", expected=("x", "y")),
    Case("fanout-no-bindings-mandatory", "fanout", (), mandatory=True, error="returned 312"),
    # topic: * is one word, # zero or more, words split on "."
    Case("topic-a.b", "topic", TOPIC, routing_key="a.b", expected=("star", "hash", "all", "mid")),
    Case("topic-a", "topic", TOPIC, routing_key="a", expected=("hash", "all", "one")),
    Case("topic-a.b.c", "topic", TOPIC, routing_key="a.b.c", expected=("hash", "all", "mid", "end")),
    Case("topic-x.b", "topic", TOPIC, routing_key="x.b", expected=("all", "mid")),
    Case("topic-x.b.c.d", "topic", TOPIC, routing_key="x.b.c.d", expected=("all", "mid")),
    Case("topic-c", "topic", TOPIC, routing_key="c", expected=("all", "end", "one")),
    Case("topic-empty-key", "topic", TOPIC, routing_key="", expected=("all",)),
    Case("topic-trailing-dot", "topic", TOPIC, routing_key="a.", expected=("star", "hash", "all")),
    Case("topic-x.y.b", "topic", TOPIC, routing_key="x.y.b", expected=("all",)),
    Case("topic-overlapping-bindings-once", "topic", (("q", "a.*"), ("q", "#")), routing_key="a.b", expected=("q",)),
    Case(
        "topic-no-match-mandatory", "topic", (("star", "a.*"),), routing_key="b.c", mandatory=True, error="returned 312"
    ),
    # headers: x-match all/any ignore x- arguments; the -with-x modes compare them
    Case(
        "headers-both-match",
        "headers",
        HEADERS,
        headers={"kind": "order", "region": "eu"},
        expected=("all", "any", "x_ignored", "no_x_match"),
    ),
    Case(
        "headers-one-of-two", "headers", HEADERS, headers={"kind": "order"}, expected=("any", "x_ignored", "no_x_match")
    ),
    Case("headers-other-one", "headers", HEADERS, headers={"region": "eu"}, expected=("any",)),
    Case(
        "headers-with-x-header",
        "headers",
        HEADERS,
        headers={"kind": "order", "x-tenant": "acme"},
        expected=("any", "x_ignored", "no_x_match", "all_with_x", "any_with_x"),
    ),
    Case(
        "headers-wrong-x-header",
        "headers",
        HEADERS,
        headers={"kind": "order", "x-tenant": "other"},
        expected=("any", "x_ignored", "no_x_match"),
    ),
    Case("headers-x-header-alone", "headers", HEADERS, headers={"x-tenant": "acme"}, expected=("any_with_x",)),
    Case("headers-int-value", "headers", HEADERS, headers={"n": 1}, expected=("int",)),
    Case("headers-str-is-not-int", "headers", HEADERS, headers={"n": "1"}),
    Case("headers-bool-is-not-int", "headers", HEADERS, headers={"n": True}),
    Case("headers-void-means-present", "headers", HEADERS, headers={"trace": "abc"}, expected=("present",)),
    Case("headers-none-mandatory", "headers", HEADERS, mandatory=True, error="returned 312"),
    Case("headers-all-without-keys", "headers", (("q", {"x-match": "all"}),), expected=("q",)),
    # refusals
    Case("missing-exchange", "missing", routing_key="a", error="NotFound 404"),
    Case("missing-exchange-mandatory", "missing", routing_key="a", mandatory=True, error="NotFound 404"),
    Case("missing-exchange-no-confirms", "missing", routing_key="a", use_confirms=False),
    Case(
        "user-id-mismatch", "direct", (("a", "a"),), routing_key="a", user_id="mallory", error="PreconditionFailed 406"
    ),
    Case(
        "user-id-mismatch-no-confirms", "direct", (("a", "a"),), routing_key="a", user_id="mallory", use_confirms=False
    ),
    Case("user-id-is-login", "direct", (("a", "a"),), routing_key="a", user_id="{login}", expected=("a",)),
    Case("internal-exchange", "direct", (("a", "a"),), routing_key="a", internal=True, error="AccessRefused 403"),
    Case(
        "mandatory-no-route-no-confirms", "direct", (("a", "a"),), routing_key="b", mandatory=True, use_confirms=False
    ),
    # alternate exchanges take what the exchange cannot route; mandatory then has a route
    Case("alternate-takes-unroutable", "direct", (("a", "a"),), routing_key="b", alternate=True, expected=("ae",)),
    Case(
        "alternate-mandatory",
        "direct",
        (("a", "a"),),
        routing_key="b",
        mandatory=True,
        alternate=True,
        expected=("ae",),
    ),
    Case("alternate-unused-when-routed", "direct", (("a", "a"),), routing_key="a", alternate=True, expected=("a",)),
    # queue length limits
    Case(
        "max-length-reject-publish",
        "direct",
        (("full", "a"), ("ok", "a")),
        routing_key="a",
        queue_arguments={"full": {"x-max-length": 0, "x-overflow": "reject-publish"}},
        expected=("ok",),
        error="nacked",
    ),
    Case(
        "max-length-drop-head",
        "direct",
        (("full", "a"),),
        routing_key="a",
        queue_arguments={"full": {"x-max-length": 0}},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_routing(case: Case, backend: Backend) -> None:
    """The publish reaches exactly the expected queues and ends with the expected error on this backend."""
    names = {label: backend.unique("q") for label, _ in case.bindings}
    exchange = Exchange("") if case.exchange_type == "default" else None
    declare: list[Exchange | Queue] = []
    arguments = None
    if case.alternate:
        alternate = Exchange(backend.unique("ae"), "fanout")
        names["ae"] = backend.unique("q")
        declare.append(Queue(names["ae"], alternate))
        arguments = {"alternate-exchange": alternate.name}
    if case.exchange_type not in ("default", "missing"):
        exchange = Exchange(backend.unique("x"), case.exchange_type, internal=case.internal, arguments=arguments)
        declare.append(exchange)
    for label, name in names.items():
        if label == "ae":
            continue
        bindings = [
            Binding(exchange, key) if isinstance(key, str) else Binding(exchange, arguments=key)
            for bound, key in case.bindings
            if bound == label and exchange is not None and exchange.name
        ]
        declare.append(Queue(name, arguments=case.queue_arguments.get(label), bindings=bindings))
    destination = exchange.name if exchange is not None else backend.unique("missing")
    login = URL(backend.url).user or "guest"
    user_id = login if case.user_id == "{login}" else case.user_id

    error: AiopublishError | None = None
    async with Publisher(backend.url, declare=declare, use_confirms=case.use_confirms, retry=False) as publisher:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # mandatory without confirms warns; not the point here
            try:
                await publisher.publish(
                    "m",
                    exchange=destination,
                    routing_key=case.routing_key.format(**names),
                    headers=case.headers,
                    mandatory=case.mandatory,
                    user_id=user_id,
                )
            except AiopublishError as exc:
                error = exc
    received = []
    for label, name in names.items():
        received += [label] * len(await backend.received(name))
    received.sort()
    assert (outcome(error), received) == (case.error, sorted(case.expected))


# -- publish_many ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchCase:
    """A publish_many of len(routing_keys) messages to a direct exchange (or a missing one) and each one's status."""

    id: str
    routing_keys: tuple[str, ...]
    statuses: tuple[str, ...]
    delivered: int
    missing_exchange: bool = False
    mandatory: bool = False
    user_id: str | None = None
    queue_arguments: Mapping[str, Any] | None = None


BATCH_CASES = [
    BatchCase("all-routed", ("a", "a", "a"), ("confirmed",) * 3, delivered=3),
    BatchCase(
        "mandatory-some-unroutable",
        ("a", "b", "a"),
        ("confirmed", "returned", "confirmed"),
        delivered=2,
        mandatory=True,
    ),
    BatchCase("missing-exchange", ("a", "a", "a"), ("failed NotFound 404",) * 3, delivered=0, missing_exchange=True),
    BatchCase("user-id-mismatch", ("a", "a"), ("failed PreconditionFailed 406",) * 2, delivered=0, user_id="mallory"),
    BatchCase(
        "reject-publish-overflow",
        ("a", "a", "a"),
        ("confirmed", "nacked", "nacked"),
        delivered=1,
        queue_arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
    ),
]


@pytest.mark.parametrize("case", BATCH_CASES, ids=[case.id for case in BATCH_CASES])
async def test_publish_many(case: BatchCase, backend: Backend) -> None:
    """Each message of a publish_many ends with the expected status on this backend."""
    exchange = Exchange(backend.unique("x"))
    queue = Queue(backend.unique("q"), exchange, "a", arguments=case.queue_arguments)
    destination = backend.unique("missing") if case.missing_exchange else exchange.name
    async with Publisher(backend.url, declare=[queue], retry=False) as publisher:
        results = await publisher.publish_many(
            range(len(case.routing_keys)),
            routing_keys=case.routing_keys,
            exchange=destination,
            mandatory=case.mandatory,
            user_id=case.user_id,
        )
    statuses = tuple(
        f"{result.status} {outcome(result.error)}" if result.status == "failed" else result.status for result in results
    )
    assert (statuses, len(await backend.received(queue.name))) == (case.statuses, case.delivered)


# -- declarations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeclareCase:
    """Declare `first`, then `second` (built with the names given), on one connection: the second must end so."""

    id: str
    first: Any  # (names) -> list of Exchange/Queue
    second: Any
    error: str | None


def _x(names: dict[str, str], type: str = "direct", **kwargs: Any) -> Exchange:
    return Exchange(names["x"], type, **kwargs)


def _q(names: dict[str, str], **kwargs: Any) -> Queue:
    return Queue(names["q"], **kwargs)


DECLARE_CASES = [
    DeclareCase("exchange-same", lambda n: [_x(n)], lambda n: [_x(n)], None),
    DeclareCase("exchange-type", lambda n: [_x(n)], lambda n: [_x(n, "fanout")], "PreconditionFailed 406"),
    DeclareCase("exchange-durable", lambda n: [_x(n)], lambda n: [_x(n, durable=False)], "PreconditionFailed 406"),
    DeclareCase(
        "exchange-auto-delete", lambda n: [_x(n)], lambda n: [_x(n, auto_delete=True)], "PreconditionFailed 406"
    ),
    DeclareCase("exchange-internal", lambda n: [_x(n)], lambda n: [_x(n, internal=True)], "PreconditionFailed 406"),
    DeclareCase(
        "exchange-alternate",
        lambda n: [_x(n)],
        lambda n: [_x(n, arguments={"alternate-exchange": "elsewhere"})],
        "PreconditionFailed 406",
    ),
    DeclareCase("exchange-other-argument", lambda n: [_x(n)], lambda n: [_x(n, arguments={"note": "x"})], None),
    DeclareCase("exchange-amq-prefix", lambda n: [], lambda n: [Exchange("amq.aiopublish-test")], "AccessRefused 403"),
    DeclareCase("exchange-amq-direct-as-is", lambda n: [], lambda n: [Exchange("amq.direct")], None),
    DeclareCase("queue-same", lambda n: [_q(n)], lambda n: [_q(n)], None),
    DeclareCase("queue-durable", lambda n: [_q(n)], lambda n: [_q(n, durable=False)], "PreconditionFailed 406"),
    DeclareCase("queue-auto-delete", lambda n: [_q(n)], lambda n: [_q(n, auto_delete=True)], "PreconditionFailed 406"),
    DeclareCase(
        "queue-max-length",
        lambda n: [_q(n)],
        lambda n: [_q(n, arguments={"x-max-length": 5})],
        "PreconditionFailed 406",
    ),
    DeclareCase(
        "queue-max-length-changed",
        lambda n: [_q(n, arguments={"x-max-length": 5})],
        lambda n: [_q(n, arguments={"x-max-length": 6})],
        "PreconditionFailed 406",
    ),
    DeclareCase("queue-other-argument", lambda n: [_q(n)], lambda n: [_q(n, arguments={"note": 1})], None),
    DeclareCase("queue-exclusive", lambda n: [_q(n)], lambda n: [_q(n, exclusive=True)], "ChannelError 405"),
    DeclareCase(
        "queue-negative-max-length",
        lambda n: [],
        lambda n: [_q(n, arguments={"x-max-length": -1})],
        "PreconditionFailed 406",
    ),
    DeclareCase(
        "queue-bad-overflow",
        lambda n: [],
        lambda n: [_q(n, arguments={"x-overflow": "sideways"})],
        "PreconditionFailed 406",
    ),
    DeclareCase("queue-amq-prefix", lambda n: [], lambda n: [Queue("amq.aiopublish-test")], "AccessRefused 403"),
    DeclareCase(
        "headers-binding-bad-x-match",
        lambda n: [],
        lambda n: [_q(n, bindings=[Binding(_x(n, "headers"), arguments={"x-match": "most"})])],
        "PreconditionFailed 406",
    ),
]


@pytest.mark.parametrize("case", DECLARE_CASES, ids=[case.id for case in DECLARE_CASES])
async def test_declaration(case: DeclareCase, backend: Backend) -> None:
    """Redeclaring with other properties fails (or not) with the same error on this backend."""
    names = {"x": backend.unique("x"), "q": backend.unique("q")}
    publisher = Publisher(backend.url, declare=[*case.first(names), *case.second(names)], retry=False)
    error: AiopublishError | None = None
    try:
        await publisher.connect()
    except AiopublishError as exc:
        error = exc
    finally:
        await publisher.close()
    assert outcome(error) == case.error
