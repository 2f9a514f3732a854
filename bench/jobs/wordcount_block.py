"""Word count by ``str.split`` with the block map API: one ``Counter`` per input split.

``bench/wordcount.py --job block`` measures it; the words and counts are those
of ``bench/jobs/wordcount_split.py`` and of the plain-Python baseline.

    mapreduce run bench/jobs/wordcount_block.py --input CORPUS --output OUT --reducers 2
"""

from collections import Counter
from collections.abc import Iterable, Iterator


def map_split(records: Iterator[tuple[tuple[str, int], str]]) -> Iterable[tuple[str, int]]:
    counts: Counter[str] = Counter()
    for _key, line in records:
        counts.update(line.split())
    return counts.items()


def combine(word: str, counts: Iterable[int]) -> Iterator[int]:
    yield sum(counts)


def reduce(word: str, counts: Iterable[int]) -> Iterator[int]:
    yield sum(counts)
