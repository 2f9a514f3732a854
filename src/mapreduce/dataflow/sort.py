"""Sorting, spilling and merging of intermediate data (an external sort).

A map task collects its output in memory, grouped by key.  When the buffer
outgrows the task's memory budget it is *spilled*: split by partition, sorted
by key bytes and written as one sorted run per partition.  At the end of the
task the spills of each partition are merged into the task's final run.  A
reduce task merges the runs of every map task the same way, lazily, holding
one block per run in memory, or, when they fit its memory budget together,
groups them in a table (:func:`grouped_values_in_memory`).

Merges are stable: for equal keys, values of an earlier run come first, so
the order of values a reducer sees depends only on map task numbers and
emission order, never on timing.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any

from mapreduce.dataflow.keys import STR_TAG, decode_key, encode_key
from mapreduce.dataflow.partition import HashPartitioner, Partitioner, RangeCuts
from mapreduce.dataflow.records import Group, read_run, write_run

CombineFn = Callable[[Any, Iterable[Any]], Iterable[Any]]

_first = itemgetter(0)


def partition_and_sort(
    buffer: dict[Any, list[Any]],
    partitioner: Partitioner,
    num_reducers: int,
    combine_fn: CombineFn | None,
) -> list[list[Group]]:
    """Split an in-memory buffer into R lists of groups sorted by key bytes.

    The combiner, if any, is applied to each key's values on the way.
    """
    by_range = isinstance(partitioner, RangeCuts)
    parts: list[list[Group]] = [[] for _ in range(1 if by_range else num_reducers)]
    by_hash = isinstance(partitioner, HashPartitioner)
    crc32 = zlib.crc32
    for key, values in buffer.items():
        # str keys, the common case, are encoded inline (see keys.encode_key)
        if type(key) is str:
            key_bytes = STR_TAG + key.encode("utf-8", "surrogatepass")
        else:
            key_bytes = encode_key(key)
        if combine_fn is not None and len(values) > 1:
            values = list(combine_fn(key, iter(values)))
        if by_range:  # cut after sorting, below
            part = 0
        elif by_hash:
            part = crc32(key_bytes) % num_reducers
        else:
            part = partitioner(key, key_bytes)
        parts[part].append((key_bytes, values))
    for groups in parts:
        groups.sort(key=_first)
    if by_range:  # in key order, partition i ends where the keys reach cut i
        assert isinstance(partitioner, RangeCuts)
        (groups,) = parts
        ordered = list(map(_first, groups))
        bounds = [0, *(bisect.bisect_left(ordered, cut) for cut in partitioner.cuts)]
        bounds += [len(groups)] * (num_reducers + 1 - len(bounds))
        parts = [groups[start:stop] for start, stop in itertools.pairwise(bounds)]
    return parts


def merge_groups(
    runs: Sequence[Iterable[Group]], combine_fn: CombineFn | None = None
) -> Iterator[Group]:
    """Merge sorted runs into one sorted run with each key once.

    Values of equal keys are concatenated in run order, then combined if
    ``combine_fn`` is given.
    """
    if len(runs) == 1:
        yield from runs[0]
        return
    merged = heapq.merge(*runs, key=_first)
    for key_bytes, groups in itertools.groupby(merged, key=_first):
        values: list[Any] = []
        for _kb, vals in groups:
            values.extend(vals)
        if combine_fn is not None and len(values) > 1:
            values = list(combine_fn(decode_key(key_bytes), iter(values)))
        yield key_bytes, values


def grouped_values(runs: Sequence[Iterable[Group]]) -> Iterator[tuple[bytes, Iterator[Any]]]:
    """For a reducer: ``(key_bytes, values)`` in key order, ``values`` a lazy iterator.

    The iterator of one key must be consumed (or dropped) before the next key is
    taken, as with :func:`itertools.groupby`.
    """
    if not runs:
        return
    merged: Iterable[Group] = runs[0] if len(runs) == 1 else heapq.merge(*runs, key=_first)
    for key_bytes, groups in itertools.groupby(merged, key=_first):
        yield key_bytes, itertools.chain.from_iterable(vals for _kb, vals in groups)


def grouped_values_in_memory(
    runs: Sequence[Iterable[Group]],
) -> tuple[int, Iterator[tuple[bytes, Iterator[Any]]]]:
    """:func:`grouped_values` for runs that fit in memory together: faster than a k-way merge.

    Reads every run at once. Values of a key keep run order, then their order
    within a run, as in a merge.

    Returns:
        the number of values, and the groups in key order.
    """
    table: dict[bytes, list[Any]] = {}
    get = table.get
    for run in runs:
        for key_bytes, values in run:
            found = get(key_bytes)
            if found is None:
                table[key_bytes] = values
            else:
                found.extend(values)
    total = sum(map(len, table.values()))
    in_key_order = sorted(table)
    # each value list is let go of as soon as its key's turn is over
    return total, zip(in_key_order, map(iter, map(table.pop, in_key_order)), strict=True)


def merge_run_files(
    paths: Sequence[str], out_path: str, combine_fn: CombineFn | None
) -> tuple[int, int]:
    """Merge the run files ``paths`` into ``out_path`` and delete them.

    Returns:
        ``(bytes, records)`` of the merged run.
    """
    result = write_run(out_path, merge_groups([read_run(p) for p in paths], combine_fn))
    for path in paths:
        os.remove(path)
    return result
