"""The sequential runner: a whole job in this process (the paper's section 4.7).

It plans the splits, runs every map task and then every reduce task one after
the other with the same task runners the workers use, and commits the output.
It is the reference the distributed runtime must match byte for byte.

A failed attempt is judged by the same rule the master applies
(:mod:`mapreduce.core.policy`): the task runs again until it failed
``max_attempts`` times; with ``skip_bad_records=N``, a record on which two
attempts crashed is skipped by the next ones (as the paper's master tells
them to), up to N records over the whole job.  A task that fails for good
fails the job with the task, the record and the traceback.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import TypeVar

from mapreduce.core.policy import Failure, RetryPolicy, TaskRetries, judge
from mapreduce.dataflow.commit import output_committer
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


class _Retries:
    """Runs a task's attempts one after the other under the job's retry and skip policy
    (:mod:`mapreduce.core.policy`, the rule the master applies), and keeps the records the
    job skipped."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.skipped: list[SkippedRecord] = []

    def run(
        self,
        task_id: str,
        attempt_fn: Callable[[int, frozenset[RecordId]], TaskResult],
    ) -> TaskResult:
        """Run attempts of one task until one succeeds or the policy fails the task.

        Raises:
            TaskFailedError: the task failed as often as the policy allows.
        """
        counts = TaskRetries()
        ids: dict[str, RecordId] = {}  # the policy's record ids -> the runner's
        attempt = 0
        while True:
            skip = frozenset(ids[record] for record in counts.skip)
            try:
                return attempt_fn(attempt, skip)
            except RecordFailure as error:
                ids[error.record_key] = error.record_id  # type: ignore[assignment]
                failure = Failure(error.record_key, error.label, error.reason)
                caught: RecordFailure | TaskError = error
            except TaskError as error:
                # A failure of this machine (a full disk) counts like any other: there is no
                # other machine to run the attempt on, as a cluster would.
                failure = Failure("", "", error.reason)
                caught = error
            verdict = judge(self.policy, counts, failure, len(self.skipped))
            if verdict.skip:
                self.skipped.append(SkippedRecord(task_id, failure.label, failure.reason))
            if verdict.task_failed:
                raise TaskFailedError(
                    task_id, attempt, failure.label, failure.reason, caught.traceback
                ) from caught
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
    scratch = tempfile.mkdtemp(prefix=f"mapreduce-{spec.job_id}-")
    committer = output_committer(
        spec.output,
        spec.job_id,
        overwrite=spec.overwrite,
        options=spec.storage_options,
        scratch=scratch,
    )
    try:
        committer.prepare()
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    summary = JobSummary(spec=spec)
    retries = _Retries(RetryPolicy.for_job(spec))
    summary.phase_seconds["plan"] = time.monotonic() - started
    try:
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

            map_results.append(retries.run(map_task_id(index), map_attempt))
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

            result = retries.run(reduce_task_id(partition), reduce_attempt)
            committer.commit_task(partition, result.attempt)
            summary.reduce_results.append(result)
        summary.phase_seconds["reduce"] = time.monotonic() - phase_start

        summary.skipped.extend(retries.skipped)
        summary.phase_seconds["total"] = time.monotonic() - started
        committer.commit_job(summary.to_dict(), spec.num_reducers)
    except TaskFailedError as failure:
        committer.abort()
        raise JobFailedError(
            f"job {spec.job_id} failed: {failure}",
            job_id=spec.job_id,
            task=failure.task,
            attempt=failure.attempt,
            record=failure.record,
            reason=failure.reason,
            traceback=failure.traceback,
        ) from failure
    except OSError as exc:  # a full disk (the temporary directory's, the output's)...
        committer.abort()
        raise JobFailedError(f"job {spec.job_id} failed: {exc}", job_id=spec.job_id) from exc
    except BaseException:
        committer.abort()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summary
