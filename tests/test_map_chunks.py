"""The map loop hands records to ``map`` a chunk at a time: results, failures, the collector."""

from __future__ import annotations

import gc
import textwrap
import time
from pathlib import Path

import pytest

from mapreduce.core.spec import JobSpec
from mapreduce.dataflow.records import read_run
from mapreduce.dataflow.runner import (
    RecordFailure,
    TaskError,
    run_map_task,
    run_reduce_task,
)
from mapreduce.dataflow.splits import InputSplit


def _job(tmp_path: Path, map_source: str, name: str = "job.py") -> str:
    """A job file of ``map_source`` (and a summing ``reduce`` unless it has its own)."""
    source = textwrap.dedent(map_source)
    if "def reduce(" not in source:
        source += "\n\ndef reduce(key, values):\n    yield sum(values)\n"
    path = tmp_path / name
    path.write_text(source, encoding="utf-8")
    return str(path)


def _run(tmp_path: Path, job: str, lines: list[str]) -> tuple[dict[str, list[int]], int]:
    data = tmp_path / "in.txt"
    data.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    plan = JobSpec("job-1", "job.py", use_combiner=False)
    result = run_map_task(plan, job, 0, InputSplit(str(data), 0, data.stat().st_size), str(work))
    groups = dict(read_run(result.outputs[0]))
    return {key.decode()[1:]: values for key, values in groups.items()}, result.input_records


def test_plain_functions_returning_none_or_lists_and_generators_mix(tmp_path: Path) -> None:
    job = _job(
        tmp_path,
        """
        def map(key, line):
            if line.startswith("#"):
                return None
            if line.startswith("!"):
                return []
            return [(word, 1) for word in line.split()]
        """,
    )
    lines = ["# comment", "a b", "!", "b c"] * 1500  # several chunks
    groups, records = _run(tmp_path, job, lines)
    assert records == 6000
    assert {k: len(v) for k, v in groups.items()} == {"a": 1500, "b": 3000, "c": 1500}


def test_the_failing_record_of_a_chunk_is_named(tmp_path: Path) -> None:
    job = _job(
        tmp_path,
        """
        def map(key, line):
            for word in line.split():
                if word == "boom":
                    raise ValueError("boom seen")
                yield word, 1
        """,
    )
    lines = ["x y"] * 700 + ["a boom"] + ["z"] * 700
    with pytest.raises(RecordFailure) as failure:
        _run(tmp_path, job, lines)
    assert failure.value.record_id == 700 * 4
    assert failure.value.label.endswith(f"in.txt@{700 * 4}")
    assert failure.value.reason == "ValueError: boom seen"
    assert "boom seen" in failure.value.traceback


def test_an_unhashable_key_is_blamed_on_its_record(tmp_path: Path) -> None:
    job = _job(
        tmp_path,
        """
        def map(key, line):
            yield ([line] if line == "list" else line), 1
        """,
    )
    with pytest.raises(RecordFailure) as failure:
        _run(tmp_path, job, ["a", "bb", "list", "c"])
    assert failure.value.record_id == 5
    assert "unhashable" in failure.value.reason


def test_a_failure_that_does_not_happen_again_fails_the_attempt(tmp_path: Path) -> None:
    job = _job(
        tmp_path,
        """
        failed = False

        def map(key, line):
            global failed
            if line == "flaky" and not failed:
                failed = True
                raise RuntimeError("only once")
            yield line, 1
        """,
    )
    with pytest.raises(TaskError) as error:
        _run(tmp_path, job, ["a", "flaky", "b"])
    assert "not when run again" in error.value.reason
    assert "RuntimeError: only once" in error.value.reason


def test_the_collector_is_restored_after_a_task(tmp_path: Path) -> None:
    job = _job(tmp_path, "def map(key, line):\n    raise KeyError(line)\n")
    assert gc.isenabled()
    with pytest.raises(RecordFailure):
        _run(tmp_path, job, ["a"])
    assert gc.isenabled()
    _run(tmp_path, _job(tmp_path, "def map(key, line):\n    yield line, 1\n", "ok.py"), ["a"])
    assert gc.isenabled()


def test_cycles_made_by_map_are_collected_during_the_task(tmp_path: Path) -> None:
    job = _job(
        tmp_path,
        """
        import gc
        import weakref

        class Node:
            pass

        alive = []

        def map(key, line):
            nodes = [Node() for _ in range(4)]
            for node in nodes:
                node.ring = nodes  # a cycle: only the collector frees it
            alive.append(weakref.ref(nodes[0]))
            yield "made", 1
            if line == "last":
                yield "freed", sum(ref() is None for ref in alive)
        """,
    )
    groups, records = _run(tmp_path, job, ["x"] * 150_000 + ["last"])
    assert len(groups["made"]) == records
    assert groups["freed"][0] > 100_000


def test_slow_user_code_still_reports_progress_often(tmp_path: Path) -> None:
    """Chunks shrink to what takes about half a second, so a task timeout sees progress."""
    job = _job(
        tmp_path,
        """
        import time

        def map(key, line):
            time.sleep(0.004)
            yield line, 1

        def reduce(key, values):
            time.sleep(0.004)
            yield sum(values)
        """,
        "slow.py",
    )
    data = tmp_path / "in.txt"
    data.write_text("".join(f"w{i}\n" for i in range(250)))
    work = tmp_path / "work"
    work.mkdir()
    plan = JobSpec("job-1", "job.py")
    stamps: list[float] = []
    split = InputSplit(str(data), 0, data.stat().st_size)
    result = run_map_task(
        plan, job, 0, split, str(work), progress=lambda: stamps.append(time.monotonic())
    )
    # 250 records of at least 4 ms each take a second or more, however busy the machine: chunks
    # of about half a second make several reports (a fixed chunk of many records would make
    # one).  No gap between reports is timed: a loaded machine may stall the process anywhere.
    assert result.input_records == 250 and len(stamps) >= 4
    stamps.clear()
    out = tmp_path / "out.txt"
    run_reduce_task(
        plan,
        job,
        0,
        list(result.outputs),
        str(out),
        progress=lambda: stamps.append(time.monotonic()),
    )
    assert len(out.read_text().splitlines()) == 250 and len(stamps) >= 4
