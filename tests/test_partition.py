"""Partitioning: stable across processes and hash seeds; range partitioner boundaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mapreduce.dataflow.keys import encode_key
from mapreduce.dataflow.partition import boundaries_from_sample, make_partitioner, partition_of

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
