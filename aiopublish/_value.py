"""ValueRecord: a small class compared, hashed and shown by the values of its `_fields`.

The records written out instead of dataclasses (entities, connection parameters, broker
limits, a refusal's facts) share their equality, hash and repr here: generating a
dataclass's methods at `import aiopublish` cost more than the rest of the modules that
hold them (see tests/test_import_cost.py).
"""

from __future__ import annotations

from typing import Any, ClassVar


class ValueRecord:
    """Equal to another of exactly its class with the same `_fields` values; hashed by them; shown by name.

    Exact class, as a dataclass compares: a subclass's record is never equal to its base's.
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, ValueRecord)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__}({shown})"
