"""Partitioning: stable across processes and hash seeds; range partitioner boundaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapreduce.dataflow.keys import encode_key
from mapreduce.dataflow.partition import boundaries_from_sample, make_partitioner, partition_of
from mapreduce.dataflow.sort import combine_sorted_pairs, partition_and_sort

KEYS = ["the", "a", "zebra", "", "é", ("tuple", 3), 42, -7, 2.5, None, b"raw"]

_CHILD = """
import json, sys
from mapreduce.dataflow.keys import encode_key
from mapreduce.dataflow.partition import partition_of
keys = [tuple(k) if isinstance(k, list) else k for k in json.loads(sys.argv[1])]
keys[-1] = b"raw"
print(json.dumps([partition_of(encode_key(k), 7) for k in keys]))
"""


def test_partition_is_the_same_in_other_processes_and_hash_seeds() -> None:
    here = [partition_of(encode_key(k), 7) for k in KEYS]
    serialisable = [k if not isinstance(k, bytes) else None for k in KEYS]
    for seed in ["0", "1", "12345"]:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(serialisable)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        assert json.loads(out) == here


def test_default_partitions_spread_over_all_reducers() -> None:
    parts = {partition_of(encode_key(f"word{i}"), 8) for i in range(1000)}
    assert parts == set(range(8))


def test_range_partitioner_orders_partitions() -> None:
    sample = [encode_key(f"{i:04d}") for i in range(1000)]
    cuts = boundaries_from_sample(sample, 4)
    assert len(cuts) == 3
    partition = make_partitioner(4, boundaries=cuts)
    keys = [f"{i:04d}" for i in range(0, 1000, 7)]
    parts = [partition(k, encode_key(k)) for k in keys]
    assert parts == sorted(parts)
    assert set(parts) == {0, 1, 2, 3}


def test_user_partition_out_of_range_is_reported() -> None:
    partition = make_partitioner(3, partition_fn=lambda key, r: 5)
    with pytest.raises(ValueError, match=r"must be an int in 0\.\.2"):
        partition("k", encode_key("k"))


@settings(max_examples=200)
@given(
    words=st.lists(st.text(max_size=4), max_size=60),
    cuts=st.lists(st.text(max_size=3), max_size=5),
    extra_reducers=st.integers(min_value=0, max_value=2),
)
def test_a_map_buffer_is_cut_by_range_as_its_partitioner_says(
    words: list[str], cuts: list[str], extra_reducers: int
) -> None:
    """Sorting the whole buffer and cutting it at the boundaries = partitioning key by key."""
    boundaries = sorted(encode_key(c) for c in cuts)
    reducers = len(boundaries) + 1 + extra_reducers
    partition = make_partitioner(reducers, boundaries=boundaries)
    buffer = {word: [i] for i, word in enumerate(words)}
    parts = partition_and_sort(buffer, partition, reducers, None)
    assert len(parts) == reducers
    for number, groups in enumerate(parts):
        assert [kb for kb, _v in groups] == sorted(kb for kb, _v in groups)
        for key_bytes, values in groups:
            assert partition(None, key_bytes) == number
            assert buffer[words[values[0]]] == values
    assert sum(map(len, parts)) == len(buffer)


def _sum_twice(key: str, values: Iterable[int]) -> Iterator[int]:
    """A combiner that gives two values, or none for keys that start with "x"."""
    total = sum(values)
    if not key.startswith("x"):
        yield from (total, -total)


@settings(max_examples=200)
@given(
    pairs=st.lists(st.tuples(st.sampled_from(["a", "b", "xa", "é"]), st.integers(-3, 3))),
    combiner=st.sampled_from([_sum_twice, lambda key, values: iter(list(values))]),
)
def test_sorted_pairs_are_combined_key_by_key(
    pairs: list[tuple[str, int]], combiner: Callable[[str, Iterable[int]], Iterator[int]]
) -> None:
    """combine_sorted_pairs (map_split's buffer) = the combiner over each key's values."""
    pairs.sort(key=lambda pair: pair[0])
    keys, values = combine_sorted_pairs([k for k, _ in pairs], [v for _, v in pairs], combiner)
    expected = []
    for key in sorted({k for k, _ in pairs}):
        group = [v for k, v in pairs if k == key]
        combined = group if len(group) == 1 else list(combiner(key, iter(group)))
        expected += [(key, v) for v in combined]
    assert list(zip(keys, values, strict=True)) == expected


def test_a_key_the_combiner_leaves_no_value_of_is_dropped() -> None:
    """partition_and_sort, as combine_sorted_pairs: no empty group reaches a reducer."""
    buffer: dict[object, list[int]] = {"xa": [1, 2], "b": [3, 4], 7: [5]}
    (groups,) = partition_and_sort(buffer, make_partitioner(1), 1, _sum_twice)
    assert groups == sorted([(encode_key("b"), [7, -7]), (encode_key(7), [5])])
