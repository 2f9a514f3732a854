"""Helpers for tests that run the daemons as real processes: ports, bounded waits, kills."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mapreduce.rpc._generated import mapreduce_pb2 as pb
from mapreduce.rpc._generated import mapreduce_pb2_grpc as pb_grpc
from mapreduce.rpc.security import Security
from tests.conftest import run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL the process group of ``process`` (unless it was reaped: its id may be reused)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def health(address: str, service: str = "") -> str:
    """What a ``grpc_health_probe``-style check of ``address`` sees: SERVING, NOT_SERVING...,
    or the error's code.  It sends no secret and no TLS, as such probes do."""
    channel = grpc.insecure_channel(address)
    try:
        request = health_pb2.HealthCheckRequest(service=service)
        reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError as exc:
        return str(exc.code().name)
    finally:
        channel.close()


class Candidates:
    """Master candidates on loopback, with their workers."""

    def __init__(self, tmp_path: Path, count: int = 3) -> None:
        self.tmp_path = tmp_path
        self.secret = tmp_path / "secret"
        assert run_cli("secret", self.secret).returncode == 0
        self.security = Security(self.secret.read_bytes().strip())
        self.grpc = [f"127.0.0.1:{free_port()}" for _ in range(count)]
        self.raft = [f"127.0.0.1:{free_port()}" for _ in range(count)]
        self.masters: dict[int, subprocess.Popen[str]] = {}
        self.workers: list[subprocess.Popen[str]] = []

    @property
    def address(self) -> str:
        return ",".join(self.grpc)

    def start(self, i: int, *extra: str) -> None:
        peers = ",".join(r for j, r in enumerate(self.raft) if j != i)
        self.masters[i] = subprocess.Popen(
            [
                sys.executable, "-m", "mapreduce", "master", "--listen", self.grpc[i],
                "--raft", self.raft[i], "--peers", peers, "--secret-file", str(self.secret),
                "--state-dir", str(self.tmp_path / f"candidate-{i}"), "--no-http",
                "--worker-timeout", "5", *extra,
            ],
            stdout=(self.tmp_path / f"candidate-{i}.out").open("a"),
            stderr=(self.tmp_path / f"candidate-{i}.err").open("a"),
            text=True,
            start_new_session=True,
        )  # fmt: skip

    def start_all(self) -> None:
        for i in range(len(self.grpc)):
            self.start(i)

    def status(self, i: int) -> pb.ClusterStatus | None:
        channel = self.security.channel(self.grpc[i], [])
        try:
            stub = pb_grpc.MasterStub(channel)
            return stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=2)
        except grpc.RpcError:
            return None
        finally:
            channel.close()

    def leader(self, among: list[int] | None = None) -> int | None:
        """The candidate that serves as the leader, if exactly one does."""
        found = []
        for i in among if among is not None else range(len(self.grpc)):
            status = self.status(i)
            if status is not None and status.role == "leader":
                found.append(i)
        return found[0] if len(found) == 1 else None

    def wait_for_leader(self, among: list[int] | None = None) -> int:
        wait_until(lambda: self.leader(among) is not None, "a leader", timeout=60)
        leader = self.leader(among)
        assert leader is not None
        return leader

    def start_workers(self, count: int) -> None:
        for i in range(count):
            self.workers.append(
                subprocess.Popen(
                    [
                        sys.executable, "-m", "mapreduce", "worker", "--master", self.address,
                        "--workdir", str(self.tmp_path / f"worker-{i}"),
                        "--secret-file", str(self.secret),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=(self.tmp_path / f"worker-{i}.log").open("w"),
                    text=True,
                    start_new_session=True,
                )
            )  # fmt: skip
        leader = self.wait_for_leader()
        wait_until(
            lambda: len(self.status(leader).workers) == count,  # type: ignore[union-attr]
            f"{count} workers",
        )

    def job(self, job_id: str) -> pb.JobStatus:
        from mapreduce import client

        stub = client.connect(self.address, self.security)
        return client.call(stub.GetJobStatus, pb.GetJobStatusRequest(job_id=job_id), quiet=True)

    def kill(self, i: int) -> None:
        kill_group(self.masters.pop(i))

    def close(self) -> None:
        for process in [*self.workers, *self.masters.values()]:
            kill_group(process)


def submit_waiting(
    master: str, job: Path, inputs: Path, out: Path, *extra: str
) -> tuple[subprocess.Popen[str], str]:
    """Start ``mapreduce submit --wait`` in the background; return it and the job id."""
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mapreduce", "submit", str(job), "--master", master,
            "-i", str(inputs), "-o", str(out), "--quiet", "--wait", *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    job_id = process.stdout.readline().strip()
    assert job_id.startswith("job-"), process.stderr.read()  # type: ignore[union-attr]
    return process, job_id


def local_parts(tmp_path: Path, job: Path, inputs: Path, *extra: str) -> dict[str, str]:
    """The part files ``mapreduce run --local`` writes for this job: the reference."""
    out = tmp_path / "local"
    result = run_cli("run", job, "-i", inputs, "-o", out, "--local", "-q", *extra)
    assert result.returncode == 0, result.stderr
    return parts(out)


def parts(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(out.glob("part-*"))}


class Daemons:
    """``mapreduce master`` (with its status page) and ``workers`` workers on loopback, sharing
    a cluster secret; ``extra`` arguments go to every daemon."""

    def __init__(self, tmp_path: Path, workers: int = 2, *extra: str) -> None:
        self.tmp_path = tmp_path
        self.secret = tmp_path / "secret"
        assert run_cli("secret", self.secret).returncode == 0
        self.security = Security(self.secret.read_bytes().strip())
        self.address = f"127.0.0.1:{free_port()}"
        self.http_port = free_port()
        self.processes: list[subprocess.Popen[str]] = []
        self.master = self._start(
            "master", "--listen", self.address, "--http-port", str(self.http_port), *extra
        )
        for i in range(workers):
            self._start(
                "worker", "--master", self.address, "--workdir", str(tmp_path / f"worker-{i}"),
                *extra,
            )  # fmt: skip
        wait_until(lambda: len(self.workers()) == workers, f"{workers} workers")

    def _start(self, *argv: str) -> subprocess.Popen[str]:
        name = f"{argv[0]}-{len(self.processes)}"
        process = subprocess.Popen(
            [sys.executable, "-m", "mapreduce", *argv, "--secret-file", str(self.secret)],
            stdout=(self.tmp_path / f"{name}.out").open("w"),
            stderr=(self.tmp_path / f"{name}.err").open("w"),
            text=True,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def log(self, i: int) -> str:
        """What daemon ``i`` (0: the master) wrote on stderr."""
        name = f"{'master' if i == 0 else 'worker'}-{i}"
        return (self.tmp_path / f"{name}.err").read_text()

    def workers(self) -> list[pb.WorkerStatus]:
        channel = self.security.channel(self.address, [])
        try:
            stub = pb_grpc.MasterStub(channel)
            return list(stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=5).workers)
        except grpc.RpcError:
            return []
        finally:
            channel.close()

    def close(self) -> None:
        for process in self.processes:
            kill_group(process)
