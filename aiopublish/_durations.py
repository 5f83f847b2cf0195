"""Durations in seconds: the one check every option and retry parameter that takes a time uses."""

from __future__ import annotations

import math
from datetime import timedelta

__all__ = ["seconds"]


def seconds(value: object, name: str) -> float:
    """`value` (int, float or timedelta) as float seconds, finite and >= 0.

    TypeError for anything else (bool included: `timeout=True` is a mistake), ValueError for
    a negative value, NaN or an infinity; both name `name` so the mistake is findable.
    """
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            result = float(value)
        except OverflowError:  # an int too large for a float
            raise ValueError(f"{name} must be a finite number of seconds, not {value!r}") from None
    else:
        raise TypeError(f"{name} must be a number of seconds or a datetime.timedelta, not {type(value).__name__}")
    if not math.isfinite(result):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
    if result < 0:
        raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
    return result
