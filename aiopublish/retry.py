"""Retry policies for publishing: tenacity's building blocks without the tenacity dependency.

A `RetryPolicy` is three decisions taken after every failed attempt, in this order:

1. *retry*: is this exception worth another attempt at all? (a predicate; the policy's
   own, else the one the caller passes to `RetryPolicy.run`, else nothing is retried)
2. *wait*: how many seconds to sleep before the next attempt (a `Wait`);
3. *stop*: given the attempt number, the time spent so far and that sleep, give up now?
   (a `Stop`). Giving up re-raises the last exception itself, never a wrapper.

Only `Exception` is ever retried: `asyncio.CancelledError`, `KeyboardInterrupt` and other
bare `BaseException`s always propagate at once. Stops combine with ``|`` (give up when either
says so) and waits with ``+`` (sleep for the sum). Every duration is in seconds, given as a
float or a `datetime.timedelta`. `stop_after_delay` counts the sleep it is about to take: it
gives up when ``elapsed + next_wait > delay``, so a policy never sleeps past its deadline only
to find the deadline gone; sleeping up to exactly the deadline is still allowed.

`RetryPolicy.from_dict` reads the nameko / kombu ``retry_policy`` dict with the meaning
kombu's ``Connection.ensure()`` gives it: ``max_retries`` (missing or None: forever),
``interval_start``, ``interval_step`` and ``interval_max`` (each 1.0 s when missing).
A policy is also a read-only mapping of those keys, as nameko's code reads its
``retry_policy`` dict (``policy["max_retries"]``, ``dict(policy, interval_start=1)``):
the dict it was made from, or, for a policy built from stops and waits, the keys those
can be written as (``stop_after_attempt``, ``stop_never``, ``wait_fixed``,
``wait_incrementing``, ``wait_none``; a key that cannot be written is left out).

`set_testing` turns every sleep into ``asyncio.sleep(0)`` (and can cap the attempts) so
test suites need neither a broker that comes back nor real waiting, like hynek/stamina.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import contextlib
import dataclasses
import inspect
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar

from ._durations import seconds as _seconds

__all__ = [
    "RetryState",
    "Stop",
    "stop_after_attempt",
    "stop_after_delay",
    "stop_never",
    "Wait",
    "wait_none",
    "wait_fixed",
    "wait_incrementing",
    "wait_exponential",
    "wait_random",
    "retry_if_exception_type",
    "retry_if_not_exception_type",
    "RetryPolicy",
    "DEFAULT_RETRY_POLICY",
    "set_testing",
    "is_testing",
]

T = TypeVar("T")


def _positive_int(value: object, name: str, *, minimum: int) -> int:
    # bool is an int subclass, but max_retries=True is always a config mistake.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def _exception_types(types: tuple[object, ...], name: str) -> tuple[type[BaseException], ...]:
    if not types:
        # tenacity's default: a bare retry_if_exception_type() means "any Exception".
        return (Exception,)
    checked: list[type[BaseException]] = []
    for candidate in types:
        if not (isinstance(candidate, type) and issubclass(candidate, BaseException)):
            raise TypeError(f"{name}() takes exception classes, not {candidate!r}")
        checked.append(candidate)
    return tuple(checked)


@dataclass(frozen=True, slots=True)
class RetryState:
    """What is known after a failed attempt: 1-based attempt, seconds elapsed, seconds to sleep, error."""

    attempt: int
    elapsed: float
    next_wait: float
    exception: BaseException


# ---------------------------------------------------------------------------- stops


class Stop(abc.ABC):
    """Base of stop conditions: called with a RetryState, returns True to give up; ``a | b`` = either."""

    __slots__ = ()

    @abc.abstractmethod
    def __call__(self, state: RetryState) -> bool:
        """True to give up after the attempt described by `state`."""

    def __or__(self, other: Stop) -> Stop:
        if not isinstance(other, Stop):
            return NotImplemented
        return _StopAny((self, other))


class _StopAny(Stop):
    __slots__ = ("_stops",)
    _stops: tuple[Stop, ...]

    def __init__(self, stops: tuple[Stop, ...]) -> None:
        # Flattened so that a | b | c reprs and evaluates as one flat "any".
        flat: list[Stop] = []
        for stop in stops:
            flat.extend(stop._stops if isinstance(stop, _StopAny) else (stop,))
        self._stops = tuple(flat)

    def __call__(self, state: RetryState) -> bool:
        return any(stop(state) for stop in self._stops)

    def __repr__(self) -> str:
        return " | ".join(repr(stop) for stop in self._stops)


class stop_after_attempt(Stop):
    """Give up once `n` attempts in all have been made (n >= 1; 1 means never retry)."""

    __slots__ = ("_attempts",)

    def __init__(self, n: int) -> None:
        self._attempts = _positive_int(n, "n", minimum=1)

    def __call__(self, state: RetryState) -> bool:
        return state.attempt >= self._attempts

    def __repr__(self) -> str:
        return f"stop_after_attempt({self._attempts})"


class stop_after_delay(Stop):
    """Give up when elapsed + next sleep would exceed `seconds` (float seconds or timedelta)."""

    __slots__ = ("_delay",)

    def __init__(self, seconds: float | timedelta) -> None:
        self._delay = _seconds(seconds, "seconds")

    def __call__(self, state: RetryState) -> bool:
        # Counting next_wait keeps a policy from sleeping past its deadline only to give up.
        return state.elapsed + state.next_wait > self._delay

    def __repr__(self) -> str:
        return f"stop_after_delay({self._delay!r})"


class _StopNever(Stop):
    __slots__ = ()

    def __call__(self, state: RetryState) -> bool:
        return False

    def __repr__(self) -> str:
        return "stop_never"


stop_never: Stop = _StopNever()
"""Never give up: retry until success or until the retry predicate says no."""


# ---------------------------------------------------------------------------- waits


class Wait(abc.ABC):
    """Base of wait strategies: called with a RetryState, returns seconds to sleep; ``a + b`` sums."""

    __slots__ = ()

    @abc.abstractmethod
    def __call__(self, state: RetryState) -> float:
        """Seconds to sleep before the attempt after `state.attempt`."""

    def __add__(self, other: Wait) -> Wait:
        if not isinstance(other, Wait):
            return NotImplemented
        return _WaitSum((self, other))


class _WaitSum(Wait):
    __slots__ = ("_waits",)
    _waits: tuple[Wait, ...]

    def __init__(self, waits: tuple[Wait, ...]) -> None:
        flat: list[Wait] = []
        for wait in waits:
            flat.extend(wait._waits if isinstance(wait, _WaitSum) else (wait,))
        self._waits = tuple(flat)

    def __call__(self, state: RetryState) -> float:
        return sum(wait(state) for wait in self._waits)

    def __repr__(self) -> str:
        return " + ".join(repr(wait) for wait in self._waits)


class wait_none(Wait):
    """Retry at once: 0 seconds between attempts."""

    __slots__ = ()

    def __call__(self, state: RetryState) -> float:
        return 0.0

    def __repr__(self) -> str:
        return "wait_none()"


class wait_fixed(Wait):
    """Sleep the same `seconds` (float seconds or timedelta) before every retry."""

    __slots__ = ("_seconds",)

    def __init__(self, seconds: float | timedelta) -> None:
        self._seconds = _seconds(seconds, "seconds")

    def __call__(self, state: RetryState) -> float:
        return self._seconds

    def __repr__(self) -> str:
        return f"wait_fixed({self._seconds!r})"


class wait_incrementing(Wait):
    """Sleep start + increment*(k-1) seconds before retry k, capped at max (defaults 1.0, 1.0, inf)."""

    __slots__ = ("_increment", "_max", "_start")

    def __init__(
        self,
        *,
        start: float | timedelta = 1.0,
        increment: float | timedelta = 1.0,
        max: float | timedelta = math.inf,
    ) -> None:
        self._start = _seconds(start, "start")
        self._increment = _seconds(increment, "increment")
        # The default cap, infinity, means no cap: the one infinite duration that makes sense.
        self._max = math.inf if max == math.inf else _seconds(max, "max")

    def __call__(self, state: RetryState) -> float:
        # builtins.*: the min/max parameters (tenacity's spelling) shadow the builtins in this class.
        retries_before = builtins.max(state.attempt - 1, 0)
        return builtins.min(self._start + self._increment * retries_before, self._max)

    def __repr__(self) -> str:
        return f"wait_incrementing(start={self._start!r}, increment={self._increment!r}, max={self._max!r})"


class wait_exponential(Wait):
    """Sleep multiplier * exp_base**(k-1) s before retry k, clamped to [min, max] (1.0, 2.0, 0.0, 60.0)."""

    __slots__ = ("_exp_base", "_max", "_min", "_multiplier")

    def __init__(
        self,
        *,
        multiplier: float | timedelta = 1.0,
        exp_base: float = 2.0,
        min: float | timedelta = 0.0,
        max: float | timedelta = 60.0,
    ) -> None:
        self._multiplier = _seconds(multiplier, "multiplier")
        if not isinstance(exp_base, int | float) or isinstance(exp_base, bool):
            raise TypeError(f"exp_base must be a number, not {type(exp_base).__name__}")
        if not (exp_base > 0 and math.isfinite(exp_base)):
            raise ValueError(f"exp_base must be a finite number > 0, got {exp_base!r}")
        self._exp_base = float(exp_base)
        self._min = _seconds(min, "min")
        self._max = _seconds(max, "max")
        if self._min > self._max:
            raise ValueError(f"min ({self._min!r}) must be <= max ({self._max!r})")

    def __call__(self, state: RetryState) -> float:
        exponent = builtins.max(state.attempt - 1, 0)
        if self._multiplier == 0.0:
            # 0 * inf would be NaN once the power overflows.
            raw = 0.0
        else:
            try:
                raw = self._multiplier * self._exp_base**exponent
            except OverflowError:
                # A retry-forever policy reaches attempts where the power no longer fits a float.
                raw = math.inf
        return builtins.min(builtins.max(raw, self._min), self._max)

    def __repr__(self) -> str:
        return (
            f"wait_exponential(multiplier={self._multiplier!r}, exp_base={self._exp_base!r}, "
            f"min={self._min!r}, max={self._max!r})"
        )


class wait_random(Wait):
    """Sleep a uniformly random number of seconds in [min, max] (defaults 0.0 and 1.0): jitter."""

    __slots__ = ("_max", "_min")

    def __init__(self, *, min: float | timedelta = 0.0, max: float | timedelta = 1.0) -> None:
        self._min = _seconds(min, "min")
        self._max = _seconds(max, "max")
        if self._min > self._max:
            raise ValueError(f"min ({self._min!r}) must be <= max ({self._max!r})")

    def __call__(self, state: RetryState) -> float:
        return random.uniform(self._min, self._max)

    def __repr__(self) -> str:
        return f"wait_random(min={self._min!r}, max={self._max!r})"


# ---------------------------------------------------------------------------- retry predicates


class retry_if_exception_type:
    """Predicate: retry when the exception is an instance of one of `types` (default: any Exception)."""

    __slots__ = ("_types",)

    def __init__(self, *types: type[BaseException]) -> None:
        self._types = _exception_types(types, "retry_if_exception_type")

    def __call__(self, exception: BaseException) -> bool:
        return isinstance(exception, self._types)

    def __repr__(self) -> str:
        return f"retry_if_exception_type({', '.join(t.__qualname__ for t in self._types)})"


class retry_if_not_exception_type:
    """Predicate: retry unless the exception is an instance of one of `types` (default: any Exception)."""

    __slots__ = ("_types",)

    def __init__(self, *types: type[BaseException]) -> None:
        self._types = _exception_types(types, "retry_if_not_exception_type")

    def __call__(self, exception: BaseException) -> bool:
        return not isinstance(exception, self._types)

    def __repr__(self) -> str:
        return f"retry_if_not_exception_type({', '.join(t.__qualname__ for t in self._types)})"


# ---------------------------------------------------------------------------- testing switch


class _TestingMode:
    # A plain class: a dataclass's generated methods would cost more at import than it is worth here.
    __slots__ = ("attempts", "enabled")
    enabled: bool
    attempts: int | None

    def __init__(self, *, enabled: bool, attempts: int | None) -> None:
        self.enabled = enabled
        self.attempts = attempts


_testing = _TestingMode(enabled=False, attempts=None)


class _RestoreTesting(contextlib.AbstractContextManager[None]):
    __slots__ = ("_previous",)

    def __init__(self, previous: _TestingMode) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        global _testing
        _testing = self._previous


def set_testing(enabled: bool = True, *, attempts: int | None = None) -> contextlib.AbstractContextManager[None]:
    """Make retries sleep 0 s (and cap attempts at `attempts`, if given) now; the result restores on exit."""
    global _testing
    if attempts is not None:
        _positive_int(attempts, "attempts", minimum=1)
    previous = _testing
    # A cap only means something while testing: disabling clears it so it cannot linger.
    _testing = _TestingMode(enabled=bool(enabled), attempts=attempts if enabled else None)
    return _RestoreTesting(previous)


def is_testing() -> bool:
    """True while set_testing(True) is in effect: retries do not really sleep."""
    return _testing.enabled


# ---------------------------------------------------------------------------- the policy


class _NotAwaitable(TypeError):
    """fn() returned something `await` cannot take: say which function and what it returned."""

    def __init__(self, fn: object, result: object) -> None:
        name = getattr(fn, "__qualname__", None) or repr(fn)
        super().__init__(
            f"RetryPolicy.run() awaits what its function returns, but {name}() returned "
            f"{type(result).__name__}, not an awaitable: pass an async function (async def) "
            "or one that returns a coroutine"
        )


_DEFAULT_STOP: Stop = stop_after_attempt(4)
_DEFAULT_WAIT: Wait = wait_fixed(1.0)

_POLICY_KEYS = ("max_retries", "interval_start", "interval_step", "interval_max")


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class RetryPolicy(Mapping[str, Any]):
    """When to retry and how long to sleep; defaults: 4 attempts in all, 1.0 s apart.

    Also a read-only mapping of kombu's keys (see the module docstring), so code written
    for nameko's ``retry_policy`` dict reads it unchanged. Equality and hashing stay by
    identity: compare ``dict(policy)`` with a dict.
    """

    stop: Stop = _DEFAULT_STOP
    wait: Wait = _DEFAULT_WAIT
    retry: Callable[[BaseException], bool] | None = None
    before_sleep: Callable[[RetryState], object] | None = None
    # The retry_policy dict this policy was made from (from_dict), shown as it was given.
    _given: Mapping[str, Any] | None = field(default=None, init=False, repr=False)

    # Mapping would make equal views equal (and policies unhashable): keep identity.
    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __bool__(self) -> bool:
        # A mapping with no key is falsy; `policy or DEFAULT_RETRY_POLICY` must keep a policy.
        return True

    def _kombu_view(self) -> Mapping[str, Any]:
        if self._given is not None:
            return self._given
        view: dict[str, Any] = {}
        stop, wait = self.stop, self.wait
        if isinstance(stop, stop_after_attempt):
            view["max_retries"] = stop._attempts - 1
        elif stop is stop_never:
            view["max_retries"] = None
        if isinstance(wait, wait_incrementing):
            view.update(interval_start=wait._start, interval_step=wait._increment, interval_max=wait._max)
        elif isinstance(wait, wait_fixed):
            view.update(interval_start=wait._seconds, interval_step=0.0, interval_max=wait._seconds)
        elif isinstance(wait, wait_none):
            view.update(interval_start=0.0, interval_step=0.0, interval_max=0.0)
        return view

    def __getitem__(self, key: str) -> Any:
        return self._kombu_view()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kombu_view())

    def __len__(self) -> int:
        return len(self._kombu_view())

    def __post_init__(self) -> None:
        # Checked here because a policy is often built from config long before its first use.
        if not isinstance(self.stop, Stop):
            raise TypeError(f"stop must be a Stop, not {type(self.stop).__name__}")
        if not isinstance(self.wait, Wait):
            raise TypeError(f"wait must be a Wait, not {type(self.wait).__name__}")
        if self.retry is not None and not callable(self.retry):
            raise TypeError(f"retry must be callable or None, not {type(self.retry).__name__}")
        if self.before_sleep is not None and not callable(self.before_sleep):
            raise TypeError(f"before_sleep must be callable or None, not {type(self.before_sleep).__name__}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RetryPolicy:
        """The policy a nameko/kombu retry_policy dict means (max_retries None = forever; intervals 1.0 s)."""
        if not isinstance(d, Mapping):
            raise TypeError(f"a retry policy dict must be a mapping, not {type(d).__name__}")
        unknown = [key for key in d if key not in _POLICY_KEYS]
        if unknown:
            raise ValueError(
                f"unknown retry policy key(s) {', '.join(repr(key) for key in unknown)}; "
                f"expected {', '.join(_POLICY_KEYS)}"
            )
        max_retries = d.get("max_retries")
        stop: Stop
        if max_retries is None:
            stop = stop_never
        else:
            # kombu counts retries, not attempts: max_retries=0 is one attempt and no retry.
            stop = stop_after_attempt(_positive_int(max_retries, "max_retries", minimum=0) + 1)
        wait = wait_incrementing(
            start=_seconds(d.get("interval_start", 1.0), "interval_start"),
            increment=_seconds(d.get("interval_step", 1.0), "interval_step"),
            max=_seconds(d.get("interval_max", 1.0), "interval_max"),
        )
        policy = cls(stop=stop, wait=wait)
        object.__setattr__(policy, "_given", MappingProxyType(dict(d)))  # a copy: the caller's dict may change
        return policy

    @classmethod
    def coerce(cls, value: RetryPolicy | Mapping[str, Any] | None) -> RetryPolicy | None:
        """A RetryPolicy as is, a retry_policy dict through from_dict, None as None; else TypeError."""
        if value is None or isinstance(value, RetryPolicy):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise TypeError(f"retry policy must be a RetryPolicy, a mapping or None, not {type(value).__name__}")

    async def run(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        retry: Callable[[BaseException], bool] | None = None,
        on_retry: Callable[[RetryState], object] | None = None,
    ) -> T:
        """Await fn() until it succeeds or the policy gives up; the last exception itself propagates.

        `fn` is an async function (or any callable returning an awaitable), called once per
        attempt. Raises TypeError, naming `fn`, when it is not callable or returns something
        that cannot be awaited (a plain function's result): that is never retried.
        """
        if not callable(fn):
            raise TypeError(f"RetryPolicy.run() takes an async function to call, not {type(fn).__name__}")
        return await self.resume(fn, time.monotonic(), retry=retry, on_retry=on_retry)

    async def resume(
        self,
        fn: Callable[[], Awaitable[T]],
        start: float,
        *,
        retry: Callable[[BaseException], bool] | None = None,
        on_retry: Callable[[RetryState], object] | None = None,
    ) -> T:
        """run(), its clock (RetryState.elapsed) started at time.monotonic() `start`.

        For a caller whose first attempt began before the policy was entered: Publisher.publish
        makes it without the policy's machinery (most succeed) and enters the policy only when
        it failed, with an `fn` whose first call goes on from that failure.
        """
        should_retry = self.retry if self.retry is not None else retry
        attempt = 0
        while True:
            attempt += 1
            try:
                pending = fn()
                if not inspect.isawaitable(pending):
                    raise _NotAwaitable(fn, pending)
                return await pending
            except Exception as exc:
                # A plain function passed by mistake is a bug to report, not a failure to retry.
                if should_retry is None or isinstance(exc, _NotAwaitable) or not should_retry(exc):
                    raise
                probe = RetryState(attempt=attempt, elapsed=time.monotonic() - start, next_wait=0.0, exception=exc)
                state = dataclasses.replace(probe, next_wait=self.wait(probe))
                testing = _testing
                capped = testing.enabled and testing.attempts is not None and attempt >= testing.attempts
                if capped or self.stop(state):
                    raise
                for hook in (self.before_sleep, on_retry):
                    if hook is not None:
                        result = hook(state)
                        # An async hook would otherwise be a coroutine never awaited.
                        if inspect.isawaitable(result):
                            await result
                delay = 0.0 if _testing.enabled else state.next_wait
                # The frame would otherwise keep the exception (and its traceback) alive while sleeping.
                del probe, state
            # Sleeping outside the except block keeps a cancellation's traceback free of the old error.
            await asyncio.sleep(delay)


DEFAULT_RETRY_POLICY: RetryPolicy = RetryPolicy.from_dict({"max_retries": 3})
"""nameko's default retry_policy {"max_retries": 3}: 4 attempts in all, 1.0 s apart."""
