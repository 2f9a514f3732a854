"""Master failover: three master candidates replicate the journal with Raft and elect a leader.

Real processes on loopback: three ``mapreduce master --raft ... --peers ...``
candidates, three workers given every candidate's address, and ``submit --wait``
given all three too.  The leader is SIGKILLed (in the map phase, in the reduce
phase) or paused past the election timeout; the job completes on the new
leader, byte for byte as ``--local`` computes it, with each partition committed
once.  The last test cuts the leader off in network namespaces (tests/netbed.py).
"""

from __future__ import annotations

import json
import pickle
import signal
import socket
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GUTENBERG, JOBS, run_cli
from tests.daemons import (
    Candidates,
    free_port,
    health,
    local_parts,
    parts,
    submit_waiting,
    wait_until,
)
from tests.netbed import MAPREDUCE, Host, Netbed, wait_for


@pytest.fixture
def candidates(tmp_path: Path) -> Iterator[Candidates]:
    found = Candidates(tmp_path)
    try:
        yield found
    finally:
        found.close()


def submit_and_wait(
    candidates: Candidates, job: Path, inputs: Path, out: Path, *extra: str
) -> tuple[subprocess.Popen[str], str]:
    secret = ("--secret-file", str(candidates.secret))
    return submit_waiting(candidates.address, job, inputs, out, *secret, *extra)


def hold_a_reduce(candidates: Candidates, tmp_path: Path) -> tuple[subprocess.Popen[str], str, int]:
    """Three candidates and workers; a job whose third reduce is held (until ``release``
    exists) after two partitions committed; return ``submit --wait``, the job, the leader."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (inputs / name).write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    params = ["-r", "3", "-p", "key=the", "-p", f"release={tmp_path / 'release'}"]
    candidates.start_all()
    candidates.start_workers(3)
    leader = candidates.wait_for_leader()
    waiting, job_id = submit_and_wait(
        candidates, JOBS / "hold_reduce.py", inputs, tmp_path / "out", *params
    )
    wait_until(lambda: candidates.job(job_id).reduces_done == 2, "2 of 3 reduces committed")
    return waiting, job_id, leader


def held_reduce_output(tmp_path: Path) -> dict[str, str]:
    args = ("-r", "3", "-p", "stall=0")
    return local_parts(tmp_path, JOBS / "hold_reduce.py", tmp_path / "in", *args)


def test_leader_killed_in_the_map_phase_a_new_leader_finishes_the_job(
    candidates: Candidates, tmp_path: Path
) -> None:
    expected = local_parts(tmp_path, JOBS / "slow_wordcount.py", GUTENBERG, "-r", "3")
    candidates.start_all()
    candidates.start_workers(3)
    old = candidates.wait_for_leader()
    # grpc.health.v1: only the leader serves
    wait_until(lambda: health(candidates.grpc[old]) == "SERVING", "the leader's health")
    followers = [i for i in range(3) if i != old]
    assert [health(candidates.grpc[i]) for i in followers] == ["NOT_SERVING"] * 2
    assert health(candidates.grpc[followers[0]], "mapreduce.v1.Master") == "NOT_SERVING"
    waiting, job_id = submit_and_wait(
        candidates, JOBS / "slow_wordcount.py", GUTENBERG, tmp_path / "out",
        "-r", "3", "-p", "delay=0.02",
    )  # fmt: skip
    wait_until(lambda: 1 <= candidates.job(job_id).maps_done < 8, "some maps done")
    candidates.kill(old)
    new = candidates.wait_for_leader([i for i in range(3) if i != old])
    assert new != old
    wait_until(lambda: health(candidates.grpc[new]) == "SERVING", "the new leader's health")
    assert waiting.wait(timeout=120) == 0, waiting.stderr.read()  # type: ignore[union-attr]
    assert parts(tmp_path / "out") == expected
    status = candidates.job(job_id)
    assert status.state == "succeeded" and status.reduce_attempts >= 3
    assert candidates.status(new).epoch > 1  # type: ignore[union-attr]


def test_leader_killed_in_the_reduce_phase_keeps_the_committed_partitions(
    candidates: Candidates, tmp_path: Path
) -> None:
    waiting, job_id, old = hold_a_reduce(candidates, tmp_path)
    expected = held_reduce_output(tmp_path)
    release = tmp_path / "release"
    candidates.kill(old)
    candidates.wait_for_leader([i for i in range(3) if i != old])
    release.write_text("")
    assert waiting.wait(timeout=120) == 0, waiting.stderr.read()  # type: ignore[union-attr]
    assert parts(tmp_path / "out") == expected
    status = candidates.job(job_id)
    # nothing ran twice: the held reduce rode through the failover on its worker
    assert (status.map_attempts, status.reduce_attempts) == (3, 3)


def test_a_paused_leader_steps_down_and_commits_nothing(
    candidates: Candidates, tmp_path: Path
) -> None:
    waiting, job_id, old = hold_a_reduce(candidates, tmp_path)
    expected = held_reduce_output(tmp_path)
    release = tmp_path / "release"
    paused = candidates.masters[old]
    paused.send_signal(signal.SIGSTOP)
    others = [i for i in range(3) if i != old]
    new = candidates.wait_for_leader(others)
    # the held reduce finishes and asks the new leader for its commit
    release.write_text("")
    assert waiting.wait(timeout=120) == 0, waiting.stderr.read()  # type: ignore[union-attr]
    paused.send_signal(signal.SIGCONT)
    err = tmp_path / f"candidate-{old}.err"
    wait_until(lambda: "no longer the leader" in err.read_text(), "the old leader to step down")
    wait_until(
        lambda: (s := candidates.status(old)) is not None and s.role == "follower",
        "the old leader to come back as a follower",
    )
    assert candidates.leader() == new
    assert parts(tmp_path / "out") == expected
    assert candidates.job(job_id).state == "succeeded"
    for partition in range(3):  # each partition committed by exactly one attempt
        logs = run_cli(
            "logs", job_id, f"reduce-{partition:05d}", "--master", candidates.address,
            "--secret-file", candidates.secret,
        )  # fmt: skip
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout.count(": succeeded") == 1, logs.stdout


def test_all_candidates_restarted_lose_no_committed_event(
    candidates: Candidates, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.txt").write_text("one two two three three three\n" * 50)
    candidates.start_all()
    candidates.start_workers(1)
    leader = candidates.wait_for_leader()
    before = candidates.status(leader)
    assert before is not None
    result = run_cli(  # run on the daemons, following the leader
        "run", JOBS / "stall.py", "--master", candidates.address, "-i", inputs,
        "-o", tmp_path / "out", "-p", "stall=0", "--secret-file", candidates.secret,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.split()[1]  # "job JOB_ID succeeded: output in ..."
    for i in list(candidates.masters):
        candidates.kill(i)
    candidates.start_all()
    leader = candidates.wait_for_leader()
    after = candidates.status(leader)
    assert after is not None and after.epoch > before.epoch  # the term never goes backwards
    status = candidates.job(job_id)
    assert (status.state, status.maps_done, status.reduces_done) == ("succeeded", 1, 1)


def test_a_raw_pickle_sent_to_a_raft_port_does_nothing(
    candidates: Candidates, tmp_path: Path
) -> None:
    candidates.start_all()
    leader = candidates.wait_for_leader()
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return os.system, (f"touch {marker}",)

    # PySyncObj's framing: a native int length, then a zlib-compressed pickle (encrypted with
    # the password when there is one): without a password this would run the command
    data = zlib.compress(pickle.dumps(Exploit()))
    payload = struct.pack("i", len(data)) + data
    for address in candidates.raft:
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(payload)
            s.settimeout(5)
            try:
                while s.recv(4096):  # the candidate drops the connection
                    pass
            except (TimeoutError, ConnectionResetError):
                pass
    # the cluster still works, and nothing ran
    assert candidates.leader() == leader
    assert not marker.exists()


def test_a_candidate_without_the_secret_refuses_to_start(tmp_path: Path) -> None:
    result = run_cli(
        "master", "--listen", f"127.0.0.1:{free_port()}", "--raft", f"127.0.0.1:{free_port()}",
        "--peers", "127.0.0.1:1,127.0.0.1:2", "--state-dir", tmp_path / "s", "--no-http",
    )  # fmt: skip
    assert result.returncode == 2
    assert "--peers needs --secret-file" in result.stderr


def test_a_leader_cut_off_from_the_others_cannot_commit_and_the_majority_finishes(
    netbed: Callable[..., Netbed], tmp_path: Path
) -> None:
    """Candidates on h0-h2, workers on h3-h4 (network namespaces): the leader's link goes
    down mid-job; the majority elects a new leader that finishes the job, each partition
    committed once; healed, the old leader comes back as a follower."""
    bed = netbed(5, syn_retries=1)
    secret = tmp_path / "secret"
    assert run_cli("secret", secret).returncode == 0
    candidates, workers = bed.hosts[:3], bed.hosts[3:]
    grpc_addresses = [f"{h.ip}:7070" for h in candidates]
    everyone = ",".join(grpc_addresses)
    for host in candidates:
        peers = ",".join(f"{h.ip}:7090" for h in candidates if h is not host)
        argv = [
            *MAPREDUCE, "master", "--listen", f"{host.ip}:7070", "--raft", f"{host.ip}:7090",
            "--peers", peers, "--secret-file", str(secret), "--state-dir", str(host.dir / "state"),
            "--no-http", "--worker-timeout", "5",
        ]  # fmt: skip
        bed.spawn(host, "master", argv, f"{host.ip}:7070")
    for host in workers:
        argv = [*MAPREDUCE, "worker", "--master", everyone, "--listen", f"{host.ip}:0"]
        argv += ["--secret-file", str(secret)]
        bed.spawn(host, "worker", [*argv, "--name", host.label], everyone)

    def role(address: str) -> dict[str, Any]:
        result = bed.mapreduce(
            workers[0], "status", "--master", address, "--json", "--secret-file", secret
        )
        return json.loads(result.stdout) if result.returncode == 0 else {}

    def leader(among: list[Host]) -> Host | None:
        found = [h for h in among if role(f"{h.ip}:7070").get("role") == "leader"]
        return found[0] if len(found) == 1 else None

    wait_for(lambda: leader(candidates) is not None, "a leader", timeout=60)
    old = leader(candidates)
    assert old is not None
    wait_for(
        lambda: len(role(everyone).get("workers", [])) == 2, "the workers to register", timeout=60
    )
    out = tmp_path / "out"
    waiting = bed.spawn(
        workers[0],
        "submit",
        [
            *MAPREDUCE, "submit", str(JOBS / "slow_wordcount.py"), "--master", everyone,
            "--secret-file", str(secret),
            "-i", str(GUTENBERG), "-o", str(out), "-r", "3", "-p", "delay=0.02", "--wait", "-q",
        ],
        everyone,
    )  # fmt: skip
    wait_for(lambda: "job-" in waiting.log.read_text(), "the job id")
    job_id = waiting.log.read_text().split()[0]

    def maps_done() -> int:
        result = bed.mapreduce(
            workers[1], "status", "--master", everyone, "--job", job_id, "--secret-file", secret
        )
        return int(result.stdout.split("map ")[1].split("/")[0]) if "map " in result.stdout else 0

    wait_for(lambda: maps_done() >= 1, "some maps done", timeout=60)
    bed.partition(old)
    others = [h for h in candidates if h is not old]
    wait_for(lambda: leader(others) is not None, "a new leader among the others", timeout=60)
    assert waiting.process.wait(timeout=180) == 0, waiting.log_tail()
    bed.heal(old)
    expected = local_parts(tmp_path, JOBS / "slow_wordcount.py", GUTENBERG, "-r", "3")
    assert parts(out) == expected
    for partition in range(3):  # each partition committed by exactly one attempt
        logs = bed.mapreduce(
            workers[1], "logs", job_id, f"reduce-{partition:05d}", "--master", everyone,
            "--secret-file", secret,
        )  # fmt: skip
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout.count(": succeeded") == 1, logs.stdout
    wait_for(
        lambda: role(f"{old.ip}:7070").get("role") == "follower",
        "the old leader to come back as a follower",
        timeout=60,
    )
