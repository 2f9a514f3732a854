"""Read-only, typed snapshots of the master's state: what the servicer and the status pages show.

Both the gRPC servicer and the web pages read the master through these
functions only (with the driver's lock held), so they always agree.  Nothing
here changes the state; every value returned is frozen or a fresh copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mapreduce.core.events import AttemptRef
from mapreduce.core.liveness import Liveness
from mapreduce.core.master import (
    FailedAttempt,
    JobRecord,
    JobState,
    MapOutputEntry,
    MasterState,
)
from mapreduce.core.policy import UNKNOWN_REASON
from mapreduce.core.tasks import AttemptState, Task, TaskKind, TaskState
from mapreduce.summary import JobSummary, SkippedRecord

#: The task table of a job page lists at most this many tasks.
MAX_TASK_ROWS = 1000

#: Reads the kept end of an attempt's log: (job id, kind, index, attempt) -> text.
LogReader = Callable[[str, TaskKind, int, int], str]


@dataclass(frozen=True)
class TaskCounts:
    total: int
    idle: int
    in_progress: int
    completed: int


@dataclass(frozen=True)
class JobBrief:
    """A job's state, task counts and progress."""

    id: str
    state: str
    reason: str
    job_file: str
    output: str
    submitted_seconds_ago: float
    elapsed_seconds: float
    maps: TaskCounts
    reduces: TaskCounts
    failed_attempts: int
    input_bytes_done: int
    input_bytes_total: int


@dataclass(frozen=True)
class WorkerBrief:
    id: str
    address: str
    state: str  # alive or lost
    last_heartbeat_seconds: float
    slots: int
    tasks_done: int
    running: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class ClusterSnapshot:
    uptime_seconds: float
    epoch: int
    workers: tuple[WorkerBrief, ...]
    jobs: tuple[JobBrief, ...]


@dataclass(frozen=True)
class AttemptRow:
    attempt: int
    worker: str
    state: str
    backup: bool
    seconds: float | None


@dataclass(frozen=True)
class TaskRow:
    id: str
    kind: str
    state: str
    attempts: tuple[AttemptRow, ...]
    input_bytes: int | None
    output_bytes: int | None
    output_records: int | None


@dataclass(frozen=True)
class JobDetail:
    """Everything about one job: its brief, summary (counters), failures and task table."""

    brief: JobBrief
    summary: JobSummary
    failures: tuple[FailedAttempt, ...]
    tasks: tuple[TaskRow, ...]
    tasks_total: int


@dataclass(frozen=True)
class AttemptLog:
    attempt: int
    worker: str
    state: str
    log: str
    error: str


def _counts(tasks: list[Task]) -> TaskCounts:
    states = [task.state for task in tasks]
    return TaskCounts(
        len(tasks),
        states.count(TaskState.IDLE),
        states.count(TaskState.IN_PROGRESS),
        states.count(TaskState.COMPLETED),
    )


def shown_state(job: JobRecord) -> str:
    """The state users see: a committing job is still running."""
    return "running" if job.state is JobState.COMMITTING else job.state.value


def job_brief(state: MasterState, job_id: str, now: float) -> JobBrief:
    """Raises KeyError: no such job."""
    job = state.jobs[job_id]
    end = job.finished if job.finished is not None else now
    return JobBrief(
        id=job.job_id,
        state=shown_state(job),
        reason=job.reason,
        job_file=job.spec.job_file_name,
        output=job.spec.output,
        submitted_seconds_ago=round(now - job.submitted, 3),
        elapsed_seconds=round(end - job.submitted, 3),
        maps=_counts(job.maps),
        reduces=_counts(job.reduces),
        failed_attempts=job.failed_attempts,
        input_bytes_done=sum(t.stats.input_bytes for t in job.maps if t.stats is not None),
        input_bytes_total=sum(s.end - s.start for s in job.spec.splits),
    )


def job_summary(state: MasterState, job_id: str) -> JobSummary:
    """The job's summary from its committed attempts so far (``_summary.json``)."""
    job = state.jobs[job_id]
    summary = JobSummary(spec=job.spec)
    summary.map_results = [t.stats for t in job.maps if t.stats is not None]
    summary.reduce_results = [t.stats for t in job.reduces if t.stats is not None]
    for task in [*job.maps, *job.reduces]:
        notes = {note.record: note for note in task.skip_notes}
        for record in task.skip:
            note = notes.get(record)  # none in journals written before notes were kept
            summary.skipped.append(
                SkippedRecord(
                    task.task_id,
                    (note and note.label) or record,
                    (note and note.reason) or UNKNOWN_REASON,
                )
            )
    end = job.reduces_done_at
    if end is None:
        end = job.finished if job.finished is not None else job.submitted
    if job.maps_done_at is not None:
        summary.phase_seconds["map"] = job.maps_done_at - job.submitted
        summary.phase_seconds["reduce"] = end - job.maps_done_at
    summary.phase_seconds["total"] = end - job.submitted
    return summary


def failing_attempt(state: MasterState, job_id: str) -> FailedAttempt | None:
    """Of a job that failed because a task did, that task's last failed attempt, else None."""
    job = state.jobs[job_id]
    if job.state is not JobState.FAILED:
        return None
    for failure in reversed(job.failures):
        if job.reason.startswith(f"task {failure.task} "):
            return failure
    return None


def finished_summary(state: MasterState, job_id: str) -> dict[str, object] | None:
    """The content of ``_summary.json`` once the job has succeeded, else None."""
    job = state.jobs[job_id]
    if job.state is not JobState.SUCCEEDED:
        return None
    return job_summary(state, job_id).to_dict()


def cluster(state: MasterState, liveness: Liveness, now: float) -> ClusterSnapshot:
    """Workers (alive and lost) and every job the master knows, oldest first."""
    done: dict[str, int] = {}
    current: dict[str, list[str]] = {}
    for job in state.jobs.values():
        for task in [*job.maps, *job.reduces]:
            for attempt in task.attempts.values():
                if attempt.state is AttemptState.SUCCEEDED:
                    done[attempt.worker_id] = done.get(attempt.worker_id, 0) + 1
                elif attempt.state is AttemptState.RUNNING:
                    current.setdefault(attempt.worker_id, []).append(
                        f"{job.job_id}/{task.task_id}#{attempt.number}"
                    )
    workers = [
        WorkerBrief(
            w.worker_id,
            w.address,
            "alive",
            round(now - liveness.last_heard(state, w.worker_id), 3),
            w.slots,
            done.get(w.worker_id, 0),
            tuple(sorted(current.get(w.worker_id, []))),
            liveness.why_paused(state, w.worker_id),
        )
        for w in sorted(state.workers.values(), key=lambda w: w.worker_id)
    ]
    workers += [
        WorkerBrief(
            lost.worker_id,
            lost.address,
            "lost",
            round(now - lost.at, 3),
            0,
            done.get(lost.worker_id, 0),
            (),
            lost.reason,
        )
        for lost in sorted(state.lost_workers.values(), key=lambda w: w.worker_id)
        if lost.worker_id not in state.workers
    ]
    return ClusterSnapshot(
        round(now - liveness.started, 3),
        state.epoch,
        tuple(workers),
        tuple(job_brief(state, job_id, now) for job_id in state.queue),
    )


def _task_row(task: Task, now: float) -> TaskRow:
    stats = task.stats if task.state is TaskState.COMPLETED else None
    attempts = []
    for attempt in task.attempts.values():
        if attempt.state is AttemptState.RUNNING:
            seconds: float | None = now - attempt.started
        elif stats is not None and attempt.number == task.completed_attempt:
            seconds = stats.seconds
        else:
            seconds = None
        attempts.append(
            AttemptRow(
                attempt.number,
                attempt.worker_id,
                attempt.state.value,
                attempt.backup,
                None if seconds is None else round(seconds, 3),
            )
        )
    return TaskRow(
        task.task_id,
        task.kind.value,
        task.state.name.lower(),
        tuple(attempts),
        stats.input_bytes if stats else None,
        stats.output_bytes if stats else None,
        stats.output_records if stats else None,
    )


def job_detail(state: MasterState, job_id: str, now: float) -> JobDetail:
    """Raises KeyError: no such job."""
    job = state.jobs[job_id]
    tasks = [*job.maps, *job.reduces]
    return JobDetail(
        brief=job_brief(state, job_id, now),
        summary=job_summary(state, job_id),
        failures=tuple(job.failures),
        tasks=tuple(_task_row(task, now) for task in tasks[:MAX_TASK_ROWS]),
        tasks_total=len(tasks),
    )


def parse_task_id(task_id: str) -> tuple[TaskKind, int]:
    """``map-00003`` -> (MAP, 3).  Raises KeyError: not a task id."""
    kind_name, _, number = task_id.partition("-")
    kinds = {"map": TaskKind.MAP, "reduce": TaskKind.REDUCE}
    if kind_name not in kinds or not number.isdigit() or len(number) > 9:
        raise KeyError(task_id)
    return kinds[kind_name], int(number)


def task_logs(
    state: MasterState, job_id: str, task_id: str, read_log: LogReader
) -> tuple[AttemptLog, ...]:
    """Each attempt of one task with its log and error.  Raises KeyError: no such task."""
    kind, index = parse_task_id(task_id)
    job = state.jobs[job_id]
    tasks = job.tasks(kind)
    if index >= len(tasks):
        raise KeyError(task_id)
    task = tasks[index]
    errors = {f.attempt: f for f in job.failures if f.task == task.task_id}
    return tuple(
        AttemptLog(
            n,
            attempt.worker_id,
            attempt.state.value,
            read_log(job_id, kind, index, n) if attempt.has_log else "",
            errors[n].line() + "\n" + errors[n].traceback if n in errors else "",
        )
        for n, attempt in sorted(task.attempts.items())
    )


def attempt_problem(state: MasterState, ref: AttemptRef) -> str:
    """Why ``ref`` cannot name an attempt of a known job ("" if it can, or if the job is
    unknown: a worker may report on a job a master without a journal has forgotten)."""
    job = state.jobs.get(ref.job_id)
    if job is None:
        return ""
    tasks = job.tasks(ref.kind)
    if not 0 <= ref.index < len(tasks):
        return (
            f"job {ref.job_id} has {len(tasks)} {ref.kind.value} tasks: "
            f"no {ref.kind.value} task {ref.index}"
        )
    if ref.attempt not in tasks[ref.index].attempts:
        return f"{tasks[ref.index].task_id} of job {ref.job_id} has no attempt {ref.attempt}"
    return ""


def map_output_problem(state: MasterState, job_id: str, index: int, attempt: int) -> str:
    """Why a fetch-failure report cannot name attempt ``attempt`` of map ``index`` ("" if
    it can, or if the job is unknown)."""
    return attempt_problem(state, AttemptRef(job_id, TaskKind.MAP, index, attempt))


def runs_on(state: MasterState, worker_id: str, incarnation: str, ref: AttemptRef) -> bool:
    """Whether ``ref`` is an attempt running on this worker incarnation."""
    worker = state.workers.get(worker_id)
    return (
        worker is not None
        and worker.incarnation == incarnation
        and (ref.job_id, ref.kind, ref.index, ref.attempt) in worker.running
    )


def map_outputs_since(state: MasterState, job_id: str, since: int) -> list[MapOutputEntry]:
    """The job's map-output log after its first ``since`` entries.  Raises KeyError."""
    return state.jobs[job_id].output_log[since:]


def output_log_length(state: MasterState, job_id: str) -> int:
    return len(state.jobs[job_id].output_log)


def attempts_to_kill(state: MasterState, running: list[AttemptRef]) -> list[AttemptRef]:
    """Of the attempts a worker says it runs, those the master does not run (kills re-sent)."""
    return [ref for ref in running if not state.attempt_running(ref)]


@dataclass(frozen=True)
class Totals:
    """Sums over every job: what ``/metrics`` exports."""

    shuffle_bytes: int
    failed_attempts: int
    #: kind -> the durations (seconds) of the committed attempts of completed tasks
    task_seconds: dict[str, list[float]]


def totals(state: MasterState) -> Totals:
    shuffled = failed = 0
    seconds: dict[str, list[float]] = {"map": [], "reduce": []}
    for job in state.jobs.values():
        failed += job.failed_attempts
        for kind in (TaskKind.MAP, TaskKind.REDUCE):
            durations = seconds[kind.value]
            for task in job.tasks(kind):
                if task.stats is not None:
                    durations.append(task.stats.seconds)
                    if kind is TaskKind.MAP:
                        shuffled += task.stats.output_bytes
    return Totals(shuffled, failed, seconds)


def finished_jobs(state: MasterState, last: int = 100) -> list[str]:
    """The ids of the jobs that ended last, whose map output workers may delete."""
    return state.finished[-last:]


def jobs_to_forget(state: MasterState, job_ids: set[str]) -> list[str]:
    """Of the jobs a worker holds output of, those unknown to the master or ended."""
    return sorted(
        job_id
        for job_id in job_ids
        if job_id not in state.jobs
        or state.jobs[job_id].state not in (JobState.QUEUED, JobState.RUNNING)
    )
