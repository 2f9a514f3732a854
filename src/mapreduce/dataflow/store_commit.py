"""Output commit on an object store, where there is no atomic rename of a directory.

The output is a prefix ``OUT`` (``s3://bucket/out``).  A job ``J`` keeps everything of its
own under ``OUT/_temporary/`` (hidden from readers by the ``_`` rule):

* ``OUT/_temporary/J.lock``: the job's *lock object* (its holder's host and pid, its
  state), written when the job's turn comes and rewritten every :data:`REFRESH_SECONDS`
  while it runs; removed when it ends;
* ``OUT/_temporary/J/part-NNNNN``: the committed reduce attempts.  A reduce attempt writes
  its part to the local disk of its worker; committing the task (granted to exactly one
  attempt by the master) uploads it there in one PUT, so a part is there whole or not.

Committing the job:

1. checks that every part is staged and that the lock object is still this job's;
2. marks the lock object ``committing``;
3. with ``--overwrite``, deletes the previous ``OUT/_SUCCESS`` *first*, then every other
   object of the previous output;
4. copies each staged part to ``OUT/part-NNNNN`` (a server-side copy), writes
   ``OUT/_summary.json``, and *last* ``OUT/_SUCCESS``, a manifest listing every part with
   its size and the store's checksum (ETag);
5. removes ``OUT/_temporary/J/`` and the lock object.

So a ``_SUCCESS`` is only ever beside the complete parts of one job: whatever is visible
without it is not an output (and a job's ``--input`` of a prefix with a manifest reads
exactly the parts it lists).  A job that fails removes its temporaries.  One that dies
leaves its lock object; the next job for the output removes what it left: its staged
parts, and if it died while committing (its lock says so) the half-published output too.

A lock object is *live* while its holder runs: on the same host, while its pid is alive;
from another host, while it was rewritten less than :data:`LEASE_SECONDS` ago (by the
store's clock: the new job's own lock object, written first, gives the store's time).  A
new job writes its own lock object *before* it lists the others, so of two jobs that start
at once, each sees the other (S3 lists consistently after a write) and at least one is
refused.  What this does not guarantee: a holder on another host stopped for longer than
the lease (a paused VM) loses its lock without knowing it until its next refresh or its
commit, which check the lock again first; between that check and its last write a second
job could start.  There is no fencing token on plain object stores.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import posixpath
import signal
import socket
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

from mapreduce.dataflow.storage import (
    SUCCESS_MARKER,
    StoreError,
    filesystem,
    read_manifest,
    retried,
    store_call,
)
from mapreduce.errors import OutputBusyError, OutputError, OutputExistsError, UsageError

SUMMARY_FILE = "_summary.json"
TEMPORARY = "_temporary"
LOCK_SUFFIX = ".lock"
#: A lock object of another host not rewritten for this long belongs to a dead job.
LEASE_SECONDS = 60.0
REFRESH_SECONDS = 15.0
#: For the tests of a commit cut short: the process kills itself (SIGKILL) once this many
#: parts are in place on the store.
KILL_IN_COMMIT_ENV = "MAPREDUCE_KILL_IN_COMMIT"


def part_name(partition: int) -> str:
    return f"part-{partition:05d}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None: with the
    pid, it names one process (a pid alone may be reused)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int, start: object) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _process_start(pid)
    return start is None or now is None or now == start


class StoreCommitter:
    """Stages, commits and aborts the output of one job on an object store (the same
    methods as :class:`mapreduce.dataflow.commit.OutputCommitter`).

    Args:
        output: the output URL (normalised).
        job_id: the job's id.
        overwrite: replace an existing output once the job has succeeded.
        options: ``--storage-option`` values.
        scratch: a local directory where reduce attempts write their part before it is
            uploaded (the worker's attempt directory); the system's temporary one if None.
    """

    def __init__(
        self,
        output: str,
        job_id: str,
        *,
        overwrite: bool = False,
        options: Mapping[str, str] | None = None,
        scratch: str | None = None,
    ) -> None:
        self.output = output
        self.job_id = job_id
        self.overwrite = overwrite
        self.fs, self.root = filesystem(output, options or {})
        self.temporary = posixpath.join(self.root, TEMPORARY)
        self.staging = posixpath.join(self.temporary, job_id)
        self.lock = self.staging + LOCK_SUFFIX
        self.scratch = scratch
        self._owner = {
            "job_id": job_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": _process_start(os.getpid()),
        }
        self._refresher: threading.Thread | None = None
        self._stop = threading.Event()
        self._lost = False
        self._state = "running"
        self._mutex = threading.Lock()
        #: set once a commit has begun to change the output, until it has finished
        self._half_published = False

    # -- checks ----------------------------------------------------------------------

    def _call(self, op: Any, error: type[Exception] = OutputError) -> Any:
        return store_call(self.output, op, error)  # type: ignore[arg-type]

    def _listing(self) -> dict[str, dict[str, Any]]:
        """Every object under the output prefix (``_temporary/`` included)."""
        self.fs.invalidate_cache(self.root)

        def find() -> dict[str, dict[str, Any]]:
            if self.fs.isfile(self.root):
                raise UsageError(f"--output {self.output} exists and is a file, not a prefix")
            return dict(self.fs.find(self.root, detail=True, withdirs=False))

        return dict(self._call(find))

    def _published(self, listing: dict[str, dict[str, Any]]) -> list[str]:
        """The objects of the output itself (everything but ``_temporary/``)."""
        inside = self.temporary + "/"
        return sorted(path for path in listing if not path.startswith(inside))

    def _locks(self, listing: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Lock objects of other jobs: path -> listing info."""
        prefix = self.temporary + "/"
        return {
            path: info
            for path, info in listing.items()
            if path.startswith(prefix)
            and path.endswith(LOCK_SUFFIX)
            and "/" not in path[len(prefix) :]
            and path != self.lock
        }

    def _read_lock(self, path: str) -> dict[str, Any]:
        def read() -> bytes:
            try:
                return bytes(self.fs.cat_file(path))
            except FileNotFoundError:
                return b""

        try:
            value = json.loads(self._call(read))
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def _live(self, info: dict[str, Any], owner: dict[str, Any], now: datetime.datetime) -> bool:
        if owner.get("abandoned"):
            return False  # a commit that failed half-way: its job is over
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            return _pid_alive(owner["pid"], owner.get("start"))
        modified = info.get("LastModified") or info.get("last_modified") or info.get("mtime")
        if not isinstance(modified, datetime.datetime):
            return True  # cannot tell: never take a lock that may be held
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=datetime.UTC)
        return (now - modified).total_seconds() < LEASE_SECONDS

    def _existing(self, listing: dict[str, dict[str, Any]], now: datetime.datetime) -> bool:
        """Whether an output is there: objects outside ``_temporary/``, unless they are
        what a job that died while committing left (removed by :meth:`prepare`)."""
        if not self._published(listing):
            return False
        if posixpath.join(self.root, SUCCESS_MARKER) in listing:
            return True
        for path, info in self._locks(listing).items():
            owner = self._read_lock(path)
            if owner.get("state") == "committing" and not self._live(info, owner, now):
                return False
        return True

    def check(self) -> None:
        """Refuse an output that exists (without ``--overwrite``) or is an object.

        Raises:
            OutputExistsError, UsageError; OutputError naming the URL when the store
            cannot be read (no bucket, no credentials, access denied).
        """
        self._check(self._listing(), _now())

    def _check(self, listing: dict[str, dict[str, Any]], now: datetime.datetime) -> None:
        if not self.overwrite and self._existing(listing, now):
            raise OutputExistsError(
                f"output {self.output} already exists; "
                "choose another --output or pass --overwrite to replace it"
            )

    def check_free(self) -> None:
        """:meth:`check`, and no other live job holds a lock object of the output.

        Raises:
            OutputBusyError: another running job writes the same output.
        """
        listing = self._listing()
        now = _now()
        self._check(listing, now)
        for path, info in sorted(self._locks(listing).items()):
            if self._live(info, self._read_lock(path), now):
                raise self._busy(path)

    def _busy(self, lock: str) -> OutputBusyError:
        job = posixpath.basename(lock).removesuffix(LOCK_SUFFIX)
        return OutputBusyError(
            f"--output {self.output} is being written by another running job ({job}, its "
            f"lock object {TEMPORARY}/{posixpath.basename(lock)} is live)"
        )

    # -- the lock --------------------------------------------------------------------

    def _write_lock(self, state: str, **extra: object) -> dict[str, Any]:
        """Write this job's lock object; return its listing info (LastModified: the store's
        time now)."""
        with self._mutex:
            self._state = state
            body = json.dumps({**self._owner, "state": state, **extra}).encode()
            self._call(lambda: self.fs.pipe_file(self.lock, body))
        self.fs.invalidate_cache(self.temporary)
        return dict(self._call(lambda: self.fs.info(self.lock)))

    def _take_lock(self) -> None:
        """Write the lock object, then refuse if another live one is there; remove what dead
        jobs left."""
        mine = self._write_lock("running")
        now = mine.get("LastModified")
        if not isinstance(now, datetime.datetime):
            now = _now()
        try:
            listing = self._listing()
            others = self._locks(listing)
            for path, info in sorted(others.items()):
                if self._live(info, self._read_lock(path), now):
                    raise self._busy(path)
            for path in sorted(others):
                self._clean_leftover(path, listing)
            self._clean_orphans(listing)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(self.lock)
            raise
        self._start_refresher()

    def _clean_leftover(self, lock: str, listing: dict[str, dict[str, Any]]) -> None:
        """Remove what a dead job left: its staged parts, and a half-published output if it
        died while committing; its lock object last."""
        owner = self._read_lock(lock)
        published = self._published(listing)
        # A _SUCCESS still there means it died before touching the previous output (it
        # removes that _SUCCESS first), or after its own was written: complete either way.
        if (
            owner.get("state") == "committing"
            and posixpath.join(self.root, SUCCESS_MARKER) not in published
        ):
            self._remove(published)
        self._remove_prefix(lock.removesuffix(LOCK_SUFFIX))
        self._call(lambda: self._rm_quiet(lock))

    def _clean_orphans(self, listing: dict[str, dict[str, Any]]) -> None:
        """Staged parts of jobs that hold no lock object (died while removing them)."""
        prefix = self.temporary + "/"
        jobs = {
            path[len(prefix) :].split("/", 1)[0]
            for path in listing
            if path.startswith(prefix) and "/" in path[len(prefix) :]
        }
        for job in sorted(jobs):
            if job != self.job_id and prefix + job + LOCK_SUFFIX not in listing:
                self._remove_prefix(prefix + job)

    def _start_refresher(self) -> None:
        self._stop.clear()
        self._lost = False
        thread = threading.Thread(
            target=self._refresh_loop, name=f"lock-{self.job_id}", daemon=True
        )
        self._refresher = thread
        thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            try:
                with self._mutex:
                    if self._stop.is_set():
                        return
                    owner = self._read_lock(self.lock)
                    if owner.get("job_id") != self.job_id:
                        self._lost = True
                        return
                    body = json.dumps({**self._owner, "state": self._state}).encode()
                    self.fs.pipe_file(self.lock, body)
            except Exception:
                continue  # the next refresh tries again; the commit checks the lock itself

    def _release(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher = None
            if self._half_published:
                # The output is half changed: the lock stays, abandoned, so that the next job
                # for this output removes what is there (as after a crash) and is not refused.
                with contextlib.suppress(Exception):
                    self._write_lock("committing", abandoned=True)
                return
            with self._mutex, contextlib.suppress(Exception):
                retried(lambda: self._rm_quiet(self.lock))

    # -- life cycle ------------------------------------------------------------------

    def prepare(self) -> None:
        """Take the output's lock, remove what dead jobs left, check the output.

        Raises:
            OutputBusyError: another running job writes the same output.
            OutputExistsError: the output exists and overwrite is off.
            OutputError: the store cannot be written (naming the URL).
        """
        self._take_lock()
        try:
            self._remove_prefix(self.staging)  # a leftover of this very job
            self.check()
        except BaseException:
            self._release()
            raise

    def resume(self) -> None:
        """Take this job's lock back after a master restart (keeping its staged parts)."""
        if self._refresher is not None:
            return
        if self.committed():
            return
        self._take_lock()

    def committed(self) -> bool:
        """Whether this job's output was published already (its ``_SUCCESS`` is there)."""
        self.fs.invalidate_cache(self.root)
        try:
            manifest = retried(lambda: read_manifest(self.fs, self.root))
        except Exception:
            return False
        return manifest is not None and manifest.get("job_id") == self.job_id

    def attempt_path(self, partition: int, attempt: int) -> str:
        """The local file where reduce attempt ``attempt`` of ``partition`` writes."""
        directory = self.scratch or tempfile.gettempdir()
        return os.path.join(directory, f"{self.job_id}-{part_name(partition)}.attempt-{attempt}")

    def commit_task(self, partition: int, attempt: int) -> str:
        """Upload ``attempt``'s part to the job's temporary prefix; return its URL."""
        source = self.attempt_path(partition, attempt)
        target = posixpath.join(self.staging, part_name(partition))
        self._call(lambda: self.fs.put_file(source, target))
        with contextlib.suppress(FileNotFoundError):
            os.remove(source)
        return f"{self.output}/{TEMPORARY}/{self.job_id}/{part_name(partition)}"

    def commit_job(self, summary: dict[str, Any], partitions: int) -> None:
        """Put the parts in place, write the summary, and ``_SUCCESS`` (the manifest) last.

        Raises:
            OutputError: a part is missing, the lock was lost, or the store failed.
            OutputExistsError: the output appeared while the job ran (no ``--overwrite``).
        """
        try:
            if not self.committed():
                self._publish(summary, partitions)
        finally:
            self._release()

    def _publish(self, summary: dict[str, Any], partitions: int) -> None:
        listing = self._listing()
        owner = self._read_lock(self.lock)
        if self._lost or owner.get("job_id") != self.job_id:
            raise OutputError(
                f"job {self.job_id} lost its lock on {self.output} (its lock object was "
                "removed: was it paused longer than the lease?); the output is left as it was"
            )
        missing = [
            part_name(p)
            for p in range(partitions)
            if posixpath.join(self.staging, part_name(p)) not in listing
        ]
        if missing:
            raise OutputError(
                f"{len(missing)} committed partition(s) are missing from "
                f"{self.output}/{TEMPORARY}/{self.job_id} (first: {missing[0]}); "
                "the output is left as it was"
            )
        previous = self._published(listing)
        if previous and not self.overwrite:
            raise OutputExistsError(
                f"output {self.output} appeared while the job ran; it is left as it was"
            )
        self._write_lock("committing")
        self._half_published = True
        success = posixpath.join(self.root, SUCCESS_MARKER)
        if success in previous:  # first: the old parts are no output from now on
            self._call(lambda: self._rm_quiet(success))
        self._remove([p for p in previous if p != success])
        kill_after = int(os.environ.get(KILL_IN_COMMIT_ENV, "-1") or -1)
        for p in range(partitions):
            if p == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            source = posixpath.join(self.staging, part_name(p))
            target = posixpath.join(self.root, part_name(p))
            self._call(lambda s=source, t=target: self.fs.copy(s, t))
        body = (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode()
        self._call(lambda: self.fs.pipe_file(posixpath.join(self.root, SUMMARY_FILE), body))
        placed = self._listing()
        parts = []
        for p in range(partitions):
            info = placed.get(posixpath.join(self.root, part_name(p)))
            if info is None:
                raise OutputError(f"{self.output}/{part_name(p)} vanished while committing")
            entry: dict[str, Any] = {"name": part_name(p), "size": int(info.get("size") or 0)}
            etag = info.get("ETag") or info.get("etag")
            if etag:
                entry["etag"] = etag
            parts.append(entry)
        manifest = {"job_id": self.job_id, "parts": parts}
        data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
        self._call(lambda: self.fs.pipe_file(success, data))
        self._half_published = False
        self._remove_prefix(self.staging)

    def abort(self) -> None:
        """Remove everything staged; the output is left as it was."""
        try:
            self._remove_prefix(self.staging)
        except (OSError, StoreError, OutputError):
            pass  # the next job for this output removes it
        finally:
            self._release()

    # -- removal -----------------------------------------------------------------------

    def _rm_quiet(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def _remove(self, paths: list[str]) -> None:
        if paths:
            self._call(lambda: self.fs.rm(paths))

    def _remove_prefix(self, prefix: str) -> None:
        self.fs.invalidate_cache(prefix)

        def remove() -> None:
            with contextlib.suppress(FileNotFoundError):
                found = self.fs.find(prefix, withdirs=False)
                if found:
                    self.fs.rm(found)

        self._call(remove)
