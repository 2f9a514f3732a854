"""A master with ``--state-dir`` killed with SIGKILL and started again resumes its jobs.

Real daemons (a master and two workers, separate processes on loopback), a
``submit --wait`` started before the kill, and the output compared byte for
byte with ``--local``.  Attempt counts in the job's status prove that completed
tasks were not run again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapreduce import client
from mapreduce.rpc._generated import mapreduce_pb2 as pb
from tests.conftest import JOBS, run_cli
from tests.daemons import (
    free_port,
    kill_group,
    local_parts,
    parts,
    submit_waiting,
    wait_until,
)


class Daemons:
    """A master on a fixed port (so it can be started again there) and its workers."""

    def __init__(self, tmp_path: Path, state_dir: Path | None) -> None:
        self.tmp_path = tmp_path
        self.state_dir = state_dir
        self.address = f"127.0.0.1:{free_port()}"
        self.master: subprocess.Popen[str] | None = None
        self.workers: list[subprocess.Popen[str]] = []
        self.stub = client.connect(self.address)

    def start_master(self) -> str:
        """Start the master; return what it printed before it listened."""
        state = ["--state-dir", str(self.state_dir)] if self.state_dir else []
        self.master = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mapreduce",
                "master",
                "--listen",
                self.address,
                "--no-http",
                "--worker-timeout",
                "5",
                *state,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.master.stdout is not None
        lines = []
        for line in self.master.stdout:
            lines.append(line)
            if line.startswith("master listening on"):
                return "".join(lines)
        raise AssertionError("the master exited: " + "".join(lines) + self.master.stderr.read())  # type: ignore[union-attr]

    def kill_master(self) -> None:
        assert self.master is not None
        kill_group(self.master)

    def worker_log(self, i: int) -> str:
        return (self.tmp_path / f"worker-{i}.log").read_text()

    def start_workers(self, count: int) -> None:
        for i in range(count):
            self.workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "mapreduce",
                        "worker",
                        "--master",
                        self.address,
                        "--workdir",
                        str(self.tmp_path / f"worker-{i}"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=(self.tmp_path / f"worker-{i}.log").open("w"),
                    text=True,
                    start_new_session=True,
                )
            )
        wait_until(lambda: len(self.cluster().workers) == count, f"{count} workers")

    def cluster(self) -> pb.ClusterStatus:
        return client.call(self.stub.GetClusterStatus, pb.GetClusterStatusRequest(), quiet=True)

    def job(self, job_id: str) -> pb.JobStatus:
        return client.call(
            self.stub.GetJobStatus, pb.GetJobStatusRequest(job_id=job_id), quiet=True
        )

    def close(self) -> None:
        for process in [*self.workers, *([self.master] if self.master else [])]:
            kill_group(process)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    found = Daemons(tmp_path, tmp_path / "state")
    try:
        yield found
    finally:
        found.close()


def write_input(directory: Path, names: list[str]) -> Path:
    directory.mkdir()
    for i, name in enumerate(names):
        (directory / name).write_text(
            "".join(
                f"the quick brown fox {i} jumps over the lazy dog {j % 7}\n" for j in range(300)
            )
        )
    return directory


def submit_and_wait(
    daemons: Daemons, job: Path, inputs: Path, out: Path, *extra: str
) -> tuple[subprocess.Popen[str], str]:
    return submit_waiting(daemons.address, job, inputs, out, *extra)


def test_master_killed_in_the_map_phase_resumes_without_rerunning_maps(
    daemons: Daemons, tmp_path: Path
) -> None:
    inputs = write_input(tmp_path / "in", ["a.txt", "b.txt", "c.txt", "d.txt", "stall.txt"])
    release = tmp_path / "release"
    params = ["-r", "2", "-p", "stall=120", "-p", f"release={release}"]
    expected = local_parts(tmp_path, JOBS / "stall.py", inputs, "-r", "2", "-p", "stall=0")
    daemons.start_master()
    daemons.start_workers(2)
    waiting, job_id = submit_and_wait(daemons, JOBS / "stall.py", inputs, tmp_path / "out", *params)
    # every map but the held one (stall.txt) completes; then the master dies
    wait_until(lambda: daemons.job(job_id).maps_done == 4, "4 of 5 maps done")
    daemons.kill_master()
    started = daemons.start_master()
    assert "epoch 2, 1 jobs known" in started
    assert daemons.job(job_id).maps_done == 4  # known again, from the journal
    release.write_text("")
    assert waiting.wait(timeout=120) == 0, waiting.stderr.read()  # type: ignore[union-attr]
    assert parts(tmp_path / "out") == expected
    status = daemons.job(job_id)
    assert status.state == "succeeded"
    # no map ran twice: the held attempt rode through the restart on its worker
    assert (status.map_attempts, status.reduce_attempts) == (5, 2)
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert summary["system"]["map_tasks"] == 5 and summary["job_id"] == job_id


def test_master_killed_in_the_reduce_phase_keeps_completed_tasks(
    daemons: Daemons, tmp_path: Path
) -> None:
    inputs = write_input(tmp_path / "in", ["a.txt", "b.txt", "c.txt"])
    release = tmp_path / "release"
    params = ["-r", "3", "-p", "key=the", "-p", f"release={release}"]
    expected = local_parts(tmp_path, JOBS / "hold_reduce.py", inputs, "-r", "3", "-p", "stall=0")
    daemons.start_master()
    daemons.start_workers(2)
    waiting, job_id = submit_and_wait(
        daemons, JOBS / "hold_reduce.py", inputs, tmp_path / "out", *params
    )
    # the partition of "the" is held in its reduce; the other two commit
    wait_until(lambda: daemons.job(job_id).reduces_done == 2, "2 of 3 reduces done")
    daemons.kill_master()
    daemons.start_master()
    release.write_text("")
    assert waiting.wait(timeout=120) == 0, waiting.stderr.read()  # type: ignore[union-attr]
    assert parts(tmp_path / "out") == expected
    status = daemons.job(job_id)
    assert (status.maps_done, status.reduces_done) == (3, 3)
    assert (status.map_attempts, status.reduce_attempts) == (3, 3)
    logs = run_cli("logs", job_id, "map-00000", "--master", daemons.address)
    assert logs.returncode == 0 and "attempt 0" in logs.stdout


def test_workers_delete_map_output_of_jobs_a_new_master_does_not_know(tmp_path: Path) -> None:
    found = Daemons(tmp_path, None)  # no --state-dir: a restarted master knows nothing
    try:
        inputs = write_input(tmp_path / "in", ["a.txt", "b.txt", "stall.txt"])
        found.start_master()
        found.start_workers(1)
        run_cli(
            "submit",
            JOBS / "stall.py",
            "--master",
            found.address,
            "-i",
            inputs,
            "-o",
            tmp_path / "out",
            "-p",
            "stall=120",
        )
        workdir = tmp_path / "worker-0"
        job_dirs = lambda: [p for p in workdir.iterdir() if p.name.startswith("job-")]  # noqa: E731
        wait_until(lambda: any(p.glob("map-*") for p in job_dirs()), "map output on the worker")
        found.kill_master()
        found.start_master()
        wait_until(lambda: not job_dirs(), "the worker to delete the unknown job's output")
        wait_until(lambda: len(found.cluster().workers) == 1, "the worker to register again")
    finally:
        found.close()


def test_a_torn_journal_tail_is_cut_back_with_a_message(daemons: Daemons, tmp_path: Path) -> None:
    inputs = write_input(tmp_path / "in", ["a.txt"])
    daemons.start_master()
    daemons.start_workers(1)
    result = run_cli(
        "submit",
        JOBS / "stall.py",
        "--master",
        daemons.address,
        "-i",
        inputs,
        "-o",
        tmp_path / "out",
        "-p",
        "stall=0",
        "--wait",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    daemons.kill_master()
    assert daemons.state_dir is not None
    segments = sorted((daemons.state_dir / "journal").glob("journal-*.log"))
    with segments[-1].open("ab") as f:
        f.write(b"MRJ1\x00\x00\x10\x00 half a record")  # a crash in the middle of a write
    started = daemons.start_master()
    assert "epoch 2, 1 jobs known" in started
    assert daemons.master is not None and daemons.master.stderr is not None
    wait_until(lambda: len(daemons.cluster().jobs) == 1, "the job in the restarted master")
    assert daemons.cluster().jobs[0].state == "succeeded"
    daemons.kill_master()
    assert "journal repaired" in daemons.master.stderr.read()


def test_a_worker_refuses_the_orders_of_a_master_from_an_older_epoch(
    daemons: Daemons, tmp_path: Path
) -> None:
    """A master started from a stale copy of the state (epoch 2) after the worker has seen
    epoch 3: the worker refuses its assignments, and the job makes no progress there."""
    assert daemons.state_dir is not None
    daemons.start_master()  # epoch 1
    daemons.start_workers(1)
    daemons.kill_master()
    stale = tmp_path / "stale-state"
    shutil.copytree(daemons.state_dir, stale)  # knows the worker, at epoch 1
    daemons.start_master()  # epoch 2
    daemons.kill_master()
    daemons.start_master()  # epoch 3
    wait_until(lambda: "master epoch 3" in daemons.worker_log(0), "the worker to see epoch 3")
    daemons.kill_master()
    daemons.state_dir = stale
    assert "epoch 2, 0 jobs known" in daemons.start_master()
    inputs = write_input(tmp_path / "in", ["a.txt"])
    submitted = run_cli(
        "submit",
        JOBS / "stall.py",
        "--master",
        daemons.address,
        "-i",
        inputs,
        "-o",
        tmp_path / "out",
        "-p",
        "stall=0",
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    wait_until(
        lambda: "tasks of an older master epoch" in daemons.worker_log(0),
        "the worker to refuse the stale master's task",
    )
    status = daemons.job(job_id)
    assert (status.maps_done, status.state) == (0, "running")
    assert not (tmp_path / "out").exists()
