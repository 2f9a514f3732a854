"""Faults on several "machines": a master and three workers in network namespaces (tests/netbed.py).

Each test runs real ``mapreduce master`` and ``mapreduce worker`` daemons on their own hosts
(namespaces on one bridge, one address each), submits a word count over the Gutenberg texts whose
map tasks sleep a little every 100 lines (tests/jobs/slow_wordcount.py), waits until the state
the master reports (its JSON API) shows the moment for the fault, injects it, and checks that the
job succeeds with output byte-identical to ``mapreduce run --local`` of the same job and input,
exactly R part files, and every reduce partition committed by exactly one attempt.

Nothing is timed: every wait is on a condition, bounded by a deadline.  The victims are chosen
by a seeded random generator (``SEED``).  Without root or ``ip`` the tests skip (the ``netbed``
fixture says why); those that need nftables skip when ``nft`` is missing (scripts/check.sh
installs it).  Scenarios: ../shared/research/reliability.md section 2, rows 1, 2, 6, 8, 11 and
13 (a full disk: the worker's failures do not count and it stops taking tasks), and a slow
link.  The first tests check the harness itself: its faults cut what they say, leftovers of a
dead run are removed, the by-hand script (scripts/netbed.py) cleans up when terminated.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GUTENBERG, JOBS, REPO, run_cli
from tests.netbed import (
    MAPREDUCE,
    Daemon,
    Host,
    Netbed,
    children,
    differences,
    namespaces,
    nft_missing,
    on_tmpfs,
    part_files,
    pids_in,
    process_state,
    sweep_leftovers,
    unavailable,
    wait_for,
)

SEED = 20261130
REDUCERS = 3
SPLIT_SIZE = "256K"  # 17 map tasks over the eight texts
DELAY = "0.02"  # seconds of sleep per 100 lines: about 0.8 s per map task
JOB = JOBS / "slow_wordcount.py"
MASTER_ARGS = ("--worker-timeout", "2")

MakeNetbed = Callable[..., Netbed]


def run_local(job: Path, inputs: Path, out: Path, *params: str) -> dict[str, bytes]:
    """The part files of ``job`` run by ``mapreduce run --local`` (the oracle)."""
    if not GUTENBERG.is_dir():
        pytest.fail(f"test data missing: {GUTENBERG} (the shared/ folder beside the repo)")
    result = run_cli(
        "run", job, "-i", inputs, "-o", out, "-r", str(REDUCERS), "--local",
        "--split-size", SPLIT_SIZE, *params,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    parts = part_files(out)
    assert len(parts) == REDUCERS
    return parts


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The part files of the slow word count over the texts, run with ``--local``."""
    reason = unavailable()  # (module fixtures come first: skip before any work)
    if reason is not None:
        pytest.skip(f"no network namespaces here: {reason}")
    out = tmp_path_factory.mktemp("reference") / "out"
    return run_local(JOB, GUTENBERG, out, "--param", "delay=0")


def submit_args(bed: Netbed, out: Path, *params: str, job: Path, inputs: Path) -> list[str]:
    """``submit JOB ... PARAMS`` of ``job`` over ``inputs`` to the bed's master."""
    assert bed.master is not None
    return [
        "submit", str(job), "--master", bed.master.address, "-i", str(inputs), "-o", str(out),
        "-r", str(REDUCERS), "--split-size", SPLIT_SIZE, *params,
    ]  # fmt: skip


def submit(bed: Netbed, out: Path, *params: str, job: Path = JOB, inputs: Path = GUTENBERG) -> str:
    """Submit a job from the master's host (by default the slow word count over the texts, a
    little slow); return its id."""
    params = params or ("--param", f"delay={DELAY}")
    result = bed.mapreduce(bed.hosts[0], *submit_args(bed, out, *params, job=job, inputs=inputs))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def worker_view(bed: Netbed, host: Host) -> dict[str, Any]:
    """The master's view of the worker on ``host`` (state ``alive`` or ``lost``)."""
    workers = bed.api("/api/cluster")["workers"]
    return next(w for w in workers if w["id"] == host.label)


def mid_map_phase_on(bed: Netbed, job_id: str, *hosts: Host) -> bool:
    """Some maps are done, some are still to start, and each of ``hosts`` is running one."""
    cluster = bed.api("/api/cluster")
    maps = next(j for j in cluster["jobs"] if j["id"] == job_id)["maps"]
    running = {
        w["id"]
        for w in cluster["workers"]
        if any(r.startswith(f"{job_id}/map-") for r in w["running"])
    }
    return maps["completed"] >= 1 and maps["idle"] >= 1 and {h.label for h in hosts} <= running


def submit_and_wait_mid_map(bed: Netbed, out: Path, victim: Host) -> str:
    """Submit the job; return its id once ``victim`` runs a map in the middle of the map phase."""
    job_id = submit(bed, out)
    wait_for(lambda: mid_map_phase_on(bed, job_id, victim), f"a map running on {victim.label}")
    return job_id


def finished(bed: Netbed, job_id: str) -> dict[str, Any]:
    """Wait for the job to end; return the master's detailed view of it."""

    def ended() -> dict[str, Any] | None:
        view: dict[str, Any] = bed.api(f"/api/jobs/{job_id}")
        return view if view["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(ended, f"job {job_id} to end", timeout=120, every=0.3)


def lost_workers(bed: Netbed) -> set[str]:
    """The workers the master has declared lost."""
    return {w["id"] for w in bed.api("/api/cluster")["workers"] if w["state"] == "lost"}


def task(view: dict[str, Any], task_id: str) -> dict[str, Any]:
    """Task ``task_id`` (``map-00003``) of a job's detailed view."""
    return next(t for t in view["tasks"] if t["id"] == task_id)


def tasks_on(view: dict[str, Any], host: Host, kind: str, state: str) -> set[str]:
    """The ``kind`` tasks (``map-00003``) with an attempt on ``host`` in ``state``
    (``running``, ``succeeded``...)."""
    return {
        task["id"]
        for task in view["tasks"]
        if task["kind"] == kind
        for attempt in task["attempts"]
        if attempt["worker"] == host.label and attempt["state"] == state
    }


def attempts_on(view: dict[str, Any], host: Host) -> dict[str, str]:
    """``{"map-00003#1": state}`` for every attempt that ran on ``host``."""
    return {
        f"{task['id']}#{attempt['attempt']}": attempt["state"]
        for task in view["tasks"]
        for attempt in task["attempts"]
        if attempt["worker"] == host.label
    }


def check_output(view: dict[str, Any], out: Path, reference: dict[str, bytes]) -> None:
    """Succeeded, with exactly the reference's part files, each committed by one attempt."""
    assert view["state"] == "succeeded", f"{view['reason']}; failures: {view['failures']}"
    differ = differences(out, reference)  # nothing twice, nothing partial, nothing missing
    assert not differ, f"not byte-identical to --local: {differ}"
    for task in view["tasks"]:
        if task["kind"] == "reduce":
            won = [a["attempt"] for a in task["attempts"] if a["state"] == "succeeded"]
            assert len(won) == 1, f"{task['id']} committed by attempts {won}"


def seeded(test: str) -> random.Random:
    """The random generator of one test: seeded by SEED and the test's name."""
    return random.Random(f"{SEED}:{test}")


def start(make: MakeNetbed, test: str, **kw: Any) -> tuple[Netbed, Daemon]:
    """Four hosts (a master on h0, workers on h1-h3); return the bed and a seeded victim."""
    bed = make(4, **kw)
    _, workers = bed.cluster(MASTER_ARGS)
    return bed, seeded(test).choice(workers)


# -- the harness itself --------------------------------------------------------------------

SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], 9000))
while True:
    connection, _ = server.accept()
    connection.sendall(bytes(range(256)) * (int(sys.argv[2]) // 256))
    connection.close()
"""
CLIENT = """
import socket, sys
received = bytearray()
with socket.create_connection((sys.argv[1], 9000), timeout=float(sys.argv[3])) as connection:
    while chunk := connection.recv(1 << 16):
        received += chunk
sys.exit(0 if received == bytes(range(256)) * (int(sys.argv[2]) // 256) else 3)
"""
PAYLOAD = 200 << 10


def reaches(bed: Netbed, src: Host, dst: Host, timeout: float = 30) -> bool:
    """Whether ``src`` gets the payload of the server on ``dst``, whole (each socket operation
    bounded by ``timeout``)."""
    result = bed.run(src, sys.executable, "-c", CLIENT, dst.ip, str(PAYLOAD), str(timeout))
    assert result.returncode in (0, 1), result.stderr  # 1: no connection (a traceback)
    return result.returncode == 0


def cut(bed: Netbed, src: Host, dst: Host) -> bool:
    """``src`` gets nothing from ``dst`` (connecting takes milliseconds on a working link)."""
    return not reaches(bed, src, dst, timeout=1)


def serving(make: MakeNetbed) -> tuple[Netbed, list[Daemon]]:
    """Three hosts, each running the payload server; return once they all answer."""
    bed = make(3, syn_retries=1)
    argv = [sys.executable, "-c", SERVER]
    servers = [bed.spawn(h, "server", [*argv, h.ip, str(PAYLOAD)], "") for h in bed.hosts]
    h0, h1, h2 = bed.hosts
    wait_for(lambda: all(reaches(bed, h0, h) for h in bed.hosts), "the servers to listen")
    assert reaches(bed, h1, h2) and reaches(bed, h2, h0)
    return bed, servers


def test_partition_pause_kill_and_tmpfs_do_what_they_say(
    netbed: MakeNetbed, tmp_path: Path
) -> None:
    bed, servers = serving(netbed)
    h0, h1, h2 = bed.hosts
    bed.partition(h1)
    assert cut(bed, h0, h1) and cut(bed, h1, h2)
    assert reaches(bed, h0, h2)
    bed.heal(h1)
    wait_for(lambda: reaches(bed, h0, h1), "h1 to be reachable again")

    bed.pause(h2)
    assert all(process_state(pid) == "T" for pid in pids_in(h2.namespace))
    bed.resume(h2)
    assert all(process_state(pid) in ("R", "S") for pid in pids_in(h2.namespace))
    bed.kill(servers[2])
    assert not pids_in(h2.namespace) and cut(bed, h0, h2)

    disk = tmp_path / "disk"
    disk.mkdir()
    fill = ["sh", "-c", f"head -c 100000 /dev/zero > {disk}/fill"]
    filled = bed.run(h0, *on_tmpfs("64k", disk, fill))
    assert filled.returncode != 0 and "No space left" in filled.stderr
    assert list(disk.iterdir()) == []  # the tmpfs was private and is gone


@pytest.mark.skipif(nft_missing() is not None, reason=str(nft_missing()))
def test_nftables_loss_and_rate_limit_do_what_they_say(netbed: MakeNetbed) -> None:
    bed, _ = serving(netbed)
    h0, h1, h2 = bed.hosts
    rule = bed.drop(h1, h2)
    assert cut(bed, h1, h2) and cut(bed, h2, h1)  # TCP needs both ways
    assert reaches(bed, h1, h0) and reaches(bed, h2, h0)
    assert bed.dropped(rule) > 0
    bed.remove(rule)
    assert reaches(bed, h1, h2)

    rule = bed.slow(h1, h2, kbytes_per_second=100)  # h2's download from h1 is limited
    assert reaches(bed, h2, h1)  # slower, but whole
    assert bed.dropped(rule) > 0  # the limit did bite
    bed.remove(rule)


def test_leftovers_of_a_dead_run_are_removed(tmp_path: Path) -> None:
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"no network namespaces here: {reason}")
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that has just ended: a dead run's
    name = f"nb-{gone.pid}-0-h0"
    subprocess.run(["ip", "netns", "add", name], check=True)
    orphan = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "600"])
    try:
        wait_for(lambda: pids_in(name), "the orphan to start")
        assert name in sweep_leftovers()
        assert name not in namespaces()
        assert orphan.wait(timeout=30) == -signal.SIGKILL
    finally:
        orphan.kill()
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def test_by_hand_script_removes_everything_when_terminated(tmp_path: Path) -> None:
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"no network namespaces here: {reason}")
    log = tmp_path / "netbed.log"
    script = [sys.executable, str(REPO / "scripts" / "netbed.py"), "up", "--hosts", "2"]
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [*script, "--cluster", "--dir", str(tmp_path / "bed")], stderr=stderr
        )

    def up() -> bool:
        assert process.poll() is None, log.read_text()
        return "Ctrl-C or SIGTERM" in log.read_text()

    try:
        wait_for(up, "the hosts to be up")
        mine = [n for n in namespaces() if n.startswith(f"nb-{process.pid}-")]
        assert len(mine) == 3  # h0, h1 and the hub
        daemons = [pid for name in mine for pid in pids_in(name)]
        assert len(daemons) >= 2  # a master and a worker (and their helpers)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        process.kill()
        process.wait()
    assert not [n for n in namespaces() if n.startswith(f"nb-{process.pid}-")]
    left = {pid: process_state(pid) for pid in daemons}
    assert set(left.values()) <= {"", "Z"}, left  # Z: dead, and this pid 1 may not reap it
    assert log.read_text().rstrip().endswith("removed")


# -- mapreduce on several hosts ---------------------------------------------------------------


def test_worker_sigkilled_mid_map_phase(
    netbed: MakeNetbed, reference: dict[str, bytes], tmp_path: Path
) -> None:
    """Row 1 and 2: its running attempts are killed (not failed) and run elsewhere, and the
    maps it had finished run again, their output having gone with it."""
    bed, victim = start(netbed, "sigkill")
    out = tmp_path / "out"
    job_id = submit_and_wait_mid_map(bed, out, victim.host)
    bed.kill(victim)
    view = finished(bed, job_id)
    check_output(view, out, reference)
    assert worker_view(bed, victim.host)["state"] == "lost"
    assert "killed" in attempts_on(view, victim.host).values()  # not failed: not its fault


STALL = JOBS / "stall.py"  # the map of stall.txt holds until a file appears
HOLD_REDUCE = JOBS / "hold_reduce.py"  # the reduce of one key holds until a file appears
SOME_TEXTS = ("pg-being_ernest.txt", "pg-dorian_gray.txt", "pg-frankenstein.txt")


def texts_and_stall(directory: Path) -> Path:
    """Three of the texts (6 map tasks) and ``stall.txt`` (one more) in ``directory``."""
    directory.mkdir()
    for name in SOME_TEXTS:
        shutil.copyfile(GUTENBERG / name, directory / name)
    (directory / "stall.txt").write_text("the held map task\nreads these two lines\n")
    return directory


def test_worker_sigkilled_while_the_reducers_fetch(netbed: MakeNetbed, tmp_path: Path) -> None:
    """Row 2, in the shuffle: every reduce runs, fetching map outputs as the maps complete, and
    every map but one (held until a file appears) is done.  A worker that holds completed map
    outputs and runs a reduce is killed: its reduce attempt is killed (not failed) and runs
    again, the maps it had completed run again elsewhere (reducers still need their output)."""
    inputs = texts_and_stall(tmp_path / "in")
    expected = run_local(STALL, inputs, tmp_path / "local", "--param", "stall=0")
    bed = netbed(4)
    _, workers = bed.cluster(MASTER_ARGS)
    out, release = tmp_path / "out", tmp_path / "release"
    held = ("--param", "stall=120", "--param", f"release={release}")
    job_id = submit(bed, out, *held, job=STALL, inputs=inputs)

    def shuffling() -> list[Daemon]:
        """The workers that hold map output and fetch for a reduce, once all reduces run."""
        view = bed.api(f"/api/jobs/{job_id}")
        maps, reduces = view["maps"], view["reduces"]
        if maps["completed"] < maps["total"] - 1 or reduces["in_progress"] < REDUCERS:
            return []

        def holds_output_and_fetches(host: Host) -> bool:  # (and does not hold stall.txt)
            mapping, reducing = (tasks_on(view, host, k, "running") for k in ("map", "reduce"))
            return bool(tasks_on(view, host, "map", "succeeded") and reducing and not mapping)

        return [w for w in workers if holds_output_and_fetches(w.host)]

    victim = seeded("shuffle").choice(wait_for(shuffling, "the reducers to wait for one map"))
    before = bed.api(f"/api/jobs/{job_id}")
    bed.kill(victim)
    wait_for(lambda: worker_view(bed, victim.host)["state"] == "lost", "the master to give up")
    release.write_text("")
    view = finished(bed, job_id)
    check_output(view, out, expected)
    states = attempts_on(view, victim.host)
    for reduce_task in tasks_on(before, victim.host, "reduce", "running"):
        assert states[f"{reduce_task}#0"] == "killed", states
    for map_task in tasks_on(before, victim.host, "map", "succeeded"):  # ran again, elsewhere
        again = [a for a in task(view, map_task)["attempts"] if a["worker"] != victim.host.label]
        assert "succeeded" in {a["state"] for a in again}, task(view, map_task)
    assert view["failed_attempts"] == 0


def test_worker_sigkilled_in_the_reduce_phase(netbed: MakeNetbed, tmp_path: Path) -> None:
    """Row 3: every map is done, two partitions are committed, the third is held in its
    reduce function; the worker running it is killed.  The attempt is killed (not failed), the
    reduce runs again on another worker, fetching again (the victim's map outputs are gone with
    it, so its maps run again), and the partition is committed once."""
    inputs = GUTENBERG
    expected = run_local(HOLD_REDUCE, inputs, tmp_path / "local", "--param", "stall=0")
    bed = netbed(4)
    _, workers = bed.cluster(MASTER_ARGS)
    out, release = tmp_path / "out", tmp_path / "release"
    held = ("--param", "key=the", "--param", "stall=120", "--param", f"release={release}")
    job_id = submit(bed, out, *held, job=HOLD_REDUCE, inputs=inputs)

    def held_by() -> Daemon | None:
        view = bed.api(f"/api/jobs/{job_id}")
        if view["reduces"]["completed"] < REDUCERS - 1:
            return None
        return next((w for w in workers if tasks_on(view, w.host, "reduce", "running")), None)

    victim = wait_for(held_by, "two partitions committed, the third held")
    before = bed.api(f"/api/jobs/{job_id}")
    (held_task,) = tasks_on(before, victim.host, "reduce", "running")
    bed.kill(victim)
    wait_for(lambda: worker_view(bed, victim.host)["state"] == "lost", "the master to give up")
    release.write_text("")
    view = finished(bed, job_id)
    check_output(view, out, expected)
    states = {a["worker"]: a["state"] for a in task(view, held_task)["attempts"]}
    assert states.pop(victim.host.label) == "killed" and "succeeded" in states.values(), states
    assert view["failed_attempts"] == 0


def test_master_sigkilled_mid_job_and_restarted_resumes_it(
    netbed: MakeNetbed, reference: dict[str, bytes], tmp_path: Path
) -> None:
    """Row 9 on namespace hosts: the master (with --state-dir) is SIGKILLed in the middle of the
    map phase and started again on its host with the same directory.  The workers register with
    the new epoch, the job completes, and a ``submit --wait`` started before the kill follows it
    to the end and exits 0."""
    bed = netbed(4)
    state = ("--state-dir", str(bed.hosts[0].dir / "state"))
    master, _ = bed.cluster((*MASTER_ARGS, *state))
    out = tmp_path / "out"
    argv = submit_args(bed, out, "--param", f"delay={DELAY}", job=JOB, inputs=GUTENBERG)
    waiting = bed.spawn(bed.hosts[0], "client", [*MAPREDUCE, *argv, "--wait"], master.address)
    job_id = wait_for(lambda: [j["id"] for j in bed.api("/api/cluster")["jobs"]], "the job")[0]
    wait_for(lambda: mid_map_phase_on(bed, job_id), "the middle of the map phase")
    bed.kill(master)
    bed.restart(master)
    assert bed.api("/api/cluster")["epoch"] == 2
    bed.wait_for_workers(*bed.hosts[1:])
    assert waiting.process.wait(timeout=120) == 0, waiting.log_tail()
    view = finished(bed, job_id)
    check_output(view, out, reference)
    assert view["failed_attempts"] == 0


ALL_AT_ONCE_WORKERS = 8


def test_all_at_once_three_workers_killed_and_one_partitioned(
    netbed: MakeNetbed, reference: dict[str, bytes], tmp_path: Path
) -> None:
    """Three of eight workers SIGKILLed and a fourth cut off at the same moment, in the middle
    of the map phase; the partitioned one is healed once the master has declared it lost.  The
    job completes on the others with output byte-identical to --local."""
    bed = netbed(1 + ALL_AT_ONCE_WORKERS)
    _, workers = bed.cluster(MASTER_ARGS)
    *killed, cut_off = seeded("all at once").sample(workers, 4)
    out = tmp_path / "out"
    job_id = submit(bed, out, "--param", f"delay={DELAY}", "--split-size", "128K")
    victims = [v.host for v in [*killed, cut_off]]
    wait_for(lambda: mid_map_phase_on(bed, job_id, *victims), "the four to run maps mid-phase")
    for victim in killed:
        bed.kill(victim)
    bed.partition(cut_off.host)
    gone = {v.label for v in victims}
    wait_for(lambda: gone <= lost_workers(bed), "the master to give up on all four")
    bed.heal(cut_off.host)
    view = finished(bed, job_id)
    check_output(view, out, reference)
    assert view["failed_attempts"] == 0
    for victim in victims:  # what they ran was killed, not failed, and ran elsewhere
        assert "killed" in attempts_on(view, victim).values()


def test_worker_partitioned_mid_job_then_healed(
    netbed: MakeNetbed, reference: dict[str, bytes], tmp_path: Path
) -> None:
    """Row 8: cut off silently (its switch port down) until the master declares it lost, then
    healed: it registers again as a new incarnation and the job completes, each partition
    committed once."""
    bed, victim = start(netbed, "partition")
    out = tmp_path / "out"
    job_id = submit_and_wait_mid_map(bed, out, victim.host)
    bed.partition(victim.host)
    wait_for(lambda: worker_view(bed, victim.host)["state"] == "lost", "the master to give up")
    bed.heal(victim.host)
    wait_for(lambda: worker_view(bed, victim.host)["state"] == "alive", "the victim to return")
    view = finished(bed, job_id)
    check_output(view, out, reference)
    assert "killed" in attempts_on(view, victim.host).values()


def test_paused_worker_returns_as_a_zombie_and_is_ignored(
    netbed: MakeNetbed, reference: dict[str, bytes], tmp_path: Path
) -> None:
    """Row 6: every process of a worker's host stopped past --worker-timeout, its task
    processes let finish alone, then the whole host resumed.  The worker wakes up holding
    finished attempts of an incarnation the master has declared dead: whatever it reports
    first (the late results or a heartbeat), the attempts stay killed, the outputs are the
    other attempts', and it registers again."""
    bed, victim = start(netbed, "zombie")
    out = tmp_path / "out"
    job_id = submit_and_wait_mid_map(bed, out, victim.host)
    bed.pause(victim.host)
    frozen = [a for a in worker_view(bed, victim.host)["running"] if a.startswith(job_id)]
    wait_for(lambda: worker_view(bed, victim.host)["state"] == "lost", "the master to give up")
    # Let the task processes (children of the worker's fork server) finish their work alone,
    # so that the worker holds finished attempts when it wakes up and reports them late.
    tasks = [pid for server in children(victim.process.pid) for pid in children(server)]
    for pid in tasks:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: {process_state(p) for p in tasks} <= {"Z", ""}, "the task processes to end")
    bed.resume(victim.host)
    wait_for(lambda: worker_view(bed, victim.host)["state"] == "alive", "the zombie to register")
    view = finished(bed, job_id)
    check_output(view, out, reference)
    states = attempts_on(view, victim.host)
    for attempt in frozen:  # "JOB/map-00004#1": what it ran when it froze
        assert states[attempt.split("/", 1)[1]] == "killed", states
    registrations = victim.log.read_text().count(" registered (incarnation ")
    assert registrations == 2, victim.log_tail()


@pytest.mark.skipif(nft_missing() is not None, reason=str(nft_missing()))
def test_one_way_loss_between_workers_reruns_the_maps_they_cannot_fetch(
    netbed: MakeNetbed, reference: dict[str, bytes], tmp_path: Path
) -> None:
    """Row 11: everything worker A sends to worker B is lost (so neither can fetch from the
    other, while both reach the master): the reducers report fetch failures, the maps run
    again, no attempt is charged a failure; the loss is healed once a map has run again."""
    bed, _ = start(netbed, "loss", syn_retries=1)  # a connect to a silent peer fails in ~3 s
    a, b = seeded("loss").sample(bed.hosts[1:], 2)
    rule = bed.drop(a, b)
    out = tmp_path / "out"
    job_id = submit(bed, out)

    def rerun_map() -> bool:
        view = bed.api(f"/api/jobs/{job_id}")
        return any(
            t["kind"] == "map" and sum(not x["backup"] for x in t["attempts"]) > 1
            for t in view["tasks"]
        )

    wait_for(rerun_map, "a map to run again after a fetch failure", timeout=90)
    bed.remove(rule)
    view = finished(bed, job_id)
    check_output(view, out, reference)
    assert {w["state"] for w in bed.api("/api/cluster")["workers"]} == {"alive"}
    assert view["failed_attempts"] == 0  # a fetch failure is not the reducer's fault


@pytest.mark.skipif(nft_missing() is not None, reason=str(nft_missing()))
def test_slow_links_from_one_worker_slow_its_shuffle_but_change_nothing(
    netbed: MakeNetbed, reference: dict[str, bytes], tmp_path: Path
) -> None:
    """What one worker sends to the two others is limited to 16 KB/s, so the reducers that
    fetch its map outputs straggle (backup attempts often win): the job succeeds, no attempt
    fails."""
    bed, slow = start(netbed, "slow")
    rules = [bed.slow(slow.host, h, kbytes_per_second=16) for h in bed.hosts[1:] if h != slow.host]
    out = tmp_path / "out"
    view = finished(bed, submit(bed, out))
    check_output(view, out, reference)
    assert view["failed_attempts"] == 0
    assert sum(bed.dropped(rule) for rule in rules) > 0  # the limit did bite


def test_worker_with_a_full_disk_does_not_fail_the_job(
    netbed: MakeNetbed, reference: dict[str, bytes], tmp_path: Path
) -> None:
    """Row 13: one worker's work directory is a 64 KiB tmpfs (ENOSPC on its first map output
    or fetch); the job succeeds on the others.  The full worker's failures are infrastructure
    failures with the reason shown (not counted against --max-attempts), and it takes no
    task while its disk is full (the master shows why)."""
    bed = netbed(4)
    bed.start_master(bed.hosts[0], *MASTER_ARGS)
    full = seeded("disk").choice(bed.hosts[1:])
    for host in bed.hosts[1:]:
        bed.start_worker(host, disk="64k" if host == full else None)
    bed.wait_for_workers(*bed.hosts[1:])
    out = tmp_path / "out"
    view = finished(bed, submit(bed, out))
    on_full = [f for f in view["failures"] if f["worker"] == full.label]
    if not on_full:
        pytest.fail(f"nothing failed on {full.label}, whose disk is full: {view['failures']}")
    for failure in on_full:
        assert failure["infrastructure"], failure
        assert "No space left on device" in failure["reason"], failure
        assert not failure["record"], failure
    # an attempt a slot (and one asked for just before), then it takes no more
    assert len(on_full) <= 3, on_full
    assert "full" in worker_view(bed, full)["reason"]
    check_output(view, out, reference)
