"""Drive the master's pure state machine through a simulated cluster: no sockets, no sleeps.

Workers ask for tasks, run them for a simulated time and report; some workers
die mid-job (they stop heartbeating and the master must notice and re-run their
work).  The same ``MasterState`` the real master uses makes every decision.
Prints scheduling decisions (task assignments) per second of wall time, the
master's memory, and how the state grows with M and R.

    python bench/master_sim.py                 # the paper's largest job: M=200,000, R=5,000,
                                               # 2,000 workers, 5 % failing
    python bench/master_sim.py --quick         # M=2,000, R=50, 100 workers
    python bench/master_sim.py --maps 20000 --reduces 500 --workers 500
"""

from __future__ import annotations

import argparse
import heapq
import random
import resource
import sys
import time
import tracemalloc
from dataclasses import dataclass

from mapreduce.core import actions as act
from mapreduce.core import events as ev
from mapreduce.core.master import JobState, MasterConfig, MasterState
from mapreduce.core.tasks import TaskKind


@dataclass
class Outcome:
    decisions: int
    events: int
    wall: float
    simulated: float
    state: str
    lost_workers: int
    traced_peak: int


def simulate(
    maps: int, reduces: int, workers: int, fail_fraction: float, seed: int, trace: bool
) -> Outcome:
    rng = random.Random(seed)
    master = MasterState(MasterConfig(worker_timeout=10.0, task_timeout=600.0, backup_after=30.0))
    if trace:
        tracemalloc.start()
    now = 0.0
    events = 0
    decisions = 0
    master.handle(ev.JobSubmitted(now, "job", maps, reduces))
    names = [f"w{i}" for i in range(workers)]
    for name in names:
        master.handle(ev.WorkerRegistered(now, name, name + "-0", name + ":7080", 1))
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
    started = time.perf_counter()
    while queue:
        now, _seq, kind, payload = heapq.heappop(queue)
        job = master.jobs["job"]
        if job.state is not JobState.RUNNING:
            break
        if kind == "tick":
            master.handle(ev.Tick(now))
            events += 1
            push(now + 0.5, "tick", None)
            continue
        name = str(payload) if not isinstance(payload, act.AssignTask) else payload.worker_id
        if name in dying and now >= death_time[name]:
            dead.add(name)
            continue  # a dead worker does nothing more
        if kind == "heartbeat":
            master.handle(ev.HeartbeatReceived(now, name, name + "-0"))
            events += 1
            push(now + 1.0, "heartbeat", name)
        elif kind == "request":
            out = master.handle(ev.TaskRequested(now, name, name + "-0", 2))
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
                master.handle(ev.MapTaskSucceeded(now, name, name + "-0", ref, 1 << 20))
                events += 1
            else:
                out = master.handle(ev.ReduceCommitRequested(now, name, name + "-0", ref))
                events += 1
                if any(isinstance(a, act.GrantCommit) for a in out):
                    master.handle(ev.ReduceTaskSucceeded(now, name, name + "-0", ref, 1 << 20))
                    events += 1
            push(now, "request", name)
    wall = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    if trace:
        tracemalloc.stop()
    return Outcome(decisions, events, wall, now, master.jobs["job"].state.value, len(dead), peak)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=200_000)
    parser.add_argument("--reduces", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=2_000)
    parser.add_argument("--fail", type=float, default=0.05, help="fraction of workers that die")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="M=2,000, R=50, 100 workers")
    args = parser.parse_args(argv)
    if args.quick:
        args.maps, args.reduces, args.workers = 2_000, 50, 100
    outcome = simulate(args.maps, args.reduces, args.workers, args.fail, args.seed, trace=False)
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
    print(
        f"master state memory (tracemalloc peak): {large.traced_peak / 2**20:,.1f} MiB for "
        f"M+R={args.maps + args.reduces:,}; {small.traced_peak / 2**20:,.1f} MiB for a tenth: "
        f"ratio {large.traced_peak / max(1, small.traced_peak):.1f}x for 10x the tasks "
        f"(linear would be 10x, M x R would be 100x)"
    )
    print(f"process peak RSS: {rss_mib:,.0f} MiB")
    return 0 if outcome.state == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
