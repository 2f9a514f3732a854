"""Word count by ``str.split``, the way a user would write it, with a combiner.

The job ``bench/wordcount.py`` measures.  A word is whatever ``line.split()``
returns, exactly as in the benchmark's plain-Python baseline
(``collections.Counter`` over ``line.split()``), so the two outputs must agree
count for count.  (``examples/wordcount.py`` lower-cases and uses a regex, so
it counts different words.)

    mapreduce run bench/jobs/wordcount_split.py --input CORPUS --output OUT \\
        --reducers 2 --local

Output: ``word<TAB>count`` lines, each part file sorted by word.
"""

from collections.abc import Iterable, Iterator


def map(key: tuple[str, int], line: str) -> Iterator[tuple[str, int]]:
    for word in line.split():
        yield word, 1


def combine(word: str, counts: Iterable[int]) -> Iterator[int]:
    yield sum(counts)


def reduce(word: str, counts: Iterable[int]) -> Iterator[int]:
    yield sum(counts)
