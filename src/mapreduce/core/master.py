"""``MasterState.handle(event) -> list[Action]``: scheduling and failure handling.

The paper's master (sections 3.2 to 3.6) as a pure state machine: it keeps
every job, task, attempt and worker, the log of map-output locations that
reducers read, the results, counters and failures of every job, and decides
what runs where.  It reads no clock (time comes in events), does no I/O, and
draws no random numbers.  Everything here is durable state: replaying the
durable events (:data:`~mapreduce.core.events.DURABLE`) rebuilds it exactly,
which is what the master's journal does after a restart.  Who is alive is not
here but in :mod:`mapreduce.core.liveness`.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass, field

from mapreduce.core import actions as act
from mapreduce.core import events as ev
from mapreduce.core.config import MasterConfig
from mapreduce.core.policy import Failure, RetryPolicy, SkipNote, judge
from mapreduce.core.spec import JobSpec
from mapreduce.core.tasks import Attempt, AttemptState, Task, TaskKind, TaskState

#: How many lost workers, and failed attempts per job, the master remembers.
MAX_LOST_WORKERS = 1000
MAX_FAILURES_KEPT = 1000
#: How long, in characters, a kept traceback may be.
MAX_TRACEBACK = 16 << 10


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMMITTING = "committing"  # every partition is in place; the job's output is being published
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: States of a job that has not ended.
ACTIVE = (JobState.QUEUED, JobState.RUNNING, JobState.COMMITTING)


AttemptKey = tuple[str, TaskKind, int, int]  # job, kind, index, attempt


@dataclass
class WorkerInfo:
    worker_id: str
    incarnation: str
    address: str
    slots: int
    registered: float
    running: set[AttemptKey] = field(default_factory=set)
    #: the digest of the worker's key, shown by a restart that takes the id over
    key_digest: str = ""
    completed_maps: set[tuple[str, int]] = field(default_factory=set)


@dataclass(frozen=True)
class LostWorker:
    """A worker incarnation the master declared dead, for the status pages."""

    worker_id: str
    address: str
    reason: str
    at: float


@dataclass(frozen=True)
class FailedAttempt:
    """A failed attempt, as the status page and ``mapreduce logs`` show it."""

    task: str
    attempt: int
    worker: str
    reason: str
    record: str
    traceback: str
    at: float
    #: the worker's machine failed it (a full disk), not the task: not counted
    infrastructure: bool = False
    #: where the record is (``path@offset``, ``key=...``); "" in older journals
    label: str = ""

    def line(self) -> str:
        where = f" on record {self.label or self.record}" if self.record else ""
        note = " (an infrastructure failure: not counted)" if self.infrastructure else ""
        return (
            f"{self.task} attempt {self.attempt} on {self.worker} failed{where}: "
            f"{self.reason}{note}"
        )


@dataclass(frozen=True)
class MapOutputEntry:
    """One line of a job's map-output log: an output announced, or retracted when lost."""

    index: int
    attempt: int
    address: str
    retracted: bool


@dataclass
class JobRecord:
    spec: JobSpec
    maps: list[Task]
    reduces: list[Task]
    submitted: float
    state: JobState = JobState.QUEUED
    #: its turn came and its output is being prepared (a queued job holds nothing until then)
    preparing: bool = False
    #: its output is prepared at its turn (False: at submission, in older journals)
    output_at_turn: bool = False
    #: when the last map finished (re-runs included), when every reduce had, when it ended
    maps_done_at: float | None = None
    reduces_done_at: float | None = None
    finished: float | None = None
    #: map outputs announced and retracted, in order: what reducers poll
    output_log: list[MapOutputEntry] = field(default_factory=list)
    failures: list[FailedAttempt] = field(default_factory=list)
    failed_attempts: int = 0
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
    """Every job, task and worker the master knows, and the rules that change them.

    Attributes:
        epoch: how many times a master started on this state (fences stale orders).
        workers: live worker incarnations by worker id.
        lost_workers: the last incarnations declared dead, by worker id.
        jobs: every job by id; ``queue`` is their submission order.
        finished: ids of ended jobs in the order they ended.
    """

    def __init__(self, config: MasterConfig | None = None) -> None:
        self.config = config or MasterConfig()
        self.config.validate()
        self.epoch = 0
        self.workers: dict[str, WorkerInfo] = {}
        self.lost_workers: dict[str, LostWorker] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.queue: list[str] = []
        self.finished: list[str] = []
        self._active: str | None = None

    # -- queries ------------------------------------------------------------

    def active_job(self) -> JobRecord | None:
        """The job that runs now: the oldest that has not ended (and is not committing)."""
        if self._active is not None:
            job = self.jobs[self._active]
            if job.state in (JobState.QUEUED, JobState.RUNNING):
                return job
        for job_id in self.queue:
            job = self.jobs[job_id]
            if job.state in (JobState.QUEUED, JobState.RUNNING):
                self._active = job_id
                return job
        self._active = None
        return None

    def is_current(self, worker_id: str, incarnation: str) -> bool:
        worker = self.workers.get(worker_id)
        return worker is not None and worker.incarnation == incarnation

    def attempt(self, ref: ev.AttemptRef) -> Attempt | None:
        """The attempt ``ref`` names, or None if there is no such job, task or attempt."""
        job = self.jobs.get(ref.job_id)
        if job is None:
            return None
        tasks = job.tasks(ref.kind)
        if not 0 <= ref.index < len(tasks):
            return None
        return tasks[ref.index].attempts.get(ref.attempt)

    def refusal(self, spec: JobSpec) -> str:
        """Why a new job with ``spec`` would be refused ("" if it would be accepted)."""
        for other in self.jobs.values():
            if other.state in ACTIVE and other.spec.output == spec.output:
                return f"job {other.job_id} already writes to {spec.output}"
        return ""

    def attempt_running(self, ref: ev.AttemptRef) -> bool:
        found = self.attempt(ref)
        return found is not None and found.state is AttemptState.RUNNING

    # -- the one entry point -------------------------------------------------

    def handle(self, event: ev.Event) -> list[act.Action]:
        """Apply ``event`` and return what the shell must do."""
        out: list[act.Action] = []
        match event:
            case ev.MasterStarted():
                # Its settings are durable too: replaying the events after it must decide
                # as this master did, whatever settings a later master is started with.
                self.epoch = max(self.epoch, event.epoch)
                self.config = event.config
                job = self.active_job()
                if job is not None and job.state is JobState.QUEUED:
                    job.preparing = False  # a preparation in flight died with the last master
                self._start_next_job(event.now, out)
            case ev.JobSubmitted():
                self._job_submitted(event, out)
            case ev.JobStarted():
                job = self.jobs.get(event.job_id)
                if job is not None and job.state is JobState.QUEUED and job.preparing:
                    self._run_job(job, event.now, out)
            case ev.JobStartFailed():
                job = self.jobs.get(event.job_id)
                if job is not None and job.state is JobState.QUEUED and job.preparing:
                    self._end_job(job, JobState.FAILED, event.reason, event.now, out)
            case ev.JobCancelled():
                job = self.jobs.get(event.job_id)
                if job is not None and job.state in (JobState.QUEUED, JobState.RUNNING):
                    self._end_job(job, JobState.CANCELLED, event.reason, event.now, out)
            case ev.JobCommitted():
                job = self.jobs.get(event.job_id)
                if job is not None and job.state is JobState.COMMITTING:
                    self._finish_job(job, JobState.SUCCEEDED, "", event.now)
            case ev.JobCommitFailed():
                job = self.jobs.get(event.job_id)
                if job is not None and job.state is JobState.COMMITTING:
                    self._finish_job(job, JobState.FAILED, event.reason, event.now)
                    out.append(act.AbortJob(job.job_id, event.reason))
            case ev.WorkerRegistered():
                self._worker_registered(event, out)
            case ev.WorkerExpired():
                worker = self.workers.get(event.worker_id)
                if worker is not None and worker.incarnation == event.incarnation:
                    self._lose_worker(worker, event.reason, event.now, out)
            case ev.AttemptStalled():
                self._attempt_stalled(event, out)
            case ev.HeartbeatReceived():
                self._current(event.worker_id, event.incarnation, out)
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
                pass  # time alone changes nothing durable: Liveness turns it into events
        return out

    # -- jobs ---------------------------------------------------------------

    def _job_submitted(self, event: ev.JobSubmitted, out: list[act.Action]) -> None:
        spec = event.spec
        if spec.job_id in self.jobs:
            return  # a retried submission
        refused = self.refusal(spec)
        if refused:
            out.append(act.RefuseJob(spec.job_id, refused))
            return
        job = JobRecord(
            spec=spec,
            maps=[Task(TaskKind.MAP, i) for i in range(spec.num_maps)],
            reduces=[Task(TaskKind.REDUCE, i) for i in range(spec.num_reducers)],
            submitted=event.now,
            output_at_turn=event.output_at_turn,
            idle={
                TaskKind.MAP: list(range(spec.num_maps)),
                TaskKind.REDUCE: list(range(spec.num_reducers)),
            },
            completed={TaskKind.MAP: 0, TaskKind.REDUCE: 0},
        )
        self.jobs[spec.job_id] = job
        self.queue.append(spec.job_id)
        self._start_next_job(event.now, out)

    def _start_next_job(self, now: float, out: list[act.Action]) -> None:
        """The next queued job's turn: its output is prepared first (``JobStarted`` follows)."""
        job = self.active_job()
        if job is None or job.state is JobState.RUNNING or job.preparing:
            return
        if not job.output_at_turn:  # from an older journal: its output was prepared already
            self._run_job(job, now, out)
            return
        job.preparing = True
        out.append(act.PrepareOutput(job.job_id))

    def _run_job(self, job: JobRecord, now: float, out: list[act.Action]) -> None:
        job.state = JobState.RUNNING
        if not job.maps:
            job.maps_done_at = now
        self._maybe_finish(job, now, out)

    def _end_job(
        self, job: JobRecord, state: JobState, reason: str, now: float, out: list[act.Action]
    ) -> None:
        """The job failed or was cancelled: stop its attempts, abort its output."""
        for task in [*job.maps, *job.reduces]:
            for attempt in task.running():
                self._stop_attempt(job, task, attempt, AttemptState.KILLED, now)
                out.append(self._kill(job, task, attempt, f"job {state.value}"))
            self._maybe_idle(job, task)
        self._finish_job(job, state, reason, now)
        out.append(act.AbortJob(job.job_id, reason or f"job {state.value}"))
        self._start_next_job(now, out)

    def _finish_job(self, job: JobRecord, state: JobState, reason: str, now: float) -> None:
        job.state = state
        job.reason = reason
        job.finished = now
        self.finished.append(job.job_id)

    # -- workers ------------------------------------------------------------

    def _worker_registered(self, event: ev.WorkerRegistered, out: list[act.Action]) -> None:
        old = self.workers.get(event.worker_id)
        if old is not None:
            if old.incarnation == event.incarnation:
                if event.rejoin:
                    self._rejoined(old, event, out)
                return  # a retried registration
            self._lose_worker(old, "restarted with a new incarnation", event.now, out)
        self.lost_workers.pop(event.worker_id, None)
        self.workers[event.worker_id] = WorkerInfo(
            event.worker_id,
            event.incarnation,
            event.address,
            max(1, event.slots),
            event.now,
            key_digest=event.key_digest,
        )

    def _rejoined(
        self, worker: WorkerInfo, event: ev.WorkerRegistered, out: list[act.Action]
    ) -> None:
        """A known worker came back after a master restart: forget what it no longer has.

        Attempts assigned by an earlier epoch that it no longer runs are over (their
        reports, if any, were lost with the old master); completed map outputs it
        no longer holds are lost and their maps run again.
        """
        running = set(event.running)
        for key in sorted(worker.running, key=_attempt_order):
            job_id, kind, index, number = key
            job = self.jobs[job_id]
            task = job.tasks(kind)[index]
            attempt = task.attempts[number]
            if attempt.epoch < self.epoch and ev.AttemptRef(*key) not in running:
                self._stop_attempt(job, task, attempt, AttemptState.KILLED, event.now)
                if kind is TaskKind.REDUCE and task.commit_granted == number:
                    task.commit_granted = None
                self._maybe_idle(job, task)
        held = {(ref.job_id, ref.index, ref.attempt) for ref in event.held}
        for job_id, index in sorted(worker.completed_maps):
            job = self.jobs[job_id]
            task = job.maps[index]
            if (
                job_id,
                index,
                task.completed_attempt,
            ) not in held and job.state is JobState.RUNNING:
                self._map_output_lost(job, task, out)

    def _current(
        self, worker_id: str, incarnation: str, out: list[act.Action]
    ) -> WorkerInfo | None:
        worker = self.workers.get(worker_id)
        if worker is None or worker.incarnation != incarnation:
            out.append(act.ReRegisterWorker(worker_id, incarnation))
            return None
        return worker

    def _lose_worker(
        self, worker: WorkerInfo, reason: str, now: float, out: list[act.Action]
    ) -> None:
        """Paper 3.3: in-progress tasks of a dead worker, and its completed maps, become idle."""
        del self.workers[worker.worker_id]
        self.lost_workers[worker.worker_id] = LostWorker(
            worker.worker_id, worker.address, reason, now
        )
        if len(self.lost_workers) > MAX_LOST_WORKERS:
            del self.lost_workers[next(iter(self.lost_workers))]
        out.append(act.WorkerLost(worker.worker_id, worker.incarnation, reason))
        for job_id, kind, index, number in sorted(worker.running, key=_attempt_order):
            job = self.jobs[job_id]
            task = job.tasks(kind)[index]
            self._stop_attempt(job, task, task.attempts[number], AttemptState.KILLED, now)
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
        tasks = job.tasks(kind)
        # Entries of tasks that left IDLE since they were pushed are dropped here.
        while heap and tasks[heap[0]].state is not TaskState.IDLE:
            heapq.heappop(heap)
        return tasks[heapq.heappop(heap)] if heap else None

    def _backup_candidate(
        self, job: JobRecord, kind: TaskKind, worker: WorkerInfo, now: float
    ) -> Task | None:
        """Paper 3.6: near the end of a phase, a second attempt of the oldest straggler."""
        if not job.spec.backup_tasks:
            return None
        if kind is TaskKind.REDUCE and not job.all_done(TaskKind.MAP):
            return None  # reducers wait for maps: that is not straggling
        tasks = job.tasks(kind)
        # a reduce attempt's own work starts when the last map's output is there
        since = (job.maps_done_at or 0.0) if kind is TaskKind.REDUCE else 0.0
        for index in job.in_progress[kind]:  # oldest first
            task = tasks[index]
            attempts = task.running()
            if len(attempts) != 1 or attempts[0].worker_id == worker.worker_id:
                continue
            if now - max(attempts[0].started, since) < self.config.backup_after:
                return None  # the rest started later still
            return task
        return None

    def _start_attempt(
        self, job: JobRecord, task: Task, worker: WorkerInfo, now: float
    ) -> act.AssignTask:
        number = task.next_attempt_number()
        backup = task.state is TaskState.IN_PROGRESS
        task.attempts[number] = Attempt(
            number, worker.worker_id, worker.incarnation, now, backup=backup, epoch=self.epoch
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
            self.epoch,
        )

    def _stop_attempt(
        self, job: JobRecord, task: Task, attempt: Attempt, state: AttemptState, now: float
    ) -> None:
        attempt.state = state
        attempt.ended = now
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

    def _kill_others(
        self, job: JobRecord, task: Task, winner: int, now: float, out: list[act.Action]
    ) -> None:
        for attempt in task.running():
            if attempt.number != winner:
                self._stop_attempt(job, task, attempt, AttemptState.KILLED, now)
                out.append(self._kill(job, task, attempt, "another attempt finished first"))

    # -- completions ----------------------------------------------------------

    def _map_succeeded(self, event: ev.MapTaskSucceeded, out: list[act.Action]) -> None:
        worker = self._current(event.worker_id, event.incarnation, out)
        found = worker and self._running_attempt(worker, event.ref)
        if worker is None or not found or event.ref.kind is not TaskKind.MAP:
            return  # stale, duplicate or late: ignored
        job, task, attempt = found
        self._stop_attempt(job, task, attempt, AttemptState.SUCCEEDED, event.now)
        attempt.has_log = event.has_log
        if task.state is TaskState.COMPLETED:
            return
        self._set_state(job, task, TaskState.COMPLETED)
        task.completed_attempt = attempt.number
        task.stats = event.stats
        job.completed[TaskKind.MAP] += 1
        worker.completed_maps.add((job.job_id, task.index))
        self._kill_others(job, task, attempt.number, event.now, out)
        job.output_log.append(MapOutputEntry(task.index, attempt.number, worker.address, False))
        out.append(
            act.AnnounceMapOutput(
                job.job_id, task.index, attempt.number, worker.worker_id, worker.address
            )
        )
        if job.all_done(TaskKind.MAP):
            job.maps_done_at = event.now
        self._maybe_finish(job, event.now, out)

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
            self._stop_attempt(job, task, attempt, AttemptState.KILLED, event.now)
            self._maybe_idle(job, task)
            out.append(deny)
            return
        task.commit_granted = attempt.number
        out.append(
            act.GrantCommit(
                event.worker_id, event.incarnation, ref.job_id, ref.index, ref.attempt, self.epoch
            )
        )

    def _reduce_succeeded(self, event: ev.ReduceTaskSucceeded, out: list[act.Action]) -> None:
        worker = self._current(event.worker_id, event.incarnation, out)
        found = worker and self._running_attempt(worker, event.ref)
        if worker is None or not found or event.ref.kind is not TaskKind.REDUCE:
            return
        job, task, attempt = found
        if task.commit_granted != attempt.number or task.state is TaskState.COMPLETED:
            # Only the granted attempt may complete a partition; this one is over.
            self._stop_attempt(job, task, attempt, AttemptState.KILLED, event.now)
            self._maybe_idle(job, task)
            return
        self._stop_attempt(job, task, attempt, AttemptState.SUCCEEDED, event.now)
        attempt.has_log = event.has_log
        self._set_state(job, task, TaskState.COMPLETED)
        task.completed_attempt = attempt.number
        task.stats = event.stats
        job.completed[TaskKind.REDUCE] += 1
        self._kill_others(job, task, attempt.number, event.now, out)
        self._maybe_finish(job, event.now, out)

    def _maybe_finish(self, job: JobRecord, now: float, out: list[act.Action]) -> None:
        """Every partition is committed: the job's output is published next (COMMITTING)."""
        if job.all_done(TaskKind.MAP) and job.all_done(TaskKind.REDUCE):
            job.state = JobState.COMMITTING
            job.reduces_done_at = now
            out.append(act.CommitJob(job.job_id))
            self._start_next_job(now, out)

    # -- failures -------------------------------------------------------------

    def _task_failed(self, event: ev.TaskFailed, out: list[act.Action]) -> None:
        worker = self._current(event.worker_id, event.incarnation, out)
        found = worker and self._running_attempt(worker, event.ref)
        if worker is None or not found:
            return
        job, task, attempt = found
        attempt.has_log = event.has_log
        self._fail_attempt(
            job,
            task,
            attempt,
            event.reason,
            event.record,
            event.traceback,
            event.now,
            out,
            infrastructure=event.infrastructure,
            label=event.label,
        )

    def _attempt_stalled(self, event: ev.AttemptStalled, out: list[act.Action]) -> None:
        found = self.attempt(event.ref)
        job = self.jobs.get(event.ref.job_id)
        if found is None or job is None or found.state is not AttemptState.RUNNING:
            return
        task = job.tasks(event.ref.kind)[event.ref.index]
        out.append(self._kill(job, task, found, "no progress"))
        self._fail_attempt(job, task, found, event.reason, "", "", event.now, out)

    def _fail_attempt(
        self,
        job: JobRecord,
        task: Task,
        attempt: Attempt,
        reason: str,
        record: str,
        traceback: str,
        now: float,
        out: list[act.Action],
        infrastructure: bool = False,
        label: str = "",
    ) -> None:
        self._stop_attempt(job, task, attempt, AttemptState.FAILED, now)
        if task.kind is TaskKind.REDUCE and task.commit_granted == attempt.number:
            task.commit_granted = None
        if infrastructure:
            record = label = ""  # the machine's fault: no record is blamed
        failure = Failure(record, label, reason, infrastructure)
        verdict = judge(RetryPolicy.for_job(job.spec, self.config), task, failure, job.skipped)
        job.failed_attempts += 1
        traceback = traceback[-MAX_TRACEBACK:]
        if len(job.failures) < MAX_FAILURES_KEPT:
            job.failures.append(
                FailedAttempt(
                    task.task_id,
                    attempt.number,
                    attempt.worker_id,
                    reason,
                    record,
                    traceback,
                    now,
                    not verdict.counted,
                    label,
                )
            )
        where = f" on record {label or record}" if record else ""
        task.last_error = f"{task.task_id} attempt {attempt.number} failed{where}: {reason}"
        if traceback:
            task.last_error += "\n" + traceback
        if verdict.skip:
            job.skipped += 1
            task.skip_notes = (*task.skip_notes, SkipNote(record, label, reason))
        self._maybe_idle(job, task)
        if verdict.task_failed:
            self._end_job(
                job,
                JobState.FAILED,
                f"task {task.task_id} failed {task.failures} times; last error: {task.last_error}",
                now,
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
                event.now,
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
        job.output_log.append(MapOutputEntry(task.index, lost.number, "", True))
        out.append(act.RetractMapOutput(job.job_id, task.index, lost.number))
        self._set_state(job, task, TaskState.IDLE)
        task.completed_attempt = None
        task.stats = None
        job.completed[TaskKind.MAP] -= 1
        job.maps_done_at = None
        heapq.heappush(job.idle[TaskKind.MAP], task.index)


def _attempt_order(key: AttemptKey) -> tuple[str, str, int, int]:
    return key[0], key[1].value, key[2], key[3]
