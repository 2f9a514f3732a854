"""Drive the master through a simulated cluster: no sockets, no sleeps.

Workers ask for tasks, run them for a simulated time and report; some workers
die mid-job (they stop heartbeating and the master must notice and re-run their
work).  The master is the real one: the :class:`MasterDriver` with its pure
state machine, its liveness checks and, with ``--journal DIR``, its journal on
disk (every durable event pickled, appended and fsynced before it is acted on).
Every 256 journal records share one fsync, as the syncs of concurrent gRPC
requests do (group commit): this measures the master's capacity when requests
are always waiting (thousands of workers), not the latency of one request.

Prints scheduling decisions (task assignments) per second of wall time with
the journal off and on, the master's memory, how the state grows with M and
R, and the time a new master takes to recover the journal of the finished job.

    python bench/master_sim.py                 # the paper's largest job: M=200,000, R=5,000,
                                               # 2,000 workers, 5 % failing
    python bench/master_sim.py --quick         # M=2,000, R=50, 100 workers
    python bench/master_sim.py --maps 20000 --reduces 500 --workers 500
"""

from __future__ import annotations

import argparse
import functools
import heapq
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass

from mapreduce.core import actions as act
from mapreduce.core import events as ev
from mapreduce.core.config import MasterConfig
from mapreduce.core.master import JobState
from mapreduce.core.spec import InputSplit, JobSpec
from mapreduce.core.tasks import TaskKind, TaskStats
from mapreduce.master.driver import MasterDriver
from mapreduce.master.journal import FileJournal, Journal, MemoryJournal
from mapreduce.master.raft import RaftJournal


@dataclass
class Outcome:
    decisions: int
    events: int
    wall: float
    simulated: float
    state: str
    lost_workers: int
    traced_peak: int
    syncs: int


#: Journal records per fsync (a saturated master's group-commit batch).
GROUP = 256


class SimClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class GroupCommit:
    """Group commit: one fsync for every :data:`GROUP` records appended, as the syncs of
    concurrent gRPC requests share one fsync.  (Done inline: a flusher thread would
    measure CPython's GIL hand-offs between an I/O thread and a busy one instead.)"""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.latest = 0
        self.durable = 0
        self.syncs = 0

    def appended(self, seq: int) -> None:
        if seq:
            self.latest = seq
            if self.latest - self.durable >= GROUP:
                self.sync()

    def sync(self) -> None:
        if self.latest > self.durable:
            self.journal.sync(self.latest)
            self.durable = self.latest
            self.syncs += 1


def simulate(
    maps: int,
    reduces: int,
    workers: int,
    fail_fraction: float,
    seed: int,
    trace: bool,
    journal: Journal | None = None,
    output: str = "/nonexistent/out",
) -> Outcome:
    """Run the simulated job to its end (with ``journal``: every durable event on disk)."""
    rng = random.Random(seed)
    clock = SimClock()
    driver = MasterDriver(
        MasterConfig(worker_timeout=10.0, task_timeout=600.0, backup_after=30.0),
        journal=journal or MemoryJournal(),
        clock=clock,
    )
    driver.lead()
    group = GroupCommit(driver.journal)
    if trace:
        tracemalloc.start()
    events = decisions = 0
    splits = tuple(InputSplit(f"/data/input-{i:06d}", 0, 64 << 20) for i in range(maps))
    spec = JobSpec("job", "job.py", num_reducers=reduces, output=output, splits=splits)
    with driver.lock:
        driver.apply_locked(ev.JobSubmitted(0.0, spec, output_at_turn=True))
        driver.apply_locked(ev.JobStarted(0.0, "job"))  # as the output thread reports
    names = [f"w{i}" for i in range(workers)]
    with driver.lock:
        for name in names:
            driver.apply_locked(ev.WorkerRegistered(0.0, name, name + "-0", name + ":7080", 1))
    dying = set(rng.sample(names, int(workers * fail_fraction)))
    dead: set[str] = set()
    # (time, sequence, kind, payload): "request", "finish", "heartbeat" and "tick"
    queue: list[tuple[float, int, str, object]] = []
    seq = 0

    def push(at: float, kind: str, payload: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(queue, (at, seq, kind, payload))

    for name in names:
        push(rng.random(), "request", name)
        push(1.0 + rng.random(), "heartbeat", name)
    push(0.5, "tick", None)
    death_time = {name: rng.uniform(5.0, 60.0) for name in dying}
    stats = TaskStats(output_bytes=1 << 20)
    job = driver.state.jobs["job"]

    def apply(event: ev.Event) -> list[act.Action]:
        with driver.lock:
            out, number = driver.apply_locked(event)
        group.appended(number)
        return out

    started = time.perf_counter()
    while queue and job.state is JobState.RUNNING:
        now, _seq, kind, payload = heapq.heappop(queue)
        clock.now = now
        if kind == "tick":
            with driver.lock:
                found = driver.liveness.expired(driver.state, now)
            for event in found:
                apply(event)
                events += 1
            push(now + 0.5, "tick", None)
            continue
        name = str(payload) if not isinstance(payload, act.AssignTask) else payload.worker_id
        if name in dying and now >= death_time[name]:
            dead.add(name)
            continue  # a dead worker does nothing more
        inc = name + "-0"
        if kind == "heartbeat":
            apply(ev.HeartbeatReceived(now, name, inc))
            events += 1
            push(now + 1.0, "heartbeat", name)
        elif kind == "request":
            out = apply(ev.TaskRequested(now, name, inc, 2))
            events += 1
            assigned = [a for a in out if isinstance(a, act.AssignTask)]
            decisions += len(assigned)
            for task in assigned:
                duration = rng.uniform(1.0, 3.0) if task.kind is TaskKind.MAP else 0.5
                push(now + duration, "finish", task)
            if not assigned:
                push(now + 1.0, "request", name)
        elif kind == "finish":
            assert isinstance(payload, act.AssignTask)
            task = payload
            ref = ev.AttemptRef(task.job_id, task.kind, task.index, task.attempt)
            if task.kind is TaskKind.MAP:
                apply(ev.MapTaskSucceeded(now, name, inc, ref, stats))
                events += 1
            else:
                out = apply(ev.ReduceCommitRequested(now, name, inc, ref))
                events += 1
                if any(isinstance(a, act.GrantCommit) for a in out):
                    apply(ev.ReduceTaskSucceeded(now, name, inc, ref, stats))
                    events += 1
            push(now, "request", name)
    group.sync()  # everything the simulated workers were told is on disk
    wall = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    if trace:
        tracemalloc.stop()
    driver.journal.close()
    return Outcome(
        decisions, events, wall, clock.now, job.state.value, len(dead), peak, group.syncs
    )


def follower(raft: str, peers: str, directory: str, secret: bytes) -> None:
    """A master candidate that only replicates (its elections start late: the simulation leads)."""
    journal = RaftJournal(raft, peers.split(","), secret, directory, "", election_timeout=(8, 9))
    try:
        while True:
            time.sleep(1)
    finally:
        journal.close()


class ReplicatedLog:
    """Two follower processes and the simulation's own candidate: a replicated journal."""

    def __init__(self, scratch: str) -> None:
        ports = [_free_port() for _ in range(3)]
        self.addresses = [f"127.0.0.1:{port}" for port in ports]
        self.secret = os.urandom(16).hex().encode()
        self.followers = [
            subprocess.Popen(
                [
                    sys.executable, __file__, "--follower", self.addresses[i],
                    "--peers", ",".join(a for a in self.addresses if a != self.addresses[i]),
                    "--work-dir", os.path.join(scratch, f"follower-{i}"),
                ],
                stdin=subprocess.PIPE,
            )
            for i in (1, 2)
        ]  # fmt: skip
        for process in self.followers:
            assert process.stdin is not None
            process.stdin.write(self.secret + b"\n")
            process.stdin.close()
        self.journal = RaftJournal(
            self.addresses[0], self.addresses[1:], self.secret, os.path.join(scratch, "leader"), ""
        )

    def close(self) -> None:
        self.journal.close()
        for process in self.followers:
            process.kill()
            process.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def recovery_seconds(directory: str) -> tuple[float, str]:
    """How long a new master takes to rebuild its state from ``directory``'s journal."""
    started = time.perf_counter()
    driver = MasterDriver(MasterConfig(), journal=FileJournal(directory), clock=SimClock())
    driver.recover()
    seconds = time.perf_counter() - started
    state = driver.state.jobs["job"].state.value
    driver.journal.close()
    return seconds, state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=200_000)
    parser.add_argument("--reduces", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=2_000)
    parser.add_argument("--fail", type=float, default=0.05, help="fraction of workers that die")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="M=2,000, R=50, 100 workers")
    parser.add_argument(
        "--work-dir", default=None, help="where the journal goes (default: a temporary directory)"
    )
    parser.add_argument(
        "--raft",
        action="store_true",
        help="also run with the journal replicated among 3 master candidates (Raft)",
    )
    parser.add_argument("--follower", default="", help=argparse.SUPPRESS)
    parser.add_argument("--peers", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.follower:
        follower(args.follower, args.peers, args.work_dir, sys.stdin.readline().strip().encode())
        return 0
    if args.quick:
        args.maps, args.reduces, args.workers = 2_000, 50, 100
    outcome = simulate(args.maps, args.reduces, args.workers, args.fail, args.seed, trace=False)
    if args.work_dir is not None:
        os.makedirs(args.work_dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="master-sim-", dir=args.work_dir)
    try:
        job = functools.partial(
            simulate, args.maps, args.reduces, args.workers, args.fail, args.seed, False
        )
        journaled = job(
            journal=FileJournal(os.path.join(scratch, "journal")),
            output=os.path.join(scratch, "out"),
        )
        restart, recovered_state = recovery_seconds(os.path.join(scratch, "journal"))
        replicated = None
        if args.raft:
            log = ReplicatedLog(os.path.join(scratch, "raft"))
            try:
                replicated = job(
                    journal=log.journal,
                    output=os.path.join(scratch, "out-raft"),
                )
            finally:
                log.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # A second, smaller run with tracemalloc shows how memory grows with M + R.
    small = simulate(
        max(1, args.maps // 10),
        max(1, args.reduces // 10),
        args.workers,
        args.fail,
        args.seed,
        trace=True,
    )
    large = simulate(args.maps, args.reduces, args.workers, args.fail, args.seed, trace=True)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"job: M={args.maps:,} R={args.reduces:,} workers={args.workers:,}, "
        f"{outcome.lost_workers} of them died mid-job; final state {outcome.state}"
    )
    print(
        f"scheduling decisions: {outcome.decisions:,} in {outcome.wall:.2f} s wall "
        f"= {outcome.decisions / outcome.wall:,.0f} per second "
        f"({outcome.events:,} events, {outcome.events / outcome.wall:,.0f} per second; "
        f"simulated job time {outcome.simulated:,.0f} s)"
    )
    rate, journaled_rate = outcome.decisions / outcome.wall, journaled.decisions / journaled.wall
    print(
        f"with the journal on disk: {journaled.decisions:,} decisions in {journaled.wall:.2f} s "
        f"= {journaled_rate:,.0f} per second, {journaled_rate / rate:.2f}x of the journal off; "
        f"{journaled.syncs:,} group syncs ({journaled.events / max(1, journaled.syncs):.1f} "
        f"events each); final state {journaled.state}"
    )
    if replicated is not None:
        replicated_rate = replicated.decisions / replicated.wall
        print(
            f"with the journal replicated among 3 candidates (Raft): {replicated.decisions:,} "
            f"decisions in {replicated.wall:.2f} s = {replicated_rate:,.0f} per second, "
            f"{replicated_rate / rate:.2f}x of the journal off; final state {replicated.state}"
        )
    print(
        f"restart: a new master recovered that journal in {restart:.2f} s "
        f"(the job's state after recovery: {recovered_state})"
    )
    print(
        f"master state memory (tracemalloc peak): {large.traced_peak / 2**20:,.1f} MiB for "
        f"M+R={args.maps + args.reduces:,}; {small.traced_peak / 2**20:,.1f} MiB for a tenth: "
        f"ratio {large.traced_peak / max(1, small.traced_peak):.1f}x for 10x the tasks "
        f"(linear would be 10x, M x R would be 100x)"
    )
    print(f"process peak RSS: {rss_mib:,.0f} MiB")
    ok = outcome.state == journaled.state == recovered_state == "committing"
    ok = ok and (replicated is None or replicated.state == "committing")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
