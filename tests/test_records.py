"""The intermediate run format: round trip, block cutting, and corruption detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapreduce.core.spec import JobSpec
from mapreduce.dataflow.records import CorruptRunError, read_run, verify_run, write_run
from mapreduce.dataflow.runner import TaskError, run_reduce_task
from tests.conftest import JOBS


def test_round_trip_from_lists_and_iterators(tmp_path: Path) -> None:
    groups = [(f"k{i:05d}".encode(), [i] * (1 + i % 3)) for i in range(10_000)]
    groups.append((b"big", list(range(200_000))))  # one key larger than a block's budget
    for name, source in [("list", groups), ("iter", iter(groups))]:
        path = tmp_path / f"{name}.run"
        size, records = write_run(str(path), source)
        assert size == path.stat().st_size
        assert records == sum(len(v) for _k, v in groups)
        assert list(read_run(str(path))) == groups
        verify_run(str(path))


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic"])
def test_damage_is_detected(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "run"
    write_run(str(path), [(f"k{i}".encode(), [i]) for i in range(5000)])
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        del data[-10:]
    else:
        data[0:3] = b"XXX"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRunError):
        verify_run(str(path))
    with pytest.raises(CorruptRunError):
        list(read_run(str(path)))


def test_a_reduce_over_a_corrupt_run_is_a_task_error_not_a_record_error(tmp_path: Path) -> None:
    run = tmp_path / "part.run"
    write_run(str(run), [(b"Aa", [1]), (b"Ab", [2])])
    run.write_bytes(run.read_bytes()[:-5])
    plan = JobSpec("job-x", "wordcount_plain.py")
    with pytest.raises(TaskError, match="truncated"):
        run_reduce_task(
            plan, str(JOBS / "wordcount_plain.py"), 0, [str(run)], str(tmp_path / "out")
        )


def test_shared_and_self_containing_values_round_trip(tmp_path: Path) -> None:
    """Blocks are pickled without the memo when they can be; values that need it still work."""
    shared = {"a": [1, 2]}
    cyclic: list[object] = [1]
    cyclic.append(cyclic)
    groups = [(b"\x05k1", [shared, shared, (1, 2.5, None, b"x")]), (b"\x05k2", [cyclic])]
    path = tmp_path / "values.run"
    for write in (lambda: write_run(str(path), groups), lambda: write_run(str(path), iter(groups))):
        write()
        (k1, first), (k2, second) = list(read_run(str(path)))
        assert (k1, k2) == (b"\x05k1", b"\x05k2")
        assert first == [shared, shared, (1, 2.5, None, b"x")]
        assert second[0][0] == 1 and second[0][1] is second[0]
