"""`import aiopublish` loads only what a first publish needs; the rest comes at first use.

Each check runs in a fresh interpreter (a subprocess): in this one, other tests have
imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import aiopublish

# Modules a plain `Publisher("amqp://...").publish(...)` never uses, with why they were once loaded.
# (importlib.metadata and pathlib are not listed: aiormq imports them itself, and so does aio-pika.)
NOT_AT_IMPORT = (
    "aio_pika",  # only get_connection/get_producer (aiopublish._pool)
    "aiopublish._pool",
    "aiopublish._amqp1",  # only amqp1:// URLs
    "aiopublish._state",  # only Publisher.state
    "aiopublish._types",  # the TypedDicts of the signatures
    "aiopublish._otel_record",  # only when tracing is on
    "aiopublish.cli",
    "aiopublish.outbox",
    "aiopublish.testing",
    "aiopublish.fastapi",
    # Nothing under "opentelemetry": the package itself (a namespace package, no code) is imported
    # by finding whether the API and SDK are installed (importlib.util.find_spec of a submodule).
    "opentelemetry.",
    "msgpack",
    "zstandard",
    "sqlite3",
    "asyncpg",
    "sqlalchemy",
    "argparse",
    "pickle",  # only the pickle serializer
    "uvloop",
)

# Prints the modules `import aiopublish` added, as JSON: those the interpreter's start-up
# loaded (site, an editable install's finder) are not aiopublish's doing.
_NEW_MODULES = """
import json, sys
before = set(sys.modules)
import aiopublish
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_loads_nothing_a_first_publish_does_not_need() -> None:
    """`import aiopublish` in a fresh interpreter loads none of NOT_AT_IMPORT, nor a submodule of one."""
    loaded = json.loads(_run(_NEW_MODULES))
    assert "aiopublish._publisher" in loaded  # the check can see what the import loads
    prefixes = tuple(name if name.endswith(".") else f"{name}." for name in NOT_AT_IMPORT)
    unwanted = [name for name in loaded if name in NOT_AT_IMPORT or name.startswith(prefixes)]
    assert unwanted == []


@pytest.mark.parametrize("name", sorted(aiopublish._LAZY))
def test_a_lazy_name_is_there_at_first_use(name: str) -> None:
    """Each name imported at first use is in __all__ and dir(), and resolves to its module's object both ways."""
    assert name in aiopublish.__all__
    code = f"""
import aiopublish
from aiopublish import {name} as imported
from aiopublish.{aiopublish._LAZY[name].lstrip(".")} import {name} as defined
assert imported is defined is aiopublish.{name}, (imported, defined)
assert {name!r} in dir(aiopublish)
print("ok")
"""
    assert _run(code).strip() == "ok"


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    """The module's __getattr__ raises AttributeError (so hasattr works) for a name it does not know."""
    assert not hasattr(aiopublish, "no_such_name")
    with pytest.raises(AttributeError, match="no_such_name"):
        aiopublish.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_every_public_name_resolves() -> None:
    """Everything in __all__ is an attribute of the package (lazy names included)."""
    assert [name for name in aiopublish.__all__ if getattr(aiopublish, name, None) is None] == []
