"""Distributed grep (the paper's section 2.3): the lines that match a regular expression.

Input: text files, read as lines.  The pattern is a Python regular expression
(:mod:`re` syntax) given as ``--param pattern=REGEX``; a line matches when
``re.search`` finds the pattern anywhere in it.  Without the parameter, or with
an invalid expression, the job fails on its first record with a message that
names ``--param pattern``.

    mapreduce run examples/grep.py --input ../shared/data/gutenberg \\
        --output /tmp/grep --param 'pattern=\\bWatson\\b' --reducers 2 --local

Output: one line per matching input line, ``["PATH", OFFSET]<TAB>LINE``, where
``["PATH", OFFSET]`` is the input record's key written as JSON: the input
file's absolute path and the byte offset of the line's first byte in that
file, and ``LINE`` is the line's text without its line ending.  Map emits the
matching lines under that key and reduce is the identity.  Keys sort by path,
then numerically by offset, and the job partitions them by range (boundaries
sampled from the matches among the first lines of every split), so
``cat OUTPUT/part-*`` lists every match sorted by path, then offset, as
``grep -b`` over the files in name order would; a pattern that matches few
lines may leave some part files empty.
"""

import functools
import re
from collections.abc import Iterable, Iterator

import mapreduce

# Total order over (path, offset): concatenating the part files gives input order.
partition = mapreduce.RangePartitioner()


@functools.lru_cache(maxsize=8)
def compiled(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(
            f"--param pattern={pattern!r} is not a valid regular expression: {exc}"
        ) from None


def pattern() -> re.Pattern[str]:
    """The compiled ``--param pattern``.

    Raises:
        ValueError: the parameter is missing or is not a valid regular expression.
    """
    text = mapreduce.params().get("pattern")
    if text is None:
        raise ValueError("grep needs a pattern: add --param pattern=REGEX")
    return compiled(text)


_search = re.compile("").search  # replaced by setup() before any record


def setup() -> None:
    """Check ``--param pattern`` when the job is planned, and compile it before every task."""
    global _search
    _search = pattern().search


def map(key: tuple[str, int], line: str) -> Iterator[tuple[tuple[str, int], str]]:
    if _search(line):
        yield key, line


def reduce(key: tuple[str, int], lines: Iterable[str]) -> Iterator[str]:
    yield from lines
