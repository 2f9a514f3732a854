"""Word count (the paper's section 2.1) with in-mapper combining: ``map_split``.

The same words and counts as ``examples/wordcount.py``, but the job defines
``map_split(records)`` instead of ``map(key, value)``: it is called once per
input split with an iterator over the split's ``(key, line)`` records and counts
the split's words in one ``Counter`` before anything is emitted, so a split
emits each distinct word once instead of once per occurrence (Spark's
``mapPartitions``; the "in-mapper combining" pattern).  What it gives up: a
record that makes it raise cannot be singled out, so ``--skip-bad-records``
skips the whole split.

    mapreduce run examples/wordcount_block.py --input ../shared/data/gutenberg \\
        --output /tmp/wordcount --reducers 4

Output: ``word<TAB>count`` lines, each part file sorted by word.
"""

import re
from collections import Counter
from collections.abc import Iterable, Iterator

WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def map_split(records: Iterator[tuple[tuple[str, int], str]]) -> Iterable[tuple[str, int]]:
    counts: Counter[str] = Counter()
    for _key, line in records:
        counts.update(WORD.findall(line.lower()))
    return counts.items()


def combine(word: str, counts: Iterable[int]) -> Iterator[int]:
    yield sum(counts)


def reduce(word: str, counts: Iterable[int]) -> Iterator[int]:
    yield sum(counts)
