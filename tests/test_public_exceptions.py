"""Public exceptions carry their public name: tracebacks show `aiopublish.X`, never the private module."""

from __future__ import annotations

import inspect
import pickle
import traceback

import pytest

import aiopublish

PUBLIC_EXCEPTIONS = [
    getattr(aiopublish, name)
    for name in aiopublish.__all__
    if inspect.isclass(getattr(aiopublish, name)) and issubclass(getattr(aiopublish, name), BaseException)
]


def test_every_public_exception_is_found() -> None:
    """The list below is the real one (a broken filter would make the other tests vacuous)."""
    assert len(PUBLIC_EXCEPTIONS) == 15  # UnsupportedByBroker (RabbitMQ 4.x) among them
    assert aiopublish.ConnectionFailed in PUBLIC_EXCEPTIONS and aiopublish.UndeliverableMessage in PUBLIC_EXCEPTIONS


@pytest.mark.parametrize("cls", PUBLIC_EXCEPTIONS, ids=lambda cls: cls.__name__)
def test_public_exception_names_its_public_module(cls: type[BaseException]) -> None:
    """`aiopublish.X` is how the class names itself, and that name leads back to the class."""
    assert cls.__module__ == "aiopublish"
    assert getattr(aiopublish, cls.__qualname__) is cls


def test_a_traceback_shows_the_public_name() -> None:
    """The last line of a traceback reads `aiopublish.NotFound: ...`, without `_exceptions`."""
    try:
        raise aiopublish.NotFound(404, "NOT_FOUND - no exchange 'shop' in vhost '/'")
    except aiopublish.NotFound as exc:
        text = "".join(traceback.format_exception(exc))
    assert text.splitlines()[-1].startswith("aiopublish.NotFound: ")
    assert "_exceptions" not in text.splitlines()[-1]


def test_a_public_exception_still_pickles() -> None:
    """Pickle finds the class under its public name (a worker process can send it back)."""
    error = pickle.loads(pickle.dumps(aiopublish.ConnectionFailed("cannot connect")))
    assert type(error) is aiopublish.ConnectionFailed and str(error) == "cannot connect"
