"""The worker daemon: registers, heartbeats, asks for tasks, runs them, serves map output.

Each attempt runs in a thread of this process that supervises a child process
running the user code (:mod:`mapreduce.worker.executor`).  A reduce attempt
first fetches its partition from every map output, in parallel and as soon as
the master lists each one, then merges and reduces them in a child, then asks
the master for permission to commit and renames its output into place.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from mapreduce import daemonlog
from mapreduce.chaos import Injector
from mapreduce.core.events import AttemptRef
from mapreduce.core.spec import JobSpec, check_job_id
from mapreduce.core.tasks import TaskKind
from mapreduce.dataflow.commit import output_committer
from mapreduce.dataflow.runner import DISK_ERRNOS, infrastructure_errno
from mapreduce.rpc import convert
from mapreduce.rpc._generated import mapreduce_pb2 as pb
from mapreduce.rpc.master_client import MasterClient
from mapreduce.rpc.security import Security
from mapreduce.worker.executor import ChildAttempt, read_log_tail, start_fork_server
from mapreduce.worker.shuffle import (
    IDLE_TIMEOUT,
    FetchError,
    MapOutputRegistry,
    copy_partition,
    fetch_partition,
    serve_shuffle,
)

log = logging.getLogger("mapreduce.worker")

FETCH_PARALLELISM = 4
#: How long the master may hold a reducer's request for map outputs while there is none.
OUTPUTS_WAIT = 0.5
RPC_TIMEOUT = 30.0
#: A work directory with less free space than this when an attempt fails with a full or
#: failing disk is full: the worker takes no task until it has this much again.
MIN_FREE_BYTES = 64 << 20
#: How long a worker whose disk was full waits at least before it takes a task again
#: (doubling while its attempts keep failing that way, up to the second value).
PAUSE_SECONDS = (5.0, 300.0)
#: The file in a worker's --workdir holding its key (see :func:`worker_key`).
KEY_FILE = "worker.key"


@dataclass
class WorkerConfig:
    """How a worker runs.

    Attributes:
        master: ``host:port`` of the master, or of every master candidate (comma-separated).
        listen: ``host:port`` the shuffle service binds (port 0: any free port).
        workdir: local directory for map output and job code.
        slots: how many tasks run at once.
        fail_after: exit abruptly after this many finished tasks (fault injection); 0: never.
        name: the worker's id; defaults to its shuffle address.
        secret: the cluster secret: every call it makes carries it, and its shuffle server
            refuses calls without it.
        advertise: the host other machines reach this worker's shuffle service at;
            defaults to the ``listen`` host, or this machine's host name when that is a
            wildcard (0.0.0.0, ::).
        shuffle_idle_timeout: a fetch whose client reads nothing this long is ended.
        chaos: the faults to inject (``mapreduce run --chaos``), if any.
        security: the secret and TLS files of its servers and channels (default: ``secret``).
        master_from: when ``master`` is empty: called for it once the worker's own
            services run (the embedded cluster's forked workers start those while their
            master starts).
    """

    master: str
    listen: str = "127.0.0.1:0"
    workdir: str = ""
    slots: int = 1
    fail_after: int = 0
    name: str = ""
    advertise: str = ""
    secret: bytes = b""
    shuffle_idle_timeout: float = IDLE_TIMEOUT
    chaos: Injector | None = None
    security: Security | None = None
    master_from: Callable[[], str] | None = None


def _dropped_fetch() -> float:
    raise FetchError("the fetch was dropped (fault injected by --chaos)")


def _timed(fetch: Callable[..., int], *args: object) -> float:
    """Fetch one partition of a map output (:func:`fetch_partition` or
    :func:`copy_partition`); return the seconds it took (the master's fetch latency
    histogram)."""
    started = time.monotonic()
    fetch(*args)
    return time.monotonic() - started


def advertised_address(listen: str, port: int, advertise: str = "") -> str:
    """``host:port`` that reducers on other machines use to fetch from this worker."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if advertise:
        host = advertise
    elif host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"{host}:{port}"


@dataclass
class _Running:
    ref: AttemptRef
    killed: threading.Event = field(default_factory=threading.Event)
    child: ChildAttempt | None = None
    last_progress: int = -1
    fetching: bool = False
    #: seconds each successful fetch of a map output took (reported with the result)
    fetch_seconds: list[float] = field(default_factory=list)
    #: the worker's machine failed the attempt (its disk is full), not the task
    machine_fault: bool = False

    def kill(self) -> None:
        """Mark the attempt killed and stop its task process, if it has one yet."""
        self.killed.set()
        if self.child is not None:
            self.child.kill()


@dataclass(frozen=True)
class InstalledJob:
    """A job whose code this worker wrote to its disk: the spec and the job file's path."""

    spec: JobSpec
    job_file: str


class Worker:
    """A worker daemon.

    Orders are fenced by the master's epoch: an assignment or a commit grant
    from an epoch lower than the highest this incarnation has seen is refused
    (it comes from a master that has since been replaced).  On seeing a higher
    epoch the worker registers again with the same incarnation, listing the map
    outputs it holds and the attempts it runs.
    """

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.security = config.security or Security(config.secret)
        self.chaos = config.chaos
        # Without --workdir the worker uses a temporary directory and removes it on exit.
        self._own_workdir = not config.workdir
        self.workdir = config.workdir or tempfile.mkdtemp(prefix="mapreduce-worker-")
        self.registry = MapOutputRegistry()
        # The incarnation is a credential: a report counts only with the incarnation its
        # attempt was assigned to, and the master never shows it.
        self.incarnation = secrets.token_hex(16)
        self.key = ""  # see worker_key(), read when the work directory exists
        self.running: dict[AttemptRef, _Running] = {}
        self.lock = threading.Lock()
        self.jobs: dict[str, InstalledJob] = {}
        #: the highest master epoch seen, and the epoch this incarnation registered with
        self.epoch = 0
        self.registered_epoch = 0
        self.finished_tasks = 0
        self.stopping = threading.Event()
        #: Set when an attempt ends: the task loop asks for more work at once.
        self.slot_freed = threading.Event()
        self.heartbeat_interval = 1.0
        self._channels: dict[str, grpc.Channel] = {}
        self._register_lock = threading.Lock()
        #: held while a job's code is written, and while job directories are removed: a
        #: job is never marked installed with its code deleted under it
        self._install_lock = threading.Lock()
        #: why this worker takes no task now ("" when it does), until when at least, and
        #: how long the next pause lasts
        self.paused = ""
        self._paused_until = 0.0
        self._pause_seconds = PAUSE_SECONDS[0]

    # -- plumbing -------------------------------------------------------------

    def _channel(self, address: str) -> grpc.Channel:
        with self.lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = self.security.channel(address, convert.GRPC_OPTIONS)
                self._channels[address] = channel
            return channel

    def identity(self) -> pb.WorkerIdentity:
        return pb.WorkerIdentity(worker_id=self.worker_id, incarnation=self.incarnation)

    def _master_call(self, method: str, request: object) -> object:
        """Call the master, retrying while it is unreachable (until stopping)."""
        delay = 0.1
        while True:
            try:
                return getattr(self.master, method)(request, timeout=RPC_TIMEOUT)
            except grpc.RpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise
                if self.stopping.is_set():
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)  # a new leader is found within half a second

    # -- life cycle -----------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped (or until ``fail_after`` tasks have finished)."""
        start_fork_server()
        os.makedirs(self.workdir, exist_ok=True)
        self.key = worker_key(self.workdir)
        self._remove_old_outputs()
        self.shuffle_server, port = serve_shuffle(
            self.config.listen,
            self.registry,
            self.config.shuffle_idle_timeout,
            security=self.security,
        )
        self.address = advertised_address(self.config.listen, port, self.config.advertise)
        self.worker_id = self.config.name or self.address
        master = self.config.master
        if not master and self.config.master_from is not None:
            # While the master starts: gRPC imports the module of its channels with the
            # first one (4 ms), which would delay this worker's registration.
            importlib.import_module("grpc._channel")
            master = self.config.master_from()
        self.master = MasterClient(master, self.security)
        self._register()
        self.shuffle_server.set_serving(True)  # grpc.health.v1: ready
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        try:
            self._task_loop()
        finally:
            self.stopping.set()
            with self.lock:
                for running in self.running.values():
                    running.kill()
            self.shuffle_server.stop(grace=None)
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def stop(self) -> None:
        with contextlib.suppress(Exception):  # draining: probes see NOT_SERVING from now on
            self.shuffle_server.set_serving(False)
        self.stopping.set()
        self.slot_freed.set()

    def _remove_old_outputs(self) -> None:
        """A new incarnation serves no earlier output: remove the job directories it finds."""
        for name in os.listdir(self.workdir):
            path = os.path.join(self.workdir, name)
            if name == "logs" or not os.path.isdir(path):
                continue
            try:
                check_job_id(name)
            except ValueError:
                continue
            shutil.rmtree(path, ignore_errors=True)

    def _register(self, rejoin: bool = False, incarnation: str = "") -> None:
        """Register (``incarnation``: a new one, used by every call once the master has it)."""
        identity = self.identity()
        if incarnation:
            identity = pb.WorkerIdentity(worker_id=self.worker_id, incarnation=incarnation)
        request = pb.RegisterWorkerRequest(
            worker=identity,
            shuffle_address=self.address,
            slots=self.config.slots,
            protocol_version=convert.PROTOCOL_VERSION,
            rejoin=rejoin,
            worker_key=self.key,
        )
        if rejoin:
            with self.lock:
                request.running.extend(convert.attempt_to_pb(ref) for ref in self.running)
            request.held.extend(
                pb.MapOutputId(job_id=job_id, map_index=index, map_attempt=attempt)
                for job_id, index, attempt in self.registry.outputs()
            )
        reply = self._register_call(request)
        self.heartbeat_interval = reply.heartbeat_interval or 1.0
        self.epoch = max(self.epoch, reply.epoch)
        self.registered_epoch = reply.epoch
        for job_id in reply.forget_jobs:
            self._forget_job(job_id)
        log.info(
            "worker %s %s (incarnation %s..., master epoch %d)",
            self.worker_id,
            "rejoined" if rejoin else "registered",
            identity.incarnation[:6],
            reply.epoch,
        )

    def _register_call(self, request: pb.RegisterWorkerRequest) -> pb.RegisterWorkerReply:
        """Register; while the master says the id belongs to another live worker, wait."""
        said = ""
        while True:
            try:
                reply = self._master_call("RegisterWorker", request)
                assert isinstance(reply, pb.RegisterWorkerReply)
                return reply
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS or self.stopping.is_set():
                    raise
                if exc.details() != said:
                    said = exc.details() or ""
                    log.warning("the master refused this worker, trying again: %s", said)
                self.stopping.wait(1)

    def _saw_epoch(self, epoch: int) -> bool:
        """Note an epoch in a master's reply; False if it is older than one already seen."""
        if epoch < self.epoch:
            return False
        self.epoch = epoch
        return True

    def _maybe_rejoin(self, epoch: int) -> None:
        """A master of a newer epoch answers: tell it what this incarnation holds and runs."""
        with self._register_lock:
            if epoch > self.registered_epoch:
                self._register(rejoin=True)

    def _reregister(self, refused: str) -> None:
        """The master refused incarnation ``refused``: drop everything, register anew."""
        with self._register_lock:
            if refused != self.incarnation:
                return  # another thread already registered a new incarnation
            self._drop_and_register()

    def _drop_and_register(self) -> None:
        """Start over as a new incarnation: no attempt, no map output, no installed job."""
        with self._install_lock:
            with self.lock:
                for running in self.running.values():
                    running.kill()
                self.running.clear()
                jobs = list(self.jobs)
                self.jobs.clear()
            self.registry.clear()
            for job_id in jobs:
                shutil.rmtree(os.path.join(self.workdir, job_id), ignore_errors=True)
            self._remove_old_outputs()
        self.epoch = 0  # the fence is per incarnation: a new master may count from 1 again
        # The new incarnation is used only once the master knows it: a request made with it
        # before would be told to register again, and a second new incarnation would follow.
        incarnation = secrets.token_hex(16)
        self._register(incarnation=incarnation)
        self.incarnation = incarnation

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(self.heartbeat_interval):
            try:
                self._heartbeat()
            except Exception:  # never let the heartbeat thread die
                log.exception("heartbeat failed")

    def _heartbeat(self) -> None:
        with self.lock:
            progressed, running_now = [], []
            for running in self.running.values():
                count = running.child.progress.value if running.child is not None else -1
                if running.fetching or count != running.last_progress:
                    progressed.append(convert.attempt_to_pb(running.ref))
                running.last_progress = count
                running_now.append(convert.attempt_to_pb(running.ref))
        incarnation = self.incarnation
        reply = self._master_call(
            "Heartbeat",
            pb.HeartbeatRequest(
                worker=self.identity(),
                progressed=progressed,
                running=running_now,
                paused=self.paused,
            ),
        )
        assert isinstance(reply, pb.HeartbeatReply)
        if reply.reregister:
            self._reregister(incarnation)
            return
        if not self._saw_epoch(reply.epoch):
            return  # a deposed master: obey none of it
        self._maybe_rejoin(reply.epoch)
        for kill in reply.kill:
            self._kill(convert.attempt_from_pb(kill))
        for job_id in reply.finished_jobs:
            self._forget_job(job_id)

    def _kill(self, ref: AttemptRef) -> None:
        with self.lock:
            running = self.running.get(ref)
        if running is not None:
            running.kill()

    def _forget_job(self, job_id: str) -> None:
        with self._install_lock:
            with self.lock:
                if job_id not in self.jobs or any(r.job_id == job_id for r in self.running):
                    return
                del self.jobs[job_id]
            self.registry.drop_job(job_id)
            shutil.rmtree(os.path.join(self.workdir, job_id), ignore_errors=True)

    def _task_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self._ask_for_tasks()
            except Exception:  # an I/O error of this worker: log it and go on
                if self.stopping.is_set():
                    return
                log.exception("asking for or starting tasks failed")
                self.stopping.wait(1)

    def _ask_for_tasks(self) -> None:
        while not self.stopping.is_set():
            if self._still_paused():
                self.stopping.wait(1)
                continue
            with self.lock:
                # a map slot and a reduce slot per --slots; the master assigns per kind
                free = 2 * self.config.slots - len(self.running)
            if free <= 0:
                self.slot_freed.wait(0.5)
                self.slot_freed.clear()
                continue
            incarnation = self.incarnation
            try:
                reply = self._master_call(
                    "RequestTask", pb.RequestTaskRequest(worker=self.identity(), free_slots=free)
                )
            except grpc.RpcError as exc:
                if self.stopping.is_set():
                    return
                log.warning("asking for a task failed: %s", exc.code())
                self.stopping.wait(1)
                continue
            assert isinstance(reply, pb.RequestTaskReply)
            if reply.reregister:
                self._reregister(incarnation)
                continue
            installed = set()
            fresh = [t for t in reply.tasks if self._saw_epoch(t.epoch)]
            if len(fresh) < len(reply.tasks):
                log.warning(
                    "refused %d tasks of an older master epoch", len(reply.tasks) - len(fresh)
                )
            if fresh:
                self._maybe_rejoin(self.epoch)
            for spec in reply.jobs:
                try:
                    self._install_job(spec)
                    installed.add(spec.job_id)
                except (OSError, convert.BadMessage) as exc:
                    log.error("cannot install job %s: %s", spec.job_id, exc)
            for assignment in fresh:
                if assignment.attempt.job_id in installed or assignment.attempt.job_id in self.jobs:
                    self._start(assignment)
                else:  # the attempt fails here, the worker lives on
                    running = _Running(convert.attempt_from_pb(assignment.attempt))
                    self._report_failure(running, "", "the job's code could not be installed", "")
            if not reply.tasks:
                # The master holds an idle request for a while (long poll); this
                # pause only matters when it answers at once (no job at all).
                self.stopping.wait(0.01)

    def _install_job(self, message: pb.JobSpec) -> None:
        spec = convert.job_from_pb(message)
        with self._install_lock:
            with self.lock:
                if spec.job_id in self.jobs:
                    return
            code = os.path.join(self.workdir, spec.job_id, "code")
            os.makedirs(code, exist_ok=True)
            for name, content in ((spec.job_file_name, spec.job_source), *spec.py_files):
                path = os.path.join(code, name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(content)
            job_file = os.path.join(code, spec.job_file_name)
            with self.lock:
                self.jobs[spec.job_id] = InstalledJob(spec, job_file)

    def _start(self, assignment: pb.TaskAssignment) -> None:
        ref = convert.attempt_from_pb(assignment.attempt)
        running = _Running(ref)
        with self.lock:
            self.running[ref] = running
        target = self._run_map if ref.kind is TaskKind.MAP else self._run_reduce
        threading.Thread(
            target=self._supervise, args=(target, running, assignment), daemon=True
        ).start()

    def _chaos_crash(self, ref: AttemptRef) -> bool:
        """Whether --chaos crashes this attempt's task process."""
        task = f"{ref.kind.value}-{ref.index:05d}"
        return self.chaos is not None and self.chaos.crash_task(ref.job_id, task)

    def _supervise(self, target: object, running: _Running, assignment: pb.TaskAssignment) -> None:
        ref = running.ref
        about = daemonlog.about(ref.job_id, f"{ref.kind.value}-{ref.index:05d}", ref.attempt)
        log.info("attempt started", extra=about)
        try:
            if self.chaos is not None:
                self.chaos.slow_down(running.killed)  # --chaos slow-worker
            target(running, assignment)  # type: ignore[operator]
        except Exception as exc:  # a bug or an I/O error of this worker: fail the attempt
            log.exception("attempt crashed", extra=about)
            number = infrastructure_errno(exc)
            if number is not None and not running.machine_fault:
                # this process's own I/O: a full work directory, or out of file descriptors
                running.machine_fault = self._machine_fault(number) or number in (
                    errno.EMFILE,
                    errno.ENFILE,
                )
            self._report_failure(running, "", f"worker error: {type(exc).__name__}: {exc}", "")
        finally:
            log.info("attempt ended%s", " (killed)" if running.killed.is_set() else "", extra=about)
            with self.lock:
                self.running.pop(running.ref, None)
            self.slot_freed.set()

    def _log_path(self, ref: AttemptRef) -> str:
        """Where an attempt's stdout and stderr are kept on this worker."""
        directory = os.path.join(self.workdir, "logs", ref.job_id)
        os.makedirs(directory, exist_ok=True)
        return os.path.join(
            directory, f"{ref.kind.value}-{ref.index:05d}.attempt-{ref.attempt}.log"
        )

    def _report_failure(
        self, running: _Running, record: str, reason: str, tb: str, label: str = ""
    ) -> None:
        if running.killed.is_set():
            return
        if running.machine_fault:
            reason = f"{reason} (this worker's machine failed it: {self.paused or 'see its log'})"
        ref = running.ref
        where = f" on record {label or record}" if record else ""
        log.warning(
            "attempt failed%s: %s",
            where,
            reason,
            extra=daemonlog.about(ref.job_id, f"{ref.kind.value}-{ref.index:05d}", ref.attempt),
        )
        try:
            log_tail = read_log_tail(self._log_path(running.ref))
        except OSError:  # the work directory's disk is full or failing
            log_tail = ""
        try:
            self._master_call(
                "ReportTaskFailed",
                pb.ReportTaskFailedRequest(
                    worker=self.identity(),
                    attempt=convert.attempt_to_pb(running.ref),
                    reason=reason,
                    record=record,
                    traceback=tb,
                    log=log_tail,
                    infrastructure=running.machine_fault,
                    record_label=label,
                ),
            )
        except grpc.RpcError as exc:
            log.warning("reporting a failure failed: %s", exc.code())

    # -- a full disk --------------------------------------------------------------

    def _machine_fault(self, number: int) -> bool:
        """Whether a failure with ``errno`` ``number`` says this worker's disk is full or
        failing (call it before the failed attempt's files are removed).  If so, the worker
        takes no task for a while, and until its work directory has room again."""
        if number not in DISK_ERRNOS:
            return False
        free = _free_bytes(self.workdir)
        if free >= MIN_FREE_BYTES and _can_write(self.workdir):
            return False  # another disk (the shared output's, say): the task's failure
        self.paused = (
            f"its --workdir {self.workdir} is full or failing ({os.strerror(number)}; "
            f"{free >> 10} KiB free): no new task until it has {MIN_FREE_BYTES >> 20} MiB free"
        )
        self._paused_until = time.monotonic() + self._pause_seconds
        self._pause_seconds = min(2 * self._pause_seconds, PAUSE_SECONDS[1])
        log.warning("worker %s pauses: %s", self.worker_id, self.paused)
        return True

    def _still_paused(self) -> bool:
        """Whether the worker still takes no task (its disk was full); resumes when it may."""
        if not self.paused:
            return False
        if time.monotonic() < self._paused_until or _free_bytes(self.workdir) < MIN_FREE_BYTES:
            return True
        log.warning("worker %s takes tasks again: its --workdir has room", self.worker_id)
        self.paused = ""
        return False

    def _task_finished(self) -> None:
        self._pause_seconds = PAUSE_SECONDS[0]
        self.finished_tasks += 1
        if self.config.fail_after and self.finished_tasks >= self.config.fail_after:
            log.warning("--fail-after %d reached: exiting abruptly", self.config.fail_after)
            sys.stderr.flush()
            os._exit(3)

    # -- map ----------------------------------------------------------------------

    def _attempt_dir(self, ref: AttemptRef) -> str:
        return os.path.join(
            self.workdir, ref.job_id, f"{ref.kind.value}-{ref.index:05d}.attempt-{ref.attempt}"
        )

    def _run_map(self, running: _Running, assignment: pb.TaskAssignment) -> None:
        ref = running.ref
        job = self.jobs[ref.job_id]
        workdir = self._attempt_dir(ref)
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        child = ChildAttempt(
            "map",
            {
                "spec": job.spec,
                "job_file": job.job_file,
                "index": ref.index,
                "split": convert.split_from_pb(assignment.split),
                "workdir": workdir,
                "attempt": ref.attempt,
                "worker": self.worker_id,
                "skip": frozenset(int(r) for r in assignment.skip),
            },
            self._log_path(ref),
        )
        running.child = child
        if running.killed.is_set() or self._chaos_crash(ref):
            child.kill()  # killed, or a crash that --chaos injects
        outcome = child.wait()
        if running.killed.is_set() or outcome.result is None:
            if outcome.errno:
                running.machine_fault = self._machine_fault(outcome.errno)
            shutil.rmtree(workdir, ignore_errors=True)
            if outcome.result is None:
                self._report_failure(
                    running, outcome.record, outcome.reason, outcome.traceback, outcome.label
                )
            return
        self.registry.add((ref.job_id, ref.index, ref.attempt), workdir)
        self._master_call(
            "ReportMapDone",
            pb.ReportMapDoneRequest(
                worker=self.identity(),
                attempt=convert.attempt_to_pb(ref),
                stats=convert.stats_to_pb(outcome.result),
                log=read_log_tail(child.log_path),
            ),
        )
        self._task_finished()

    # -- reduce -------------------------------------------------------------------

    def _fetch_all(self, running: _Running, num_maps: int, workdir: str) -> list[str] | None:
        """Fetch this partition of every map output; None if the attempt ended meanwhile."""
        ref = running.ref
        fetched: dict[int, str] = {}
        known: dict[int, tuple[int, str]] = {}  # map index -> (attempt, address)
        seen = 0
        pending: dict[futures.Future[float], tuple[int, int, str]] = {}
        running.fetching = True
        pool = futures.ThreadPoolExecutor(FETCH_PARALLELISM, thread_name_prefix="fetch")
        try:
            while len(fetched) < num_maps:
                if running.killed.is_set() or self.stopping.is_set():
                    return None
                reply = self._master_call(
                    "GetMapOutputs",
                    pb.GetMapOutputsRequest(
                        worker=self.identity(),
                        reduce_attempt=convert.attempt_to_pb(ref),
                        since=seen,
                        # nothing to fetch: the master answers when a map output comes
                        wait=0.0 if pending else OUTPUTS_WAIT,
                    ),
                )
                assert isinstance(reply, pb.GetMapOutputsReply)
                if not reply.attempt_alive:
                    return None
                seen = reply.next
                for entry in reply.outputs:
                    if entry.retracted:
                        known.pop(entry.map_index, None)
                    else:
                        known[entry.map_index] = (entry.map_attempt, entry.address)
                busy = {info[0] for info in pending.values()}
                for map_index, (map_attempt, address) in known.items():
                    if map_index in fetched or map_index in busy:
                        continue
                    dest = os.path.join(workdir, f"map-{map_index:05d}.run")
                    if self.chaos is not None and self.chaos.drop_fetch(ref.job_id, map_index):
                        future = pool.submit(_dropped_fetch)
                        pending[future] = (map_index, map_attempt, dest)
                        continue
                    output = (ref.job_id, map_index, map_attempt)
                    if address == self.address:  # this worker's own: a copy, not a call
                        future = pool.submit(
                            _timed, copy_partition, self.registry, output, ref.index, dest
                        )
                    else:
                        future = pool.submit(
                            _timed, fetch_partition, self._channel(address), output, ref.index, dest
                        )
                    pending[future] = (map_index, map_attempt, dest)
                done, _ = futures.wait(list(pending), timeout=0.1, return_when="FIRST_COMPLETED")
                for future in done:
                    map_index, map_attempt, dest = pending.pop(future)
                    try:
                        running.fetch_seconds.append(future.result())
                        fetched[map_index] = dest
                    except FetchError as exc:
                        if known.get(map_index, (None, ""))[0] == map_attempt:
                            del known[map_index]  # wait for the re-run's announcement
                        self._master_call(
                            "ReportFetchFailed",
                            pb.ReportFetchFailedRequest(
                                worker=self.identity(),
                                reduce_attempt=convert.attempt_to_pb(ref),
                                map_index=map_index,
                                map_attempt=map_attempt,
                                error=str(exc),
                            ),
                        )
                if not done and not pending:
                    time.sleep(0.05)
        finally:
            # A killed attempt must not wait for queued fetches to run.
            pool.shutdown(wait=False, cancel_futures=True)
        running.fetching = False
        return [fetched[i] for i in range(num_maps)]

    def _run_reduce(self, running: _Running, assignment: pb.TaskAssignment) -> None:
        ref = running.ref
        job = self.jobs[ref.job_id]
        workdir = self._attempt_dir(ref)
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        try:
            try:
                runs = self._fetch_all(running, assignment.num_maps, workdir)
            except OSError as exc:  # writing what it fetched: is this worker's disk full?
                number = infrastructure_errno(exc)
                running.machine_fault = number is not None and self._machine_fault(number)
                raise
            if runs is None:
                return
            committer = output_committer(
                job.spec.output, ref.job_id, options=job.spec.storage_options, scratch=workdir
            )
            out_path = committer.attempt_path(ref.index, ref.attempt)
            child = ChildAttempt(
                "reduce",
                {
                    "spec": job.spec,
                    "job_file": job.job_file,
                    "partition": ref.index,
                    "runs": runs,
                    "out_path": out_path,
                    "attempt": ref.attempt,
                    "worker": self.worker_id,
                    "skip": frozenset(bytes.fromhex(r) for r in assignment.skip),
                },
                self._log_path(ref),
            )
            running.child = child
            if running.killed.is_set() or self._chaos_crash(ref):
                child.kill()  # killed, or a crash that --chaos injects
            outcome = child.wait()
            if running.killed.is_set() or outcome.result is None:
                if outcome.errno:
                    running.machine_fault = self._machine_fault(outcome.errno)
                if os.path.exists(out_path):
                    os.remove(out_path)
                if outcome.result is None:
                    self._report_failure(
                        running, outcome.record, outcome.reason, outcome.traceback, outcome.label
                    )
                return
            reply = self._master_call(
                "RequestCommit",
                pb.RequestCommitRequest(worker=self.identity(), attempt=convert.attempt_to_pb(ref)),
            )
            assert isinstance(reply, pb.RequestCommitReply)
            if not reply.granted or not self._saw_epoch(reply.epoch):
                os.remove(out_path)
                return
            committer.commit_task(ref.index, ref.attempt)
            self._master_call(
                "ReportReduceDone",
                pb.ReportReduceDoneRequest(
                    worker=self.identity(),
                    attempt=convert.attempt_to_pb(ref),
                    stats=convert.stats_to_pb(outcome.result),
                    log=read_log_tail(child.log_path),
                    fetch_seconds=running.fetch_seconds,
                ),
            )
            self._task_finished()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def worker_key(workdir: str) -> str:
    """This worker's key: kept in ``workdir`` (mode 0600) so a restart there shows the same.

    A worker whose work directory is temporary gets a new key: its id is free again
    only once its previous incarnation has expired.
    """
    path = os.path.join(workdir, KEY_FILE)
    try:
        with open(path, encoding="ascii") as f:
            key = f.read().strip()
        if key:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32)
    temporary = f"{path}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key + "\n")
    os.replace(temporary, path)
    return key


def _free_bytes(directory: str) -> int:
    """Bytes free for unprivileged use on ``directory``'s file system (0 if it cannot tell,
    or if it has no inode left)."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return 0
    if stat.f_files and not stat.f_favail:
        return 0
    return stat.f_bavail * stat.f_frsize


def _can_write(directory: str) -> bool:
    """Whether a small file can be written and synced in ``directory`` (a failing disk
    cannot)."""
    path = os.path.join(directory, f".probe-{secrets.token_hex(16)}")
    try:
        with open(path, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
    return True
