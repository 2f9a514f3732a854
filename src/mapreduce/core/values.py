"""``@value``: ``@dataclass(frozen=True)`` at half its cost at import.

On Python 3.11 :func:`dataclasses.dataclass` compiles every method it makes from
source (``exec``), six for a frozen class: about 0.4 ms a class, 0.03 s for the
core's classes, most of it in every ``mapreduce run`` before its first task.
:func:`value` lets it compile only the three that depend on the class
(``__init__``, ``__setattr__``, ``__delattr__``) and gives the class shared
``__eq__``, ``__hash__`` and ``__repr__`` that do what dataclass's would: the same
fields compared, hashed and shown, in the same order, ``NotImplemented`` for an
instance of another class.  Everything else is a frozen dataclass's
(:func:`dataclasses.fields`, :func:`dataclasses.replace`, pickling, ``match``).
"""

from __future__ import annotations

import dataclasses
import operator
import reprlib
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")


def _key_of(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The tuple of the attributes ``names`` of an object (what dataclass compares)."""
    if len(names) >= 2:
        return operator.attrgetter(*names)
    if names:
        get = operator.attrgetter(names[0])
        return lambda obj: (get(obj),)
    return lambda obj: ()


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is self.__class__:
        key = self.__class__.__value_key__
        return key(self) == key(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(self.__class__.__value_hash_key__(self))


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__value_repr__)
    return f"{self.__class__.__qualname__}({shown})"


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def value(cls: type[T]) -> type[T]:
    """``@dataclass(frozen=True)``, made cheaper (see the module's docstring)."""
    made: Any = dataclasses.dataclass(frozen=True, eq=False, repr=False)(cls)
    fields = dataclasses.fields(made)
    compared = tuple(f.name for f in fields if f.compare)
    hashed = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
    made.__value_key__ = _key_of(compared)
    made.__value_hash_key__ = _key_of(hashed)
    made.__value_repr__ = tuple(f.name for f in fields if f.repr)
    made.__eq__ = _eq
    made.__hash__ = _hash
    made.__repr__ = _repr
    result: type[T] = made
    return result
