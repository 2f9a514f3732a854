"""Run one task attempt's user code in a child process.

User code may crash, call ``os._exit`` or hang; it does so in a child, so the
worker survives, reports the attempt as failed and goes on.  Children come
from a fork server started before the worker opens any gRPC channel (forking
a process that runs gRPC threads is unsafe), with the task runners preloaded.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, cast

from mapreduce.dataflow.runner import (
    InfrastructureError,
    RecordFailure,
    TaskError,
    TaskResult,
    infrastructure_errno,
    run_map_task,
    run_reduce_task,
)

#: Set in a worker's environment: its task processes start with the libraries of object
#: stores (fsspec, s3fs) already imported, which saves each task that reads or writes a URL
#: about half a second.  ``mapreduce run`` sets it when an input or the output is a URL.
PRELOAD_STORES_ENV = "MAPREDUCE_PRELOAD_STORES"

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(
    ["mapreduce.dataflow.runner", "mapreduce.worker.executor"]
    + (["fsspec", "s3fs"] if os.environ.get(PRELOAD_STORES_ENV) else [])
)


def start_fork_server() -> None:
    """Start the fork server now, while this process has no threads."""
    from multiprocessing import forkserver

    forkserver.ensure_running()


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


class ChildAttempt:
    """One attempt running in a child process."""

    def __init__(self, kind: str, kwargs: dict[str, Any], log_path: str) -> None:
        self.progress = _CONTEXT.Value("Q", 0, lock=False)
        self.log_path = log_path
        self._receiver, sender = _CONTEXT.Pipe(duplex=False)
        self._process = _CONTEXT.Process(
            target=_child_main,
            args=(sender, kind, kwargs, self.progress, log_path),
            daemon=True,
        )
        self._process.start()
        sender.close()

    def kill(self) -> None:
        """Kill the child.  (Processes it forked stay in the worker's process group, which
        the embedded cluster kills as a whole; ``wait`` does not wait for them.)"""
        if self._process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    def wait(self) -> AttemptOutcome:
        """Block until the child ends; return its outcome."""
        message: tuple[Any, ...] | None = None
        # Wait for a message or the child's end, whichever comes first: processes that
        # user code forked may hold the pipe open after the child died.
        multiprocessing.connection.wait([self._receiver, self._process.sentinel])
        if self._receiver.poll():
            try:
                message = self._receiver.recv()
            except (EOFError, OSError):
                message = None
        self._process.join()
        self._receiver.close()
        if message is None:
            code = self._process.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"code {code}"
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
