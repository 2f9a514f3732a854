"""Run one task attempt's user code in a child process.

User code may crash, call ``os._exit`` or hang; it does so in a child, so the
worker survives, reports the attempt as failed and goes on.

The children come from the worker's *fork server*: a process the worker forks
from itself first thing (:func:`start_fork_server`), while it has no other
thread (forking a process that runs gRPC threads is unsafe) and with the task
runners already imported, so a task process starts with everything loaded and
no interpreter is started for it.  For each attempt the worker sends the fork
server, over a Unix socket, the attempt's arguments (pickled) and three file
descriptors; the fork server forks one task process, which runs the attempt:

* the result pipe: the task process sends the attempt's outcome on it (one
  :mod:`multiprocessing.connection` message);
* the status pipe: the fork server writes on it the task process's id as soon
  as it forked it (or minus the ``errno`` of a failed ``fork``), then its exit
  code once it ended and the fork server reaped it (negative: the signal that
  killed it; the worker reads it only of a process that sent no outcome);
* the progress counter: 8 bytes of shared memory the task increments and the
  worker's heartbeats read.

A task process starts the attempt only once the fork server has told the
worker its id.  A fork server started in a process that already runs threads
(the replacement of one that died) is a new interpreter running :func:`serve`
instead, which imports the runners itself.  The fork server ends when the
worker closes its end of the socket (or dies); task processes still running
then are not stopped by it, but a worker that sees its fork server die kills
the attempts it ran.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import mmap
import multiprocessing.connection
import os
import pickle
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from mapreduce.dataflow.runner import (
    InfrastructureError,
    RecordFailure,
    TaskError,
    TaskResult,
    ending_with_the_process,
    infrastructure_errno,
    run_map_task,
    run_reduce_task,
)

#: Set in a worker's environment: its task processes start with the libraries of object
#: stores (fsspec, s3fs) already imported (by the fork server), which saves each task that
#: reads or writes a URL about half a second.  ``mapreduce run`` sets it when an input or
#: the output is a URL.
PRELOAD_STORES_ENV = "MAPREDUCE_PRELOAD_STORES"

#: A request's header: the length of the pickled arguments that follow it.
_HEADER = struct.Struct("!Q")
#: What the fork server writes on an attempt's status pipe: a process id, then an exit code.
_STATUS = struct.Struct("q")
#: The file descriptors sent with a request: result pipe, status pipe, progress counter.
_FDS = 3
_COUNTER_BYTES = 8


@dataclass(frozen=True)
class AttemptOutcome:
    """How an attempt ended: a result, or a failure (with the record, if one is to blame:
    ``record`` its id, ``label`` where it is).

    ``errno``: the machine failed it (a full disk, an I/O error, too many open
    files): the ``errno`` of that error; 0 otherwise.
    """

    result: TaskResult | None
    record: str = ""
    reason: str = ""
    traceback: str = ""
    errno: int = 0
    label: str = ""


#: How much of the end of an attempt's log goes to the master with its report.
LOG_TAIL_BYTES = 64 << 10


def read_log_tail(path: str) -> str:
    """The last :data:`LOG_TAIL_BYTES` of a log file ("" if there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL_BYTES))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return ("[...]\n" + text) if size > LOG_TAIL_BYTES else text


# -- the worker's end of the fork server ------------------------------------------------


class ForkServerGone(Exception):
    """The fork server exited (or was killed) before it started the task process."""


class _ForkServer:
    """The worker's end of a fork server: its socket and its process."""

    def __init__(self, sock: socket.socket, pid: int, process: subprocess.Popen[bytes] | None):
        self.sock = sock
        self.pid = pid
        self.process = process  # when it is a new interpreter
        self.lock = threading.Lock()

    def send(self, payload: bytes, fds: Sequence[int]) -> None:
        with self.lock:
            if self.sock.fileno() < 0:
                raise BrokenPipeError("the fork server was stopped")
            socket.send_fds(self.sock, [_HEADER.pack(len(payload))], list(fds))
            self.sock.sendall(payload)

    def close(self) -> None:
        """Stop the fork server (it is gone, or no longer answers) and reap it (once)."""
        with self.lock:
            if self.sock.fileno() < 0:
                return  # closed and reaped already: its id may be another process's now
            self.sock.close()
            if self.process is not None:
                self.process.kill()
                self.process.wait()
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)


_server: _ForkServer | None = None
_server_lock = threading.Lock()


def start_fork_server() -> None:
    """Start this process's fork server, unless it runs already.  Call it before this
    process starts any thread (or creates any gRPC object): it is then forked from
    this process, with every module imported so far."""
    _fork_server()


def _fork_server(dead: _ForkServer | None = None) -> _ForkServer:
    """The running fork server (started now if there is none, or if it is ``dead``)."""
    global _server
    with _server_lock:
        if _server is not None and _server is dead:
            _server.close()
            _server = None
        if _server is None:
            _server = _start_fork_server()
        return _server


def _start_fork_server() -> _ForkServer:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        process: subprocess.Popen[bytes] | None = None
        if single_threaded():
            sys.stdout.flush()
            sys.stderr.flush()
            worker = os.getpid()
            pid = os.fork()
            if pid == 0:  # the fork server
                code = 1
                try:
                    die_with_parent(worker)
                    ours.close()
                    serve(theirs.detach())
                    code = 0
                except BaseException:
                    with contextlib.suppress(BaseException):
                        traceback.print_exc()
                finally:
                    os._exit(code)
        else:
            fd = theirs.fileno()
            process = subprocess.Popen(
                [sys.executable, "-c", f"from mapreduce.worker.executor import serve; serve({fd})"],
                stdin=subprocess.DEVNULL,
                pass_fds=(fd,),
            )
            pid = process.pid
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return _ForkServer(ours, pid, process)


def die_with_parent(parent: int) -> None:
    """Linux: this (just forked) process gets SIGKILL when its parent ``parent`` dies, however
    it dies, so nothing outlives the process that started it: a worker forked by ``run``, a
    fork server by its worker, a task process by its fork server.  (The thread that forked
    it must live as long as the parent: each of those forks from its main thread.)"""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1  # <linux/prctl.h>
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl: too late to be told
        os._exit(1)


def single_threaded() -> bool:
    """Whether this process runs one thread (gRPC's own threads included, on Linux)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # not Linux: cannot tell, so do not fork
        return False


def _launch(payload: bytes, fds: Sequence[int]) -> _ForkServer:
    """Ask the fork server to start a task process (a dead fork server is replaced);
    return the fork server asked."""
    server = _fork_server()
    try:
        server.send(payload, fds)
    except (BrokenPipeError, ConnectionResetError):
        server = _fork_server(dead=server)
        server.send(payload, fds)
    return server


def _forget(server: _ForkServer) -> None:
    """``server`` died: the next attempt starts another one."""
    global _server
    with _server_lock:
        if _server is server:
            _server = None
    server.close()


def _counter_fd() -> int:
    """A file descriptor of :data:`_COUNTER_BYTES` of zeroed memory to share."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("mapreduce-progress")
    else:  # not Linux
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    try:
        os.ftruncate(fd, _COUNTER_BYTES)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_status(fd: int) -> int | None:
    """One number the fork server wrote on a status pipe; None at the end of the pipe."""
    data = b""
    while len(data) < _STATUS.size:
        chunk = os.read(fd, _STATUS.size - len(data))
        if not chunk:
            return None
        data += chunk
    return cast(int, _STATUS.unpack(data)[0])


class ChildAttempt:
    """One attempt running in a task process (a child of the worker's fork server)."""

    def __init__(self, kind: str, kwargs: dict[str, Any], log_path: str) -> None:
        self.log_path = log_path
        #: the task process's exit code (negative: a signal), once :meth:`wait` has it
        #: (only when the process sent no outcome)
        self.exitcode: int | None = None
        self._lock = threading.Lock()  # kill() and the end of wait()
        self._waited = False
        payload = pickle.dumps((kind, kwargs, log_path), pickle.HIGHEST_PROTOCOL)
        opened: list[int] = []
        try:
            counter = _counter_fd()
            opened.append(counter)
            self._shared = mmap.mmap(counter, _COUNTER_BYTES)
            self.progress = ctypes.c_uint64.from_buffer(self._shared)
            result_r, result_w = os.pipe()
            opened += (result_r, result_w)
            self._status, status_w = os.pipe()
            opened += (self._status, status_w)
            self._server = _launch(payload, (result_w, status_w, counter))
            for fd in (counter, result_w, status_w):  # the task process has them
                opened.remove(fd)
                os.close(fd)
            self._receiver = multiprocessing.connection.Connection(result_r, writable=False)
            opened.remove(result_r)
            pid = _read_status(self._status)
            if pid is None:
                _forget(self._server)
                raise ForkServerGone("the worker's fork server exited")
            if pid <= 0:
                raise OSError(-pid, f"cannot start a task process: {os.strerror(-pid)}")
            self.pid = pid
        except BaseException:
            for fd in opened:
                os.close(fd)
            if hasattr(self, "_receiver"):
                self._receiver.close()
            raise

    def _exit_known(self) -> bool:
        """Whether the fork server wrote the task process's exit code (or exited itself)."""
        poller = select.poll()
        poller.register(self._status, select.POLLIN)
        return bool(poller.poll(0))

    def kill(self) -> None:
        """Kill the task process.  (Processes it forked stay in the worker's process
        group, which the embedded cluster kills as a whole; ``wait`` does not wait for
        them.)"""
        with self._lock:
            if not self._waited and not self._exit_known():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> AttemptOutcome:
        """Block until the task process sent its outcome or ended; return the outcome."""
        message: tuple[Any, ...] | None = None
        # Wait for a message or the process's end, whichever comes first: processes that
        # user code forked may hold the pipe open after the task process died.
        multiprocessing.connection.wait([self._receiver, self._status])
        if self._receiver.poll():
            try:
                message = self._receiver.recv()
            except (EOFError, OSError):
                message = None
        if message is None:  # it ended without a word: how?
            self.exitcode = _read_status(self._status)
        # else it exits now (it only flushes its output first): its exit code is not awaited
        with self._lock:
            if message is None and self.exitcode is None:
                # the fork server died: nobody would reap the task process
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                _forget(self._server)
            self._waited = True
            self._receiver.close()
            os.close(self._status)
        if message is None:
            code = self.exitcode
            if code is None:
                return AttemptOutcome(None, reason="the worker's fork server exited")
            how = f"signal {-code}" if code < 0 else f"code {code}"
            return AttemptOutcome(None, reason=f"the task process exited with {how}")
        if message[0] == "ok":
            return AttemptOutcome(message[1])
        return AttemptOutcome(
            None,
            record=message[1],
            reason=message[2],
            traceback=message[3],
            errno=message[4],
            label=message[5] if len(message) > 5 else "",
        )


# -- the fork server ------------------------------------------------------------------


def serve(fd: int) -> None:
    """The fork server: serve the worker on the socket ``fd`` until it closes it."""
    if os.environ.get(PRELOAD_STORES_ENV):
        # imported once here, so every task process starts with them
        import fsspec  # noqa: F401
        import s3fs  # noqa: F401
    _Server(socket.socket(fileno=fd)).run()


class _Server:
    """The fork server's state, in its own process."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        self.running: dict[int, int] = {}  # task process id -> its status pipe

    def run(self) -> None:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # task processes read nothing from the worker's terminal
        os.close(devnull)
        # Forked from a worker: none of its signal handlers applies here (SIGTERM stops
        # a task process, as it stops this one); Ctrl-C is the worker's to handle.
        for number in signal.valid_signals():
            if callable(signal.getsignal(number)):
                with contextlib.suppress(OSError, ValueError):
                    signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the loop up (wake_w)
        gc.freeze()  # collections in the task processes leave the inherited objects alone
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in self.selector.select():
                if key.fileobj is self.sock:
                    request = _receive(self.sock)
                    if request is None:
                        return  # the worker is gone
                    self._fork_task(*request)
                else:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 512):
                            pass
                    self._reap()

    def _fork_task(self, payload: bytes, fds: list[int]) -> None:
        """Fork a task process for one request; tell the worker its id."""
        if len(fds) != _FDS:  # cannot happen: the worker always sends them
            for number in fds:
                os.close(number)
            return
        result_fd, status_fd, counter_fd = fds
        # The task process starts the attempt only once the worker has its id: if this
        # process dies before telling it, the task process exits rather than run on unseen.
        go_r = go_w = -1
        server = os.getpid()
        try:
            go_r, go_w = os.pipe()
            pid = os.fork()
        except OSError as exc:
            pid = -(exc.errno or 1)
        if pid == 0:  # the task process
            code = 1
            try:
                die_with_parent(server)  # a killed worker's fork server takes its tasks along
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                self.selector.close()
                self.sock.close()
                for number in (self.wake_r, self.wake_w, status_fd, go_w, *self.running.values()):
                    os.close(number)
                go = os.read(go_r, 1)
                os.close(go_r)
                if go:
                    code = _task_main(payload, result_fd, counter_fd)
            except BaseException:
                with contextlib.suppress(BaseException):
                    traceback.print_exc()
            finally:
                with contextlib.suppress(BaseException):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        os.close(result_fd)
        os.close(counter_fd)
        with contextlib.suppress(OSError):  # the worker may be gone
            os.write(status_fd, _STATUS.pack(pid))
        if pid > 0:
            self.running[pid] = status_fd
            os.write(go_w, b"x")
        else:
            os.close(status_fd)
        for number in (go_r, go_w):
            if number >= 0:
                os.close(number)

    def _reap(self) -> None:
        """Reap the task processes that ended; write each one's exit code on its status
        pipe."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fd = self.running.pop(pid, None)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.write(fd, _STATUS.pack(os.waitstatus_to_exitcode(status)))
                os.close(fd)


def _receive(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    """One request: its payload and its file descriptors; None when the worker is gone."""
    header, fds, _flags, _address = socket.recv_fds(sock, _HEADER.size, _FDS)
    data = bytearray(header)
    while data and len(data) < _HEADER.size:
        chunk = sock.recv(_HEADER.size - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) == _HEADER.size:
        payload = bytearray(_HEADER.unpack(data)[0])
        view = memoryview(payload)
        got = 0
        while got < len(payload):
            count = sock.recv_into(view[got:])
            if not count:
                break
            got += count
        else:
            return bytes(payload), fds
    for number in fds:
        os.close(number)
    return None


def _task_main(payload: bytes, result_fd: int, counter_fd: int) -> int:
    """A task process's life: run the attempt, send its outcome; the exit code."""
    conn = multiprocessing.connection.Connection(result_fd, readable=False)
    shared = mmap.mmap(counter_fd, _COUNTER_BYTES)
    os.close(counter_fd)
    counter = ctypes.c_uint64.from_buffer(shared)
    kind, kwargs, log_path = pickle.loads(payload)
    _child_main(conn, kind, kwargs, counter, log_path)
    return 0


def _child_main(
    conn: multiprocessing.connection.Connection,
    kind: str,
    kwargs: dict[str, Any],
    counter: Any,
    log_path: str,
) -> None:
    # What user code prints (stdout and stderr, also of C extensions) goes to the log.
    message: tuple[Any, ...]
    try:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:  # a full or failing disk: say so rather than die without a word
        conn.send(
            ("failed", "", f"cannot open the task's log {log_path}: {exc}", "", exc.errno or 0)
        )
        conn.close()
        return
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)

    def progress() -> None:
        counter.value += 1

    ending_with_the_process()  # this process ends with os._exit after the task
    try:
        if kind == "map":
            result = run_map_task(progress=progress, **kwargs)
        else:
            result = run_reduce_task(progress=progress, **kwargs)
        message = ("ok", result)
    except RecordFailure as failure:
        message = (
            "failed",
            failure.record_key,
            failure.reason,
            failure.traceback,
            0,
            failure.label,
        )
    except InfrastructureError as error:
        message = ("failed", "", error.reason, error.traceback, error.errno)
    except TaskError as error:
        message = ("failed", "", error.reason, error.traceback, 0)
    except BaseException as exc:
        number = infrastructure_errno(exc) or 0
        message = ("failed", "", f"{type(exc).__name__}: {exc}", traceback.format_exc(), number)
    # The log may be on a full disk: what goes to the worker must not depend on it.
    with contextlib.suppress(OSError):
        if message[0] == "failed":
            failed = cast(tuple[Any, ...], message)
            print(f"attempt failed: {failed[2]}\n{failed[3]}", file=sys.stderr, flush=True)
        sys.stdout.flush()
    conn.send(message)
    conn.close()
