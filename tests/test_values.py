"""``@value`` classes behave as ``@dataclass(frozen=True)`` ones do."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field

import pytest

from mapreduce.core.values import value


@value
class Point:
    x: int
    y: int = 0
    label: str = field(default="", compare=False)
    tags: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class PointDC:
    x: int
    y: int = 0
    label: str = field(default="", compare=False)
    tags: tuple[str, ...] = field(default=(), repr=False)


@value
class One:
    x: int


@value
class Empty:
    pass


def test_value_classes_compare_hash_and_show_as_frozen_dataclasses_do() -> None:
    for a, b in [
        (Point(1, 2, "a", ("t",)), PointDC(1, 2, "a", ("t",))),
        (Point(1), PointDC(1)),
    ]:
        assert repr(a).replace("Point", "PointDC", 1) == repr(b)
        assert hash(a) == hash(b)
    assert Point(1, 2, "a") == Point(1, 2, "b")  # label is not compared
    assert Point(1, 2) != Point(1, 3)
    assert Point(1, 2) != PointDC(1, 2)  # another class: NotImplemented both ways
    assert Point(1, 2).__eq__((1, 2)) is NotImplemented
    assert One(3) == One(3) and hash(One(3)) == hash((3,)) and One(3) != One(4)
    assert Empty() == Empty() and hash(Empty()) == hash(()) and repr(Empty()) == "Empty()"
    assert len({Point(1, 2, "a"), Point(1, 2, "b"), Point(2, 2)}) == 2


def test_value_classes_are_frozen_dataclasses() -> None:
    p = Point(1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.y  # type: ignore[misc]
    assert dataclasses.is_dataclass(p)
    assert [f.name for f in dataclasses.fields(p)] == ["x", "y", "label", "tags"]
    assert dataclasses.replace(p, y=5) == Point(1, 5)
    assert pickle.loads(pickle.dumps(p)) == p
    match p:
        case Point(x, y):
            assert (x, y) == (1, 2)
