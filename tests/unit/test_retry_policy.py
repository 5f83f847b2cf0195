"""Tests of aiopublish.retry: stops, waits, predicates, RetryPolicy.run/from_dict/coerce, the testing switch.

No broker and no real waiting: an autouse fixture replaces asyncio.sleep with a recorder that
only yields to the loop, and another makes sure the testing switch is off unless a test turns it on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from aiopublish.retry import (
    DEFAULT_RETRY_POLICY,
    RetryPolicy,
    RetryState,
    Stop,
    Wait,
    is_testing,
    retry_if_exception_type,
    retry_if_not_exception_type,
    set_testing,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_fixed,
    wait_incrementing,
    wait_none,
    wait_random,
)

_real_sleep = asyncio.sleep


def state(attempt: int = 1, elapsed: float = 0.0, next_wait: float = 0.0) -> RetryState:
    return RetryState(attempt=attempt, elapsed=elapsed, next_wait=next_wait, exception=ConnectionError())


class AlwaysFails:
    """An async callable raising a fresh exception on each call (or succeeding on call `succeed_on`)."""

    def __init__(self, exc_type: type[BaseException] = ConnectionError, *, succeed_on: int | None = None):
        self.exc_type = exc_type
        self.succeed_on = succeed_on
        self.calls = 0
        self.raised: list[BaseException] = []

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls == self.succeed_on:
            return "ok"
        exc = self.exc_type(f"failure {self.calls}")
        self.raised.append(exc)
        raise exc


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every delay passed to asyncio.sleep, in order; nothing really sleeps."""
    recorded: list[float] = []

    async def record(delay: float) -> None:
        recorded.append(delay)
        await _real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", record)
    return recorded


@pytest.fixture(autouse=True)
def _testing_off() -> Iterator[None]:
    with set_testing(False):
        yield


RETRY_CONNECTION_ERRORS = retry_if_exception_type(ConnectionError)


# ---------------------------------------------------------------------------- RetryState


def test_retry_state_is_frozen_and_slotted() -> None:
    """RetryState cannot be changed after creation and has no per-instance __dict__."""
    s = state(attempt=2, elapsed=0.5, next_wait=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.attempt = 3  # type: ignore[misc]
    assert not hasattr(s, "__dict__")
    assert (s.attempt, s.elapsed, s.next_wait) == (2, 0.5, 1.0)


# ---------------------------------------------------------------------------- stops


def test_stop_after_attempt_counts_attempts_in_all() -> None:
    """stop_after_attempt(3) lets attempts 1 and 2 retry and gives up after attempt 3."""
    stop = stop_after_attempt(3)
    assert [stop(state(attempt=k)) for k in (1, 2, 3, 4)] == [False, False, True, True]
    assert stop_after_attempt(1)(state(attempt=1)) is True


@pytest.mark.parametrize(("n", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_stop_after_attempt_rejects_bad_counts(n: Any, error: type[Exception]) -> None:
    """stop_after_attempt needs an int >= 1 and names the parameter when it is not."""
    with pytest.raises(error, match=r"^n must be"):
        stop_after_attempt(n)


def test_stop_after_delay_counts_the_coming_sleep() -> None:
    """stop_after_delay gives up when elapsed + next_wait would exceed the delay, not before."""
    stop = stop_after_delay(10)
    assert stop(state(elapsed=3.0, next_wait=7.0)) is False  # exactly at the deadline is allowed
    assert stop(state(elapsed=3.0, next_wait=7.5)) is True
    assert stop(state(elapsed=10.5, next_wait=0.0)) is True
    assert stop_after_delay(timedelta(minutes=1))(state(elapsed=59.0, next_wait=2.0)) is True
    assert stop_after_delay(timedelta(minutes=1))(state(elapsed=50.0, next_wait=2.0)) is False


def test_stop_never_never_stops() -> None:
    """stop_never is an instance that says "keep going" even after a million attempts and a day."""
    assert isinstance(stop_never, Stop)
    assert stop_never(state(attempt=1_000_000, elapsed=86_400.0, next_wait=60.0)) is False


def test_stop_or_gives_up_when_either_does() -> None:
    """a | b gives up as soon as either a or b would, and chains flatten."""
    stop = stop_after_attempt(5) | stop_after_delay(10)
    assert stop(state(attempt=1, elapsed=1.0)) is False
    assert stop(state(attempt=5, elapsed=1.0)) is True
    assert stop(state(attempt=1, elapsed=9.0, next_wait=2.0)) is True
    assert (stop_never | stop_after_attempt(2))(state(attempt=2)) is True
    three = stop_after_attempt(5) | stop_after_delay(10) | stop_never
    assert repr(three) == "stop_after_attempt(5) | stop_after_delay(10.0) | stop_never"


def test_stop_or_with_a_non_stop_is_a_type_error() -> None:
    """Combining a Stop with something else is refused rather than silently misbehaving."""
    with pytest.raises(TypeError):
        stop_after_attempt(2) | 3  # type: ignore[operator]


# ---------------------------------------------------------------------------- waits


def test_wait_fixed_and_wait_none() -> None:
    """wait_fixed returns its seconds (float or timedelta) for every attempt; wait_none returns 0."""
    assert [wait_fixed(1.5)(state(attempt=k)) for k in (1, 2, 10)] == [1.5, 1.5, 1.5]
    assert wait_fixed(timedelta(milliseconds=250))(state()) == 0.25
    assert wait_none()(state(attempt=7)) == 0.0
    assert isinstance(wait_none(), Wait)


def test_wait_incrementing_matches_kombu_intervals() -> None:
    """wait_incrementing gives start + increment*(k-1) before retry k, capped at max."""
    wait = wait_incrementing(start=0.5, increment=1, max=2)
    assert [wait(state(attempt=k)) for k in range(1, 6)] == [0.5, 1.5, 2.0, 2.0, 2.0]
    unbounded = wait_incrementing()
    assert [unbounded(state(attempt=k)) for k in (1, 2, 100)] == [1.0, 2.0, 100.0]
    assert wait_incrementing(start=timedelta(seconds=2), increment=0)(state(attempt=9)) == 2.0


def test_wait_exponential_grows_and_is_clamped() -> None:
    """wait_exponential doubles by default, starts no lower than min and never exceeds max."""
    wait = wait_exponential(multiplier=0.5, max=5)
    assert [wait(state(attempt=k)) for k in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    floored = wait_exponential(multiplier=0.1, exp_base=3, min=1, max=60)
    assert [floored(state(attempt=k)) for k in (1, 2, 3, 4, 5)] == pytest.approx([1.0, 1.0, 1.0, 2.7, 8.1])
    assert wait_exponential()(state(attempt=1)) == 1.0


@pytest.mark.parametrize("attempt", [1_100, 10_000, 10**9])
def test_wait_exponential_does_not_overflow(attempt: int) -> None:
    """Huge attempt numbers (retry forever) return max instead of raising OverflowError."""
    assert wait_exponential(max=30)(state(attempt=attempt)) == 30.0
    assert wait_exponential(multiplier=0, min=0.5)(state(attempt=attempt)) == 0.5


def test_wait_exponential_rejects_min_above_max_and_bad_base() -> None:
    """wait_exponential refuses min > max and a base that is not a positive finite number."""
    with pytest.raises(ValueError, match="min"):
        wait_exponential(min=10, max=1)
    with pytest.raises(ValueError, match="exp_base"):
        wait_exponential(exp_base=0)
    with pytest.raises(TypeError, match="exp_base"):
        wait_exponential(exp_base="2")  # type: ignore[arg-type]


def test_wait_random_stays_within_bounds_and_varies() -> None:
    """wait_random samples stay within [min, max] and are not all the same."""
    wait = wait_random(min=0.2, max=0.7)
    samples = [wait(state(attempt=k)) for k in range(1, 1001)]
    assert all(0.2 <= sample <= 0.7 for sample in samples)
    assert len(set(samples)) > 1
    assert wait_random(min=0.3, max=0.3)(state()) == 0.3
    with pytest.raises(ValueError, match="min"):
        wait_random(min=2, max=1)


def test_wait_random_uses_random_uniform(monkeypatch: pytest.MonkeyPatch) -> None:
    """wait_random draws with random.uniform(min, max), so seeding/patching random controls it."""
    calls: list[tuple[float, float]] = []

    def fake_uniform(a: float, b: float) -> float:
        calls.append((a, b))
        return 0.42

    monkeypatch.setattr("aiopublish.retry.random.uniform", fake_uniform)
    assert wait_random(min=timedelta(seconds=1), max=3)(state()) == 0.42
    assert calls == [(1.0, 3.0)]


def test_wait_add_sums_the_waits() -> None:
    """a + b sleeps for the sum: a fixed base plus jitter stays within [base+min, base+max]."""
    jittered = wait_fixed(1) + wait_random(min=0, max=0.5)
    samples = [jittered(state()) for _ in range(200)]
    assert all(1.0 <= sample <= 1.5 for sample in samples)
    assert len(set(samples)) > 1
    three = wait_fixed(1) + wait_incrementing(start=0, increment=2) + wait_none()
    assert [three(state(attempt=k)) for k in (1, 2, 3)] == [1.0, 3.0, 5.0]
    assert repr(three) == "wait_fixed(1.0) + wait_incrementing(start=0.0, increment=2.0, max=inf) + wait_none()"
    with pytest.raises(TypeError):
        wait_fixed(1) + 1  # type: ignore[operator]


NEGATIVE_DURATIONS: list[tuple[Callable[[], object], str]] = [
    (lambda: stop_after_delay(-1), "seconds"),
    (lambda: wait_fixed(-0.1), "seconds"),
    (lambda: wait_fixed(timedelta(seconds=-1)), "seconds"),
    (lambda: wait_incrementing(start=-1), "start"),
    (lambda: wait_incrementing(increment=-1), "increment"),
    (lambda: wait_incrementing(max=-1), "max"),
    (lambda: wait_exponential(multiplier=-1), "multiplier"),
    (lambda: wait_exponential(min=-1), "min"),
    (lambda: wait_exponential(max=-1), "max"),
    (lambda: wait_random(min=-1), "min"),
    (lambda: wait_random(max=-1), "max"),
]


@pytest.mark.parametrize(("build", "parameter"), NEGATIVE_DURATIONS)
def test_negative_durations_are_value_errors_naming_the_parameter(build: Callable[[], object], parameter: str) -> None:
    """Every duration parameter refuses a negative value and says which parameter it was."""
    with pytest.raises(ValueError, match=rf"^{parameter} must be >= 0"):
        build()


def test_non_numeric_and_nan_durations_are_refused() -> None:
    """Durations must be numbers or timedeltas: strings, bools and NaN are refused by name."""
    with pytest.raises(TypeError, match=r"^seconds must be"):
        wait_fixed("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^seconds must be"):
        stop_after_delay(True)
    with pytest.raises(ValueError, match=r"^start must be"):
        wait_incrementing(start=math.nan)


# ---------------------------------------------------------------------------- predicates


def test_retry_if_exception_type_matches_subclasses() -> None:
    """retry_if_exception_type says yes for the given types and their subclasses only."""
    predicate = retry_if_exception_type(ConnectionError, TimeoutError)
    assert predicate(ConnectionRefusedError()) is True
    assert predicate(TimeoutError()) is True
    assert predicate(ValueError()) is False
    assert retry_if_exception_type()(KeyError()) is True  # tenacity's default: any Exception


def test_retry_if_not_exception_type_is_the_negation() -> None:
    """retry_if_not_exception_type says yes for everything except the given types."""
    predicate = retry_if_not_exception_type(PermissionError)
    assert predicate(ConnectionError()) is True
    assert predicate(PermissionError()) is False


def test_predicates_refuse_non_exception_types() -> None:
    """Passing something that is not an exception class is a TypeError at construction time."""
    with pytest.raises(TypeError, match="exception classes"):
        retry_if_exception_type(ValueError, "oops")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exception classes"):
        retry_if_not_exception_type(int)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- RetryPolicy.run


async def test_run_returns_the_result_after_transient_failures(sleeps: list[float]) -> None:
    """run() returns fn's result once it succeeds, after sleeping between the failures."""
    fn = AlwaysFails(succeed_on=3)
    policy = RetryPolicy(wait=wait_fixed(0.25))
    assert await policy.run(fn, retry=RETRY_CONNECTION_ERRORS) == "ok"
    assert fn.calls == 3
    assert sleeps == [0.25, 0.25]


async def test_default_policy_is_four_attempts_one_second_apart(sleeps: list[float]) -> None:
    """RetryPolicy() and DEFAULT_RETRY_POLICY both make 4 attempts with 1 s sleeps between them."""
    for policy in (RetryPolicy(), DEFAULT_RETRY_POLICY):
        sleeps.clear()
        fn = AlwaysFails()
        with pytest.raises(ConnectionError):
            await policy.run(fn, retry=RETRY_CONNECTION_ERRORS)
        assert fn.calls == 4
        assert sleeps == [1.0, 1.0, 1.0]


async def test_last_real_exception_surfaces() -> None:
    """Giving up re-raises the very exception object of the last attempt, not a wrapper."""
    fn = AlwaysFails()
    with pytest.raises(ConnectionError) as info:
        await RetryPolicy(stop=stop_after_attempt(3)).run(fn, retry=RETRY_CONNECTION_ERRORS)
    assert len(fn.raised) == 3
    assert info.value is fn.raised[-1]
    assert str(info.value) == "failure 3"


async def test_non_retried_exception_raises_after_one_call(sleeps: list[float]) -> None:
    """An exception the predicate refuses propagates as is after exactly one call and no sleep."""
    fn = AlwaysFails(ValueError)
    with pytest.raises(ValueError) as info:
        await RetryPolicy().run(fn, retry=RETRY_CONNECTION_ERRORS)
    assert info.value is fn.raised[0]
    assert fn.calls == 1
    assert sleeps == []


async def test_no_predicate_at_all_retries_nothing() -> None:
    """With no retry predicate on the policy or in the call, the first failure propagates."""
    fn = AlwaysFails()
    with pytest.raises(ConnectionError):
        await RetryPolicy().run(fn)
    assert fn.calls == 1


async def test_policy_predicate_overrides_the_callers() -> None:
    """The policy's own retry predicate wins over the one passed to run()."""
    policy = RetryPolicy(stop=stop_after_attempt(3), retry=retry_if_exception_type(ValueError))
    refused = AlwaysFails(ConnectionError)
    with pytest.raises(ConnectionError):
        await policy.run(refused, retry=RETRY_CONNECTION_ERRORS)
    assert refused.calls == 1
    accepted = AlwaysFails(ValueError)
    with pytest.raises(ValueError):
        await policy.run(accepted, retry=RETRY_CONNECTION_ERRORS)
    assert accepted.calls == 3


async def test_before_sleep_and_on_retry_receive_frozen_states(sleeps: list[float]) -> None:
    """Hooks get frozen RetryStates with the right attempt, next_wait and exception, before_sleep first."""
    seen: list[tuple[str, RetryState]] = []
    policy = RetryPolicy(
        stop=stop_after_attempt(4),
        wait=wait_incrementing(start=0.5, increment=0.5),
        before_sleep=lambda s: seen.append(("before_sleep", s)),
    )
    fn = AlwaysFails()
    with pytest.raises(ConnectionError):
        await policy.run(fn, retry=RETRY_CONNECTION_ERRORS, on_retry=lambda s: seen.append(("on_retry", s)))

    assert [name for name, _ in seen] == ["before_sleep", "on_retry"] * 3
    states = [s for name, s in seen if name == "before_sleep"]
    assert [s for name, s in seen if name == "on_retry"] == states
    assert [s.attempt for s in states] == [1, 2, 3]
    assert [s.next_wait for s in states] == [0.5, 1.0, 1.5]
    assert [s.exception for s in states] == fn.raised[:3]
    assert all(s.exception is exc for s, exc in zip(states, fn.raised, strict=False))
    elapsed = [s.elapsed for s in states]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0.0
    assert sleeps == [0.5, 1.0, 1.5]
    with pytest.raises(dataclasses.FrozenInstanceError):
        states[0].next_wait = 0.0  # type: ignore[misc]


async def test_async_hooks_are_awaited() -> None:
    """A coroutine-function hook is awaited rather than left as a never-awaited coroutine."""
    seen: list[int] = []

    async def hook(s: RetryState) -> None:
        seen.append(s.attempt)

    with pytest.raises(ConnectionError):
        await RetryPolicy(stop=stop_after_attempt(3), before_sleep=hook).run(
            AlwaysFails(), retry=RETRY_CONNECTION_ERRORS, on_retry=hook
        )
    assert seen == [1, 1, 2, 2]


async def test_hook_exceptions_propagate(sleeps: list[float]) -> None:
    """An exception raised by a hook propagates and stops the retrying at once."""

    def broken(s: RetryState) -> None:
        raise RuntimeError("hook failed")

    fn = AlwaysFails()
    with pytest.raises(RuntimeError, match="hook failed") as info:
        await RetryPolicy(before_sleep=broken).run(fn, retry=RETRY_CONNECTION_ERRORS)
    assert fn.calls == 1
    assert sleeps == []
    assert info.value.__context__ is fn.raised[0]


class Fatal(BaseException):
    """A BaseException that is not an Exception, like KeyboardInterrupt."""


@pytest.mark.parametrize("exc_type", [asyncio.CancelledError, Fatal])
async def test_base_exceptions_are_never_retried(exc_type: type[BaseException], sleeps: list[float]) -> None:
    """CancelledError and other non-Exception errors propagate after one call, whatever the predicate."""
    hooks: list[RetryState] = []
    fn = AlwaysFails(exc_type)
    with pytest.raises(exc_type):
        await RetryPolicy(stop=stop_never, before_sleep=hooks.append).run(fn, retry=lambda exc: True)
    assert fn.calls == 1
    assert hooks == []
    assert sleeps == []


async def test_cancellation_during_the_sleep_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelling the task while it sleeps between attempts ends run() without another attempt."""
    sleeping = asyncio.Event()

    async def sleep_forever(delay: float) -> None:
        sleeping.set()
        await asyncio.get_running_loop().create_future()

    monkeypatch.setattr(asyncio, "sleep", sleep_forever)
    fn = AlwaysFails()
    task = asyncio.create_task(RetryPolicy(stop=stop_never).run(fn, retry=RETRY_CONNECTION_ERRORS))
    await sleeping.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fn.calls == 1


async def test_stop_after_delay_in_run_counts_the_sleeps(sleeps: list[float]) -> None:
    """With sleeps of 2, 4, 6 s and a 5 s budget, run() sleeps 2 and 4 s then gives up on the 6 s one."""
    fn = AlwaysFails()
    policy = RetryPolicy(stop=stop_after_delay(5), wait=wait_incrementing(start=2, increment=2))
    with pytest.raises(ConnectionError):
        await policy.run(fn, retry=RETRY_CONNECTION_ERRORS)
    assert fn.calls == 3
    assert sleeps == [2.0, 4.0]


# ---------------------------------------------------------------------------- RetryPolicy construction


def test_policy_is_immutable_with_a_readable_repr() -> None:
    """RetryPolicy refuses attribute assignment and reprs as its parts."""
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.stop = stop_never  # type: ignore[misc]
    assert (
        repr(policy) == "RetryPolicy(stop=stop_after_attempt(4), wait=wait_fixed(1.0), retry=None, before_sleep=None)"
    )
    assert "stop_after_attempt(4)" in repr(DEFAULT_RETRY_POLICY)
    assert "wait_incrementing(start=1.0, increment=1.0, max=1.0)" in repr(DEFAULT_RETRY_POLICY)


def test_policy_checks_its_parts() -> None:
    """RetryPolicy refuses a stop that is not a Stop, a wait that is not a Wait, and non-callable hooks."""
    with pytest.raises(TypeError, match="stop must be a Stop"):
        RetryPolicy(stop=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="wait must be a Wait"):
        RetryPolicy(wait=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry must be callable"):
        RetryPolicy(retry=ConnectionError())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="before_sleep must be callable"):
        RetryPolicy(before_sleep="log")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- from_dict


@pytest.mark.parametrize(("max_retries", "calls"), [(0, 1), (3, 4), (5, 6)])
async def test_from_dict_max_retries_is_retries_not_attempts(max_retries: int, calls: int, sleeps: list[float]) -> None:
    """max_retries=N means N+1 calls of a function that always fails, with N sleeps in between."""
    fn = AlwaysFails()
    with pytest.raises(ConnectionError) as info:
        await RetryPolicy.from_dict({"max_retries": max_retries}).run(fn, retry=RETRY_CONNECTION_ERRORS)
    assert fn.calls == calls
    assert info.value is fn.raised[-1]
    assert sleeps == [1.0] * max_retries


async def test_from_dict_sleep_sequence_follows_kombu(sleeps: list[float]) -> None:
    """interval_start/step/max give sleeps start, start+step, ... capped at interval_max."""
    policy = RetryPolicy.from_dict({"max_retries": 4, "interval_start": 0.5, "interval_step": 1, "interval_max": 2})
    fn = AlwaysFails()
    with pytest.raises(ConnectionError):
        await policy.run(fn, retry=RETRY_CONNECTION_ERRORS)
    assert fn.calls == 5
    assert sleeps == [0.5, 1.5, 2, 2]


@pytest.mark.parametrize("d", [{}, {"max_retries": None}])
async def test_from_dict_missing_or_none_max_retries_retries_forever(d: dict[str, Any], sleeps: list[float]) -> None:
    """No max_retries (or None) retries until success, 1 s apart by kombu's interval defaults."""
    fn = AlwaysFails(succeed_on=25)
    assert await RetryPolicy.from_dict(d).run(fn, retry=RETRY_CONNECTION_ERRORS) == "ok"
    assert fn.calls == 25
    assert sleeps == [1.0] * 24


def test_from_dict_accepts_timedeltas() -> None:
    """Interval values may be timedeltas as well as numbers of seconds."""
    policy = RetryPolicy.from_dict({"interval_start": timedelta(milliseconds=100), "interval_max": 0.1})
    assert policy.wait(state(attempt=3)) == pytest.approx(0.1)


def test_from_dict_unknown_key_is_named() -> None:
    """An unknown key is a ValueError that names the key."""
    with pytest.raises(ValueError, match="'interval_maximum'"):
        RetryPolicy.from_dict({"max_retries": 3, "interval_maximum": 5})


@pytest.mark.parametrize(
    ("d", "error", "key"),
    [
        ({"max_retries": -1}, ValueError, "max_retries"),
        ({"max_retries": "3"}, TypeError, "max_retries"),
        ({"max_retries": 2.5}, TypeError, "max_retries"),
        ({"max_retries": True}, TypeError, "max_retries"),
        ({"interval_start": -0.5}, ValueError, "interval_start"),
        ({"interval_start": "1"}, TypeError, "interval_start"),
        ({"interval_step": -1}, ValueError, "interval_step"),
        ({"interval_step": None}, TypeError, "interval_step"),
        ({"interval_max": -2}, ValueError, "interval_max"),
        ({"interval_max": math.nan}, ValueError, "interval_max"),
        ({"interval_max": [1]}, TypeError, "interval_max"),
    ],
)
def test_from_dict_bad_values_name_the_key(d: dict[str, Any], error: type[Exception], key: str) -> None:
    """A negative value is a ValueError and a non-numeric one a TypeError, each naming the key."""
    with pytest.raises(error, match=f"^{key} must be"):
        RetryPolicy.from_dict(d)


def test_from_dict_needs_a_mapping() -> None:
    """from_dict refuses something that is not a mapping."""
    with pytest.raises(TypeError, match="list"):
        RetryPolicy.from_dict([("max_retries", 3)])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- coerce


async def test_coerce_accepts_policies_dicts_and_none() -> None:
    """coerce passes policies and None through and turns a retry_policy dict into a policy."""
    policy = RetryPolicy()
    assert RetryPolicy.coerce(policy) is policy
    assert RetryPolicy.coerce(None) is None
    coerced = RetryPolicy.coerce({"max_retries": 1})
    assert isinstance(coerced, RetryPolicy)
    fn = AlwaysFails()
    with pytest.raises(ConnectionError):
        await coerced.run(fn, retry=RETRY_CONNECTION_ERRORS)
    assert fn.calls == 2


@pytest.mark.parametrize(("value", "type_name"), [("max_retries=3", "str"), (3, "int"), ([1], "list")])
def test_coerce_refuses_other_types_by_name(value: object, type_name: str) -> None:
    """Anything but a RetryPolicy, a mapping or None is a TypeError naming its type."""
    with pytest.raises(TypeError, match=rf"\b{type_name}\b"):
        RetryPolicy.coerce(value)  # type: ignore[arg-type]


def test_coerce_reports_bad_dict_keys() -> None:
    """coerce goes through from_dict, so a bad dict fails the same way."""
    with pytest.raises(ValueError, match="'retries'"):
        RetryPolicy.coerce({"retries": 3})


# ---------------------------------------------------------------------------- testing switch


async def test_testing_switch_turns_sleeps_into_zero(sleeps: list[float]) -> None:
    """Under set_testing(True) every sleep is 0 while RetryState.next_wait still reports the policy's wait."""
    seen: list[float] = []
    fn = AlwaysFails()
    with set_testing(True):
        assert is_testing() is True
        with pytest.raises(ConnectionError):
            await RetryPolicy(wait=wait_fixed(30)).run(
                fn, retry=RETRY_CONNECTION_ERRORS, on_retry=lambda s: seen.append(s.next_wait)
            )
    assert is_testing() is False
    assert fn.calls == 4
    assert sleeps == [0.0, 0.0, 0.0]
    assert seen == [30.0, 30.0, 30.0]


async def test_testing_switch_caps_attempts(sleeps: list[float]) -> None:
    """set_testing(attempts=N) makes at most N attempts, but never more than the policy itself allows."""
    with set_testing(True, attempts=2):
        forever = AlwaysFails()
        with pytest.raises(ConnectionError) as info:
            await RetryPolicy(stop=stop_never).run(forever, retry=RETRY_CONNECTION_ERRORS)
        assert forever.calls == 2
        assert info.value is forever.raised[-1]
        once = AlwaysFails()
        with pytest.raises(ConnectionError):
            await RetryPolicy(stop=stop_after_attempt(1)).run(once, retry=RETRY_CONNECTION_ERRORS)
        assert once.calls == 1
    assert sleeps == [0.0]


def test_testing_switch_restores_the_previous_setting() -> None:
    """set_testing takes effect when called and its context manager restores whatever was set before."""
    assert is_testing() is False
    outer = set_testing(True)
    assert is_testing() is True
    with set_testing(False):
        assert is_testing() is False
        with set_testing(True, attempts=3):
            assert is_testing() is True
        assert is_testing() is False
    assert is_testing() is True
    with outer:
        pass
    assert is_testing() is False


def test_testing_switch_restores_on_error() -> None:
    """The previous setting comes back even when the with-block raises."""
    with pytest.raises(KeyError), set_testing(True):
        raise KeyError("boom")
    assert is_testing() is False


@pytest.mark.parametrize(("attempts", "error"), [(0, ValueError), (1.5, TypeError)])
def test_testing_switch_rejects_bad_attempts(attempts: Any, error: type[Exception]) -> None:
    """attempts must be an int >= 1, and a refused call leaves the switch untouched."""
    with pytest.raises(error, match="attempts"):
        set_testing(True, attempts=attempts)
    assert is_testing() is False


def _sync_answer() -> int:
    return 42


async def test_run_refuses_a_plain_function_with_a_sentence(sleeps: list[float]) -> None:
    """run(sync_fn) names the function and what it returned, instead of Python's bare await error; never retried."""
    policy = RetryPolicy(stop=stop_after_attempt(5), wait=wait_fixed(1), retry=lambda exc: True)
    with pytest.raises(TypeError) as refused:
        await policy.run(_sync_answer)  # type: ignore[arg-type]
    message = str(refused.value)
    assert "_sync_answer() returned int, not an awaitable" in message
    assert "async def" in message
    assert "can't be used in 'await' expression" not in message
    assert sleeps == []  # refused at once, although the policy retries every exception


async def test_run_refuses_what_cannot_be_called(sleeps: list[float]) -> None:
    """run(42) says it wants an async function to call."""
    with pytest.raises(TypeError, match=r"takes an async function to call, not int"):
        await RetryPolicy().run(42)  # type: ignore[arg-type]


async def test_run_takes_a_function_returning_a_coroutine(sleeps: list[float]) -> None:
    """Not only `async def`: a lambda returning a coroutine (or a partial) is awaited as well."""

    async def answer(value: int) -> int:
        return value

    assert await RetryPolicy().run(lambda: answer(7)) == 7
