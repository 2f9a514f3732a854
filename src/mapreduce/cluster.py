"""The embedded cluster: a master and N worker processes on loopback, for one ``run``.

The master runs in this process; each worker is a ``mapreduce worker`` child
process.  Every process started here is stopped on exit, on error and on
Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from types import TracebackType

from mapreduce.core.master import MasterConfig
from mapreduce.master.driver import MasterDriver
from mapreduce.master.service import serve_master
from mapreduce.web.server import StatusServer


class EmbeddedCluster:
    """``with EmbeddedCluster(workers=2) as cluster: ... cluster.address ...``

    With ``http_port`` (0: any free port) the master also serves its status pages
    at ``cluster.status_server.url``.
    """

    def __init__(
        self,
        workers: int,
        config: MasterConfig | None = None,
        worker_args: tuple[str, ...] = (),
        http_port: int | None = None,
    ) -> None:
        self.num_workers = workers
        self.config = config
        self.worker_args = worker_args
        self.processes: list[subprocess.Popen[bytes]] = []
        self.scratch = ""
        self.address = ""
        self.http_port = http_port
        self.status_server: StatusServer | None = None

    def __enter__(self) -> EmbeddedCluster:
        self.scratch = tempfile.mkdtemp(prefix="mapreduce-cluster-")
        self.driver = MasterDriver(self.config)
        self.server, port = serve_master("127.0.0.1:0", self.driver)
        self.address = f"127.0.0.1:{port}"
        if self.http_port is not None:
            self.status_server = StatusServer(self.driver, "127.0.0.1", self.http_port).start()
        try:
            for i in range(self.num_workers):
                self.start_worker(i)
        except BaseException:
            self.close()
            raise
        return self

    def start_worker(self, i: int, *extra: str) -> subprocess.Popen[bytes]:
        workdir = os.path.join(self.scratch, f"worker-{i}")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mapreduce",
                "worker",
                "--master",
                self.address,
                "--workdir",
                workdir,
                *self.worker_args,
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            env={
                **os.environ,
                "GRPC_VERBOSITY": os.environ.get("GRPC_VERBOSITY", "ERROR"),
                "MAPREDUCE_LOG_LEVEL": os.environ.get("MAPREDUCE_LOG_LEVEL", "WARNING"),
            },
            start_new_session=True,  # Ctrl-C reaches us, and we stop the workers
        )
        self.processes.append(process)
        return process

    def any_worker_alive(self) -> bool:
        return any(process.poll() is None for process in self.processes)

    def close(self) -> None:
        # A worker of an embedded cluster keeps nothing worth a graceful stop: the
        # job's output is committed (or was never made visible) and its scratch
        # space is removed below.  Each worker is killed with its process group
        # (its fork server and task processes), also when the worker itself is gone.
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        self.driver.stop()
        self.server.stop(grace=None)
        for process in self.processes:
            process.wait()
        if self.status_server is not None:
            self.status_server.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
