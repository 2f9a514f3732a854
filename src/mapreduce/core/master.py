"""``MasterState.handle(event) -> list[Action]``: scheduling and failure handling.

The paper's master (sections 3.2 to 3.6) as a pure state machine: it keeps
every task's state, attempts and worker, the location of every completed map
output, and decides what runs where.  It reads no clock (time comes in
events), does no I/O, and draws no random numbers, so it is tested with plain
event sequences and can be rebuilt by replaying its events.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass, field

from mapreduce.core import actions as act
from mapreduce.core import events as ev
from mapreduce.core.tasks import Attempt, AttemptState, Task, TaskKind, TaskState


@dataclass(frozen=True)
class MasterConfig:
    """Timeouts and limits of the master, in seconds of its monotonic clock.

    Attributes:
        worker_timeout: a worker silent this long is declared dead.
        task_timeout: an attempt that reports no progress this long is failed.
        backup_after: a backup attempt is started only for attempts older than this.
        record_failures_to_skip: attempts that must crash on a record before it is skipped.
        max_lost_outputs: how often one map's output may be lost to fetch failures.
    """

    worker_timeout: float = 10.0
    task_timeout: float = 600.0
    backup_after: float = 5.0
    record_failures_to_skip: int = 2
    max_lost_outputs: int = 4

    def validate(self) -> None:
        if self.worker_timeout <= 0 or self.task_timeout <= 0 or self.backup_after < 0:
            raise ValueError("timeouts must be positive")
        if self.record_failures_to_skip < 1 or self.max_lost_outputs < 1:
            raise ValueError("record_failures_to_skip and max_lost_outputs must be at least 1")


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


AttemptKey = tuple[str, TaskKind, int, int]  # job, kind, index, attempt


@dataclass
class WorkerInfo:
    worker_id: str
    incarnation: str
    address: str
    slots: int
    last_heartbeat: float
    running: set[AttemptKey] = field(default_factory=set)
    completed_maps: set[tuple[str, int]] = field(default_factory=set)


@dataclass
class JobRecord:
    spec: ev.JobSubmitted
    maps: list[Task]
    reduces: list[Task]
    state: JobState = JobState.QUEUED
    idle: dict[TaskKind, list[int]] = field(default_factory=dict)
    #: in-progress tasks by kind, in the order they became in progress (oldest first)
    in_progress: dict[TaskKind, dict[int, None]] = field(
        default_factory=lambda: {TaskKind.MAP: {}, TaskKind.REDUCE: {}}
    )
    completed: dict[TaskKind, int] = field(default_factory=dict)
    skipped: int = 0
    reason: str = ""

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    def tasks(self, kind: TaskKind) -> list[Task]:
        return self.maps if kind is TaskKind.MAP else self.reduces

    def all_done(self, kind: TaskKind) -> bool:
        return self.completed[kind] == len(self.tasks(kind))


class MasterState:
    """Every job, task and worker the master knows, and the rules that change them."""

    def __init__(self, config: MasterConfig | None = None) -> None:
        self.config = config or MasterConfig()
        self.config.validate()
        self.workers: dict[str, WorkerInfo] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.queue: list[str] = []

    # -- queries ------------------------------------------------------------

    def active_job(self) -> JobRecord | None:
        for job_id in self.queue:
            job = self.jobs[job_id]
            if job.state in (JobState.QUEUED, JobState.RUNNING):
                return job
        return None

    def is_current(self, worker_id: str, incarnation: str) -> bool:
        worker = self.workers.get(worker_id)
        return worker is not None and worker.incarnation == incarnation

    def map_locations(self, job_id: str) -> list[tuple[int, int, str]]:
        """``(map index, attempt, address)`` of every completed map output of a job."""
        job = self.jobs[job_id]
        out = []
        for task in job.maps:
            if task.state is TaskState.COMPLETED and task.completed_attempt is not None:
                attempt = task.attempts[task.completed_attempt]
                out.append((task.index, attempt.number, self.workers[attempt.worker_id].address))
        return out

    # -- the one entry point -------------------------------------------------

    def handle(self, event: ev.Event) -> list[act.Action]:
        """Apply ``event`` and return what the shell must do."""
        out: list[act.Action] = []
        match event:
            case ev.JobSubmitted():
                self._job_submitted(event, out)
            case ev.JobCancelled():
                job = self.jobs.get(event.job_id)
                if job is not None and job.state in (JobState.QUEUED, JobState.RUNNING):
                    self._end_job(job, JobState.CANCELLED, event.reason, out)
            case ev.WorkerRegistered():
                self._worker_registered(event, out)
            case ev.HeartbeatReceived():
                self._heartbeat(event, out)
            case ev.TaskRequested():
                self._task_requested(event, out)
            case ev.MapTaskSucceeded():
                self._map_succeeded(event, out)
            case ev.ReduceCommitRequested():
                self._commit_requested(event, out)
            case ev.ReduceTaskSucceeded():
                self._reduce_succeeded(event, out)
            case ev.TaskFailed():
                self._task_failed(event, out)
            case ev.FetchFailed():
                self._fetch_failed(event, out)
            case ev.Tick():
                self._tick(event.now, out)
        return out

    # -- jobs ---------------------------------------------------------------

    def _job_submitted(self, event: ev.JobSubmitted, out: list[act.Action]) -> None:
        if event.job_id in self.jobs:
            return  # a retried submission
        job = JobRecord(
            spec=event,
            maps=[Task(TaskKind.MAP, i) for i in range(event.num_maps)],
            reduces=[Task(TaskKind.REDUCE, i) for i in range(event.num_reduces)],
            idle={
                TaskKind.MAP: list(range(event.num_maps)),
                TaskKind.REDUCE: list(range(event.num_reduces)),
            },
            completed={TaskKind.MAP: 0, TaskKind.REDUCE: 0},
        )
        self.jobs[event.job_id] = job
        self.queue.append(event.job_id)
        self._start_next_job(out)

    def _start_next_job(self, out: list[act.Action]) -> None:
        job = self.active_job()
        if job is None or job.state is JobState.RUNNING:
            return
        job.state = JobState.RUNNING
        if job.all_done(TaskKind.MAP) and job.all_done(TaskKind.REDUCE):
            self._end_job(job, JobState.SUCCEEDED, "", out)

    def _end_job(self, job: JobRecord, state: JobState, reason: str, out: list[act.Action]) -> None:
        job.state = state
        job.reason = reason
        for task in [*job.maps, *job.reduces]:
            for attempt in task.running():
                self._stop_attempt(job, task, attempt, AttemptState.KILLED)
                out.append(self._kill(job, task, attempt, f"job {state.value}"))
            self._maybe_idle(job, task)
        if state is JobState.SUCCEEDED:
            out.append(act.JobSucceeded(job.job_id))
        elif state is JobState.FAILED:
            out.append(act.JobFailed(job.job_id, reason))
        else:
            out.append(act.JobFailed(job.job_id, reason or f"job {state.value}"))
        self._start_next_job(out)

    # -- workers ------------------------------------------------------------

    def _worker_registered(self, event: ev.WorkerRegistered, out: list[act.Action]) -> None:
        old = self.workers.get(event.worker_id)
        if old is not None:
            if old.incarnation == event.incarnation:
                old.last_heartbeat = event.now
                return  # a retried registration
            self._lose_worker(old, "restarted with a new incarnation", out)
        self.workers[event.worker_id] = WorkerInfo(
            event.worker_id, event.incarnation, event.address, max(1, event.slots), event.now
        )

    def _current(
        self, worker_id: str, incarnation: str, out: list[act.Action]
    ) -> WorkerInfo | None:
        worker = self.workers.get(worker_id)
        if worker is None or worker.incarnation != incarnation:
            out.append(act.ReRegisterWorker(worker_id, incarnation))
            return None
        return worker

    def _heartbeat(self, event: ev.HeartbeatReceived, out: list[act.Action]) -> None:
        worker = self._current(event.worker_id, event.incarnation, out)
        if worker is None:
            return
        worker.last_heartbeat = event.now
        for ref in event.progressed:
            found = self._running_attempt(worker, ref)
            if found is not None:
                found[2].last_progress = event.now

    def _lose_worker(self, worker: WorkerInfo, reason: str, out: list[act.Action]) -> None:
        """Paper 3.3: in-progress tasks of a dead worker, and its completed maps, become idle."""
        del self.workers[worker.worker_id]
        out.append(
            act.WorkerLost(worker.worker_id, worker.incarnation, reason, worker.last_heartbeat)
        )
        for job_id, kind, index, number in sorted(worker.running, key=_attempt_order):
            job = self.jobs[job_id]
            task = job.tasks(kind)[index]
            self._stop_attempt(job, task, task.attempts[number], AttemptState.KILLED)
            if task.kind is TaskKind.REDUCE and task.commit_granted == number:
                task.commit_granted = None  # it may or may not have renamed: a new attempt may
            self._maybe_idle(job, task)
        for job_id, index in sorted(worker.completed_maps):
            job = self.jobs[job_id]
            if job.state is JobState.RUNNING and not job.all_done(TaskKind.REDUCE):
                self._map_output_lost(job, job.maps[index], out)

    def _running_attempt(
        self, worker: WorkerInfo, ref: ev.AttemptRef
    ) -> tuple[JobRecord, Task, Attempt] | None:
        """The attempt ``ref`` if it is running on this worker incarnation, else None (stale)."""
        if (ref.job_id, ref.kind, ref.index, ref.attempt) not in worker.running:
            return None
        job = self.jobs[ref.job_id]
        task = job.tasks(ref.kind)[ref.index]
        return job, task, task.attempts[ref.attempt]

    # -- scheduling -----------------------------------------------------------

    def _task_requested(self, event: ev.TaskRequested, out: list[act.Action]) -> None:
        """Hand out up to ``free_slots`` tasks.

        A worker has ``slots`` map slots and as many reduce slots (as Hadoop's
        task trackers had), so reducers waiting for map output never keep maps
        from running; reduces are handed out from the start and fetch map
        outputs as they complete.
        """
        worker = self._current(event.worker_id, event.incarnation, out)
        if worker is None:
            return
        worker.last_heartbeat = event.now
        running = {TaskKind.MAP: 0, TaskKind.REDUCE: 0}
        for _job_id, kind, _index, _number in worker.running:
            running[kind] += 1
        free = event.free_slots
        job = self.active_job()
        while free > 0 and job is not None and job.state is JobState.RUNNING:
            task = None
            for kind in (TaskKind.MAP, TaskKind.REDUCE):
                if running[kind] < worker.slots:
                    task = self._next_idle(job, kind) or self._backup_candidate(
                        job, kind, worker, event.now
                    )
                    if task is not None:
                        break
            if task is None:
                break
            out.append(self._start_attempt(job, task, worker, event.now))
            running[task.kind] += 1
            free -= 1

    def _next_idle(self, job: JobRecord, kind: TaskKind) -> Task | None:
        heap = job.idle[kind]
        while heap:
            task = job.tasks(kind)[heapq.heappop(heap)]
            if task.state is TaskState.IDLE:
                return task
        return None

    def _backup_candidate(
        self, job: JobRecord, kind: TaskKind, worker: WorkerInfo, now: float
    ) -> Task | None:
        """Paper 3.6: near the end of a phase, a second attempt of the oldest straggler."""
        if not job.spec.backup_tasks:
            return None
        if kind is TaskKind.REDUCE and not job.all_done(TaskKind.MAP):
            return None  # reducers wait for maps: that is not straggling
        tasks = job.tasks(kind)
        for index in job.in_progress[kind]:  # oldest first
            task = tasks[index]
            attempts = task.running()
            if len(attempts) != 1 or attempts[0].worker_id == worker.worker_id:
                continue
            if now - attempts[0].started < self.config.backup_after:
                return None  # the rest started later still
            return task
        return None

    def _start_attempt(
        self, job: JobRecord, task: Task, worker: WorkerInfo, now: float
    ) -> act.AssignTask:
        number = task.next_attempt_number()
        backup = task.state is TaskState.IN_PROGRESS
        task.attempts[number] = Attempt(
            number, worker.worker_id, worker.incarnation, now, now, backup=backup
        )
        self._set_state(job, task, TaskState.IN_PROGRESS)
        worker.running.add((job.job_id, task.kind, task.index, number))
        return act.AssignTask(
            worker.worker_id,
            worker.incarnation,
            job.job_id,
            task.kind,
            task.index,
            number,
            tuple(task.skip),
        )

    def _stop_attempt(
        self, job: JobRecord, task: Task, attempt: Attempt, state: AttemptState
    ) -> None:
        attempt.state = state
        worker = self.workers.get(attempt.worker_id)
        if worker is not None and worker.incarnation == attempt.incarnation:
            worker.running.discard((job.job_id, task.kind, task.index, attempt.number))

    def _set_state(self, job: JobRecord, task: Task, state: TaskState) -> None:
        """The one place a task changes state (it keeps ``job.in_progress`` in step)."""
        if task.state is TaskState.IN_PROGRESS:
            job.in_progress[task.kind].pop(task.index, None)
        task.state = state
        if state is TaskState.IN_PROGRESS:
            job.in_progress[task.kind][task.index] = None

    def _maybe_idle(self, job: JobRecord, task: Task) -> None:
        if task.state is TaskState.IN_PROGRESS and not task.running():
            self._set_state(job, task, TaskState.IDLE)
            heapq.heappush(job.idle[task.kind], task.index)

    def _kill(self, job: JobRecord, task: Task, attempt: Attempt, reason: str) -> act.KillAttempt:
        return act.KillAttempt(
            attempt.worker_id,
            attempt.incarnation,
            job.job_id,
            task.kind,
            task.index,
            attempt.number,
            reason,
        )

    def _kill_others(self, job: JobRecord, task: Task, winner: int, out: list[act.Action]) -> None:
        for attempt in task.running():
            if attempt.number != winner:
                self._stop_attempt(job, task, attempt, AttemptState.KILLED)
                out.append(self._kill(job, task, attempt, "another attempt finished first"))

    # -- completions ----------------------------------------------------------

    def _map_succeeded(self, event: ev.MapTaskSucceeded, out: list[act.Action]) -> None:
        worker = self._current(event.worker_id, event.incarnation, out)
        found = worker and self._running_attempt(worker, event.ref)
        if worker is None or not found or event.ref.kind is not TaskKind.MAP:
            return  # stale, duplicate or late: ignored
        job, task, attempt = found
        self._stop_attempt(job, task, attempt, AttemptState.SUCCEEDED)
        if task.state is TaskState.COMPLETED:
            return
        self._set_state(job, task, TaskState.COMPLETED)
        task.completed_attempt = attempt.number
        task.output_bytes = event.output_bytes
        task.counters = dict(event.counters)
        job.completed[TaskKind.MAP] += 1
        worker.completed_maps.add((job.job_id, task.index))
        self._kill_others(job, task, attempt.number, out)
        out.append(
            act.AnnounceMapOutput(
                job.job_id, task.index, attempt.number, worker.worker_id, worker.address
            )
        )
        self._maybe_finish(job, out)

    def _commit_requested(self, event: ev.ReduceCommitRequested, out: list[act.Action]) -> None:
        worker = self._current(event.worker_id, event.incarnation, out)
        found = worker and self._running_attempt(worker, event.ref)
        ref = event.ref
        deny = act.DenyCommit(
            event.worker_id, event.incarnation, ref.job_id, ref.index, ref.attempt
        )
        if worker is None or not found or ref.kind is not TaskKind.REDUCE:
            out.append(deny)
            return
        job, task, attempt = found
        if task.state is TaskState.COMPLETED or task.commit_granted not in (None, attempt.number):
            # The denied attempt discards its output and ends: it no longer runs.
            self._stop_attempt(job, task, attempt, AttemptState.KILLED)
            self._maybe_idle(job, task)
            out.append(deny)
            return
        task.commit_granted = attempt.number
        out.append(
            act.GrantCommit(event.worker_id, event.incarnation, ref.job_id, ref.index, ref.attempt)
        )

    def _reduce_succeeded(self, event: ev.ReduceTaskSucceeded, out: list[act.Action]) -> None:
        worker = self._current(event.worker_id, event.incarnation, out)
        found = worker and self._running_attempt(worker, event.ref)
        if worker is None or not found:
            return
        job, task, attempt = found
        if task.commit_granted != attempt.number or task.state is TaskState.COMPLETED:
            # Only the granted attempt may complete a partition; this one is over.
            self._stop_attempt(job, task, attempt, AttemptState.KILLED)
            self._maybe_idle(job, task)
            return
        self._stop_attempt(job, task, attempt, AttemptState.SUCCEEDED)
        self._set_state(job, task, TaskState.COMPLETED)
        task.completed_attempt = attempt.number
        task.output_bytes = event.output_bytes
        task.counters = dict(event.counters)
        job.completed[TaskKind.REDUCE] += 1
        self._kill_others(job, task, attempt.number, out)
        self._maybe_finish(job, out)

    def _maybe_finish(self, job: JobRecord, out: list[act.Action]) -> None:
        if job.all_done(TaskKind.MAP) and job.all_done(TaskKind.REDUCE):
            self._end_job(job, JobState.SUCCEEDED, "", out)

    # -- failures -------------------------------------------------------------

    def _task_failed(self, event: ev.TaskFailed, out: list[act.Action]) -> None:
        worker = self._current(event.worker_id, event.incarnation, out)
        found = worker and self._running_attempt(worker, event.ref)
        if worker is None or not found:
            return
        job, task, attempt = found
        self._fail_attempt(job, task, attempt, event.reason, event.record, event.traceback, out)

    def _fail_attempt(
        self,
        job: JobRecord,
        task: Task,
        attempt: Attempt,
        reason: str,
        record: str,
        traceback: str,
        out: list[act.Action],
    ) -> None:
        self._stop_attempt(job, task, attempt, AttemptState.FAILED)
        if task.kind is TaskKind.REDUCE and task.commit_granted == attempt.number:
            task.commit_granted = None
        task.failures += 1
        where = f" on record {record}" if record else ""
        task.last_error = f"{task.task_id} attempt {attempt.number} failed{where}: {reason}"
        if traceback:
            task.last_error += "\n" + traceback
        if record:
            count = task.record_failures.get(record, 0) + 1
            task.record_failures[record] = count
            if (
                count >= self.config.record_failures_to_skip
                and record not in task.skip
                and job.skipped < job.spec.skip_bad_records
            ):
                task.skip.append(record)  # paper 4.6: the next attempt skips it
                job.skipped += 1
                task.failures -= count  # the record is the fault, not the task
        self._maybe_idle(job, task)
        if task.failures >= job.spec.max_attempts:
            self._end_job(
                job,
                JobState.FAILED,
                f"task {task.task_id} failed {task.failures} times; last error: {task.last_error}",
                out,
            )

    def _fetch_failed(self, event: ev.FetchFailed, out: list[act.Action]) -> None:
        worker = self._current(event.worker_id, event.incarnation, out)
        found = worker and self._running_attempt(worker, event.reduce)
        if worker is None or not found:
            return
        job = found[0]
        if not 0 <= event.map_index < len(job.maps):
            return
        task = job.maps[event.map_index]
        if task.state is not TaskState.COMPLETED or task.completed_attempt != event.map_attempt:
            return  # already being re-run: the reducer will hear of the new output
        task.lost_outputs += 1
        if task.lost_outputs > self.config.max_lost_outputs:
            self._end_job(
                job,
                JobState.FAILED,
                f"the output of {task.task_id} was lost {task.lost_outputs} times "
                "(reducers could not fetch it)",
                out,
            )
            return
        self._map_output_lost(job, task, out)

    def _map_output_lost(self, job: JobRecord, task: Task, out: list[act.Action]) -> None:
        """A completed map's output is gone: retract it and run the map again."""
        if task.state is not TaskState.COMPLETED or task.completed_attempt is None:
            return
        lost = task.attempts[task.completed_attempt]
        holder = self.workers.get(lost.worker_id)
        if holder is not None and holder.incarnation == lost.incarnation:
            holder.completed_maps.discard((job.job_id, task.index))
        out.append(act.RetractMapOutput(job.job_id, task.index, lost.number))
        self._set_state(job, task, TaskState.IDLE)
        task.completed_attempt = None
        task.counters = {}
        job.completed[TaskKind.MAP] -= 1
        heapq.heappush(job.idle[TaskKind.MAP], task.index)

    # -- time -----------------------------------------------------------------

    def _tick(self, now: float, out: list[act.Action]) -> None:
        for worker in sorted(self.workers.values(), key=lambda w: w.worker_id):
            if now - worker.last_heartbeat > self.config.worker_timeout:
                self._lose_worker(
                    worker, f"no heartbeat for {now - worker.last_heartbeat:.1f}s", out
                )
        job = self.active_job()
        if job is None or job.state is not JobState.RUNNING:
            return
        stalled = [
            (task, attempt)
            for kind in (TaskKind.MAP, TaskKind.REDUCE)
            for task in (job.tasks(kind)[i] for i in job.in_progress[kind])
            for attempt in task.running()
            if now - attempt.last_progress > self.config.task_timeout
        ]
        for task, attempt in stalled:
            if attempt.state is AttemptState.RUNNING:
                out.append(self._kill(job, task, attempt, "no progress"))
                self._fail_attempt(
                    job,
                    task,
                    attempt,
                    f"no progress for {now - attempt.last_progress:.1f}s",
                    "",
                    "",
                    out,
                )
                if job.state is not JobState.RUNNING:
                    return


def _attempt_order(key: AttemptKey) -> tuple[str, str, int, int]:
    return key[0], key[1].value, key[2], key[3]
