"""The master's shell: owns the state machine, the clock, the lock; carries out actions.

The gRPC servicer turns each request into one event and calls
:meth:`MasterDriver.handle`; a ticker thread sends :class:`~mapreduce.core.events.Tick`.
Actions that need I/O (committing or aborting a job's output) and actions that
are delivered later (kills, through heartbeat replies) are carried out here.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mapreduce.core import actions as act
from mapreduce.core import events as ev
from mapreduce.core.master import JobState, MasterConfig, MasterState
from mapreduce.core.tasks import AttemptState, TaskKind, TaskState
from mapreduce.dataflow.commit import OutputCommitter
from mapreduce.dataflow.runner import TaskResult
from mapreduce.errors import MapReduceError
from mapreduce.rpc.convert import ShippedJob
from mapreduce.summary import JobSummary, SkippedRecord


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

    def line(self) -> str:
        where = f" on record {self.record}" if self.record else ""
        return f"{self.task} attempt {self.attempt} on {self.worker} failed{where}: {self.reason}"


@dataclass
class LostWorker:
    worker_id: str
    address: str
    reason: str
    at: float
    last_heartbeat: float


@dataclass
class JobEntry:
    """What the shell keeps about a job besides the state machine's record."""

    shipped: ShippedJob
    committer: OutputCommitter
    submitted: float
    results: dict[tuple[TaskKind, int], TaskResult] = field(default_factory=dict)
    summary_json: str = ""
    finished: float | None = None
    maps_done_at: float | None = None
    #: map outputs announced and retracted, in order: (index, attempt, address, retracted)
    output_log: list[tuple[int, int, str, bool]] = field(default_factory=list)
    failures: list[FailedAttempt] = field(default_factory=list)
    #: the end of each attempt's log: (kind, index, attempt) -> text
    logs: dict[tuple[TaskKind, int, int], str] = field(default_factory=dict)


class MasterDriver:
    """Serialises events into the :class:`MasterState` and executes its actions."""

    def __init__(
        self,
        config: MasterConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick_interval: float = 0.5,
    ) -> None:
        self.state = MasterState(config)
        self.clock = clock
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.jobs: dict[str, JobEntry] = {}
        self.finished_jobs: list[str] = []
        self.lost_workers: dict[str, LostWorker] = {}
        self.addresses: dict[str, str] = {}
        self.started = self.now()
        self._tick_interval = tick_interval
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="master-ticker", daemon=True)
        self._outputs: queue.Queue[tuple[str, dict[str, Any] | None]] = queue.Queue()
        self._output_thread = threading.Thread(
            target=self._output_loop, name="master-output", daemon=True
        )

    def start(self) -> None:
        self._ticker.start()
        self._output_thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self.lock:
            self.changed.notify_all()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def now(self) -> float:
        return self.clock()

    def _tick_loop(self) -> None:
        while not self._stop.wait(self._tick_interval):
            self.handle(ev.Tick(self.now()))

    def handle(
        self, event: ev.Event, result: TaskResult | None = None, log: str = ""
    ) -> list[act.Action]:
        """Apply ``event``.

        Args:
            event: what happened.
            result: the stats of a success report, kept if the attempt counts.
            log: the end of the reported attempt's log.
        """
        with self.lock:
            # The time is read once the lock is held: an event that waited for the
            # lock must not look older than it is (a heartbeat, say).
            event = dataclasses.replace(event, now=self.now())
            if isinstance(event, ev.WorkerRegistered):
                self.addresses[event.worker_id] = event.address
                self.lost_workers.pop(event.worker_id, None)
            actions = self.state.handle(event)
            if result is not None and isinstance(
                event, ev.MapTaskSucceeded | ev.ReduceTaskSucceeded
            ):
                self._keep_result(event.ref, result)
            if isinstance(event, ev.MapTaskSucceeded | ev.ReduceTaskSucceeded | ev.TaskFailed):
                self._keep_log(event, log)
            if isinstance(event, ev.MapTaskSucceeded):
                self._note_map_phase(event.ref.job_id, event.now)
            for action in actions:
                self._execute(action)
            if actions or not isinstance(event, ev.TaskRequested | ev.HeartbeatReceived | ev.Tick):
                # Wake long-polling task requests; idle polls and quiet ticks do not,
                # or idle workers would wake each other in a loop.
                self.changed.notify_all()
            return actions

    def _note_map_phase(self, job_id: str, now: float) -> None:
        entry, job = self.jobs.get(job_id), self.state.jobs.get(job_id)
        if entry is not None and job is not None and job.all_done(TaskKind.MAP):
            entry.maps_done_at = now  # the last map (re-runs included) finished

    def _keep_log(
        self, event: ev.MapTaskSucceeded | ev.ReduceTaskSucceeded | ev.TaskFailed, log: str
    ) -> None:
        ref = event.ref
        entry = self.jobs.get(ref.job_id)
        job = self.state.jobs.get(ref.job_id)
        if entry is None or job is None or ref.index >= len(job.tasks(ref.kind)):
            return
        task = job.tasks(ref.kind)[ref.index]
        attempt = task.attempts.get(ref.attempt)
        if attempt is None or attempt.worker_id != event.worker_id:
            return
        key = (ref.kind, ref.index, ref.attempt)
        if log:
            entry.logs[key] = log
        if (
            isinstance(event, ev.TaskFailed)
            and attempt.state is AttemptState.FAILED
            and not any(f.task == task.task_id and f.attempt == ref.attempt for f in entry.failures)
        ):
            entry.failures.append(
                FailedAttempt(
                    task.task_id,
                    ref.attempt,
                    event.worker_id,
                    event.reason,
                    event.record,
                    event.traceback,
                    event.now,
                )
            )

    def _keep_result(self, ref: ev.AttemptRef, result: TaskResult) -> None:
        job = self.state.jobs.get(ref.job_id)
        entry = self.jobs.get(ref.job_id)
        if job is None or entry is None:
            return
        task = job.tasks(ref.kind)[ref.index]
        if task.completed_attempt == ref.attempt:
            entry.results[(ref.kind, ref.index)] = result

    def _execute(self, action: act.Action) -> None:
        match action:
            case act.KillAttempt():
                if action.reason == "no progress" and action.job_id in self.jobs:
                    task_id = f"{action.kind.value}-{action.index:05d}"
                    self.jobs[action.job_id].failures.append(
                        FailedAttempt(
                            task_id,
                            action.attempt,
                            action.worker_id,
                            "no progress: killed after the task timeout",
                            "",
                            "",
                            self.now(),
                        )
                    )
            case act.WorkerLost():
                self.lost_workers[action.worker_id] = LostWorker(
                    action.worker_id,
                    self.addresses.get(action.worker_id, ""),
                    action.reason,
                    self.now(),
                    action.last_heartbeat,
                )
            case act.AnnounceMapOutput():
                if action.job_id in self.jobs:
                    self.jobs[action.job_id].output_log.append(
                        (action.index, action.attempt, action.address, False)
                    )
            case act.RetractMapOutput():
                if action.job_id in self.jobs:
                    self.jobs[action.job_id].output_log.append(
                        (action.index, action.attempt, "", True)
                    )
            case act.JobSucceeded():
                # The summary is taken now; the file system work is done by the
                # output thread, outside the lock (renames and fsyncs can be slow).
                data = self.summary_of(action.job_id).to_dict()
                self._outputs.put((action.job_id, data))
            case act.JobFailed():
                entry = self.jobs.get(action.job_id)
                if entry is not None:
                    entry.finished = self.now()
                    self._outputs.put((action.job_id, None))
                self.finished_jobs.append(action.job_id)
            case _:
                pass  # the servicer answers with assignments and grants

    def summary_of(self, job_id: str) -> JobSummary:
        """The job's summary from the committed attempts so far (call with the lock held)."""
        entry = self.jobs[job_id]
        job = self.state.jobs[job_id]
        summary = JobSummary(plan=entry.shipped.plan, output=entry.committer.output)
        for kind, tasks, results in (
            (TaskKind.MAP, job.maps, summary.map_results),
            (TaskKind.REDUCE, job.reduces, summary.reduce_results),
        ):
            for task in tasks:
                found = entry.results.get((kind, task.index))
                if found is not None and task.state is TaskState.COMPLETED:
                    results.append(found)
        for task in [*job.maps, *job.reduces]:
            summary.skipped.extend(
                SkippedRecord(task.task_id, record, "crashed user code in repeated attempts")
                for record in task.skip
            )
        end = entry.finished or self.now()
        if entry.maps_done_at is not None:
            summary.phase_seconds["map"] = entry.maps_done_at - entry.submitted
            summary.phase_seconds["reduce"] = end - entry.maps_done_at
        summary.phase_seconds["total"] = end - entry.submitted
        return summary

    def _output_loop(self) -> None:
        """Commit the output of succeeded jobs and remove that of failed ones, in order."""
        while True:
            job_id, data = self._outputs.get()
            with self.lock:
                entry = self.jobs[job_id]
            if data is None:
                entry.committer.abort()
                continue
            error = ""
            try:
                entry.committer.commit_job(data)
            except (OSError, MapReduceError) as exc:
                error = f"committing the output failed: {exc}"
            with self.lock:
                job = self.state.jobs[job_id]
                entry.finished = self.now()
                self.finished_jobs.append(job_id)
                if error:
                    job.state = JobState.FAILED
                    job.reason = error
                else:
                    entry.summary_json = json.dumps(data, sort_keys=True)
                self.changed.notify_all()

    # -- queries for the servicer ------------------------------------------------

    def attempt_running(self, ref: ev.AttemptRef) -> bool:
        with self.lock:
            job = self.state.jobs.get(ref.job_id)
            if job is None or ref.index >= len(job.tasks(ref.kind)):
                return False
            attempt = job.tasks(ref.kind)[ref.index].attempts.get(ref.attempt)
            return attempt is not None and attempt.state is AttemptState.RUNNING
