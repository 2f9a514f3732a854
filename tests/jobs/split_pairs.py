"""Word count with ``map_split`` emitting a pair per word (no combining in the mapper):
the combiner then runs when the map task sorts its pairs (tests/test_map_split.py)."""

import re
from collections.abc import Iterable, Iterator

WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def map_split(records: Iterator[tuple[tuple[str, int], str]]) -> Iterator[tuple[str, int]]:
    for _key, line in records:
        for word in WORD.findall(line.lower()):
            yield word, 1


def combine(word: str, counts: Iterable[int]) -> Iterator[int]:
    yield sum(counts)


def reduce(word: str, counts: Iterable[int]) -> Iterator[int]:
    yield sum(counts)
