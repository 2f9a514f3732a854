"""Sorting, spilling and merging of intermediate data (an external sort).

A map task collects its output in memory, grouped by key.  When the buffer
outgrows the task's memory budget it is *spilled*: split by partition, sorted
by key bytes and written as one sorted run per partition.  At the end of the
task the spills of each partition are merged into the task's final run.  A
reduce task merges the runs of every map task the same way, lazily, holding
one block per run in memory, or, when they fit its memory budget together,
groups them in a table (:func:`grouped_values_in_memory`).

Where keys and values are strings the work is done a block at a time in C: a
map task with no combiner keeps its pairs in a list and sorts them with
Python's C sort on their ``str`` keys (:func:`sort_str_pairs`); runs of ``str``
keys and ``str`` values are merged a round of blocks at a time by the same sort
(:func:`merged_plain_records`), for a map task's spills and for a reduce that
passes its values through (:func:`passes_values_through`,
:func:`passthrough_lines`).

Merges are stable: for equal keys, values of an earlier run come first, so
the order of values a reducer sees depends only on map task numbers and
emission order, never on timing.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import itertools
import operator
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any

from mapreduce.dataflow.keys import STR_TAG, decode_key, encode_key
from mapreduce.dataflow.partition import HashPartitioner, Partitioner, RangeCuts
from mapreduce.dataflow.records import (
    KEYS_STR,
    VALUES_STR,
    Block,
    Group,
    read_blocks,
    read_run,
    write_plain_run,
    write_run,
)

CombineFn = Callable[[Any, Iterable[Any]], Iterable[Any]]
#: A partition's pairs sorted by their ``str`` keys: the keys, and the values in the same order.
StrPairs = tuple[list[str], list[Any]]

_first = itemgetter(0)
_second = itemgetter(1)


def partition_and_sort(
    buffer: dict[Any, list[Any]],
    partitioner: Partitioner,
    num_reducers: int,
    combine_fn: CombineFn | None,
) -> list[list[Group]]:
    """Split an in-memory buffer into R lists of groups sorted by key bytes.

    The combiner, if any, is applied to each key's values on the way; a key it
    leaves no value of is dropped (as :func:`combine_sorted_pairs` drops it).
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
            if not values:  # the combiner kept nothing of this key
                continue
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


def _str_position(keys: list[str], cut: bytes) -> int:
    """Where the serialised key ``cut`` falls in sorted ``str`` keys (bisect left): a
    string's UTF-8 sorts as its code points, so the strings compare as their bytes."""
    if cut[:1] == STR_TAG:
        return bisect.bisect_left(keys, cut[1:].decode("utf-8", "surrogatepass"))
    return 0 if cut < STR_TAG else len(keys)


def sort_str_pairs(
    pairs: list[tuple[Any, Any]],
    partitioner: Partitioner,
    num_reducers: int,
    *,
    checked: bool = False,
) -> list[StrPairs] | None:
    """Split a map task's pairs into R lists sorted by key, when every key is a ``str``.

    For a task with no combiner and the default or a range partitioner: the pairs
    need no dictionary of lists. ``pairs`` is sorted in place, stably (so the values
    of a key keep their emission order), by the C sort: ``str`` keys sort by code
    point, which is the order of their serialised bytes. Equal keys stay adjacent
    (:func:`~mapreduce.dataflow.records.write_str_run` groups them).

    ``checked``: the caller knows every key is a ``str`` (they are not looked at again).

    Returns:
        per partition, its keys and values; None when some key is not a ``str``
        (the caller groups such pairs in a dictionary).
    """
    if not checked and set(map(type, map(_first, pairs))) - {str}:
        return None
    pairs.sort(key=_first)
    keys = list(map(_first, pairs))
    values = list(map(_second, pairs))
    return [
        (keys[start:stop], values[start:stop])
        for start, stop in _str_bounds(keys, partitioner, num_reducers, [keys, values])
    ]


def combine_sorted_pairs(keys: list[str], values: list[Any], combine_fn: CombineFn) -> StrPairs:
    """Pairs sorted by key with the combiner run on the values of each key that has
    several (in their order); keys with one value are left as they are, without a
    Python call when no key has several."""
    if not any(map(operator.eq, keys, itertools.islice(keys, 1, None))):
        return keys, values
    out_keys: list[str] = []
    out_values: list[Any] = []
    start = 0
    for key, same in itertools.groupby(keys):
        stop = start + sum(1 for _ in same)
        if stop - start == 1:
            out_keys.append(key)
            out_values.append(values[start])
        else:
            combined = list(combine_fn(key, iter(values[start:stop])))
            out_keys += [key] * len(combined)
            out_values += combined
        start = stop
    return out_keys, out_values


def _str_bounds(
    keys: list[str], partitioner: Partitioner, num_reducers: int, columns: list[list[Any]]
) -> list[tuple[int, int]]:
    """Where each partition starts and stops in sorted ``str`` keys, as ``(start, stop)``
    for each of the R partitions.  For a hash partitioner the ``columns`` (the keys
    and what goes with them) are reordered in place, stably, partition by partition,
    so each partition's keys stay sorted."""
    if isinstance(partitioner, RangeCuts):
        bounds = [0, *(_str_position(keys, cut) for cut in partitioner.cuts)]
    else:
        assert isinstance(partitioner, HashPartitioner)
        # the partition of each key, as HashPartitioner computes it from its bytes
        tag_crc = zlib.crc32(STR_TAG)
        raws = map(str.encode, keys, itertools.repeat("utf-8"), itertools.repeat("surrogatepass"))
        parts = [crc % num_reducers for crc in map(zlib.crc32, raws, itertools.repeat(tag_crc))]
        order = sorted(range(len(parts)), key=parts.__getitem__)  # stable: keys stay sorted
        for column in columns:
            column[:] = map(column.__getitem__, order)
        parts = list(map(parts.__getitem__, order))
        bounds = [bisect.bisect_left(parts, part) for part in range(num_reducers)]
    bounds += [len(keys)] * (num_reducers + 1 - len(bounds))
    return list(itertools.pairwise(bounds))


def identity_reduce(key: Any, values: Iterable[Any]) -> Iterator[Any]:
    """A reduce that yields every value of its key as it is: ``reduce =
    mapreduce.identity_reduce`` in a job file.  Its reduce tasks write the merged
    runs without a Python call per record when keys and values are strings."""
    yield from values


def _passthrough(key, values):  # type: ignore[no-untyped-def]
    yield from values


def _documented_passthrough(key, values):  # type: ignore[no-untyped-def]
    """Documented."""
    yield from values


#: Flags that do not change what a function does (nested, the ``__future__`` ones).
_SAME_BEHAVIOUR_FLAGS = 0xFF & ~0x10


def passes_values_through(reduce_fn: Callable[..., Any]) -> bool:
    """Whether ``reduce_fn`` is :func:`identity_reduce` or a function of the same body:
    ``def reduce(key, values): yield from values``, with or without a docstring
    (bytecode and constants compared; the names of the two arguments do not matter)."""
    if reduce_fn is identity_reduce:
        return True
    code = getattr(reduce_fn, "__code__", None)
    if code is None or getattr(reduce_fn, "__defaults__", None) is not None:
        return False
    consts = code.co_consts
    if consts and type(consts[0]) is str:  # a docstring
        ref = _documented_passthrough.__code__
        consts = (ref.co_consts[0], *consts[1:])
    else:
        ref = _passthrough.__code__
    return bool(
        code.co_code == ref.co_code
        and consts == ref.co_consts
        and code.co_names == ref.co_names
        and code.co_flags & _SAME_BEHAVIOUR_FLAGS == ref.co_flags & _SAME_BEHAVIOUR_FLAGS
        and code.co_argcount == 2
        and code.co_kwonlyargcount == 0
        and code.co_posonlyargcount == 0
        and code.co_nlocals == 2
        and not code.co_freevars
        and not code.co_cellvars
    )


class NotPassthrough(Exception):
    """A run holds a block that :func:`passthrough_lines` cannot write as it is."""


def _plain_block(block: Block) -> tuple[list[bytes], list[bytes]]:
    """A block's keys (one per value, UTF-8) and values (UTF-8), for output as they are."""
    if block.key_kind != KEYS_STR or block.value_kind != VALUES_STR:
        raise NotPassthrough
    keys = block.raw_keys()
    counts = block.counts()
    if counts is not None:
        keys = list(itertools.chain.from_iterable(map(itertools.repeat, keys, counts)))
    return keys, block.raw_values()


def merged_plain_records(
    runs: Sequence[Iterable[Block]],
) -> Iterator[tuple[list[bytes], list[bytes]]]:
    """Merge runs of ``str`` keys and ``str`` values a round at a time, without a Python
    comparison per record: the keys (UTF-8, one per value) and values (UTF-8) of each
    round, in key order.

    Every run's current block reaches at least the smallest of their last keys (the
    bound); the records up to the bound of every run are concatenated in run order and
    sorted by the C sort, stably (so the values of a key keep run order, then their
    order within the run: a key is in one block of a run); the bound's run then moves
    to its next block.  A key is never in two rounds.

    Raises:
        NotPassthrough: a block's keys or values are not all ``str``.
    """
    blocks = [iter(run) for run in runs]
    keys_of: list[list[bytes]] = [[] for _ in blocks]
    values_of: list[list[bytes]] = [[] for _ in blocks]
    positions = [0] * len(blocks)

    def load(index: int) -> bool:
        """Move run ``index`` to its next block that has values; False at its end."""
        for block in blocks[index]:
            keys, values = _plain_block(block)
            if keys:
                keys_of[index], values_of[index], positions[index] = keys, values, 0
                return True
        return False

    active = [index for index in range(len(blocks)) if load(index)]  # in run order
    while active:
        bound = min(keys_of[index][-1] for index in active)
        out_keys: list[bytes] = []
        out_values: list[bytes] = []
        contributing = 0
        for index in active:
            keys, start = keys_of[index], positions[index]
            stop = bisect.bisect_right(keys, bound, start)
            if stop > start:
                out_keys += keys[start:stop]
                out_values += values_of[index][start:stop]
                contributing += 1
            positions[index] = stop
        if contributing > 1:
            order = sorted(range(len(out_keys)), key=out_keys.__getitem__)
            out_keys = list(map(out_keys.__getitem__, order))
            out_values = list(map(out_values.__getitem__, order))
        yield out_keys, out_values
        active = [
            index for index in active if positions[index] < len(keys_of[index]) or load(index)
        ]


def passthrough_lines(runs: Sequence[Iterable[Block]]) -> Iterator[tuple[bytes, int]]:
    """For a reduce that yields every value as it is: the output, ``key<TAB>value`` lines
    in key order, as UTF-8 text, a piece at a time (with its number of lines), from
    :func:`merged_plain_records`.

    Raises:
        NotPassthrough: a block's keys or values are not all ``str``, or the text is
            not valid UTF-8 (lone surrogates): the caller reduces the usual way.
    """
    for keys, values in merged_plain_records(runs):
        count = len(keys)
        pieces = [b"\t", b"\t", b"\t", b"\n"] * count  # key, TAB, value, newline
        pieces[0::4], pieces[2::4] = keys, values
        text = b"".join(pieces)
        if not text.isascii():
            try:
                text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise NotPassthrough from exc
        yield text, count


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
    runs: Sequence[Iterable[tuple[list[bytes], list[Any]]]],
) -> tuple[int, Iterator[tuple[bytes, Iterator[Any]]]]:
    """:func:`grouped_values` for runs that fit in memory together: faster than a k-way merge.

    Reads every run at once, as columns of key bytes (a key once per value) and
    values (:func:`~mapreduce.dataflow.records.read_pairs`), into a table of each
    key's values. Values of a key keep run order, then their order within a run,
    as in a merge.

    Returns:
        the number of values, and the groups in key order.
    """
    table: dict[bytes, list[Any]] = {}
    get = table.get
    total = 0
    for run in runs:
        for keys, values in run:
            total += len(values)
            for key_bytes, value in zip(keys, values, strict=True):
                found = get(key_bytes)
                if found is None:
                    table[key_bytes] = [value]
                else:
                    found.append(value)
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
    result: tuple[int, int] | None = None
    if combine_fn is None:  # runs of str keys and values: merged a block at a time
        with contextlib.suppress(NotPassthrough):  # else merged the usual way
            runs = merged_plain_records([read_blocks(p) for p in paths])
            result = write_plain_run(out_path, runs)
    if result is None:
        result = write_run(out_path, merge_groups([read_run(p) for p in paths], combine_fn))
    for path in paths:
        os.remove(path)
    return result
