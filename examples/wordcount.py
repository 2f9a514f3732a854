"""Word count, the paper's first example (section 2.1).

Counts how often each word occurs in the input.  A word is a maximal run of
letters, digits and apostrophes, lower-cased, so ``The`` and ``the,`` count
as the same word.

    mapreduce run examples/wordcount.py --input ../shared/data/gutenberg \\
        --output /tmp/wordcount --reducers 4 --local

Output: ``word<TAB>count`` lines, each part file sorted by word.
"""

import re
from collections.abc import Iterable, Iterator

WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def map(key: tuple[str, int], line: str) -> Iterator[tuple[str, int]]:
    for word in WORD.findall(line.lower()):
        yield word, 1


def combine(word: str, counts: Iterable[int]) -> Iterator[int]:
    yield sum(counts)


def reduce(word: str, counts: Iterable[int]) -> Iterator[int]:
    yield sum(counts)
