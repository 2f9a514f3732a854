"""What job code can ask of the framework while it runs: parameters, task context, counters.

The task runner activates a context around each task; job code reads it
through :func:`params`, :func:`task_context` and :func:`increment_counter`,
which ``mapreduce`` re-exports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskContext:
    """Which job, task, attempt and worker the calling job code runs in.

    Attributes:
        job_id: the job's id.
        task_id: ``map-00003`` or ``reduce-00001`` (``plan`` while the job's
            ``setup()`` is checked, ``sample`` while a RangePartitioner samples keys).
        kind: ``"map"``, ``"reduce"``, ``"plan"`` or ``"sample"``.
        index: the map task's number, or the reduce task's partition.
        attempt: the attempt number, 0 for the first.
        worker: the worker's name (``local`` in the sequential runner).
        num_reducers: R, the number of reduce partitions.
    """

    job_id: str
    task_id: str
    kind: str
    index: int
    attempt: int
    worker: str
    num_reducers: int


_params: Mapping[str, str] = {}
_task: TaskContext | None = None
_counters: Counter[str] = Counter()


def params() -> dict[str, str]:
    """The job's ``--param NAME=VALUE`` values, as a new dict of strings."""
    return dict(_params)


def task_context() -> TaskContext:
    """The context of the task that is running.

    Raises:
        RuntimeError: called outside a running task (at import time of the job file, say).
    """
    if _task is None:
        raise RuntimeError("mapreduce.task_context() is only available while a task runs")
    return _task


def increment_counter(name: str, amount: int = 1) -> None:
    """Add ``amount`` to the user counter ``name``.

    Counters of every task are summed into the job's totals, which are printed at
    the end of the run and written to ``_summary.json``.  Only the attempt of a
    task whose output is committed counts.
    """
    _counters[name] += amount


@contextmanager
def activated(
    task: TaskContext, job_params: Mapping[str, str], counters: Counter[str]
) -> Iterator[None]:
    """Make ``task``, ``job_params`` and ``counters`` the current context (for runners)."""
    global _params, _task, _counters
    saved = (_params, _task, _counters)
    _params, _task, _counters = job_params, task, counters
    try:
        yield
    finally:
        _params, _task, _counters = saved
