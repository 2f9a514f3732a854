"""The master's shell: owns the state machine, the journal, the clock and the lock.

Every durable event goes the same way (:meth:`MasterDriver.handle`): under
the lock the core applies it and the event is appended to the journal; the
lock is released, the journal syncs (group commit: concurrent requests share
one fsync), and only then is anything acted on: a reply sent, an output
committed.  A crash therefore never leaves a decision visible that the
journal does not hold.  Heartbeats and ticks only touch
:class:`~mapreduce.core.liveness.Liveness`; the durable events it derives go
through :meth:`handle` like the rest.

The I/O the core asks for (preparing, committing or aborting a job's output) is
done by an output thread, which reports back with ``JobStarted`` /
``JobStartFailed`` and ``JobCommitted`` / ``JobCommitFailed``.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import math
import pickle
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mapreduce.core import actions as act
from mapreduce.core import events as ev
from mapreduce.core import queries
from mapreduce.core.config import MasterConfig
from mapreduce.core.liveness import Liveness
from mapreduce.core.master import ACTIVE, JobState, MasterState
from mapreduce.core.spec import MAX_SPLITS, JobSpec
from mapreduce.daemonlog import about
from mapreduce.dataflow.commit import Committer, output_committer
from mapreduce.errors import MapReduceError
from mapreduce.master import codec
from mapreduce.master.journal import Journal, MemoryJournal
from mapreduce.master.logs import LogStore

log = logging.getLogger("mapreduce.master")

#: A snapshot is written after this many journal records at least (more for big jobs).
SNAPSHOT_EVERY = 20_000
#: Upper bounds (seconds) of the fetch latency histogram's buckets (/metrics).
FETCH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: The most fetch latencies one reduce attempt's report counts (one per map task).
MAX_FETCHES_REPORTED = MAX_SPLITS
#: The most calls held at once by :meth:`MasterDriver.hold_until` (reducers' long polls for
#: map outputs); past it they are answered at once and their callers poll, so they never
#: take more than this many of the server's threads.
MAX_HELD_CALLS = 32


class LatencyHistogram:
    """A histogram of latencies in seconds: a count per bucket, their sum and count.

    What /metrics exports as a Prometheus histogram (:mod:`mapreduce.web.metrics`);
    kept here without prometheus-client, which only a scrape imports (a ``run`` never
    does: it takes 0.02 s to import).  Safe to use from several threads.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.buckets = tuple(sorted(buckets))
        self.created = time.time()
        self._lock = threading.Lock()
        self._counts = [0] * (len(self.buckets) + 1)  # the last: above every bound
        self._sum = 0.0

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[tuple[float, int]], int, float]:
        """``([(upper bound, observations <= it)...], count, sum)``: cumulative counts."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative = list(itertools.accumulate(counts))
        return list(zip(self.buckets, cumulative, strict=False)), cumulative[-1], total


def wall_clock() -> Callable[[], float]:
    """Seconds since the Unix epoch that never go backwards within this process.

    Durable events carry these times, so they keep their meaning after a restart
    and on another host; within one process they advance with the monotonic
    clock, so a step of the system clock does not expire every worker at once.
    """
    wall, mono = time.time(), time.monotonic()
    return lambda: wall + (time.monotonic() - mono)


#: Events sent by a worker (they carry its id and incarnation).
_FROM_WORKERS = (
    ev.WorkerRegistered,
    ev.HeartbeatReceived,
    ev.TaskRequested,
    ev.MapTaskSucceeded,
    ev.ReduceCommitRequested,
    ev.ReduceTaskSucceeded,
    ev.TaskFailed,
    ev.FetchFailed,
)


@dataclass(frozen=True)
class Assignment:
    """A task handed to a worker, with what the reply needs (the job's spec)."""

    action: act.AssignTask
    spec: JobSpec


class MasterDriver:
    """Serialises events into the :class:`MasterState`, journals them, carries out actions.

    Args:
        config: the master's timeouts and limits.
        journal: where durable events go; :class:`MemoryJournal` (nothing
            survives the process) when None.
        logs: where the ends of attempt logs are kept.
        clock: the time source (tests pass a fake one).
        tick_interval: seconds between liveness checks.
    """

    def __init__(
        self,
        config: MasterConfig | None = None,
        journal: Journal | None = None,
        logs: LogStore | None = None,
        clock: Callable[[], float] | None = None,
        tick_interval: float = 0.5,
    ) -> None:
        self.config = config or MasterConfig()
        self.journal: Journal = journal or MemoryJournal()
        #: checkpoints are only worth their cost when the journal outlives the process
        self._durable = not isinstance(self.journal, MemoryJournal)
        self.logs = logs or LogStore()
        self.clock = clock or wall_clock()
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.state = MasterState(self.config)
        self.liveness = Liveness(self.now())
        self.committers: dict[str, Committer] = {}
        self.recovery_messages: list[str] = []
        #: set once this master has recovered its state (and, replicated, leads): only then
        #: does it answer requests
        self.serving = threading.Event()
        #: what the shell adds to the status pages and to _summary.json (not durable state:
        #: for example the faults that --chaos injected)
        self.annotate: Callable[[], dict[str, Any]] | None = None
        #: seconds each fetch of a map output took, as reducers report them (for /metrics;
        #: not durable: since this process started)
        self.fetch_seconds = LatencyHistogram(
            "mapreduce_shuffle_fetch_seconds",
            "Seconds each fetch of a map output took, as reducers report them.",
            FETCH_BUCKETS,
        )
        #: called first when the driver stops (the health service turns NOT_SERVING)
        self.on_stop: list[Callable[[], None]] = []
        self._assigned_yet = False
        self._held = 0  # calls in hold_until() now
        self._tick_interval = tick_interval
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="master-ticker", daemon=True)
        self._outputs: queue.Queue[tuple[str, str]] = queue.Queue()
        self._output_thread = threading.Thread(
            target=self._output_loop, name="master-output", daemon=True
        )

    # -- life cycle -------------------------------------------------------------

    def recover(self) -> None:
        """Rebuild the state from the journal, start a new epoch, resume unfinished jobs."""
        recovered = self.journal.recover()
        self.recovery_messages = list(recovered.messages)
        for message in recovered.messages:
            log.warning("journal: %s", message)
        state = MasterState(self.config)
        if recovered.snapshot is not None:
            state = pickle.loads(recovered.snapshot)
        for record in recovered.records:
            state.handle(codec.decode(record))
        with self.lock:
            self.state = state
            self.liveness = Liveness(self.now())
            for job_id in state.queue:
                job = state.jobs[job_id]
                committer = _committer(job.spec)
                if job.state in ACTIVE:
                    self.committers[job_id] = committer
                    try:
                        if job.state is not JobState.QUEUED or not job.output_at_turn:
                            committer.resume()  # (queued jobs hold nothing, unless older)
                    except (OSError, MapReduceError) as exc:
                        # A deposed leader that is still alive (paused, cut off) may hold the
                        # lock of this same job's staging: its orders are fenced by the epoch.
                        log.warning("%s; going on without the lock", exc, extra=about(job_id))
                if job.state is JobState.COMMITTING:
                    self._outputs.put(("commit", job_id))
                elif job.state in (JobState.FAILED, JobState.CANCELLED):
                    committer.abort()  # its abort may not have happened before the crash
        # The epoch: one more than any before, and the Raft term when replicated.
        epoch = max(state.epoch + 1, self.journal.term())
        self.handle(ev.MasterStarted(self.now(), epoch, self.config))
        self.serving.set()

    def lead(self) -> None:
        """Wait until this master may serve (a replicated one: until it leads), then recover."""
        self.journal.wait_for_leadership(self._stop)
        self.recover()
        log.info("serving in epoch %d with %d jobs known", self.state.epoch, len(self.state.jobs))

    def role(self) -> str:
        """``leader`` when this master serves, else ``follower``."""
        return "leader" if self.serving.is_set() else "follower"

    def not_serving_reason(self) -> str:
        """Why a request is refused while this master does not serve."""
        if not self.journal.replicated:
            return "the master is starting"
        leader = self.journal.leader_address()
        if leader:
            return f"not the leader; the leader is at {leader}"
        return "not the leader; no leader is elected yet"

    def start(self) -> None:
        self._ticker.start()
        self._output_thread.start()

    def stop(self) -> None:
        """Stop the ticker and wake long polls.  (The journal needs no closing: whatever
        was acted on is on disk already.)"""
        for hook in self.on_stop:
            hook()
        self._stop.set()
        with self.lock:
            self.changed.notify_all()

    def observe_fetches(self, seconds: Iterable[float]) -> None:
        """Count the fetch latencies a reducer reports (at most one per map task of a job)."""
        for value in itertools.islice(seconds, MAX_FETCHES_REPORTED):
            if math.isfinite(value) and value >= 0:
                self.fetch_seconds.observe(value)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def now(self) -> float:
        return self.clock()

    # -- events -------------------------------------------------------------------

    def handle(self, event: ev.Event) -> list[act.Action]:
        """Apply ``event``; return its actions once the journal holds it durably."""
        with self.lock:
            actions, seq = self.apply_locked(event)
        self.journal.sync(seq)
        self._after(actions)
        return actions

    def register(self, event: ev.WorkerRegistered) -> str:
        """Register a worker; returns why it was refused ("", and nothing changes, if so)."""
        with self.lock:
            refused = self.liveness.registration_refusal(self.state, event, self.now())
            if refused:
                return refused
            actions, seq = self.apply_locked(event)
        self.journal.sync(seq)
        self._after(actions)
        return ""

    def apply_locked(self, event: ev.Event) -> tuple[list[act.Action], int]:
        """Apply ``event`` and append it to the journal; the caller holds the lock.

        Returns its actions and its journal record number (0: not journaled).  Nothing
        may be acted on before ``journal.sync(number)`` returns.
        """
        actions = self.state.handle(event)
        seq = 0
        if (
            self._durable
            and isinstance(event, ev.DURABLE)
            and (
                not isinstance(event, ev.TaskRequested)
                or any(isinstance(a, act.AssignTask) for a in actions)
            )
        ):
            seq = self.journal.append(codec.encode(event))
            pending = self.journal.records_since_snapshot()
            if pending >= SNAPSHOT_EVERY and pending >= self._snapshot_threshold():
                self.journal.write_snapshot(
                    pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
                )
        # Liveness reads the clock now, with the lock held: an event that waited for
        # the lock must not make its worker look silent for longer than it was.
        self._observe(event, actions, self.now())
        if actions or not isinstance(event, ev.TaskRequested | ev.HeartbeatReceived):
            # Wake long-polling task requests; idle polls do not, or idle workers
            # would wake each other in a loop.
            self.changed.notify_all()
        return actions, seq

    def _snapshot_threshold(self) -> int:
        """Compaction costs O(state): do it after a number of records proportional to it
        (a job takes about three records per task, so one job rarely compacts twice)."""
        tasks = sum(len(job.maps) + len(job.reduces) for job in self.state.jobs.values())
        return max(SNAPSHOT_EVERY, 4 * tasks)

    def _observe(self, event: ev.Event, actions: list[act.Action], now: float) -> None:
        """Feed liveness: any word from a current worker incarnation means it is alive."""
        if isinstance(event, _FROM_WORKERS):
            if self.state.is_current(event.worker_id, event.incarnation):
                self.liveness.heard_from(event.worker_id, event.incarnation, now)
                if isinstance(event, ev.HeartbeatReceived):
                    self.liveness.paused(event.worker_id, event.incarnation, event.paused)
            if isinstance(event, ev.HeartbeatReceived):
                for ref in event.progressed:
                    self.liveness.progressed(ref, now)
        for action in actions:
            if isinstance(action, act.AssignTask):
                ref = ev.AttemptRef(action.job_id, action.kind, action.index, action.attempt)
                self.liveness.progressed(ref, now)

    def _after(self, actions: list[act.Action]) -> None:
        """Carry out the actions that need I/O, now that they are durable."""
        for action in actions:
            match action:
                case act.PrepareOutput():
                    self._outputs.put(("prepare", action.job_id))
                case act.CommitJob():
                    self._outputs.put(("commit", action.job_id))
                case act.AbortJob() | act.RefuseJob():
                    self._outputs.put(("abort", action.job_id))
                case _:
                    pass  # the servicer answers with assignments, grants and kills

    def _tick_loop(self) -> None:
        while not self._stop.wait(self._tick_interval):
            self.tick()

    def tick(self) -> None:
        """Check liveness; each silent worker and stalled attempt becomes a durable event."""
        if not self.serving.is_set():
            return
        with self.lock:
            found = self.liveness.expired(self.state, self.now())
        for event in found:
            self.handle(event)

    # -- requests that need more than one event -------------------------------

    def submit(self, spec: JobSpec) -> list[act.Action]:
        """Prepare the job's output and submit it; a known job id is a retried submission.

        Raises:
            MapReduceError, OSError: the output cannot be used (it exists, or another
                job of any process writes it).
        """
        with self.lock:
            if spec.job_id in self.state.jobs:
                return []
            refused = self.state.refusal(spec)
            if refused:  # the core would refuse it: do not touch the output first
                return [act.RefuseJob(spec.job_id, refused)]
            committer = _committer(spec)
            committer.check_free()  # its lock is taken when its turn comes (PrepareOutput)
            self.committers[spec.job_id] = committer
            actions, seq = self.apply_locked(ev.JobSubmitted(self.now(), spec, output_at_turn=True))
        self.journal.sync(seq)
        log.info(
            "job submitted: %d map tasks, %d reduce tasks, output %s",
            len(spec.splits),
            spec.num_reducers,
            spec.output,
            extra=about(spec.job_id),
        )
        self._after(actions)
        return actions

    def request_tasks(
        self,
        worker_id: str,
        incarnation: str,
        free_slots: int,
        wait: float,
        still_asking: Callable[[], bool],
    ) -> tuple[list[act.Action], list[Assignment]]:
        """Long poll: hand out tasks, waiting up to ``wait`` seconds for one to be idle."""
        deadline = time.monotonic() + wait
        with self.lock:
            while True:
                actions, seq = self.apply_locked(
                    ev.TaskRequested(self.now(), worker_id, incarnation, free_slots)
                )
                remaining = deadline - time.monotonic()
                if actions or remaining <= 0 or self.stopped or not still_asking():
                    break
                self.changed.wait(remaining)
            assigned = [
                Assignment(a, self.state.jobs[a.job_id].spec)
                for a in actions
                if isinstance(a, act.AssignTask)
            ]
            if assigned and not self._assigned_yet:
                self._assigned_yet = True
                log.info("first task assigned in epoch %d at %.3f", self.state.epoch, self.now())
        self.journal.sync(seq)
        return actions, assigned

    def report(
        self,
        event: ev.MapTaskSucceeded | ev.ReduceTaskSucceeded | ev.TaskFailed,
        log_text: str = "",
    ) -> list[act.Action]:
        """A worker's report about an attempt, with the end of the attempt's log."""
        if log_text:
            ref = event.ref
            self.logs.put(ref.job_id, ref.kind, ref.index, ref.attempt, log_text)
            event = dataclasses.replace(event, has_log=True)
        return self.handle(event)

    def hold_until(
        self, ready: Callable[[], bool], wait: float, still_asking: Callable[[], bool]
    ) -> None:
        """For a server thread, with the lock held: wait up to ``wait`` seconds for
        ``ready()`` (checked at every change of the state) while ``still_asking()``,
        unless :data:`MAX_HELD_CALLS` calls wait already."""
        if self._held >= MAX_HELD_CALLS:
            return
        self._held += 1
        try:
            self._wait_until(ready, wait, still_asking)
        finally:
            self._held -= 1

    def wait_for_end(self, job_id: str, timeout: float) -> None:
        """Wait until the job has ended (succeeded, failed or was cancelled), for up to
        ``timeout`` seconds.  Ctrl-C interrupts it (as it does ``time.sleep``)."""
        with self.lock:
            self._wait_until(
                lambda: job_id in self.state.jobs and self.state.jobs[job_id].state not in ACTIVE,
                timeout,
                lambda: True,
            )

    def _wait_until(
        self, ready: Callable[[], bool], wait: float, still_asking: Callable[[], bool]
    ) -> None:
        if not wait > 0:
            return
        deadline = time.monotonic() + wait
        while not ready() and not self.stopped and still_asking():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.changed.wait(remaining)

    def heartbeat(
        self, event: ev.HeartbeatReceived, running: list[ev.AttemptRef]
    ) -> tuple[list[act.Action], list[ev.AttemptRef], list[str]]:
        """A heartbeat: liveness only.  Returns actions, attempts to kill, finished jobs."""
        with self.lock:
            actions, _ = self.apply_locked(event)
            kills = queries.attempts_to_kill(self.state, running)
            return actions, kills, queries.finished_jobs(self.state)

    # -- output ----------------------------------------------------------------------

    def _output_loop(self) -> None:
        """Commit the output of succeeded jobs and remove that of failed ones, in order."""
        while True:
            what, job_id = self._outputs.get()
            if what == "prepare":
                self._prepare(job_id)
                continue
            with self.lock:
                committer = self.committers.pop(job_id, None)
                job = self.state.jobs.get(job_id)
                summary = queries.job_summary(self.state, job_id).to_dict() if job else None
                partitions = job.spec.num_reducers if job else 0
            if committer is None:
                continue
            if what == "abort":
                committer.abort()
                log.info("job ended without output", extra=about(job_id))
                continue
            if summary is None:
                continue
            if self.annotate is not None:
                summary.update(self.annotate())
            try:
                committer.commit_job(summary, partitions)
            except (OSError, MapReduceError) as exc:
                log.error("committing the output failed: %s", exc, extra=about(job_id))
                # Its staging directory goes too (the AbortJob that follows finds no committer).
                committer.abort()
                self.handle(
                    ev.JobCommitFailed(self.now(), job_id, f"committing the output failed: {exc}")
                )
            else:
                self.handle(ev.JobCommitted(self.now(), job_id))
                log.info("job committed: output in %s", committer.output, extra=about(job_id))

    def _prepare(self, job_id: str) -> None:
        """The job's turn: take its output's lock and make its staging directory."""
        with self.lock:
            committer = self.committers.get(job_id)
        if committer is None:
            return
        try:
            committer.prepare()
        except (OSError, MapReduceError) as exc:
            log.error("preparing the output failed: %s", exc, extra=about(job_id))
            self.handle(
                ev.JobStartFailed(self.now(), job_id, f"preparing the output failed: {exc}")
            )
        else:
            self.handle(ev.JobStarted(self.now(), job_id))


def _committer(spec: JobSpec) -> Committer:
    """The committer of a job's output (on a file system, or on a store)."""
    return output_committer(
        spec.output, spec.job_id, overwrite=spec.overwrite, options=spec.storage_options
    )
