"""The master's durable log: an append-only, checksummed journal of opaque records.

The master pickles its events into records; the journal never interprets them.  On disk, in
the state directory:

- ``journal-<N>.log`` (``N`` zero-padded to 20 digits): a segment holding records ``N+1, N+2,
  ...``.  Each record is framed as ``b"MRJ1"``, payload length (u32), sequence number (u64), the
  payload, and a CRC-32 (u32) of length, sequence number and payload; all big-endian.
- ``snapshot-<N>.bin``: the payload of a snapshot of the state after record ``N``, framed as
  ``b"MRSNAP01"``, ``N`` (u64), payload length (u64), payload, CRC-32 of everything but the
  magic.  Written to ``.tmp``, fsynced, renamed, then the directory is fsynced.
- ``LOCK``: held with ``flock`` while a journal is open, so two masters cannot share a directory.

Guarantees: a record is durable once ``sync`` returned for its sequence number.  A snapshot
starts a new segment; the two newest snapshots are kept with every segment after the older one,
so a damaged newest snapshot falls back to the older one plus the records after it.  Recovery
cuts a torn or damaged tail of the last segment (records that were never synced, or the
journal's last bytes), but refuses, with :class:`JournalCorruptError`, damage that intact
records follow or damage in any other segment it needs: committed records are never dropped
silently.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass
from typing import NoReturn, Protocol

__all__ = [
    "FileJournal",
    "Journal",
    "JournalCorruptError",
    "MemoryJournal",
    "NotLeader",
    "Recovered",
    "SingleMaster",
]

_RECORD_MAGIC = b"MRJ1"
_RECORD_HEADER = struct.Struct(">4sIQ")  # magic, payload length, sequence number
_CRC = struct.Struct(">I")
_MAX_RECORD = 0xFFFF_FFFF
_SNAPSHOT_MAGIC = b"MRSNAP01"
_SNAPSHOT_HEADER = struct.Struct(">8sQQ")  # magic, sequence number, payload length
_SNAPSHOT_RE = re.compile(r"snapshot-(\d+)\.bin")
_CORRUPT_RE = re.compile(r"snapshot-(\d+)\.bin\.corrupt")
_SEGMENT_RE = re.compile(r"journal-(\d+)\.log")
_LOCK_NAME = "LOCK"


@dataclass(frozen=True)
class Recovered:
    """What :meth:`Journal.recover` found.

    Attributes:
        snapshot: the newest good snapshot's payload, or None (start from the empty state).
        records: every record appended after that snapshot, in order.
        messages: human-readable notes of what recovery repaired (a tail cut, a snapshot
            skipped); empty if nothing was.
    """

    snapshot: bytes | None
    records: list[bytes]
    messages: list[str]


class JournalCorruptError(Exception):
    """Committed journal data is damaged and recovery will not guess.

    Attributes:
        path: the damaged file (or the state directory).
        offset: byte offset of the damage in ``path``, or None.
        reason: what is wrong.
    """

    def __init__(self, path: str, offset: int | None, reason: str) -> None:
        super().__init__(path, offset, reason)
        self.path = path
        self.offset = offset
        self.reason = reason

    def __str__(self) -> str:
        where = self.path if self.offset is None else f"{self.path} at offset {self.offset}"
        return f"journal corrupt: {where}: {self.reason}"


class NotLeader(Exception):
    """This master is not (or no longer) the leader: nothing it appended may be acted on."""


class Journal(Protocol):
    """The master's durable log of opaque records, with snapshots."""

    def recover(self) -> Recovered:
        """Read back the newest good snapshot and the records after it; call once, first."""
        ...

    def append(self, record: bytes) -> int:
        """Buffer ``record`` (no fsync) and return its sequence number (1, 2, ...); thread-safe."""
        ...

    def sync(self, seq: int) -> None:
        """Block until every record up to ``seq`` is durable; concurrent callers share an fsync.

        Raises OSError if writing or syncing ever failed (then, and forever after: the journal
        is broken and the master must stop).
        """
        ...

    def records_since_snapshot(self) -> int:
        """How many records were appended after the newest snapshot (or since the start)."""
        ...

    def write_snapshot(self, payload: bytes) -> None:
        """Durably store ``payload``, the state after every record appended so far.

        The journal then restarts empty; the previous snapshot is kept as a fallback.  The
        caller must not append concurrently.
        """
        ...

    def close(self) -> None:
        """Make the records appended so far durable and release the journal; idempotent."""
        ...

    #: whether other master candidates share this journal (then only the leader serves)
    replicated: bool

    def wait_for_leadership(self, stop: threading.Event) -> None:
        """Block until this master may serve: at once for a single master; for a replicated
        journal, once this candidate leads and holds every committed record."""
        ...

    def term(self) -> int:
        """The replication term (0 for a single master's journal)."""
        ...

    def leader_address(self) -> str:
        """Where the current leader serves ("" when unknown, or for a single master)."""
        ...


class SingleMaster:
    """What a journal kept by one master alone says about leadership: it always leads."""

    replicated = False

    def wait_for_leadership(self, stop: threading.Event) -> None:
        return

    def term(self) -> int:
        return 0

    def leader_address(self) -> str:
        return ""


def _snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:020d}.bin"


def _segment_name(seq: int) -> str:
    return f"journal-{seq:020d}.log"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_frame(data: bytes, offset: int) -> tuple[int, bytes, int] | None:
    """The (sequence number, payload, end offset) of an intact record at ``offset``, or None."""
    if offset + _RECORD_HEADER.size > len(data):
        return None
    magic, length, seq = _RECORD_HEADER.unpack_from(data, offset)
    start = offset + _RECORD_HEADER.size
    end = start + length + _CRC.size
    if magic != _RECORD_MAGIC or end > len(data):
        return None
    view = memoryview(data)
    if zlib.crc32(view[offset + 4 : start + length]) != _CRC.unpack_from(data, start + length)[0]:
        return None
    return seq, data[start : start + length], end


def _parse_segment(path: str, data: bytes, expected: int) -> tuple[list[bytes], int]:
    """The intact records at the start of a segment and the offset where they end."""
    records: list[bytes] = []
    offset = 0
    while (frame := _parse_frame(data, offset)) is not None:
        seq, payload, end = frame
        if seq != expected:
            raise JournalCorruptError(
                path, offset, f"record has sequence number {seq}, expected {expected}"
            )
        records.append(payload)
        expected += 1
        offset = end
    return records, offset


def _intact_record_after(data: bytes, offset: int, expected: int) -> bool:
    """Whether an intact record numbered ``expected`` or later lies after ``offset``."""
    pos = data.find(_RECORD_MAGIC, offset + 1)
    while pos != -1:
        frame = _parse_frame(data, pos)
        if frame is not None and frame[0] >= expected:
            return True
        pos = data.find(_RECORD_MAGIC, pos + 1)
    return False


def _read_snapshot(path: str, seq: int) -> bytes | str:
    """The snapshot's payload, or a string saying why it cannot be used."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return f"unreadable: {exc}"
    if len(data) < _SNAPSHOT_HEADER.size + _CRC.size:
        return f"too short ({len(data)} bytes)"
    magic, header_seq, length = _SNAPSHOT_HEADER.unpack_from(data)
    if magic != _SNAPSHOT_MAGIC:
        return "bad magic"
    if header_seq != seq:
        return f"holds sequence number {header_seq}, not {seq}"
    if length != len(data) - _SNAPSHOT_HEADER.size - _CRC.size:
        return f"length {length} does not match the file size {len(data)}"
    if zlib.crc32(memoryview(data)[8:-4]) != _CRC.unpack_from(data, len(data) - 4)[0]:
        return "bad checksum"
    return data[_SNAPSHOT_HEADER.size : -_CRC.size]


class FileJournal(SingleMaster):
    """A :class:`Journal` in a state directory, created (mode 0o700) if missing."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._dir = os.fspath(directory)
        os.makedirs(self._dir, mode=0o700, exist_ok=True)
        self._cond = threading.Condition(threading.Lock())
        self._recovered = False
        self._closed = False
        self._error: OSError | None = None  # the journal is broken once set
        self._lock_fd: int | None = None
        self._fd: int | None = None  # the current segment, opened for appending
        self._segment_base = 0
        self._snapshot_seq = 0
        self._last_seq = 0  # appended
        self._durable_seq = 0  # written and fsynced
        self._buffer: list[bytes] = []  # frames of records _durable_seq+1 .. _last_seq
        self._syncing = False  # a thread is writing and fsyncing outside the lock

    def _path(self, name: str) -> str:
        return os.path.join(self._dir, name)

    # -- recovery --------------------------------------------------------------------------

    def recover(self) -> Recovered:
        """Read back the newest good snapshot and the records after it; call once, first.

        Cuts a torn tail of the last segment and sets a damaged newest snapshot aside
        (``.corrupt``), each with a message.  Raises JournalCorruptError (changing nothing) if
        committed records are damaged or missing, and BlockingIOError if another journal has
        the directory open.
        """
        with self._cond:
            if self._closed:
                raise ValueError("journal is closed")
            if self._recovered:
                raise RuntimeError("recover() was already called")
            self._lock_directory()
            try:
                result = self._recover_locked()
            except BaseException:
                self._release()
                raise
            self._recovered = True
            return result

    def _lock_directory(self) -> None:
        fd = os.open(self._path(_LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise BlockingIOError(
                exc.errno, f"state directory {self._dir} is in use by another master"
            ) from exc
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd

    def _recover_locked(self) -> Recovered:
        names = os.listdir(self._dir)
        snapshots = sorted(
            (int(m[1]) for n in names if (m := _SNAPSHOT_RE.fullmatch(n))), reverse=True
        )
        segments = sorted(int(m[1]) for n in names if (m := _SEGMENT_RE.fullmatch(n)))

        # Plan without touching anything, so that a refusal leaves the directory as it was.
        base, snapshot = 0, None
        skipped: list[tuple[int, str]] = []
        for seq in snapshots:
            found = _read_snapshot(self._path(_snapshot_name(seq)), seq)
            if isinstance(found, bytes):
                base, snapshot = seq, found
                break
            skipped.append((seq, found))
        needed = [s for s in segments if s >= base]
        if (needed or skipped) and base not in needed:
            missing = (
                f"no {_segment_name(base)}"
                if not needed
                else f"records {base + 1}..{needed[0]} are missing"
            )
            source = _snapshot_name(base) if snapshot is not None else "the empty initial state"
            raise JournalCorruptError(
                self._dir, None, f"cannot replay the journal after {source}: {missing}"
            )
        records: list[bytes] = []
        cut: tuple[str, int, int] | None = None  # path, offset, bytes dropped
        for i, seg in enumerate(needed):
            path = self._path(_segment_name(seg))
            with open(path, "rb") as f:
                data = f.read()
            found_records, good_end = _parse_segment(path, data, base + len(records) + 1)
            records += found_records
            last_seq = base + len(records)
            if good_end < len(data):
                if i < len(needed) - 1:
                    raise JournalCorruptError(
                        path, good_end, "damaged record in a segment that is not the last"
                    )
                if _intact_record_after(data, good_end, last_seq + 1):
                    raise JournalCorruptError(
                        path, good_end, "damaged record followed by intact records"
                    )
                cut = (path, good_end, len(data) - good_end)
            if i < len(needed) - 1 and last_seq != needed[i + 1]:
                raise JournalCorruptError(
                    path,
                    len(data),
                    f"ends after record {last_seq} but the next segment starts after "
                    f"record {needed[i + 1]}",
                )

        # Apply the repairs.
        messages: list[str] = []
        source = _snapshot_name(base) if snapshot is not None else "the empty initial state"
        for seq, reason in skipped:
            path = self._path(_snapshot_name(seq))
            os.replace(path, path + ".corrupt")
            messages.append(
                f"snapshot {path} is unusable ({reason}); moved it to {path}.corrupt and "
                f"recovered from {source} and the {len(records)} journal records after it"
            )
        if cut is not None:
            path, offset, dropped = cut
            os.truncate(path, offset)
            messages.append(
                f"journal {path}: cut {dropped} bytes of torn or damaged tail at offset {offset} "
                f"(after record {base + len(records)})"
            )
        self._segment_base = needed[-1] if needed else base
        path = self._path(_segment_name(self._segment_base))
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fsync(self._fd)
        self._snapshot_seq = base
        self._last_seq = self._durable_seq = base + len(records)
        self._prune()
        _fsync_dir(self._dir)
        return Recovered(snapshot, records, messages)

    def _prune(self) -> None:
        """Keep the two newest snapshots and the segments after the older; delete the rest."""
        names = os.listdir(self._dir)
        snapshots = sorted(
            (int(m[1]) for n in names if (m := _SNAPSHOT_RE.fullmatch(n))), reverse=True
        )
        floor = snapshots[1] if len(snapshots) >= 2 else 0
        for name in names:
            if name.endswith(".tmp"):
                doomed = True
            elif m := _SNAPSHOT_RE.fullmatch(name):
                doomed = int(m[1]) not in snapshots[:2]
            elif m := _SEGMENT_RE.fullmatch(name) or _CORRUPT_RE.fullmatch(name):
                doomed = int(m[1]) < floor
            else:
                doomed = False
            if doomed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(name))

    # -- appending -------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError("journal is closed")
        if not self._recovered:
            raise RuntimeError("recover() must be called before using the journal")
        if self._error is not None:
            self._raise_broken()

    def _raise_broken(self) -> NoReturn:
        error = self._error
        assert error is not None
        raise OSError(
            error.errno, f"journal {self._dir} is broken by an earlier I/O error: {error}"
        ) from error

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, OSError):
            self._error = exc
        else:
            self._error = OSError(f"interrupted during I/O: {exc!r}")
        self._cond.notify_all()

    def append(self, record: bytes) -> int:
        """Buffer ``record`` (no fsync) and return its sequence number (1, 2, ...); thread-safe."""
        if len(record) > _MAX_RECORD:
            raise ValueError(f"record of {len(record)} bytes is too large")
        with self._cond:
            self._check_usable()
            seq = self._last_seq + 1
            header = _RECORD_HEADER.pack(_RECORD_MAGIC, len(record), seq)
            crc = zlib.crc32(record, zlib.crc32(header[4:]))
            self._buffer += (header, bytes(record), _CRC.pack(crc))
            self._last_seq = seq
            return seq

    def sync(self, seq: int) -> None:
        """Block until every record up to ``seq`` is durable; concurrent callers share an fsync.

        One caller writes and fsyncs everything buffered while the others wait, then one of
        those left waiting does the same for what was appended meanwhile.  Raises OSError if
        writing or syncing ever failed, and ValueError for a ``seq`` not yet appended.
        """
        with self._cond:
            while True:
                if self._error is not None:
                    self._raise_broken()
                if seq <= self._durable_seq:
                    return
                self._check_usable()
                if seq > self._last_seq:
                    raise ValueError(f"record {seq} was not appended (last is {self._last_seq})")
                if not self._syncing:
                    break
                self._cond.wait()
            self._syncing = True
            data = b"".join(self._buffer)
            self._buffer.clear()
            target = self._last_seq
            fd = self._fd
        assert fd is not None
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except BaseException as exc:
            with self._cond:
                self._syncing = False
                self._fail(exc)
            raise
        with self._cond:
            self._syncing = False
            self._durable_seq = target
            self._cond.notify_all()

    def _wait_idle(self) -> None:
        while self._syncing:
            self._cond.wait()

    def _flush_locked(self) -> None:
        """Write and fsync the buffer while holding the lock (no sync in flight)."""
        if self._durable_seq == self._last_seq:
            return
        assert self._fd is not None
        try:
            _write_all(self._fd, b"".join(self._buffer))
            os.fsync(self._fd)
        except BaseException as exc:
            self._fail(exc)
            raise
        self._buffer.clear()
        self._durable_seq = self._last_seq
        self._cond.notify_all()

    def records_since_snapshot(self) -> int:
        """How many records were appended after the newest snapshot (or since the start)."""
        with self._cond:
            return self._last_seq - self._snapshot_seq

    # -- snapshots -------------------------------------------------------------------------

    def write_snapshot(self, payload: bytes) -> None:
        """Durably store ``payload``, the state after every record appended so far.

        Syncs the journal, writes ``snapshot-<seq>.bin`` atomically, starts a new segment and
        deletes what the two newest snapshots no longer need.  The caller must not append
        concurrently.  An OSError breaks the journal, as in :meth:`sync`.
        """
        with self._cond:
            self._wait_idle()
            self._check_usable()
            self._flush_locked()
            seq = self._last_seq
            path = self._path(_snapshot_name(seq))
            try:
                header = _SNAPSHOT_HEADER.pack(_SNAPSHOT_MAGIC, seq, len(payload))
                crc = zlib.crc32(payload, zlib.crc32(header[8:]))
                fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    _write_all(fd, header + payload + _CRC.pack(crc))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(path + ".tmp", path)
                _fsync_dir(self._dir)
                if seq != self._segment_base:
                    segment = self._path(_segment_name(seq))
                    fd = os.open(
                        segment, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600
                    )
                    old, self._fd, self._segment_base = self._fd, fd, seq
                    assert old is not None
                    os.close(old)
                    _fsync_dir(self._dir)
                self._snapshot_seq = seq
                self._prune()
                _fsync_dir(self._dir)
            except BaseException as exc:
                self._fail(exc)
                raise

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Make the records appended so far durable and release the journal; idempotent.

        Raises OSError if that final write fails (the directory is released all the same).
        """
        with self._cond:
            self._wait_idle()
            if self._closed:
                return
            self._closed = True
            try:
                if self._recovered and self._error is None:
                    self._flush_locked()
            finally:
                self._release()
                self._cond.notify_all()

    def _release(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None


class MemoryJournal(SingleMaster):
    """A :class:`Journal` that keeps nothing: for a master that runs without a state directory.

    ``recover`` finds nothing, ``sync`` returns at once, ``write_snapshot`` forgets the count.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recovered = False
        self._closed = False
        self._last_seq = 0
        self._snapshot_seq = 0

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError("journal is closed")
        if not self._recovered:
            raise RuntimeError("recover() must be called before using the journal")

    def recover(self) -> Recovered:
        """Return an empty :class:`Recovered`; call once, first."""
        with self._lock:
            if self._closed:
                raise ValueError("journal is closed")
            if self._recovered:
                raise RuntimeError("recover() was already called")
            self._recovered = True
            return Recovered(None, [], [])

    def append(self, record: bytes) -> int:
        """Count ``record`` and return its sequence number (1, 2, ...); thread-safe."""
        with self._lock:
            self._check_usable()
            self._last_seq += 1
            return self._last_seq

    def sync(self, seq: int) -> None:
        """Return at once (ValueError for a ``seq`` not yet appended)."""
        with self._lock:
            if seq > self._last_seq:
                raise ValueError(f"record {seq} was not appended (last is {self._last_seq})")

    def records_since_snapshot(self) -> int:
        """How many records were appended after the last snapshot (or since the start)."""
        with self._lock:
            return self._last_seq - self._snapshot_seq

    def write_snapshot(self, payload: bytes) -> None:
        """Forget the records appended so far (the payload is not kept)."""
        with self._lock:
            self._check_usable()
            self._snapshot_seq = self._last_seq

    def close(self) -> None:
        """Refuse further use; idempotent."""
        with self._lock:
            self._closed = True
