"""Hostile and careless clients (issue 11, items 5 to 7), against real processes and sockets.

Each test does what a hostile or careless user would: requests built from the generated stubs
(``rpc/_generated``) with values out of range, thousands of queued jobs, outputs on top of
inputs, unreadable inputs, a full disk, readers that stall the shuffle.  Each checks that the
request is refused (INVALID_ARGUMENT with the reason, or exit status 2 naming the flag) or
handled, that the master keeps serving, and that nothing is lost.  Nothing is timed: waits are
on conditions, bounded.  Tests that need root (a tmpfs in a mount namespace, dropping the
capability to read anything) skip without it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mapreduce import client
from mapreduce.cluster import EmbeddedCluster
from mapreduce.core.master import MasterConfig
from mapreduce.dataflow.commit import OutputCommitter
from mapreduce.errors import OutputBusyError
from mapreduce.planning import JobOptions
from mapreduce.rpc import convert
from mapreduce.rpc._generated import mapreduce_pb2 as pb
from mapreduce.rpc._generated import mapreduce_pb2_grpc as pb_grpc
from mapreduce.rpc.security import Security
from mapreduce.worker.shuffle import fetch_partition
from tests.conftest import GUTENBERG, JOBS, run_cli
from tests.daemons import kill_group

FAST = MasterConfig(worker_timeout=5.0, task_timeout=60.0, backup_after=1.0)
INVALID = grpc.StatusCode.INVALID_ARGUMENT
ALREADY = grpc.StatusCode.ALREADY_EXISTS


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``condition`` until it returns something true; return that (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def refused(method: Callable[..., Any], request: Any, code: grpc.StatusCode = INVALID) -> str:
    """Call ``method(request)``; it must fail with ``code``; return the details."""
    with pytest.raises(grpc.RpcError) as info:
        method(request, timeout=30)
    assert info.value.code() == code, info.value.details()
    return str(info.value.details())


class Master:
    """A ``mapreduce master`` daemon on a free port (and its status page)."""

    def __init__(self, *args: str, open_files: int | None = None) -> None:
        def limit() -> None:
            if open_files is not None:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

        self.process = subprocess.Popen(
            [sys.executable, "-m", "mapreduce", "master", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=limit,
        )
        assert self.process.stdout is not None
        self.address = self.url = ""
        for line in self.process.stdout:
            if line.startswith("master listening on "):
                self.address = line.split()[-1]
            if line.startswith("status page: "):
                self.url = line.split()[-1]
            if self.address and (self.url or "--no-http" in args):
                break
        assert self.address, self.process.stderr.read()  # type: ignore[union-attr]
        self.stub = pb_grpc.MasterStub(grpc.insecure_channel(self.address))

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def get(self, path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=30) as reply:
            return reply.status, reply.read()

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextlib.contextmanager
def master(*args: str, open_files: int | None = None) -> Iterator[Master]:
    daemon = Master(*args, open_files=open_files)
    try:
        yield daemon
    finally:
        daemon.close()


def submission(tmp_path: Path, out: Path, job: Path = JOBS / "sleepy.py") -> pb.SubmitJobRequest:
    inp = tmp_path / "in.txt"
    if not inp.exists():
        inp.write_text("a b\nc\n")
    return client.build_submission(
        JobOptions(job_path=str(job), inputs=(str(inp),), output=str(out))
    )


# -- item 5: every request checked at the edge ------------------------------------------


def test_a_master_refuses_jobs_beyond_its_limits_and_keeps_serving(tmp_path: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text("word\n" * 2000)  # 10 KB: ten splits of 1K
    out = tmp_path / "out"
    before = sorted(os.listdir(tmp_path))
    with master("--max-maps", "4", "--max-reducers", "2", "--http-port", "0") as daemon:
        base = ("submit", JOBS / "wordcount_plain.py", "--master", daemon.address, "-i", inp)
        result = run_cli(*base, "-o", out, "-r", "3")
        assert result.returncode == 2
        assert "3 reduce tasks; this master accepts at most 2" in result.stderr
        assert "--max-reducers" in result.stderr and "Traceback" not in result.stderr
        result = run_cli(*base, "-o", out, "--split-size", "1K")
        assert result.returncode == 2
        assert "10 map tasks" in result.stderr and "--max-maps" in result.stderr
        request = submission(tmp_path, out)
        request.spec.num_reducers = 2**32 - 1  # what exhausted the master's memory
        details = refused(daemon.stub.SubmitJob, request)
        assert "num_reducers must be 1 to 100000" in details
        # nothing was registered or created, and the master serves everyone as before
        status = daemon.stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=30)
        assert list(status.jobs) == []
        assert daemon.get("/metrics")[0] == 200
        assert json.loads(daemon.get("/api/cluster")[1])["jobs"] == []
        assert sorted(os.listdir(tmp_path)) == before
        # the same output is free for a job within the limits
        result = run_cli(*base, "-o", out, "-r", "2")
        assert result.returncode == 0, result.stderr
    result = run_cli("master", "--max-reducers", "0")
    assert result.returncode == 2 and "--max-reducers must be 1 to 100000" in result.stderr


SPEC_CHANGES: list[tuple[str, Callable[[pb.JobSpec], None], str]] = [
    (
        "a split ending before it starts",
        lambda s: setattr(s.splits[0], "start", s.splits[0].end + 1),
        "invalid",
    ),
    ("a relative split path", lambda s: setattr(s.splits[0], "path", "in.txt"), "absolute"),
    ("max_attempts of a million", lambda s: setattr(s, "max_attempts", 10**6), "1 to 100"),
    ("an unknown input format", lambda s: setattr(s, "input_format", "xml"), "not one of"),
    ("a job file that is '.'", lambda s: setattr(s, "job_file_name", "."), "ending in .py"),
    ("a job file not .py", lambda s: setattr(s, "job_file_name", "job.txt"), "ending in .py"),
    ("a job file path", lambda s: setattr(s, "job_file_name", "a/job.py"), "base name"),
    ("a hidden job file", lambda s: setattr(s, "job_file_name", ".job.py"), "base name"),
    ("job id 'logs'", lambda s: setattr(s, "job_id", "logs"), "reserved"),
    ("job id 'LOGS'", lambda s: setattr(s, "job_id", "LOGS"), "reserved"),
    ("a job id with a slash", lambda s: setattr(s, "job_id", "a/b"), "invalid job id"),
    (
        "a shipped file named as the job file",
        lambda s: s.py_files.add(name=s.job_file_name, content=b"x = 1\n"),
        "named twice",
    ),
    (
        "an output that holds an input, with overwrite",
        lambda s: (
            setattr(s, "output", os.path.dirname(s.splits[0].path)),
            setattr(s, "overwrite", True),
        ),
        "holds the input",
    ),
    (
        "an output that is an input",
        lambda s: (setattr(s, "output", s.splits[0].path), setattr(s, "overwrite", True)),
        "holds the input",
    ),
]


@pytest.mark.parametrize(
    ("what", "change", "message"), SPEC_CHANGES, ids=[c[0] for c in SPEC_CHANGES]
)
def test_malformed_submissions_are_refused_and_leave_nothing(
    tmp_path: Path, what: str, change: Callable[[pb.JobSpec], None], message: str
) -> None:
    with EmbeddedCluster(0, FAST) as cluster:
        stub = pb_grpc.MasterStub(cluster.security.channel(cluster.address, []))
        request = submission(tmp_path, tmp_path / "out")
        before = sorted(os.listdir(tmp_path))
        change(request.spec)
        assert message in refused(stub.SubmitJob, request)
        status = stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=10)
        assert list(status.jobs) == []
        assert sorted(os.listdir(tmp_path)) == before  # no staging directory, no lock
        assert (tmp_path / "in.txt").read_text() == "a b\nc\n"


def test_reports_naming_tasks_or_attempts_that_do_not_exist_are_refused(tmp_path: Path) -> None:
    """A fake worker's reports, commit requests, fetch-failure reports and map-output polls
    naming task 10^9 or attempt 10^9, and log requests for tasks out of range: all are
    INVALID_ARGUMENT; oversized logs, tracebacks and counters do not grow the master."""
    with EmbeddedCluster(0, FAST, http_port=0) as cluster:
        stub = pb_grpc.MasterStub(cluster.security.channel(cluster.address, []))
        me = pb.WorkerIdentity(worker_id="fake", incarnation="i1")
        other = pb.WorkerIdentity(worker_id="other", incarnation="i2")
        for worker in (me, other):
            stub.RegisterWorker(
                pb.RegisterWorkerRequest(
                    worker=worker,
                    shuffle_address="127.0.0.1:9",
                    slots=1,
                    protocol_version=convert.PROTOCOL_VERSION,
                    worker_key=f"key of {worker.worker_id}",
                ),
                timeout=10,
            )
        for long in [
            pb.WorkerIdentity(worker_id="w" * 10_000, incarnation="i"),
            pb.WorkerIdentity(worker_id="w", incarnation="i" * 10_000),
        ]:
            register = pb.RegisterWorkerRequest(
                worker=long,
                shuffle_address="h:1",
                protocol_version=convert.PROTOCOL_VERSION,
                worker_key="k",
            )
            assert "at most 256 characters" in refused(stub.RegisterWorker, register)
        job = stub.SubmitJob(submission(tmp_path, tmp_path / "out"), timeout=10).job_id

        def assigned() -> list[pb.TaskAssignment]:
            reply = stub.RequestTask(pb.RequestTaskRequest(worker=me, free_slots=2), timeout=10)
            return list(reply.tasks)

        tasks = wait_for(assigned, "the fake worker to get the map and the reduce")
        assert sorted(t.attempt.kind for t in tasks) == [pb.MAP, pb.REDUCE]
        map0 = pb.AttemptId(job_id=job, kind=pb.MAP, index=0, attempt=0)
        reduce0 = pb.AttemptId(job_id=job, kind=pb.REDUCE, index=0, attempt=0)
        for index, attempt in [(10**9, 0), (0, 10**9), (2**32 - 1, 2**32 - 1)]:
            bad_map = pb.AttemptId(job_id=job, kind=pb.MAP, index=index, attempt=attempt)
            bad_reduce = pb.AttemptId(job_id=job, kind=pb.REDUCE, index=index, attempt=attempt)
            calls: list[tuple[Callable[..., Any], Any]] = [
                (stub.ReportMapDone, pb.ReportMapDoneRequest(worker=me, attempt=bad_map, log="x")),
                (
                    stub.ReportTaskFailed,
                    pb.ReportTaskFailedRequest(worker=me, attempt=bad_map, reason="r", log="x"),
                ),
                (stub.RequestCommit, pb.RequestCommitRequest(worker=me, attempt=bad_reduce)),
                (stub.ReportReduceDone, pb.ReportReduceDoneRequest(worker=me, attempt=bad_reduce)),
                (
                    stub.GetMapOutputs,
                    pb.GetMapOutputsRequest(worker=me, reduce_attempt=bad_reduce),
                ),
                (
                    stub.ReportFetchFailed,
                    pb.ReportFetchFailedRequest(
                        worker=me, reduce_attempt=reduce0, map_index=index, map_attempt=attempt
                    ),
                ),
            ]
            for method, request in calls:
                details = refused(method, request)
                assert any(
                    what in details for what in ("no map task", "no reduce task", "has no attempt")
                ), details
        for task in ["map-999999999", "reduce-00001", "map-", "mapper-00000", "x" * 10000]:
            refused(stub.GetTaskLogs, pb.GetTaskLogsRequest(job_id=job, task=task))
        refused(
            stub.GetTaskLogs,
            pb.GetTaskLogsRequest(job_id="job-none", task="map-00000"),
            grpc.StatusCode.NOT_FOUND,
        )
        # too many counters, or a huge counter name: refused, and nothing changes
        for counters in [{f"c{i}": 1 for i in range(100_000)}, {"n" * 100_000: 1}]:
            stats = pb.TaskStats(counters=counters)
            refused(
                stub.ReportMapDone, pb.ReportMapDoneRequest(worker=me, attempt=map0, stats=stats)
            )
        # a log from a worker the attempt does not run on is not kept
        stub.ReportTaskFailed(
            pb.ReportTaskFailedRequest(worker=other, attempt=map0, reason="r", log="IMPOSTOR"),
            timeout=10,
        )
        # 8 MB of reason, record, traceback and log: kept only in part
        huge = "y" * (8 << 20)
        stub.ReportTaskFailed(
            pb.ReportTaskFailedRequest(
                worker=me, attempt=map0, reason=huge, record=huge, traceback=huge, log=huge
            ),
            timeout=30,
        )
        (attempt,) = stub.GetTaskLogs(
            pb.GetTaskLogsRequest(job_id=job, task="map-00000"), timeout=10
        ).attempts
        assert "IMPOSTOR" not in attempt.log and 0 < len(attempt.log) <= 64 << 10
        assert len(attempt.error) < 64 << 10
        status, page = urllib_get(cluster, f"/api/jobs/{job}")
        assert status == 200 and len(page) < 256 << 10
        assert len(stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job)).failures[0]) < 16 << 10
        # and the master still serves everyone
        assert stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=10).jobs[0].job_id == job


# -- item 4: a worker can only report its own work ------------------------------------


def test_a_live_workers_id_cannot_be_taken_over_by_another_registration(tmp_path: Path) -> None:
    """A client that knows a real worker's id registers it again every 0.3 s with its own
    incarnation and key while a job runs: every try is refused, the worker is never
    pushed out, no task runs twice; a registration without a key is refused too."""
    with EmbeddedCluster(1, FAST) as cluster:
        stub = pb_grpc.MasterStub(cluster.security.channel(cluster.address, []))

        def workers() -> list[pb.WorkerStatus]:
            return list(stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=10).workers)

        (real,) = wait_for(workers, "the embedded worker")
        request = submission(tmp_path, tmp_path / "out")
        request.spec.params["sleep"] = "3"
        job = stub.SubmitJob(request, timeout=10).job_id

        def impostor(key: str) -> pb.RegisterWorkerRequest:
            return pb.RegisterWorkerRequest(
                worker=pb.WorkerIdentity(worker_id=real.worker_id, incarnation=uuid.uuid4().hex),
                shuffle_address="127.0.0.1:9",
                slots=4,
                protocol_version=convert.PROTOCOL_VERSION,
                worker_key=key,
            )

        tries = []
        while stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job)).state in ("queued", "running"):
            tries.append(refused(stub.RegisterWorker, impostor(uuid.uuid4().hex), ALREADY))
            time.sleep(0.3)
        assert len(tries) >= 3
        assert all(f"worker id {real.worker_id!r} belongs to a live worker" in t for t in tries)
        assert "worker key" in refused(stub.RegisterWorker, impostor(""))
        status = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job))
        assert status.state == "succeeded", status.reason
        assert (status.map_attempts, status.reduce_attempts) == (1, 1)
        (still,) = workers()
        assert (still.worker_id, still.address) == (real.worker_id, real.address)
        # another id is still welcome
        other = impostor("k")
        other.worker.worker_id = "another"
        stub.RegisterWorker(other, timeout=10)
        assert sorted(w.worker_id for w in workers()) == sorted(["another", real.worker_id])


def test_a_worker_restarted_from_its_workdir_takes_its_id_over_and_a_namesake_waits(
    tmp_path: Path,
) -> None:
    """With a worker timeout of 10 minutes, a worker SIGKILLed and started again from the
    same --workdir registers at once (its key is there); a second worker given the same
    --name from another work directory is refused, says why, and keeps trying."""
    with master("--no-http", "--worker-timeout", "600") as daemon:

        def worker(workdir: Path, log: Path) -> subprocess.Popen[str]:
            argv = ["worker", "--master", daemon.address, "--listen", "127.0.0.1:0"]
            return subprocess.Popen(
                [sys.executable, "-m", "mapreduce", *argv, "--name", "w", "--workdir", workdir],
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )

        def registered(log: Path) -> bool:
            return "worker w registered" in log.read_text()

        first = worker(tmp_path / "work-a", tmp_path / "a.log")
        try:
            wait_for(lambda: registered(tmp_path / "a.log"), "the first worker")
            assert (tmp_path / "work-a" / "worker.key").stat().st_mode & 0o777 == 0o600
            namesake = worker(tmp_path / "work-b", tmp_path / "b.log")
            try:
                wait_for(
                    lambda: "the master refused this worker" in (tmp_path / "b.log").read_text(),
                    "the namesake to be refused",
                )
                assert "belongs to a live worker" in (tmp_path / "b.log").read_text()
                assert namesake.poll() is None  # it waits for the id
                kill_group(first)
                first = worker(tmp_path / "work-a", tmp_path / "a2.log")
                wait_for(lambda: registered(tmp_path / "a2.log"), "the restarted worker")
                assert not registered(tmp_path / "b.log")
            finally:
                kill_group(namesake)
        finally:
            kill_group(first)


def urllib_get(cluster: EmbeddedCluster, path: str) -> tuple[int, bytes]:
    assert cluster.status_server is not None
    request = urllib.request.Request(
        cluster.status_server.url.rstrip("/") + path,
        headers={"Authorization": f"Bearer {cluster.security.secret.decode()}"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return r.status, r.read()


def test_queued_jobs_hold_no_file_descriptors(tmp_path: Path) -> None:
    """300 jobs queue on a master allowed 128 open files (each used to keep its output's lock
    file open: EMFILE after about 120); the running job still holds its output's lock, and a
    queued job whose output another process took when its turn comes fails, saying why."""
    jobs = 300
    with master("--no-http", open_files=128) as daemon:
        request = submission(tmp_path, tmp_path / "out-0")
        for i in range(jobs):
            request.spec.job_id = f"job-{i:03d}"
            request.spec.output = str(tmp_path / f"out-{i}")
            daemon.stub.SubmitJob(request, timeout=30)
        status = daemon.stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=30)
        assert len(status.jobs) == jobs
        assert daemon.open_files() < 64

        def state(i: int) -> pb.JobStatus:
            return daemon.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=f"job-{i:03d}"))

        wait_for(lambda: state(0).state == "running", "the first job to run")
        # the running job's output is protected from other processes
        intruder = OutputCommitter(str(tmp_path / "out-0"), "intruder")
        with pytest.raises(OutputBusyError, match="being written by another running job"):
            intruder.check_free()
        with pytest.raises(OutputBusyError):
            intruder.prepare()
        # another process takes the second job's output while it waits in the queue
        thief = OutputCommitter(str(tmp_path / "out-1"), "thief")
        thief.prepare()
        try:
            daemon.stub.CancelJob(pb.CancelJobRequest(job_id="job-000"), timeout=30)
            second = wait_for(lambda: (s := state(1)).state == "failed" and s, "job-001 to fail")
            assert "preparing the output failed" in second.reason
            assert "being written by another running job" in second.reason
            wait_for(lambda: state(2).state == "running", "the third job to run")
        finally:
            thief.abort()
        assert not (tmp_path / "out-1").exists()
        assert daemon.open_files() < 64


# -- item 6: careless input never loses data ------------------------------------------------


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*.txt")}


def test_an_output_that_is_inside_or_holds_an_input_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "in" / "sub").mkdir(parents=True)
    (data / "in" / "a.txt").write_text("alpha beta\n")
    (data / "in" / "sub" / "b.txt").write_text("gamma\n")
    (tmp_path / "link").symlink_to(data / "in")
    before = snapshot(tmp_path)
    job = JOBS / "wordcount_plain.py"
    cases = {
        data / "in": "is the input",
        tmp_path / "link": "is the input",  # the same directory through a symbolic link
        data / "in" / "out": "is inside the input",
        data / "in" / "sub": "is inside the input",
        data: "holds the input",
        tmp_path: "holds the input",
    }
    for output, message in cases.items():
        for overwrite in ([], ["--overwrite"]):
            result = run_cli("run", job, "-i", data / "in", "-o", output, "--local", *overwrite)
            assert result.returncode == 2, (output, result.stderr)
            assert f"--output {output} {message}" in result.stderr
            assert snapshot(tmp_path) == before
    # the embedded cluster and submit plan the same way (submit never reaches the master)
    for command in (["run", "--workers", "1"], ["submit", "--master", "127.0.0.1:1"]):
        result = run_cli(*command, job, "-i", data / "in", "-o", data, "--overwrite")
        assert result.returncode == 2 and "holds the input" in result.stderr, result.stderr
    assert snapshot(tmp_path) == before
    assert not (data / "in" / "out").exists()


def no_privilege() -> list[str]:
    """A command prefix under which chmod 000 means unreadable (root: no DAC capabilities)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: cannot drop the capability to read anything")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def run_without_privilege(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*no_privilege(), sys.executable, "-m", "mapreduce", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_an_unreadable_file_or_directory_under_an_input_is_an_error_naming_it(
    tmp_path: Path,
) -> None:
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    (inp / "a.txt").write_text("alpha\n")
    (inp / "sub" / "b.txt").write_text("beta\n")
    job = JOBS / "wordcount_plain.py"
    (inp / "sub").chmod(0)
    try:
        result = run_without_privilege("run", job, "-i", inp, "-o", tmp_path / "o", "--local")
    finally:
        (inp / "sub").chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert f"cannot read input directory {inp / 'sub'}: Permission denied" in result.stderr
    (inp / "sub" / "b.txt").chmod(0)
    result = run_without_privilege("run", job, "-i", inp, "-o", tmp_path / "o", "--workers", "1")
    assert result.returncode == 2, result.stderr
    assert f"cannot read input file {inp / 'sub' / 'b.txt'}: Permission denied" in result.stderr
    assert not (tmp_path / "o").exists()


def on_small_disk(disk: Path, size: str, *args: str | Path, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """Run ``mapreduce ARGS`` in a mount namespace where ``disk`` is a tmpfs of ``size``;
    return the result, and what was left on that disk afterwards."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a full disk needs root and unshare (a tmpfs in a mount namespace)")
    disk.mkdir(exist_ok=True)
    script = (
        'mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99; shift 2; "$@"; rc=$?; '
        'echo "== left on the disk:"; ls -A "$DISK"; exit $rc'
    )
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", size, str(disk),
         sys.executable, "-m", "mapreduce", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **(env or {}), "DISK": str(disk)},
    )  # fmt: skip
    assert result.returncode != 99, result.stderr
    left = result.stdout.split("== left on the disk:\n", 1)[1].split()
    return result, left


@pytest.mark.parametrize("where", [["--local"], ["--workers", "2", "--max-attempts", "2"]])
def test_a_full_output_disk_fails_the_job_with_the_reason_and_skips_no_record(
    tmp_path: Path, where: list[str]
) -> None:
    """The reduce writes to a 128 KiB disk: the job fails (exit 1) naming ENOSPC; no key is
    blamed or skipped (whatever --skip-bad-records allows); nothing is left on that disk."""
    disk = tmp_path / "disk"
    result, left = on_small_disk(
        disk, "128k", "run", JOBS / "wordcount_plain.py", "-i", GUTENBERG, "-o", disk / "out",
        "-r", "2", "--skip-bad-records", "10", *where,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "No space left on device" in result.stderr
    assert "on record" not in result.stderr and "key=" not in result.stderr
    assert "Traceback" not in result.stderr
    assert left == []  # neither the output nor a staging directory


def test_a_full_temporary_directory_in_a_local_run_is_a_clear_error(tmp_path: Path) -> None:
    disk = tmp_path / "tmp"
    out = tmp_path / "out"
    result, left = on_small_disk(
        disk, "64k", "run", JOBS / "wordcount_plain.py", "-i", GUTENBERG, "-o", out, "--local",
        env={"TMPDIR": str(disk)},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert left == [] and not out.exists()
    assert not list(tmp_path.glob(".out.staging-*"))


@pytest.mark.parametrize("where", [["--local"], ["--workers", "1", "--max-attempts", "2"]])
def test_running_out_of_file_descriptors_is_never_blamed_on_a_record(
    tmp_path: Path, where: list[str]
) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text("a b\nLEAK\nc\n")
    out = tmp_path / "out"
    result = run_cli(
        "run", JOBS / "fd_leak.py", "-i", inp, "-o", out, "--skip-bad-records", "10", *where
    )
    assert result.returncode == 1, result.stderr
    assert "Too many open files" in result.stderr
    assert "on record" not in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


# -- item 7: the shuffle server cannot be starved --------------------------------------------


def own_connection(address: str, security: Security, buffer: bool = True) -> grpc.Channel:
    """A channel with a connection of its own, as another client process would have (channels
    of one process to one address share a connection unless told otherwise).  Without
    ``buffer`` it takes in no more than it reads (no flow-control window growth), so a
    server cannot finish sending to it by filling its buffers."""
    options: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
    if not buffer:
        options.append(("grpc.http2.bdp_probe", 0))
    return security.channel(address, options)


def test_stalled_shuffle_readers_do_not_block_other_fetches(tmp_path: Path) -> None:
    """Clients that read one chunk of a map output and stall (8 of them: as many as the old
    server had threads) do not keep anyone else from fetching it; one client gets at most 16
    streams at once (the others are refused with RESOURCE_EXHAUSTED, which fetches retry);
    stalled streams are ended by the server."""
    inp = tmp_path / "in"
    inp.mkdir()
    line = "x" * 1000
    (inp / "a.txt").write_text("".join(f"{i:08d} {line}\n" for i in range(24_000)))  # 24 MB
    (inp / "stall.txt").write_text("hold\n")
    release = tmp_path / "release"
    log = tmp_path / "worker.log"
    with EmbeddedCluster(0, FAST) as cluster, log.open("w") as log_file:
        worker_process = subprocess.Popen(
            [sys.executable, "-m", "mapreduce", "worker", "--master", cluster.address,
             "--workdir", tmp_path / "w", "--shuffle-idle-timeout", "20",
             "--secret-file", cluster.secret_file],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env={**os.environ, "MAPREDUCE_LOG_LEVEL": "WARNING"},
            start_new_session=True,
        )  # fmt: skip
        try:
            stub = cluster.connect()
            request = client.build_submission(
                JobOptions(
                    job_path=str(JOBS / "big_values.py"),
                    inputs=(str(inp),),
                    output=str(tmp_path / "out"),
                    params={"release": str(release)},
                    backup_tasks=False,
                )
            )
            job = client.submit(stub, request)

            def map0_done() -> bool:
                status = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job), timeout=10)
                return status.maps_done >= 1

            wait_for(map0_done, "map-00000 to finish (map-00001 holds)")
            (worker,) = stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=10).workers
            fetch = pb.FetchPartitionRequest(job_id=job, map_index=0, map_attempt=0, partition=0)
            stalled = []
            for _ in range(8):  # as many as the old server had threads
                channel = own_connection(worker.address, cluster.security)
                stream = pb_grpc.ShuffleStub(channel).FetchPartition(fetch, timeout=300)
                next(stream)  # one chunk, then nothing
                stalled.append((channel, stream))
            crowd = own_connection(worker.address, cluster.security, buffer=False)
            busy = 0
            for stream in [
                pb_grpc.ShuffleStub(crowd).FetchPartition(fetch, timeout=300) for _ in range(40)
            ]:  # one client asking for 40 at once
                try:
                    next(stream)
                    stalled.append((crowd, stream))
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
                    busy += 1
            assert (len(stalled), busy) == (8 + 16, 24)
            fresh = own_connection(worker.address, cluster.security)
            size = fetch_partition(fresh, (job, 0, 0), 0, str(tmp_path / "fetched.run"))
            assert size == (tmp_path / "fetched.run").stat().st_size > 20 << 20
            # The stalled streams were open all along (the fetch did not wait for them to
            # end): each still gives its next chunk.
            for _channel, stream in stalled:
                assert next(stream).data

            # Then they keep still: the server ends them (and says so in its log), and the
            # client learns it when it reads again.
            def ended_by_connection() -> collections.Counter[str]:
                ended = re.findall(r" by (\S+): the client read nothing for 20 s", log.read_text())
                return collections.Counter(ended)

            wait_for(
                lambda: 16 in ended_by_connection().values(),
                "the worker to end the crowd's 16 stalled streams",
                120,
            )
            with pytest.raises(grpc.RpcError) as info:
                for _chunk in stalled[-1][1]:  # what had arrived before it ended, then the end
                    pass
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "read nothing for 20 s" in str(info.value.details())
            release.touch()
            client.wait_for(stub, job)
            for channel, _stream in stalled:
                channel.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker_process.pid, signal.SIGKILL)
            worker_process.wait()
    assert (tmp_path / "out" / "_SUCCESS").exists()
