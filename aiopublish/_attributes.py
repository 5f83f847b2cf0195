"""nameko's option attributes: plain to read, and a change reaches the next publish.

nameko's Publisher reads `self.mandatory`, `self.priority`, ... at every publish, so
a value set on an instance after construction, on a subclass, or on the class
later applies to the next publish. aiopublish checks and pre-encodes its options
once (Options and its property templates) instead of per publish, so it has to
know when one changes: each option name on a Publisher class is an `OptionAttribute`
(a data descriptor, so only these names pay for it; every other attribute, the
publish path's counters included, is set at full speed), and the metaclass turns
a class-level assignment (`MyPublisher.mandatory = True`, in a subclass body or
later) into a new class default and tells the live instances of that class.

Resolution stays nameko's: class attribute < constructor argument < instance
attribute set later < publish() keyword (the constructor argument is an instance
attribute, so "later" simply replaces it).

An assignment is checked before it is stored: a bad value raises TypeError/ValueError
naming the option and leaves the old value (and the publisher) as it was. Changing
a mutable value in place (`publisher.declare.append(q)`) is not seen: assign a new one.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol

__all__ = ["OptionAttribute", "OptionsOwner", "PublisherType", "register"]

_MISSING: Any = object()


class OptionsOwner(Protocol):
    """What a class using OptionAttribute implements: check a changed option and take it.

    Its instances keep their own option values in `_options_given` (a dict), not in their
    `__dict__`: touching an instance's `__dict__` turns CPython's inline attribute values into
    a real dict and makes every other attribute access on it slower (the publish path's too).
    """

    _options_given: dict[str, Any]

    def _option_changed(self, name: str, value: Any) -> None: ...

    def _class_option_changed(self, name: str) -> None: ...


class OptionAttribute:
    """One option attribute: the instance's own value, else the class default (the nearest class's)."""

    __slots__ = ("default", "name")

    def __init__(self, name: str, default: Any = _MISSING) -> None:
        self.name = name
        self.default = default

    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        if instance is None:
            if self.default is _MISSING:
                raise AttributeError(f"type object {owner.__name__ if owner else '?'!r} has no attribute {self.name!r}")
            return self.default  # Publisher.mandatory is False, as with nameko's plain class attribute
        try:
            return instance._options_given[self.name]  # type: ignore[attr-defined]
        except (KeyError, AttributeError):
            if self.default is _MISSING:
                raise AttributeError(f"{type(instance).__name__!r} object has no attribute {self.name!r}") from None
            return self.default

    def __set__(self, instance: OptionsOwner, value: Any) -> None:
        # The owner checks the value and rebuilds its options first; it stores the value itself.
        instance._option_changed(self.name, value)

    def __delete__(self, instance: object) -> None:
        raise AttributeError(f"{self.name!r} cannot be deleted; assign a new value instead")


class PublisherType(type):
    """The Publisher's metaclass: option names in a class body or assigned on a class become class defaults."""

    _option_names: frozenset[str] = frozenset()
    _instances: weakref.WeakSet[Any]

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any) -> PublisherType:
        names = frozenset(namespace.get("_OPTION_ATTRIBUTES", ())) or next(
            (base._option_names for base in bases if isinstance(base, PublisherType)), frozenset()
        )
        for key in names:
            value = namespace.get(key, _MISSING)
            if not isinstance(value, OptionAttribute) and (value is not _MISSING or not _inherited(bases, key)):
                namespace[key] = OptionAttribute(key, value)
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        cls._option_names = names
        cls._instances = weakref.WeakSet()
        return cls

    def __setattr__(cls, name: str, value: Any) -> None:
        if name not in cls._option_names or isinstance(value, OptionAttribute):
            super().__setattr__(name, value)
            return
        previous = cls.__dict__.get(name)
        super().__setattr__(name, OptionAttribute(name, value))
        try:
            for instance in list(_live_instances(cls)):
                instance._class_option_changed(name)
        except BaseException:
            # A value some live publisher refuses: the class keeps its old default.
            if previous is None:
                super().__delattr__(name)
            else:
                super().__setattr__(name, previous)
            for instance in list(_live_instances(cls)):
                instance._class_option_changed(name)
            raise


def _inherited(bases: tuple[type, ...], name: str) -> bool:
    """Whether a base class already has the option attribute `name` (then a subclass inherits it)."""
    return any(
        isinstance(getattr(base, "__dict__", {}).get(name), OptionAttribute) for b in bases for base in b.__mro__
    )


def _live_instances(cls: type) -> list[Any]:
    """The live instances of `cls` and of its subclasses."""
    found: list[Any] = []
    pending = [cls]
    while pending:
        klass = pending.pop()
        found.extend(klass.__dict__["_instances"])
        pending.extend(klass.__subclasses__())
    return found


def register(instance: object) -> None:
    """Track a new instance so that a class-level change reaches it."""
    type(instance).__dict__["_instances"].add(instance)
