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
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GUTENBERG, JOBS, REPO, run_cli
from tests.netbed import (
    Daemon,
    Host,
    Netbed,
    children,
    namespaces,
    nft_missing,
    on_tmpfs,
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


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The part files of the same job run by ``mapreduce run --local`` (the oracle)."""
    reason = unavailable()  # (module fixtures come first: skip before any work)
    if reason is not None:
        pytest.skip(f"no network namespaces here: {reason}")
    if not GUTENBERG.is_dir():
        pytest.fail(f"test data missing: {GUTENBERG} (the shared/ folder beside the repo)")
    out = tmp_path_factory.mktemp("reference") / "out"
    result = run_cli(
        "run", JOB, "-i", GUTENBERG, "-o", out, "-r", str(REDUCERS), "--local",
        "--split-size", SPLIT_SIZE, "--param", "delay=0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    parts = {p.name: p.read_bytes() for p in sorted(out.glob("part-*"))}
    assert len(parts) == REDUCERS
    return parts


def submit(bed: Netbed, out: Path) -> str:
    """Submit the job from the master's host; return its id."""
    assert bed.master is not None
    result = bed.mapreduce(
        bed.hosts[0], "submit", JOB, "--master", bed.master.address, "-i", GUTENBERG, "-o", out,
        "-r", str(REDUCERS), "--split-size", SPLIT_SIZE, "--param", f"delay={DELAY}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def worker_view(bed: Netbed, host: Host) -> dict[str, Any]:
    """The master's view of the worker on ``host`` (state ``alive`` or ``lost``)."""
    workers = bed.api("/api/cluster")["workers"]
    return next(w for w in workers if w["id"] == host.label)


def mid_map_phase_on(bed: Netbed, job_id: str, host: Host) -> bool:
    """Some maps are done, some are still to start, and ``host`` is running one."""
    cluster = bed.api("/api/cluster")
    maps = next(j for j in cluster["jobs"] if j["id"] == job_id)["maps"]
    worker = next(w for w in cluster["workers"] if w["id"] == host.label)
    running = any(r.startswith(f"{job_id}/map-") for r in worker["running"])
    return maps["completed"] >= 1 and maps["idle"] >= 1 and running


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
    names = {p.name for p in out.iterdir()}
    assert names == {*reference, "_SUCCESS", "_summary.json"}  # nothing twice, nothing partial
    differ = [name for name, data in reference.items() if (out / name).read_bytes() != data]
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
