"""The embedded cluster: a master and N worker processes on loopback, for one ``run``.

The master runs in this process; each worker is a ``mapreduce worker`` child
process (forked from this one, or a new interpreter).  Every process started
here is stopped on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import grpc

from mapreduce.chaos import ChaosSpec, Injector, injected
from mapreduce.core.config import MasterConfig
from mapreduce.rpc.convert import MAX_MESSAGE_BYTES
from mapreduce.rpc.security import Security

if TYPE_CHECKING:
    from mapreduce.master.driver import MasterDriver
    from mapreduce.web.listener import LazyStatusServer


class WorkerProcess(Protocol):
    """What the cluster needs of a worker process: a :class:`subprocess.Popen` has it."""

    pid: int
    returncode: int | None  # set once the process was reaped

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class ForkedWorker:
    """A worker forked from this process (see ``EmbeddedCluster(fork=True)``)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None and self.returncode is None:
            _pid, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
            time.sleep(0.005)
        assert self.returncode is not None
        return self.returncode


class LocalRpcError(grpc.RpcError):
    """What a call of a :class:`LocalStub` raises where a gRPC call would raise its error."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _LocalContext:
    """What the master's servicer uses of a ``grpc.ServicerContext``, for a call in-process."""

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise LocalRpcError(code, details)

    def is_active(self) -> bool:
        return True


class LocalStub:
    """Calls a master servicer's methods in this process, as a stub of it would over gRPC
    (``stub.SubmitJob(request, timeout=...)``): errors raise a ``grpc.RpcError`` with the
    status the servicer gave, and requests over gRPC's size limit are refused as gRPC does.
    """

    def __init__(self, service: Any) -> None:
        self.service = service

    def __getattr__(self, method: str) -> Callable[..., Any]:
        handler = getattr(self.service, method)

        def invoke(request: Any, timeout: float | None = None) -> Any:
            size = request.ByteSize()
            if size > MAX_MESSAGE_BYTES:
                raise LocalRpcError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"Sent message larger than max ({size} vs. {MAX_MESSAGE_BYTES})",
                )
            return handler(request, _LocalContext())

        return invoke


class EmbeddedCluster:
    """``with EmbeddedCluster(workers=2) as cluster: ... cluster.address ...``

    With ``http_port`` (0: any free port) the master also serves its status pages
    at ``cluster.status_server.url``.

    With ``fork=True`` the first ``workers`` worker processes are forked from this
    one before it creates any gRPC object or thread, so they start with every
    module already imported (about 0.1 s sooner than a new interpreter).  Only a
    process that has not used gRPC yet may do that (``mapreduce run`` does it);
    when this process has another thread, the workers are started as new
    interpreters anyway, as workers added later by :meth:`start_worker` always are.
    The objects made so far are then frozen (:func:`gc.freeze`: shared with the
    workers, no collection traverses them again), and collections are enabled once
    the master serves (``mapreduce run`` pauses them while it imports).
    """

    def __init__(
        self,
        workers: int,
        config: MasterConfig | None = None,
        worker_args: tuple[str, ...] = (),
        http_port: int | None = None,
        fork: bool = False,
        chaos: ChaosSpec | None = None,
        chaos_seed: int = 0,
    ) -> None:
        self.num_workers = workers
        self.config = config
        self.worker_args = worker_args
        self.processes: list[WorkerProcess] = []
        self.scratch = ""
        self.address = ""
        self.http_port = http_port
        self.fork = fork
        self.chaos = chaos if chaos is not None and chaos.active else None
        self.chaos_seed = chaos_seed
        self._chaos_stop = threading.Event()
        self._chaos_thread: threading.Thread | None = None
        self.status_server: LazyStatusServer | None = None
        self.driver: MasterDriver | None = None
        self.server: grpc.Server | None = None

    def __enter__(self) -> EmbeddedCluster:
        self.scratch = tempfile.mkdtemp(prefix="mapreduce-cluster-")
        # A secret of its own: no other local user can talk to this cluster's servers.
        self.secret_file = os.path.join(self.scratch, "secret")
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        with open(self.secret_file, "rb") as f:
            self.security = Security(f.read())
        address_pipes: list[int] = []
        try:
            if self.fork:
                import mapreduce.worker.agent  # noqa: F401 (the workers start with it imported)
                from mapreduce.worker.executor import single_threaded

                if single_threaded():
                    # What is imported so far is shared with the workers (copy-on-write)
                    # and lives as long as the processes: no collection traverses it
                    # again (this is the pattern of gc.freeze's documentation).
                    gc.freeze()
                    for i in range(self.num_workers):
                        address_pipes.append(self._fork_worker(i, address_pipes))
            # The master's own modules are imported once the workers are forked (which
            # never use them): they start up meanwhile.
            from mapreduce.master.driver import MasterDriver
            from mapreduce.master.service import serve_master

            self.driver = MasterDriver(self.config)
            self.server, port = serve_master("127.0.0.1:0", self.driver, security=self.security)
            self.address = f"127.0.0.1:{port}"
            if self.fork:
                gc.enable()  # `mapreduce run` pauses collections until here (see cli._run)
            for pipe in address_pipes:
                os.write(pipe, self.address.encode() + b"\n")
            if self.chaos is not None:
                self.driver.annotate = lambda: {"chaos": self.chaos_counts()}
            if self.http_port is not None:
                self.serve_status_page(self.http_port)
            for i in range(len(self.processes), self.num_workers):
                self.start_worker(i)
            if self.chaos is not None and self.chaos.kill_worker:
                self._chaos_thread = threading.Thread(
                    target=self._kill_workers, name="chaos", daemon=True
                )
                self._chaos_thread.start()
        except BaseException:
            self.close()
            raise
        finally:
            for pipe in address_pipes:
                os.close(pipe)  # a forked worker that got no address exits
        return self

    def serve_status_page(self, port: int) -> LazyStatusServer:
        """Serve the master's status pages on 127.0.0.1:``port`` (0: any free port), as
        ``http_port`` does, unless they are served already."""
        if self.status_server is None:
            assert self.driver is not None, "the cluster has not started"
            # imported here, after the workers are forked: they never serve it (and it
            # imports the HTTP server and the pages at the first visit)
            from mapreduce.web.listener import LazyStatusServer

            self.status_server = LazyStatusServer(
                self.driver, "127.0.0.1", port, self.security.secret
            ).start()
        return self.status_server

    def _worker_argv(self, i: int, *extra: str) -> list[str]:
        workdir = os.path.join(self.scratch, f"worker-{i}")
        chaos: list[str] = []
        if self.chaos is not None:
            chaos = [
                "--chaos", self.chaos.text(), "--chaos-seed", str(self.chaos_seed * 1000 + i),
                "--chaos-record", os.path.join(self._chaos_dir(), f"worker-{i}"),
            ]  # fmt: skip
            if i < self.chaos.slow_worker:
                chaos.append("--chaos-slow")
        return [
            "worker", "--master", self.address, "--workdir", workdir,
            "--secret-file", self.secret_file, *chaos, *self.worker_args, *extra,
        ]  # fmt: skip

    def _chaos_dir(self) -> str:
        directory = os.path.join(self.scratch, "chaos")
        os.makedirs(directory, exist_ok=True)
        return directory

    def chaos_counts(self) -> dict[str, int]:
        """The faults --chaos injected so far, by kind."""
        return injected(self._chaos_dir())

    def _kill_workers(self) -> None:
        """--chaos kill-worker: each second maybe SIGKILL a worker (a new one replaces it)."""
        assert self.chaos is not None
        injector = Injector(self.chaos, self.chaos_seed, os.path.join(self._chaos_dir(), "cluster"))
        replacements = itertools.count(1000)
        while not self._chaos_stop.wait(1.0):
            if not self.processes or not injector.kill_worker():
                continue
            victim = injector.pick(len(self.processes))
            old = self.processes[victim]
            new = self.start_worker(next(replacements))  # first: some worker is always alive
            self.processes.pop()
            self.processes[victim] = new
            if old.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(old.pid, signal.SIGKILL)
                old.wait()

    @staticmethod
    def _worker_environment() -> dict[str, str]:
        return {
            "GRPC_VERBOSITY": os.environ.get("GRPC_VERBOSITY", "ERROR"),
            "MAPREDUCE_LOG_LEVEL": os.environ.get("MAPREDUCE_LOG_LEVEL", "WARNING"),
        }

    def start_worker(self, i: int, *extra: str) -> WorkerProcess:
        """Start worker number ``i`` (its work directory's name) as a new interpreter."""
        process = subprocess.Popen(
            [sys.executable, "-m", "mapreduce", *self._worker_argv(i, *extra)],
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self._worker_environment()},
            start_new_session=True,  # Ctrl-C reaches us, and we stop the workers
        )
        self.processes.append(process)
        return process

    def _fork_worker(self, i: int, other_pipes: list[int]) -> int:
        """Fork worker ``i``; it reads the master's address from the returned pipe (and exits
        if the pipe closes with none)."""
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                gc.enable()  # the worker collects, whether or not the run process does yet
                os.setsid()  # Ctrl-C reaches the run process, which stops the workers
                from mapreduce.worker.executor import die_with_parent

                die_with_parent(parent)
                for fd in (write_end, *other_pipes):
                    os.close(fd)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                # Nothing in the worker or its task processes may run the run's main
                # script again (it may run a whole job at import time): an empty module
                # stands in for it.
                sys.modules["__main__"] = types.ModuleType("__main__")
                signal.signal(signal.SIGINT, signal.default_int_handler)

                def master_address() -> str:
                    with os.fdopen(read_end, "rb") as pipe:
                        address = pipe.readline().decode().strip()
                    if not address:  # the cluster did not start: end quietly
                        sys.stdout.flush()
                        sys.stderr.flush()
                        os._exit(1)
                    self.address = address
                    return address

                os.environ.update(self._worker_environment())
                from mapreduce.cli import run_worker

                # The worker starts its fork server and shuffle service at once; it waits
                # for the master's address only to register.
                code = run_worker(self._worker_argv(i), master_address)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(read_end)
        self.processes.append(ForkedWorker(pid))
        return write_end

    def connect(self) -> Any:
        """A stub of this cluster's master (its calls carry the cluster's secret)."""
        from mapreduce import client

        return client.connect(self.address, self.security)

    def local_stub(self) -> Any:
        """A stub of this cluster's master that calls it in this process, as :meth:`connect`'s
        does over gRPC: the same servicer answers, without a channel (whose first call
        costs 0.01 s) or the secret (the caller is the master's own process)."""
        from mapreduce.master.service import MasterService

        assert self.driver is not None, "the cluster has not started"
        return LocalStub(MasterService(self.driver))

    def any_worker_alive(self) -> bool:
        return any(process.poll() is None for process in self.processes)

    def close(self) -> None:
        # A worker of an embedded cluster keeps nothing worth a graceful stop: the
        # job's output is committed (or was never made visible) and its scratch
        # space is removed below.  Each worker is killed with its process group (its
        # fork server and task processes), unless its process was reaped already: its
        # id may then belong to another process by now.
        self._chaos_stop.set()
        if self._chaos_thread is not None:
            self._chaos_thread.join()
        for process in self.processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                # and the process itself: a worker forked a moment ago may not have made
                # its process group yet (killpg found none), and would live on
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(process.pid, signal.SIGKILL)
        if self.driver is not None:
            self.driver.stop()
        if self.server is not None:
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
