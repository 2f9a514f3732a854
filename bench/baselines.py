#!/usr/bin/env python3
"""The plain-Python peers that the bench/ scripts measure mapreduce against.

The code a user would write by hand instead of a framework, standard library
only.  ``bench/wordcount.py``, ``bench/grep.py`` and ``bench/sort.py`` run it
as a child process, one command a run::

    python bench/baselines.py WORKLOAD MODE OUTPUT FILE... [--pattern REGEX] [--processes N]

============  =======  ================================================================
workload      mode     what it does
============  =======  ================================================================
wordcount     single   ``Counter.update(line.split())`` over every line of every file
                       (text mode); writes ``word<TAB>count`` lines
wordcount     pool     a ``multiprocessing.Pool(N)``: the files are cut into about 4 x N
                       byte ranges at line boundaries (one a file when there are that
                       many files of about the same size); a worker reads each range and
                       counts it into its own ``Counter`` as above; the parent merges the
                       Counters as they come and writes the lines
grep          single   ``re.search`` on every line as read (with its ``\\n``); writes the
                       matching lines in input order
grep          pool     the same byte ranges, a Pool worker searching each; the parent
                       writes the matching lines in input order
sort          single   every line of every file read as bytes (``readlines``), then
                       ``list.sort()``, written out: a byte-wise sort of whole lines
sort          pool     the input cut into N contiguous parts of about equal bytes (the
                       same ranges, grouped); each Pool worker reads and sorts one part
                       and returns it; the parent ``heapq.merge``-s the sorted parts
============  =======  ================================================================

A line belongs to the range in which its first byte is, as in mapreduce's
splits, so every line is read exactly once.  ``multiprocessing`` is imported
only by the pool modes, so the single-core ones do not pay for it.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

#: ``(path, start, end)``: the lines of ``path`` whose first byte is in ``[start, end)``.
Range = tuple[str, int, int]

#: Byte ranges per Pool process (wordcount, grep), so that the work balances.
PIECES_PER_PROCESS = 4


# --------------------------------------------------------------------------- byte ranges


def cut(paths: Sequence[str], pieces: int) -> list[Range]:
    """About ``pieces`` byte ranges over ``paths``, in input order.

    A file of ``n`` bytes out of ``total`` is cut into ``round(pieces * n /
    total)`` (at least 1) ranges of equal size, so 8 files of about the same
    size make 8 whole-file ranges for 8 pieces, not 8 and a few slivers.
    """
    sizes = [os.path.getsize(path) for path in paths]
    total = max(1, sum(sizes))
    ranges: list[Range] = []
    for path, size in zip(paths, sizes, strict=True):
        k = max(1, min(size, round(pieces * size / total)))
        ranges += [(path, size * i // k, size * (i + 1) // k) for i in range(k)]
    return ranges


def group(ranges: Sequence[Range], parts: int) -> list[list[Range]]:
    """``ranges`` in ``parts`` contiguous groups of about equal bytes (some may be empty)."""
    total = max(1, sum(end - start for _path, start, end in ranges))
    groups: list[list[Range]] = [[] for _ in range(parts)]
    done = 0
    for r in ranges:
        size = r[2] - r[1]
        groups[min(parts - 1, int((done + size / 2) * parts / total))].append(r)
        done += size
    return groups


def read_range(r: Range) -> bytes:
    """The bytes of the whole lines that start in ``r``."""
    path, start, end = r
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            f.readline()  # the line that starts before ``start`` is the previous range's
        begin = f.tell()
        if begin >= end:
            return b""
        f.seek(end - 1)
        f.readline()  # the line that starts before ``end`` is ours, to its end
        stop = f.tell()
        f.seek(begin)
        return f.read(stop - begin)


def range_lines(r: Range) -> Iterator[str]:
    """The lines that start in ``r``, decoded, each with its ``\\n``.

    A whole file is read the way the single-core baselines read it (text mode).
    """
    path, start, end = r
    if start == 0 and end >= os.path.getsize(path):
        with open(path, encoding="utf-8") as f:
            yield from f
    else:
        yield from io.StringIO(read_range(r).decode("utf-8"))


# --------------------------------------------------------------------------- word count


def write_counts(output: str, counts: Counter[str]) -> None:
    with open(output, "w", encoding="utf-8") as out:
        for word, count in counts.items():
            out.write(f"{word}\t{count}\n")


def wordcount_single(output: str, files: Sequence[str]) -> None:
    counts: Counter[str] = Counter()
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                counts.update(line.split())
    write_counts(output, counts)


def count_range(r: Range) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in range_lines(r):
        counts.update(line.split())
    return counts


def wordcount_pool(output: str, files: Sequence[str], processes: int) -> None:
    import multiprocessing

    counts: Counter[str] = Counter()
    with multiprocessing.Pool(processes) as pool:
        ranges = cut(files, PIECES_PER_PROCESS * processes)
        for part in pool.imap_unordered(count_range, ranges):
            counts.update(part)
    write_counts(output, counts)


# --------------------------------------------------------------------------- grep


def write_lines(output: str, lines: Iterable[str]) -> None:
    with open(output, "w", encoding="utf-8") as out:
        for line in lines:
            out.write(line if line.endswith("\n") else line + "\n")


def grep_single(output: str, files: Sequence[str], pattern: str) -> None:
    search = re.compile(pattern).search
    with open(output, "w", encoding="utf-8") as out:
        for path in files:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if search(line):
                        out.write(line if line.endswith("\n") else line + "\n")


def grep_range(task: tuple[str, Range]) -> list[str]:
    pattern, r = task
    search = re.compile(pattern).search
    return [line for line in range_lines(r) if search(line)]


def grep_pool(output: str, files: Sequence[str], pattern: str, processes: int) -> None:
    import multiprocessing

    re.compile(pattern)  # a bad pattern fails here, not in every worker
    tasks = [(pattern, r) for r in cut(files, PIECES_PER_PROCESS * processes)]
    with multiprocessing.Pool(processes) as pool:
        write_lines(output, (line for lines in pool.imap(grep_range, tasks) for line in lines))


# --------------------------------------------------------------------------- sort


def sort_single(output: str, files: Sequence[str]) -> None:
    lines: list[bytes] = []
    for path in files:
        with open(path, "rb") as f:
            lines += f.readlines()
    lines.sort()
    with open(output, "wb") as out:
        out.writelines(lines)


def sort_part(ranges: Sequence[Range]) -> list[bytes]:
    lines: list[bytes] = []
    for r in ranges:
        lines += io.BytesIO(read_range(r)).readlines()
    lines.sort()
    return lines


def sort_pool(output: str, files: Sequence[str], processes: int) -> None:
    import heapq
    import multiprocessing

    parts = group(cut(files, PIECES_PER_PROCESS * processes), processes)
    with multiprocessing.Pool(processes) as pool:
        runs = pool.map(sort_part, parts, chunksize=1)
    with open(output, "wb") as out:
        out.writelines(heapq.merge(*runs))


# --------------------------------------------------------------------------- command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["wordcount", "grep", "sort"])
    parser.add_argument("mode", choices=["single", "pool"])
    parser.add_argument("output")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--pattern", help="grep: the regular expression (re syntax)")
    parser.add_argument("--processes", type=int, default=2, help="pool: processes (2)")
    args = parser.parse_args(argv)
    if args.workload == "grep" and args.pattern is None:
        parser.error("grep needs --pattern")
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    pool = args.mode == "pool"
    if args.workload == "wordcount":
        if pool:
            wordcount_pool(args.output, args.files, args.processes)
        else:
            wordcount_single(args.output, args.files)
    elif args.workload == "grep":
        if pool:
            grep_pool(args.output, args.files, args.pattern, args.processes)
        else:
            grep_single(args.output, args.files, args.pattern)
    elif pool:
        sort_pool(args.output, args.files, args.processes)
    else:
        sort_single(args.output, args.files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
