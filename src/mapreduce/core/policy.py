"""The retry and skip policy: one rule for the master and for the sequential runner.

A failed attempt of a task is judged by :func:`judge`:

* an **infrastructure** failure (the machine that ran it failed it: its work
  directory's disk is full) blames no record and does not count against
  ``max_attempts``, up to ``max_infrastructure_failures`` of them per task;
  beyond that it counts like any other failure;
* a failure **on a record** (user code or decoding crashed on it) counts, and
  once ``record_failures_to_skip`` attempts crashed on the same record it is
  skipped by every later attempt, while the job has skipped fewer than
  ``skip_budget`` records (``--skip-bad-records``); the attempts that crashed on
  a skipped record then stop counting (the record was the fault, not the task);
* any other failure counts;
* when ``max_attempts`` failures count, the task has failed and so has its job.

Pure: no I/O, no clock.  The master keeps the counts in its durable task state
(:class:`~mapreduce.core.tasks.Task`), the sequential runner in a
:class:`TaskRetries`; both only ever change them through :func:`judge`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from mapreduce.core.config import MasterConfig
from mapreduce.core.spec import JobSpec

#: What a skipped record is said to have done when its failure's reason is unknown
#: (journals written before failures carried their reason apart from the record).
UNKNOWN_REASON = "crashed user code in repeated attempts"


@dataclass(frozen=True)
class RetryPolicy:
    """The numbers the rule decides by (a job's spec and the master's settings give them)."""

    max_attempts: int = 4
    record_failures_to_skip: int = 2
    skip_budget: int = 0
    max_infrastructure_failures: int = 10

    @classmethod
    def for_job(cls, spec: JobSpec, config: MasterConfig | None = None) -> RetryPolicy:
        config = config or MasterConfig()
        return cls(
            max_attempts=spec.max_attempts,
            record_failures_to_skip=config.record_failures_to_skip,
            skip_budget=spec.skip_bad_records,
            max_infrastructure_failures=config.max_infrastructure_failures,
        )


@dataclass(frozen=True)
class Failure:
    """One failed attempt, as the rule sees it.

    Attributes:
        record: the id of the record it crashed on (the offset of a map input
            record, the hex of a reduce key), or "" when no record is to blame.
        label: where that record is, for people: ``path@offset`` or ``key=...``.
        reason: one line describing the error.
        infrastructure: the machine that ran the attempt failed it, not the task.
    """

    record: str = ""
    label: str = ""
    reason: str = ""
    infrastructure: bool = False


@dataclass(frozen=True)
class SkipNote:
    """A record the job skipped, as ``_summary.json`` lists it."""

    record: str
    label: str
    reason: str


@dataclass(frozen=True)
class Verdict:
    """What follows from one failed attempt.

    Attributes:
        counted: the failure counts against ``max_attempts``.
        skip: the failure's record is skipped from now on (one more of the job's budget).
        task_failed: the task failed ``max_attempts`` times: the job fails.
    """

    counted: bool
    skip: bool
    task_failed: bool


class RetryCounts(Protocol):
    """The per-task counts the rule keeps."""

    failures: int
    infrastructure_failures: int
    record_failures: dict[str, int]
    skip: list[str]


@dataclass
class TaskRetries:
    """A task's counts outside the master (the sequential runner's)."""

    failures: int = 0
    infrastructure_failures: int = 0
    record_failures: dict[str, int] = field(default_factory=dict)
    skip: list[str] = field(default_factory=list)


def judge(policy: RetryPolicy, counts: RetryCounts, failure: Failure, job_skipped: int) -> Verdict:
    """Apply one failed attempt of a task to its ``counts`` and say what follows.

    ``job_skipped``: how many records the task's job skipped so far (the caller
    adds one when the verdict says ``skip``).
    """
    counted = True
    skip = False
    if (
        failure.infrastructure
        and counts.infrastructure_failures < policy.max_infrastructure_failures
    ):
        counts.infrastructure_failures += 1
        counted = False
    else:
        counts.failures += 1
    record = "" if failure.infrastructure else failure.record
    if record:
        count = counts.record_failures.get(record, 0) + 1
        counts.record_failures[record] = count
        if (
            count >= policy.record_failures_to_skip
            and record not in counts.skip
            and job_skipped < policy.skip_budget
        ):
            counts.skip.append(record)  # paper 4.6: the next attempts skip it
            counts.failures -= count  # the record is the fault, not the task
            skip = True
    return Verdict(counted, skip, counts.failures >= policy.max_attempts)
