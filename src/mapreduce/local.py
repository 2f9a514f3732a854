"""The sequential runner: a whole job in this process (the paper's section 4.7).

It plans the splits, runs every map task and then every reduce task one after
the other with the same task runners the workers use, and commits the output.
It is the reference the distributed runtime must match byte for byte.

A record on which user code raises fails the job with the task, the record
and the traceback.  With ``skip_bad_records=N`` the task is instead run again
without that record (as the paper's master tells the next attempt to do), up
to N times over the whole job.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import TypeVar

from mapreduce.dataflow.commit import OutputCommitter
from mapreduce.dataflow.runner import (
    RecordFailure,
    TaskError,
    TaskResult,
    map_task_id,
    reduce_task_id,
    run_map_task,
    run_reduce_task,
)
from mapreduce.errors import JobFailedError, TaskFailedError
from mapreduce.planning import JobOptions, plan_job
from mapreduce.summary import JobSummary, SkippedRecord

RecordId = TypeVar("RecordId", int, bytes)


class _SkipBudget:
    """How many more bad records the job may skip, and which it skipped."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.skipped: list[SkippedRecord] = []

    def run(
        self,
        task_id: str,
        attempt_fn: Callable[[int, frozenset[RecordId]], TaskResult],
    ) -> TaskResult:
        """Run attempts of one task until one succeeds, skipping bad records while allowed."""
        skip: set[RecordId] = set()
        attempt = 0
        while True:
            try:
                return attempt_fn(attempt, frozenset(skip))
            except RecordFailure as failure:
                if len(self.skipped) >= self.allowed or failure.record_id in skip:
                    raise TaskFailedError(
                        task_id, attempt, failure.label, failure.reason, failure.traceback
                    ) from failure
                skip.add(failure.record_id)  # type: ignore[arg-type]
                self.skipped.append(SkippedRecord(task_id, failure.label, failure.reason))
            except TaskError as error:
                raise TaskFailedError(
                    task_id, attempt, "", error.reason, error.traceback
                ) from error
            attempt += 1


def run_local(options: JobOptions) -> JobSummary:
    """Run the job described by ``options`` sequentially and commit its output.

    Returns:
        The job's summary (also written to ``OUTPUT/_summary.json``).

    Raises:
        UsageError, JobDefinitionError, InputError, OutputExistsError: before any work.
        JobFailedError: a task failed; the output directory is left as it was.
    """
    started = time.monotonic()
    _job, spec = plan_job(options)
    splits = spec.splits
    committer = OutputCommitter(spec.output, spec.job_id, overwrite=spec.overwrite)
    committer.prepare()
    summary = JobSummary(spec=spec)
    budget = _SkipBudget(options.skip_bad_records)
    scratch = ""
    summary.phase_seconds["plan"] = time.monotonic() - started
    try:
        scratch = tempfile.mkdtemp(prefix=f"mapreduce-{spec.job_id}-")
        phase_start = time.monotonic()
        map_results: list[TaskResult] = []
        summary.map_results = map_results  # type: ignore[assignment]
        for index in range(len(splits)):

            def map_attempt(attempt: int, skip: frozenset[int], index: int = index) -> TaskResult:
                workdir = os.path.join(scratch, f"{map_task_id(index)}.attempt-{attempt}")
                os.makedirs(workdir)
                return run_map_task(
                    spec,
                    options.job_path,
                    index,
                    splits[index],
                    workdir,
                    attempt=attempt,
                    skip=skip,
                )

            map_results.append(budget.run(map_task_id(index), map_attempt))
        summary.phase_seconds["map"] = time.monotonic() - phase_start

        phase_start = time.monotonic()
        for partition in range(spec.num_reducers):
            runs = [result.outputs[partition] for result in map_results]

            def reduce_attempt(
                attempt: int,
                skip: frozenset[bytes],
                partition: int = partition,
                runs: list[str] = runs,
            ) -> TaskResult:
                out_path = committer.attempt_path(partition, attempt)
                return run_reduce_task(
                    spec, options.job_path, partition, runs, out_path, attempt=attempt, skip=skip
                )

            result = budget.run(reduce_task_id(partition), reduce_attempt)
            committer.commit_task(partition, result.attempt)
            summary.reduce_results.append(result)
        summary.phase_seconds["reduce"] = time.monotonic() - phase_start

        summary.skipped = budget.skipped
        summary.phase_seconds["total"] = time.monotonic() - started
        committer.commit_job(summary.to_dict(), spec.num_reducers)
    except TaskFailedError as failure:
        committer.abort()
        raise JobFailedError(f"job {spec.job_id} failed: {failure}") from failure
    except OSError as exc:  # a full disk (the temporary directory's, the output's)...
        committer.abort()
        raise JobFailedError(f"job {spec.job_id} failed: {exc}") from exc
    except BaseException:
        committer.abort()
        raise
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return summary
