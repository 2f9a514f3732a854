"""Which reduce partition an intermediate key goes to.

The default is a stable hash of the key's serialised bytes modulo R (CRC-32,
never Python's per-process salted ``hash()``), so a key lands in the same
partition in every process, run and machine.  :class:`RangePartitioner`
instead cuts the key space at boundaries sampled from the input, so that the
partitions, concatenated in order, are globally sorted.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Callable, Sequence
from typing import Any

#: ``(key, key_bytes) -> partition``: the form every partitioner takes inside a task.
Partitioner = Callable[[Any, bytes], int]


def partition_of(key_bytes: bytes, num_reducers: int) -> int:
    """The default partition of a key, from its serialised bytes."""
    return zlib.crc32(key_bytes) % num_reducers


class RangePartitioner:
    """Total-order partitioning from a sample of the intermediate keys.

    Put ``partition = mapreduce.RangePartitioner()`` in a job file.  Before the
    map phase the runner reads up to ``sample_size`` input records, spread evenly
    over the input splits, runs ``map`` on them, and picks R-1 boundary keys at
    even quantiles of the sampled keys.  Key ``k`` goes to the number of
    boundaries ``<= k``, so every key of partition ``i`` sorts before every key of
    partition ``i+1``, and ``cat part-*`` is globally sorted (TeraSort).

    Args:
        sample_size: how many input records to sample in all.
    """

    def __init__(self, sample_size: int = 10_000) -> None:
        if sample_size < 1:
            raise ValueError("sample_size must be at least 1")
        self.sample_size = sample_size

    def __repr__(self) -> str:
        return f"RangePartitioner(sample_size={self.sample_size})"


def boundaries_from_sample(sampled_keys: Sequence[bytes], num_reducers: int) -> list[bytes]:
    """R-1 boundaries (serialised keys) at even quantiles of ``sampled_keys``."""
    ordered = sorted(sampled_keys)
    if not ordered or num_reducers <= 1:
        return []
    return [
        ordered[min(len(ordered) - 1, (i * len(ordered)) // num_reducers)]
        for i in range(1, num_reducers)
    ]


def make_partitioner(
    num_reducers: int,
    partition_fn: Callable[[Any, int], int] | None = None,
    boundaries: Sequence[bytes] | None = None,
) -> Partitioner:
    """Build the partitioner a task uses.

    Args:
        num_reducers: R.
        partition_fn: the job's own ``partition(key, R)``, if any.
        boundaries: range boundaries (from :func:`boundaries_from_sample`), if any.
    """
    if boundaries is not None:
        return RangeCuts(boundaries)
    if partition_fn is not None:
        user_fn = partition_fn

        def by_user(key: Any, key_bytes: bytes) -> int:
            part = user_fn(key, num_reducers)
            if type(part) is not int or not 0 <= part < num_reducers:
                raise ValueError(
                    f"partition({key!r}, {num_reducers}) returned {part!r}; "
                    f"it must be an int in 0..{num_reducers - 1}"
                )
            return part

        return by_user

    return HashPartitioner(num_reducers)


class HashPartitioner:
    """The default partitioner: :func:`partition_of` of the key bytes."""

    def __init__(self, num_reducers: int) -> None:
        self.num_reducers = num_reducers

    def __call__(self, key: Any, key_bytes: bytes) -> int:
        return zlib.crc32(key_bytes) % self.num_reducers


class RangeCuts:
    """The partitioner of a :class:`RangePartitioner` job: key ``k`` goes to the
    number of sampled cuts ``<= k`` (serialised keys compared as bytes)."""

    def __init__(self, cuts: Sequence[bytes]) -> None:
        self.cuts = list(cuts)

    def __call__(self, key: Any, key_bytes: bytes) -> int:
        return bisect.bisect_right(self.cuts, key_bytes)
