"""A master restarted on its --state-dir with other settings must rebuild the same state.

Found by scripts/chaos.py (issue 10): its journal, replayed with another ``--backup-after``
than the run's, left 48 of 49 succeeded jobs queued or running.  The journal records the
master's inputs (a task request, a result) and the replay decides again what each input did;
a request that got a backup attempt under ``--backup-after 0.5`` would get none under the
default 5 s.  So the settings are durable too: each master start journals its own, and the
replay decides with the settings that were in force.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapreduce import client
from mapreduce.rpc._generated import mapreduce_pb2 as pb
from tests.conftest import JOBS, run_cli
from tests.daemons import free_port, kill_group, wait_until


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for process in started:
            kill_group(process)


def test_a_succeeded_job_stays_succeeded_when_the_master_restarts_with_other_settings(
    processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "fast.txt").write_text("a b c\n" * 100)
    (inputs / "slow.txt").write_text("a d\n" * 10)  # attempt 0 of its map sleeps 60 s
    address, state = f"127.0.0.1:{free_port()}", tmp_path / "state"

    def start(*argv: str) -> None:
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "mapreduce", *argv],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
        )

    def master(*settings: str) -> None:
        start("master", "--listen", address, "--no-http", "--state-dir", str(state), *settings)

    master("--backup-after", "0.5")
    for i in range(2):
        start("worker", "--master", address, "--workdir", str(tmp_path / f"worker-{i}"))
    job = JOBS / "straggler.py"
    done = run_cli("submit", job, "--master", address, "-i", inputs, "-o", tmp_path / "out",
                   "--wait", "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr  # the backup of the slow map won
    job_id = done.stdout.split()[0]
    kill_group(processes.pop(0))
    master()  # the default --backup-after
    stub = client.connect(address)

    def status() -> pb.JobStatus:
        return client.call(stub.GetJobStatus, pb.GetJobStatusRequest(job_id=job_id), quiet=True)

    wait_until(lambda: status().job_id == job_id, "the restarted master to answer")
    assert status().state == "succeeded"
