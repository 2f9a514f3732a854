"""Output commit: nothing half-written is ever visible in the output directory.

A job's output is built in a hidden *staging* directory beside the output
(``.NAME.staging-JOBID``, on the same file system):

1. a reduce attempt writes ``staging/_temporary/part-NNNNN.attempt-A``;
2. committing the task renames it to ``staging/part-NNNNN`` (one rename, so
   exactly one attempt's file is ever there);
3. committing the job writes ``_summary.json`` then ``_SUCCESS`` into staging
   and renames staging to the output directory.

A job that fails, or a process that dies, leaves the output directory as it
was (absent, or the previous output under ``--overwrite``); only a hidden
staging directory may remain, which the next run of the same output removes.

While a job runs, the process that commits it holds an exclusive ``flock`` on
``.NAME.staging-JOBID.lock`` beside its staging directory (the kernel lets go
of it when the process dies).  A staging directory whose lock nobody holds is
a leftover; one whose lock is held belongs to a job that is running in another
process, and a new job for the same output is refused instead of destroying it.
A job that only waits in a master's queue holds no lock (and no file
descriptor): :meth:`OutputCommitter.check_free` checks its output when it is
submitted, :meth:`OutputCommitter.prepare` takes the lock when its turn comes.
A job that fails, a commit that fails included, removes its staging directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
from collections.abc import Mapping
from typing import Any, Protocol

from mapreduce.dataflow.storage import is_url
from mapreduce.errors import OutputBusyError, OutputError, OutputExistsError, UsageError

SUCCESS_MARKER = "_SUCCESS"
SUMMARY_FILE = "_summary.json"


def part_name(partition: int) -> str:
    return f"part-{partition:05d}"


def _fsync(path: str) -> None:
    """Flush a file's or a directory's contents (a rename is durable once its directory is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OutputCommitter:
    """Stages, commits and aborts the output of one job.

    Args:
        output: the output directory the user asked for.
        job_id: the job's id (names the staging directory).
        overwrite: replace an existing output directory on success.
    """

    def __init__(self, output: str, job_id: str, *, overwrite: bool = False) -> None:
        self.output = os.path.abspath(output)
        self.job_id = job_id
        self.overwrite = overwrite
        parent, name = os.path.split(self.output)
        self.parent = parent
        self.name = name
        self.staging = os.path.join(parent, f".{name}.staging-{job_id}")
        self.trash = os.path.join(parent, f".{name}.replaced-{job_id}")
        self.temporary = os.path.join(self.staging, "_temporary")
        self._lock_fd: int | None = None

    def check(self) -> None:
        """Refuse an output that exists (without ``--overwrite``) or is not a directory.

        Raises:
            OutputExistsError: the output exists and overwrite is off.
            UsageError: the output path is an existing file.
        """
        if os.path.lexists(self.output):
            if not os.path.isdir(self.output):
                raise UsageError(f"--output {self.output} exists and is not a directory")
            if not self.overwrite:
                raise OutputExistsError(
                    f"output directory {self.output} already exists; "
                    "choose another --output or pass --overwrite to replace it"
                )

    def check_free(self) -> None:
        """What :meth:`prepare` will check, without taking or creating anything: the output
        may be written (see :meth:`check`) and no other process's job is writing it.

        Raises:
            OutputExistsError, UsageError: see :meth:`check`.
            OutputBusyError: a job of another process is writing the same output.
        """
        self.check()
        pattern = os.path.join(glob.escape(self.parent), f".{self.name}.staging-*{_LOCK_SUFFIX}")
        for lock in sorted(glob.glob(pattern)):
            if lock != self.staging + _LOCK_SUFFIX and _held(lock):
                raise OutputBusyError(
                    f"--output {self.output} is being written by another running job "
                    f"(its staging directory {lock.removesuffix(_LOCK_SUFFIX)} is in use)"
                )

    def prepare(self) -> None:
        """Check the output, remove leftover staging directories, create an empty one.

        Raises:
            OutputBusyError: a job of another process is writing the same output.
        """
        self.check()
        os.makedirs(self.parent, exist_ok=True)
        self._lock_fd = _try_lock(self.staging + _LOCK_SUFFIX)
        if self._lock_fd is None:
            raise OutputBusyError(
                f"--output {self.output}: the staging directory {self.staging} is in use "
                "by another process"
            )
        try:
            # Anything already there is a leftover of this very job (a master that died
            # while preparing it): no task has run yet.
            shutil.rmtree(self.staging, ignore_errors=True)
            # Every other job's lock file is made before it looks here, so of two jobs
            # that start at once, at least one sees the other.
            pattern = os.path.join(glob.escape(self.parent), f".{self.name}.staging-*")
            others = {path.removesuffix(_LOCK_SUFFIX) for path in glob.glob(pattern)}
            for other in sorted(others - {self.staging}):
                lock = _try_lock(other + _LOCK_SUFFIX)
                if lock is None:
                    raise OutputBusyError(
                        f"--output {self.output} is being written by another running job "
                        f"(its staging directory {other} is in use)"
                    )
                shutil.rmtree(other, ignore_errors=True)  # a leftover of a dead job
                _unlock(other + _LOCK_SUFFIX, lock)
            os.makedirs(self.temporary)
        except BaseException:
            self._release()
            raise

    def resume(self) -> None:
        """Take this job's staging directory back after a master restart (keeping what is in it).

        Raises:
            OutputBusyError: another process holds the job's lock (it is running elsewhere).
        """
        if self._lock_fd is not None:
            return
        self._lock_fd = _try_lock(self.staging + _LOCK_SUFFIX)
        if self._lock_fd is None:
            raise OutputBusyError(
                f"--output {self.output}: the staging directory {self.staging} is in use "
                "by another process"
            )
        if not self.committed():
            os.makedirs(self.temporary, exist_ok=True)

    def committed(self) -> bool:
        """Whether this job's output was published already (before a master restart)."""
        if os.path.lexists(self.staging):
            return False
        try:
            with open(os.path.join(self.output, SUMMARY_FILE), encoding="utf-8") as f:
                return bool(json.load(f).get("job_id") == self.job_id)
        except (OSError, ValueError, AttributeError):
            return False

    def _release(self) -> None:
        """Let go of the staging directory's lock (the job is over)."""
        if self._lock_fd is not None:
            _unlock(self.staging + _LOCK_SUFFIX, self._lock_fd)
            self._lock_fd = None

    def attempt_path(self, partition: int, attempt: int) -> str:
        """Where reduce attempt ``attempt`` of ``partition`` writes its output."""
        return os.path.join(self.temporary, f"{part_name(partition)}.attempt-{attempt}")

    def commit_task(self, partition: int, attempt: int) -> str:
        """Make ``attempt``'s output the partition's output; return its committed path."""
        source = self.attempt_path(partition, attempt)
        target = os.path.join(self.staging, part_name(partition))
        _fsync(source)
        os.replace(source, target)
        return target

    def commit_job(self, summary: dict[str, Any], partitions: int) -> None:
        """Write the summary and ``_SUCCESS``, then publish the output directory.

        Committing again a job whose output was published (a master that died
        before it could record the commit) does nothing.

        Raises:
            OutputError: a partition's file is missing from the staging directory.
        """
        try:
            if not self.committed():
                self._publish(summary, partitions)
        finally:
            self._release()

    def _publish(self, summary: dict[str, Any], partitions: int) -> None:
        missing = [
            part_name(p)
            for p in range(partitions)
            if not os.path.isfile(os.path.join(self.staging, part_name(p)))
        ]
        if missing:
            raise OutputError(
                f"{len(missing)} committed partition(s) are missing from {self.staging} "
                f"(first: {missing[0]}); the output is left as it was"
            )
        shutil.rmtree(self.temporary, ignore_errors=True)
        summary_path = os.path.join(self.staging, SUMMARY_FILE)
        with open(summary_path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        with open(os.path.join(self.staging, SUCCESS_MARKER), "wb") as f:
            os.fsync(f.fileno())
        _fsync(self.staging)
        replaced = False
        if os.path.lexists(self.output):
            if not self.overwrite:
                raise OutputExistsError(
                    f"output directory {self.output} appeared while the job ran; "
                    "it is left as it was"
                )
            os.replace(self.output, self.trash)
            replaced = True
        try:
            os.replace(self.staging, self.output)
        except OSError:
            if replaced:  # put the previous output back: never leave neither
                os.replace(self.trash, self.output)
            raise
        # A losing reduce attempt that was still running (killed, but not yet dead) may have
        # written into _temporary after it was emptied: it is never part of the output.
        shutil.rmtree(os.path.join(self.output, "_temporary"), ignore_errors=True)
        _fsync(self.parent)
        shutil.rmtree(self.trash, ignore_errors=True)

    def abort(self) -> None:
        """Remove everything staged; the output directory is left as it was."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self._release()


_LOCK_SUFFIX = ".lock"


def _try_lock(path: str) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock, or None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _held(path: str) -> bool:
    """Whether another open file description holds the lock on ``path`` (it is not created)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _unlock(path: str, fd: int) -> None:
    """Remove the lock file ``path`` (while still holding it), then let go of it."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    os.close(fd)


class Committer(Protocol):
    """What runners, the master and workers need of an output committer: the local one
    (:class:`OutputCommitter`) or the object store's
    (:class:`~mapreduce.dataflow.store_commit.StoreCommitter`)."""

    output: str

    def check(self) -> None: ...
    def check_free(self) -> None: ...
    def prepare(self) -> None: ...
    def resume(self) -> None: ...
    def committed(self) -> bool: ...
    def attempt_path(self, partition: int, attempt: int) -> str: ...
    def commit_task(self, partition: int, attempt: int) -> str: ...
    def commit_job(self, summary: dict[str, Any], partitions: int) -> None: ...
    def abort(self) -> None: ...


def output_committer(
    output: str,
    job_id: str,
    *,
    overwrite: bool = False,
    options: Mapping[str, str] | None = None,
    scratch: str | None = None,
) -> Committer:
    """The committer of ``output``: a plain path is committed with renames and a file lock,
    a URL (an object store) with the protocol of :mod:`mapreduce.dataflow.store_commit`.

    Args:
        scratch: where a reduce attempt writes its part before it is uploaded to a store
            (ignored for a plain path, where it writes into the staging directory).
    """
    if is_url(output):
        from mapreduce.dataflow.store_commit import StoreCommitter

        return StoreCommitter(
            output, job_id, overwrite=overwrite, options=options or {}, scratch=scratch
        )
    return OutputCommitter(output, job_id, overwrite=overwrite)
