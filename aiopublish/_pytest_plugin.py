"""aiopublish's pytest plugin (entry point pytest11): fixtures for testing code that publishes.

- ``memory_broker``: a fresh `InMemoryBroker` at ``memory://``, forgotten after the test;
- ``patched_broker``: the same, and every Publisher first used during the test publishes
  to it whatever URL it was given, module-level ones built at import time included; after
  the test they forget it (see `aiopublish.testing.patch_publisher`);
- ``instant_retries``: retries do not sleep (`aiopublish.retry.set_testing`), restored after.

All are plain function-scoped fixtures: they work in sync and async tests alike. aiopublish
itself is imported only when a test uses one of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from aiopublish.testing import InMemoryBroker


@pytest.fixture
def memory_broker() -> Iterator[InMemoryBroker]:
    """A fresh in-memory broker at memory:// (every Publisher("memory://") uses it); reset after the test."""
    from aiopublish.testing import get_broker, reset

    reset()
    try:
        yield get_broker("memory://")
    finally:
        reset()


@pytest.fixture
def patched_broker(memory_broker: InMemoryBroker) -> Iterator[InMemoryBroker]:
    """memory_broker, with every Publisher first used during the test pointed at it whatever its URL.

    A Publisher already connected to a real broker when the test starts is left alone; if
    nothing is recorded, the broker's assertion failures say how many there were.
    """
    from aiopublish.testing import patch_publisher

    with patch_publisher("memory://") as broker:
        yield broker


@pytest.fixture
def instant_retries() -> Iterator[None]:
    """Retries wait 0 s during the test (aiopublish.retry.set_testing(True)); the previous mode comes back after."""
    from aiopublish.retry import set_testing

    with set_testing(True):
        yield
