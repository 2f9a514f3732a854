"""Scenario tests of the pure master state machine, one per failure case of the paper.

No sockets, no threads, no sleeps: time is the ``now`` of each event, and
``validate`` checks the invariants after every event.
"""

from __future__ import annotations

import ast
import dataclasses
import pickle
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapreduce.core import actions as act
from mapreduce.core import events as ev
from mapreduce.core import liveness, queries
from mapreduce.core.config import MasterConfig
from mapreduce.core.invariants import validate
from mapreduce.core.liveness import Liveness
from mapreduce.core.master import JobRecord, JobState, MapOutputEntry, MasterState, WorkerInfo
from mapreduce.core.policy import (
    UNKNOWN_REASON,
    Failure,
    RetryPolicy,
    TaskRetries,
    Verdict,
    judge,
)
from mapreduce.core.spec import InputSplit, JobSpec
from mapreduce.core.tasks import Attempt, AttemptState, Task, TaskKind, TaskState, TaskStats
from mapreduce.master import codec

MAP, REDUCE = TaskKind.MAP, TaskKind.REDUCE


def make_spec(job: str = "j", maps: int = 2, reduces: int = 1, **kw: object) -> JobSpec:
    splits = tuple(InputSplit(f"/in/{i}", 0, 100) for i in range(maps))
    return JobSpec(job, "job.py", num_reducers=reduces, output=f"/out/{job}", splits=splits, **kw)  # type: ignore[arg-type]


class Cluster:
    """Drives a MasterState (and its Liveness) as the master's shell does; validates always.

    Every durable event is also kept in ``durable``, in order, as the journal would.
    """

    def __init__(self, snapshot_at: int = -1, **config: float) -> None:
        self.master = MasterState(MasterConfig(**config))  # type: ignore[arg-type]
        self.liveness = Liveness(0.0)
        self.now = 0.0
        self.incarnations: dict[str, str] = {}
        self.actions: list[act.Action] = []
        self.durable: list[ev.Event] = []
        #: the pickled state once ``snapshot_at`` durable events were applied, as a checkpoint
        self.snapshot_at = snapshot_at
        self.snapshot = b""
        #: answer every PrepareOutput with JobStarted at once, as the shell does
        self.prepare_outputs = True

    def send(self, event: ev.Event) -> list[act.Action]:
        out = self.master.handle(event)
        validate(self.master)
        self.actions.extend(out)
        if isinstance(event, ev.DURABLE) and (
            not isinstance(event, ev.TaskRequested)
            or any(isinstance(a, act.AssignTask) for a in out)
        ):
            self.durable.append(event)
            if len(self.durable) == self.snapshot_at:
                self.snapshot = pickle.dumps(self.master)
        for action in out:
            if isinstance(action, act.PrepareOutput) and self.prepare_outputs:
                out += self.send(ev.JobStarted(self.now, action.job_id))  # as the shell does
        worker = getattr(event, "worker_id", None)
        if worker is not None and self.master.is_current(worker, event.incarnation):  # type: ignore[union-attr]
            self.liveness.heard_from(worker, event.incarnation, event.now)  # type: ignore[union-attr]
        if isinstance(event, ev.HeartbeatReceived):
            for ref in event.progressed:
                self.liveness.progressed(ref, event.now)
        return out

    def submit(self, job: str = "j", maps: int = 2, reduces: int = 1, **kw: object) -> None:
        self.send(ev.JobSubmitted(self.now, make_spec(job, maps, reduces, **kw), True))

    def register(self, worker: str, incarnation: str | None = None, slots: int = 1) -> None:
        inc = incarnation or f"{worker}-inc{len(self.incarnations)}"
        self.incarnations[worker] = inc
        self.send(ev.WorkerRegistered(self.now, worker, inc, f"{worker}:1", slots))

    def request(self, worker: str, slots: int = 1) -> list[act.AssignTask]:
        out = self.send(ev.TaskRequested(self.now, worker, self.incarnations[worker], slots))
        return [a for a in out if isinstance(a, act.AssignTask)]

    def ref(self, a: act.AssignTask) -> ev.AttemptRef:
        return ev.AttemptRef(a.job_id, a.kind, a.index, a.attempt)

    def finish(self, a: act.AssignTask, counters: dict[str, int] | None = None) -> list[act.Action]:
        inc = self.incarnations[a.worker_id]
        if a.kind is MAP:
            return self.send(
                ev.MapTaskSucceeded(
                    self.now,
                    a.worker_id,
                    inc,
                    self.ref(a),
                    TaskStats(output_bytes=10, counters=counters or {}),
                )
            )
        out = self.send(ev.ReduceCommitRequested(self.now, a.worker_id, inc, self.ref(a)))
        if any(isinstance(x, act.GrantCommit) for x in out):
            out += self.send(
                ev.ReduceTaskSucceeded(
                    self.now,
                    a.worker_id,
                    inc,
                    self.ref(a),
                    TaskStats(output_bytes=5, counters=counters or {}),
                )
            )
        return out

    def fail(
        self, a: act.AssignTask, record: str = "", infrastructure: bool = False
    ) -> list[act.Action]:
        inc = self.incarnations[a.worker_id]
        return self.send(
            ev.TaskFailed(
                self.now,
                a.worker_id,
                inc,
                self.ref(a),
                "ValueError: x",
                record,
                "tb",
                infrastructure=infrastructure,
            )
        )

    def tick(self, dt: float) -> list[act.Action]:
        """Time passes: liveness turns silent workers and stalled attempts into events."""
        self.now += dt
        out = self.send(ev.Tick(self.now))
        for event in self.liveness.expired(self.master, self.now):
            out += self.send(event)
        return out

    def restart_master(self, rng: random.Random) -> None:
        """A new master epoch; every worker rejoins, some having lost a map output meanwhile."""
        self.send(ev.MasterStarted(self.now, self.master.epoch + 1, self.master.config))
        self.liveness = Liveness(self.now)
        for worker in sorted(self.master.workers.values(), key=lambda w: w.worker_id):
            held = [
                ev.MapOutputRef(
                    job_id, index, self.master.jobs[job_id].maps[index].completed_attempt
                )  # type: ignore[arg-type]
                for job_id, index in sorted(worker.completed_maps)
            ]
            if held and rng.random() < 0.5:
                held.pop(rng.randrange(len(held)))  # lost with a disk, say
            running = tuple(ev.AttemptRef(*key) for key in sorted(worker.running, key=str))
            self.send(
                ev.WorkerRegistered(
                    self.now,
                    worker.worker_id,
                    worker.incarnation,
                    worker.address,
                    worker.slots,
                    True,
                    tuple(held),
                    running,
                )
            )

    def commit(self, job: str = "j") -> None:
        """The shell committed the job's output."""
        self.send(ev.JobCommitted(self.now, job))

    def heartbeat(self, worker: str, running: tuple[ev.AttemptRef, ...] = ()) -> list[act.Action]:
        return self.send(ev.HeartbeatReceived(self.now, worker, self.incarnations[worker], running))

    def job(self, job: str = "j") -> JobState:
        return self.master.jobs[job].state

    def task(self, kind: TaskKind, index: int, job: str = "j"):  # type: ignore[no-untyped-def]
        return self.master.jobs[job].tasks(kind)[index]


def test_happy_path_maps_then_reduces() -> None:
    c = Cluster()
    c.submit(maps=2, reduces=2)
    c.register("w1")
    c.register("w2")
    (m0,) = c.request("w1")
    (m1,) = c.request("w2")
    assert (m0.kind, m0.index, m1.index) == (MAP, 0, 1)
    (r0,) = c.request("w1")
    assert (r0.kind, r0.index) == (REDUCE, 0)  # reducers start before the map phase ends
    assert c.request("w1") == []  # both its slots are busy
    out = c.finish(m0, {"lines": 3})
    assert act.AnnounceMapOutput("j", 0, 0, "w1", "w1:1") in out
    c.finish(m1)
    (r1,) = c.request("w2")
    c.finish(r0)
    out = c.finish(r1)
    assert act.CommitJob("j") in out
    assert c.job() is JobState.COMMITTING
    c.commit()
    assert c.job() is JobState.SUCCEEDED
    assert c.master.jobs["j"].output_log == [
        MapOutputEntry(0, 0, "w1:1", False),
        MapOutputEntry(1, 0, "w2:1", False),
    ]


def test_dead_worker_in_progress_and_completed_maps_rerun() -> None:
    """Paper 3.3: a dead worker's in-progress tasks and completed maps go back to idle."""
    c = Cluster(worker_timeout=10)
    c.submit(maps=2, reduces=1)
    c.register("w1")
    c.register("w2")
    (m0,) = c.request("w1")
    (m1,) = c.request("w2")
    c.finish(m0)  # w1's output is on w1's disk
    (_r0,) = c.request("w1")
    c.tick(6)
    c.heartbeat("w2")
    out = c.tick(6)  # w1 silent for 12 s
    assert any(isinstance(a, act.WorkerLost) and a.worker_id == "w1" for a in out)
    assert act.RetractMapOutput("j", 0, 0) in out
    assert c.task(MAP, 0).state is TaskState.IDLE
    assert c.task(REDUCE, 0).state is TaskState.IDLE
    assert c.task(REDUCE, 0).attempts[0].state is AttemptState.KILLED
    assert c.task(REDUCE, 0).failures == 0  # a lost worker is not the task's fault
    c.finish(m1)
    (again,) = c.request("w2")
    assert (again.kind, again.index, again.attempt) == (MAP, 0, 1)


def test_completed_reduces_are_kept_when_their_worker_dies() -> None:
    c = Cluster(worker_timeout=10)
    c.submit(maps=1, reduces=2)
    c.register("w1")
    c.register("w2")
    (m0,) = c.request("w1")
    c.finish(m0)
    (r0,) = c.request("w2")
    c.finish(r0)
    c.tick(5)
    c.heartbeat("w1")
    c.tick(6)  # w2 dies after committing reduce 0
    assert c.task(REDUCE, 0).state is TaskState.COMPLETED
    assert c.task(MAP, 0).state is TaskState.COMPLETED  # still needed by reduce 1, on w1


def test_fetch_failure_reruns_the_map_without_charging_the_reducer() -> None:
    c = Cluster()
    c.submit(maps=1, reduces=1)
    c.register("w1")
    c.register("w2")
    (m0,) = c.request("w1")
    c.finish(m0)
    (r0,) = c.request("w2")
    out = c.send(ev.FetchFailed(c.now, "w2", c.incarnations["w2"], c.ref(r0), 0, 0))
    assert act.RetractMapOutput("j", 0, 0) in out
    assert c.task(REDUCE, 0).state is TaskState.IN_PROGRESS  # the reducer keeps running
    assert c.task(REDUCE, 0).failures == 0
    (m0b,) = c.request("w1")
    assert (m0b.index, m0b.attempt) == (0, 1)
    out = c.finish(m0b)
    assert act.AnnounceMapOutput("j", 0, 1, "w1", "w1:1") in out
    # a late duplicate report about the old output changes nothing
    assert c.send(ev.FetchFailed(c.now, "w2", c.incarnations["w2"], c.ref(r0), 0, 0)) == []
    assert act.CommitJob("j") in c.finish(r0)


def test_zombie_duplicate_and_late_reports_are_ignored() -> None:
    c = Cluster(worker_timeout=10)
    c.submit(maps=1, reduces=1)
    c.register("w1")
    c.register("w2")
    (m0,) = c.request("w1")
    old_inc = c.incarnations["w1"]
    c.tick(5)
    c.heartbeat("w2")
    c.tick(6)  # w1 declared dead
    (m0b,) = c.request("w2")
    # the zombie comes back with its old incarnation: told to re-register, report ignored
    out = c.send(ev.MapTaskSucceeded(c.now, "w1", old_inc, c.ref(m0), TaskStats(counters={"x": 1})))
    assert out == [act.ReRegisterWorker("w1", old_inc)]
    assert c.task(MAP, 0).state is TaskState.IN_PROGRESS
    c.finish(m0b, {"x": 1})
    c.finish(m0b, {"x": 1})  # duplicate report: no double counting
    assert c.master.jobs["j"].completed[MAP] == 1
    assert c.task(MAP, 0).stats.counters == {"x": 1}


def test_worker_restarting_on_the_same_address_loses_its_old_incarnation() -> None:
    c = Cluster()
    c.submit(maps=1, reduces=1)
    c.register("w1", "first")
    (_m0,) = c.request("w1")
    out = c.send(ev.WorkerRegistered(c.now, "w1", "second", "w1:1", 1))
    assert act.WorkerLost("w1", "first", "restarted with a new incarnation") in out
    c.incarnations["w1"] = "second"
    (again,) = c.request("w1")
    assert (again.index, again.attempt, again.incarnation) == (0, 1, "second")
    # the retried registration of the same incarnation is idempotent
    assert c.send(ev.WorkerRegistered(c.now, "w1", "second", "w1:1", 1)) == []


def test_task_failing_max_attempts_fails_the_job_with_the_last_error() -> None:
    c = Cluster()
    c.submit(maps=1, reduces=1, max_attempts=3)
    c.register("w1")
    for attempt in range(3):
        (m0,) = c.request("w1")
        assert m0.attempt == attempt
        out = c.fail(m0, record="in.txt@7")
    failed = [a for a in out if isinstance(a, act.AbortJob)]
    assert failed and "map-00000 failed 3 times" in failed[0].reason
    assert "on record in.txt@7" in failed[0].reason and "tb" in failed[0].reason
    assert c.job() is JobState.FAILED
    assert c.request("w1") == []


def test_bad_record_is_skipped_after_repeated_failures() -> None:
    """Paper 4.6: a record that crashes twice is skipped by the next attempt."""
    c = Cluster()
    c.submit(maps=1, reduces=1, max_attempts=3, skip_bad_records=1)
    c.register("w1")
    (a0,) = c.request("w1")
    c.fail(a0, record="in.txt@7")
    (a1,) = c.request("w1")
    assert a1.skip == ()
    c.fail(a1, record="in.txt@7")
    (a2,) = c.request("w1")
    assert a2.skip == ("in.txt@7",)
    assert c.task(MAP, 0).failures == 0  # the record's failures are not the task's
    c.finish(a2)
    assert c.master.jobs["j"].skipped == 1


def test_skipped_records_keep_where_they_are_and_why_for_the_summary() -> None:
    """The summary lists a skipped record by its failure's label and reason (as ``--local``
    does); records skipped in journals written before labels fall back to the record id."""
    c = Cluster()
    c.submit(maps=1, reduces=1, max_attempts=3, skip_bad_records=2)
    c.register("w1")
    for _ in range(2):
        (m,) = c.request("w1")
        c.send(
            ev.TaskFailed(
                c.now, "w1", c.incarnations["w1"], c.ref(m), "ValueError: bad", "7", "tb",
                label="/in/0@7",
            )
        )  # fmt: skip
    for _ in range(2):
        (m,) = c.request("w1")
        c.fail(m, record="9")  # no label: an older worker, or an older journal
    (m,) = c.request("w1")
    assert m.skip == ("7", "9")
    assert "failed on record /in/0@7: ValueError: bad" in c.master.jobs["j"].failures[0].line()
    skipped = queries.job_summary(c.master, "j").skipped
    assert [(s.task, s.record, s.reason) for s in skipped] == [
        ("map-00000", "/in/0@7", "ValueError: bad"),
        ("map-00000", "9", "ValueError: x"),
    ]
    task = c.task(MAP, 0)
    del task.skip_notes  # as in a snapshot pickled before notes were kept
    skipped = queries.job_summary(c.master, "j").skipped
    assert [(s.record, s.reason) for s in skipped] == [("7", UNKNOWN_REASON), ("9", UNKNOWN_REASON)]


def test_the_local_runner_and_the_master_judge_failures_by_one_rule() -> None:
    """``judge`` is the rule both apply: the same failures give the same counts and verdicts."""
    policy = RetryPolicy(max_attempts=3, record_failures_to_skip=2, skip_budget=1)
    counts = TaskRetries()
    bad = Failure("7", "in@7", "ValueError: bad")
    assert judge(policy, counts, bad, 0) == Verdict(True, False, False)
    assert judge(policy, counts, bad, 0) == Verdict(True, True, False)  # skipped: uncounted
    assert (counts.failures, counts.skip) == (0, ["7"])
    other = Failure("9", "in@9", "ValueError: bad")
    for job_skipped, expected in ((1, False), (1, False), (1, True)):  # the budget is spent
        assert judge(policy, counts, other, job_skipped).task_failed is expected
    machine = RetryPolicy(max_attempts=1, max_infrastructure_failures=1)
    counts = TaskRetries()
    full = Failure("7", "in@7", "OSError: disk full", infrastructure=True)
    assert judge(machine, counts, full, 0) == Verdict(False, False, False)
    assert counts.record_failures == {}  # never blamed on a record
    assert judge(machine, counts, full, 0) == Verdict(True, False, True)  # beyond the bound


def test_no_progress_fails_the_attempt_and_retries() -> None:
    c = Cluster(task_timeout=30, worker_timeout=100)
    c.submit(maps=1, reduces=1)
    c.register("w1")
    (m0,) = c.request("w1")
    c.tick(20)
    c.heartbeat("w1", (c.ref(m0),))  # progress at t=20
    assert c.tick(20) == []
    out = c.tick(15)  # 35 s without progress
    assert any(isinstance(a, act.KillAttempt) and a.reason == "no progress" for a in out)
    assert c.task(MAP, 0).failures == 1
    (again,) = c.request("w1")
    assert again.attempt == 1


def test_backup_task_near_the_end_first_finisher_wins() -> None:
    """Paper 3.6: the last in-progress task gets a backup; the loser is killed."""
    c = Cluster(backup_after=5, worker_timeout=100)
    c.submit(maps=2, reduces=1)
    c.register("w1")
    c.register("w2")
    (m0,) = c.request("w1")
    (m1,) = c.request("w2")
    c.finish(m1)
    (r0,) = c.request("w2")  # reduce 0 waits for map 0
    c.register("w3")
    assert c.request("w3") == []  # the straggler is not old enough yet
    c.tick(6)
    (backup,) = c.request("w3")
    assert (backup.kind, backup.index, backup.attempt) == (MAP, 0, 1)
    out = c.finish(backup)
    assert (
        act.KillAttempt(
            "w1", c.incarnations["w1"], "j", MAP, 0, 0, "another attempt finished first"
        )
        in out
    )
    assert c.finish(m0) == []  # the loser's late report is ignored
    assert act.CommitJob("j") in c.finish(r0)


def test_a_reduce_backup_counts_its_age_from_the_end_of_the_map_phase() -> None:
    """A reduce attempt that waited for maps is not a straggler for having waited."""
    c = Cluster(backup_after=5, worker_timeout=100)
    c.submit(maps=1, reduces=1)
    c.register("w1")
    c.register("w2")
    (m0,) = c.request("w1")
    (r0,) = c.request("w2")
    assert (r0.kind, r0.index) == (REDUCE, 0)
    c.tick(10)
    c.finish(m0)  # the map phase ends 10 s after reduce 0 was assigned
    assert c.request("w1") == []
    c.tick(6)
    (backup,) = c.request("w1")
    assert (backup.kind, backup.index, backup.attempt) == (REDUCE, 0, 1)


def test_backup_tasks_can_be_turned_off() -> None:
    c = Cluster(backup_after=0)
    c.submit(maps=1, reduces=1, backup_tasks=False)
    c.register("w1")
    c.register("w2")
    c.request("w1")
    c.tick(100)
    c.heartbeat("w1")
    assert c.request("w2") == []


def test_exactly_one_reduce_attempt_commits() -> None:
    c = Cluster(backup_after=0)
    c.submit(maps=1, reduces=1)
    c.register("w1")
    c.register("w2")
    (m0,) = c.request("w1")
    c.finish(m0)
    (r_a,) = c.request("w1")
    (r_b,) = c.request("w2")  # backup
    inc1, inc2 = c.incarnations["w1"], c.incarnations["w2"]
    grant = c.send(ev.ReduceCommitRequested(c.now, "w1", inc1, c.ref(r_a)))
    assert isinstance(grant[0], act.GrantCommit)
    deny = c.send(ev.ReduceCommitRequested(c.now, "w2", inc2, c.ref(r_b)))
    assert isinstance(deny[0], act.DenyCommit)
    assert c.task(REDUCE, 0).attempts[r_b.attempt].state is AttemptState.KILLED
    # the denied attempt's success report cannot complete the partition
    c.send(ev.ReduceTaskSucceeded(c.now, "w2", inc2, c.ref(r_b), TaskStats(1, counters={"c": 9})))
    assert c.task(REDUCE, 0).state is TaskState.IN_PROGRESS
    c.send(ev.ReduceTaskSucceeded(c.now, "w1", inc1, c.ref(r_a), TaskStats(1, counters={"c": 1})))
    assert c.job() is JobState.COMMITTING
    c.commit()
    assert c.job() is JobState.SUCCEEDED
    assert c.task(REDUCE, 0).stats.counters == {"c": 1}


def test_denied_attempt_ends_so_a_failed_grant_holder_is_retried() -> None:
    c = Cluster(backup_after=0)
    c.submit(maps=0, reduces=1, backup_tasks=True)
    c.register("w1")
    c.register("w2")
    (r_a,) = c.request("w1")
    (r_b,) = c.request("w2")  # backup
    c.send(ev.ReduceCommitRequested(c.now, "w1", c.incarnations["w1"], c.ref(r_a)))
    c.send(ev.ReduceCommitRequested(c.now, "w2", c.incarnations["w2"], c.ref(r_b)))
    c.fail(r_a)  # the granted attempt fails before renaming (say, the disk is full)
    assert c.task(REDUCE, 0).state is TaskState.IDLE  # not stuck with the denied one
    (again,) = c.request("w2")
    assert again.attempt == 2
    assert act.CommitJob("j") in c.finish(again)


def test_commit_grant_released_when_the_granted_worker_dies() -> None:
    c = Cluster(worker_timeout=10)
    c.submit(maps=1, reduces=1)
    c.register("w1")
    c.register("w2")
    (m0,) = c.request("w1")
    c.finish(m0)
    (r0,) = c.request("w2")
    c.send(ev.ReduceCommitRequested(c.now, "w2", c.incarnations["w2"], c.ref(r0)))
    c.tick(5)
    c.heartbeat("w1")
    c.tick(6)  # w2 dies between its grant and its report
    assert c.task(REDUCE, 0).commit_granted is None
    (r0b,) = c.request("w1")
    out = c.finish(r0b)
    assert act.CommitJob("j") in out


def test_jobs_queue_and_run_in_order() -> None:
    c = Cluster()
    c.submit("a", maps=1, reduces=1)
    c.submit("b", maps=1, reduces=1)
    c.submit("a", maps=1, reduces=1)  # a retried submission changes nothing
    c.register("w1")
    assert c.job("b") is JobState.QUEUED
    for _ in range(2):
        (t,) = c.request("w1")
        assert t.job_id == "a"
        c.finish(t)
    assert c.job("a") is JobState.COMMITTING and c.job("b") is JobState.RUNNING
    (t,) = c.request("w1")
    assert t.job_id == "b"


def test_a_queued_job_holds_nothing_until_its_output_is_prepared() -> None:
    """Its turn comes: PrepareOutput; it runs on JobStarted; JobStartFailed fails it and the
    next job's turn comes; a preparation lost with the master is asked for again."""
    c = Cluster()
    c.prepare_outputs = False
    c.register("w1")
    out = c.send(ev.JobSubmitted(c.now, make_spec("a", 1, 1), True))
    assert out == [act.PrepareOutput("a")]
    assert c.job("a") is JobState.QUEUED and c.request("w1") == []  # nothing runs yet
    assert c.send(ev.JobSubmitted(c.now, make_spec("b", 1, 1), True)) == []  # b waits
    assert c.send(ev.JobSubmitted(c.now, make_spec("c", 1, 1), True)) == []
    # the master restarts while a's output is being prepared: it is asked for again
    assert act.PrepareOutput("a") in c.send(ev.MasterStarted(c.now, 2))
    c.send(ev.JobStarted(c.now, "a"))
    assert c.job("a") is JobState.RUNNING and c.job("b") is JobState.QUEUED
    assert c.send(ev.JobStarted(c.now, "b")) == []  # not its turn: ignored
    out = c.send(ev.JobCancelled(c.now, "a"))
    assert act.PrepareOutput("b") in out
    out = c.send(ev.JobStartFailed(c.now, "b", "--output /out/b is in use"))
    assert c.job("b") is JobState.FAILED and c.master.jobs["b"].reason.endswith("in use")
    assert act.AbortJob("b", "--output /out/b is in use") in out
    assert act.PrepareOutput("c") in out
    assert c.send(ev.JobStarted(c.now, "b")) == []  # too late: b has ended
    assert c.job("b") is JobState.FAILED


def test_jobs_of_an_older_journal_run_at_their_turn_as_they_did() -> None:
    """A journal written before outputs were prepared at a job's turn replays to the state
    it recorded: its jobs ran at their turn, without PrepareOutput."""
    c = Cluster()
    c.register("w1")
    assert c.send(ev.JobSubmitted(c.now, make_spec("old", 1, 1))) == []
    assert c.job("old") is JobState.RUNNING
    (m,) = c.request("w1")
    assert m.job_id == "old"


def test_infrastructure_failures_do_not_count_up_to_a_bound_and_blame_no_record() -> None:
    c = Cluster(max_infrastructure_failures=2)
    c.submit(maps=1, reduces=1, max_attempts=2, skip_bad_records=5)
    c.register("w1")
    for _ in range(2):  # a worker whose disk is full: shown, not counted
        (m,) = c.request("w1")
        c.fail(m, record="in.txt@7", infrastructure=True)
    task = c.task(MAP, 0)
    assert (task.failures, task.infrastructure_failures) == (0, 2)
    assert task.record_failures == {} and task.skip == []  # never blamed, never skipped
    failures = c.master.jobs["j"].failures
    assert all(f.infrastructure and not f.record for f in failures)
    assert "infrastructure failure: not counted" in failures[0].line()
    (m,) = c.request("w1")
    c.fail(m, infrastructure=True)  # beyond the bound: counted
    assert (task.failures, task.infrastructure_failures) == (1, 2)
    (m,) = c.request("w1")
    c.fail(m)
    assert c.job() is JobState.FAILED


def test_cancel_kills_running_attempts() -> None:
    c = Cluster()
    c.submit(maps=2, reduces=1)
    c.register("w1", slots=2)
    assigned = c.request("w1", slots=2)
    assert len(assigned) == 2
    out = c.send(ev.JobCancelled(c.now, "j"))
    assert sum(isinstance(a, act.KillAttempt) for a in out) == 2
    assert c.job() is JobState.CANCELLED


def test_a_waiting_reducer_never_keeps_maps_from_running() -> None:
    """Each worker slot is a map slot and a reduce slot: no deadlock on re-executed maps."""
    c = Cluster(worker_timeout=10, backup_after=1000)
    c.submit(maps=2, reduces=2)
    c.register("w1")
    c.register("w2")
    got = c.request("w1", slots=2)
    assert [(a.kind, a.index) for a in got] == [(MAP, 0), (REDUCE, 0)]
    (m0,) = [a for a in got if a.kind is MAP]
    c.finish(m0)
    got = c.request("w2", slots=2)
    assert [(a.kind, a.index) for a in got] == [(MAP, 1), (REDUCE, 1)]
    c.tick(6)
    c.heartbeat("w1")
    c.tick(6)  # w2 dies: map 1 and reduce 1 go back to idle
    (m1,) = c.request("w1", slots=2)  # w1's reduce slot is busy, its map slot is free
    assert (m1.kind, m1.index, m1.attempt) == (MAP, 1, 1)


def test_core_imports_no_io_modules() -> None:
    banned = {"grpc", "socket", "threading", "asyncio", "time", "os", "random", "subprocess"}
    core = Path(__file__).resolve().parent.parent / "src" / "mapreduce" / "core"
    for path in core.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            assert not banned & set(names), f"{path.name} imports {banned & set(names)}"


def random_run(seed: int, reduces: int, snapshot_at: int = -1) -> Cluster:
    """A job through random events: requests, finishes, failures, fetch failures, worker
    restarts, zombies' late reports, ticks and master restarts; then a calm drain."""
    rng = random.Random(seed)
    c = Cluster(snapshot_at, worker_timeout=10, task_timeout=50, backup_after=3)
    c.submit(maps=rng.randint(0, 5), reduces=reduces, max_attempts=4, skip_bad_records=1)
    workers = ["w1", "w2", "w3"]
    for w in workers:
        c.register(w)
    running: list[act.AssignTask] = []
    dead: list[tuple[str, str, act.AssignTask]] = []
    for step in range(300):
        calm = step > 200  # afterwards no more faults, so the job must finish
        choice = rng.random()
        if choice < 0.3:
            w = rng.choice(workers)
            running += c.request(w)
        elif choice < 0.6 and running:
            a = running.pop(rng.randrange(len(running)))
            if calm or rng.random() < 0.85:
                c.finish(a)
            else:
                c.fail(a, record=rng.choice(["", "r1"]), infrastructure=rng.random() < 0.2)
        elif choice < 0.7 and running and not calm:
            a = rng.choice(running)
            if a.kind is REDUCE and c.master.jobs["j"].maps:
                c.send(ev.FetchFailed(c.now, a.worker_id, a.incarnation, c.ref(a), 0, 0))
        elif choice < 0.75 and not calm:
            w = rng.choice(workers)
            for a in running:
                if a.worker_id == w:
                    dead.append((w, a.incarnation, a))
            c.register(w, f"{w}-{step}")  # restart: a new incarnation
        elif choice < 0.8 and dead:
            w, inc, a = rng.choice(dead)  # a zombie's late report
            out = c.send(ev.MapTaskSucceeded(c.now, w, inc, c.ref(a)))
            assert out in ([], [act.ReRegisterWorker(w, inc)])
        elif choice < 0.82 and not calm:
            c.restart_master(rng)
        else:
            for w in workers:
                c.heartbeat(w, tuple(c.ref(a) for a in running if a.worker_id == w))
            c.tick(rng.choice([0.5, 2, 4]))
        # forget assignments the master killed or moved
        live = {(a.worker_id, a.incarnation) for a in running}
        running = [
            a
            for a in running
            if (a.worker_id, a.incarnation) in live
            and c.master.is_current(a.worker_id, a.incarnation)
            and c.task(a.kind, a.index).attempts[a.attempt].state is AttemptState.RUNNING
        ]
        if c.job() is not JobState.RUNNING:
            break
    for _ in range(200):  # drain: no faults, everyone finishes what it gets
        if c.job() is not JobState.RUNNING:
            break
        for w in workers:
            c.heartbeat(w)
            for a in c.request(w):
                c.finish(a)
        for a in list(running):
            if c.task(a.kind, a.index).attempts[a.attempt].state is AttemptState.RUNNING:
                c.finish(a)
        running = []
        c.tick(4)
    return c


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=4))
def test_random_interleavings_keep_every_promise(seed: int, reduces: int) -> None:
    """Random events: no task lost, each partition committed once, attempts within the limit,
    reports from dead incarnations ignored, and the job ends once the failures stop."""
    c = random_run(seed, reduces)
    job = c.master.jobs["j"]
    assert job.state in (JobState.COMMITTING, JobState.FAILED)
    if job.state is JobState.COMMITTING:
        assert all(t.state is TaskState.COMPLETED for t in job.reduces)
        for t in job.reduces:
            assert sum(a.state is AttemptState.SUCCEEDED for a in t.attempts.values()) == 1
        assert sum(isinstance(a, act.CommitJob) for a in c.actions) == 1
    else:
        assert any(t.failures >= 4 or t.lost_outputs > 4 for t in [*job.maps, *job.reduces])
    for t in [*job.maps, *job.reduces]:
        assert t.failures <= 4


def durable_view(state: MasterState) -> dict[str, object]:
    """Everything durable about a state, as plain values (idle heaps as sets: a heap keeps
    stale entries that it drops lazily, which changes nothing a query or decision sees)."""
    jobs = {}
    for job_id, job in state.jobs.items():
        view = dataclasses.asdict(job)
        view["idle"] = {
            kind: sorted(i for i in set(heap) if job.tasks(kind)[i].state is TaskState.IDLE)
            for kind, heap in job.idle.items()
        }
        jobs[job_id] = view
    return {
        "epoch": state.epoch,
        "workers": {k: dataclasses.asdict(w) for k, w in state.workers.items()},
        "lost_workers": state.lost_workers,
        "jobs": jobs,
        "queue": state.queue,
        "finished": state.finished,
    }


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32),
    st.integers(min_value=1, max_value=3),
    st.integers(min_value=1, max_value=200),
)
def test_replaying_the_journal_rebuilds_the_live_state(
    seed: int, reduces: int, snapshot_at: int
) -> None:
    """The durable events, replayed into a new state (from the start, and from a checkpoint
    taken in the middle), rebuild exactly the state the live master reached."""
    c = random_run(seed, reduces, snapshot_at)
    live = durable_view(c.master)
    config = c.master.config
    replayed = MasterState(config)
    for event in c.durable:
        replayed.handle(codec.decode(codec.encode(event)))  # as read back from the journal
    assert durable_view(replayed) == live
    if c.snapshot:
        resumed = pickle.loads(c.snapshot)
        for event in c.durable[snapshot_at:]:
            resumed.handle(event)
        assert durable_view(resumed) == live


def _core_attribute_names() -> set[str]:
    state = MasterState()
    names = set(vars(state))
    for cls in (JobRecord, Task, Attempt, WorkerInfo):
        names |= {f.name for f in dataclasses.fields(cls)}
    return names


def test_no_module_outside_core_assigns_core_state() -> None:
    """Core state changes only through events: outside core/, no attribute that core state
    objects have is assigned (``x.attr = ...``, ``x.attr += ...``) on anything but ``self``."""
    src = Path(__file__).resolve().parent.parent / "src" / "mapreduce"
    core_names = _core_attribute_names()
    assert {"state", "jobs", "attempts", "config", "epoch"} <= core_names
    offenders = []
    for path in sorted(src.rglob("*.py")):
        if "core" in path.relative_to(src).parts or "_generated" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        if not any(
            isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mapreduce.core")
            for node in ast.walk(tree)
        ):
            continue
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if (
                        isinstance(sub, ast.Attribute)
                        and isinstance(sub.ctx, ast.Store)
                        and sub.attr in core_names
                        and not (isinstance(sub.value, ast.Name) and sub.value.id == "self")
                    ):
                        offenders.append(f"{path.name}:{sub.lineno}: {ast.unparse(sub)}")
    assert offenders == []


def test_a_live_workers_id_is_taken_over_only_with_its_key_or_once_it_expired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = Cluster(worker_timeout=10.0)
    c.send(ev.WorkerRegistered(0.0, "w1", "first", "h1:1", 1, key_digest="k1"))
    c.liveness.heard_from("w1", "first", 4.0)

    def refusal(incarnation: str, key: str, now: float) -> str:
        event = ev.WorkerRegistered(now, "w1", incarnation, "h2:1", 1, key_digest=key)
        return c.liveness.registration_refusal(c.master, event, now)

    for incarnation, key in [("second", "k2"), ("second", ""), ("first", "k2")]:
        reason = refusal(incarnation, key, 13.0)
        assert "'w1' belongs to a live worker at h1:1 (heard 9.0s ago)" in reason
    assert refusal("second", "k1", 13.0) == ""  # a restart showing the same key
    assert refusal("second", "k2", 14.5) == ""  # the holder is silent past the timeout
    # a holder registered without a key (an older journal) is taken over only once expired
    c.send(ev.WorkerRegistered(0.0, "w2", "old", "h3:1", 1))
    assert "belongs to a live worker" in c.liveness.registration_refusal(
        c.master, ev.WorkerRegistered(1.0, "w2", "new", "h3:1", 1), 1.0
    )
    monkeypatch.setattr(liveness, "MAX_WORKERS", 2)
    assert "already has 2 live workers" in c.liveness.registration_refusal(
        c.master, ev.WorkerRegistered(1.0, "w3", "i", "h4:1", 1, key_digest="k"), 1.0
    )
