"""The master's journal: records, snapshots, crash repair, group commit, I/O errors.

Real files in ``tmp_path``; damage is done by editing them between two opens.  Concurrency is
steered with events and barriers, never with sleeps.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from mapreduce.master.journal import (
    FileJournal,
    Journal,
    JournalCorruptError,
    MemoryJournal,
    Recovered,
)

FRAME_OVERHEAD = 20  # magic, length, sequence number, CRC-32
SNAPSHOT_HEADER = 24  # magic, sequence number, length


def make_records(n: int, seed: int = 1234) -> list[bytes]:
    rng = random.Random(seed)
    fixed = [b"", b"a", b"x" * 1000, b"MRJ1 looks like a record magic"]
    return (fixed + [rng.randbytes(rng.randrange(1, 300)) for _ in range(n)])[:n]


def open_journal(directory: Path) -> tuple[FileJournal, Recovered]:
    journal = FileJournal(str(directory))
    return journal, journal.recover()


def append_all(journal: Journal, records: list[bytes]) -> int:
    seq = 0
    for record in records:
        seq = journal.append(record)
    journal.sync(seq)
    return seq


def names(directory: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(prefix))


def segment(directory: Path, seq: int) -> Path:
    return directory / f"journal-{seq:020d}.log"


def snapshot(directory: Path, seq: int) -> Path:
    return directory / f"snapshot-{seq:020d}.bin"


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def run_threads(targets: list[Callable[[], None]]) -> list[BaseException]:
    """Start one thread per target, join them, and return the exceptions they raised."""
    errors: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive()
    return errors


# -- records and snapshots --------------------------------------------------------------------


def test_records_survive_close_and_reopen(tmp_path: Path) -> None:
    records = make_records(50)
    journal, recovered = open_journal(tmp_path / "state")
    assert recovered == Recovered(None, [], [])
    assert [journal.append(r) for r in records[:40]] == list(range(1, 41))
    journal.sync(40)
    for record in records[40:]:  # not synced: close makes them durable
        journal.append(record)
    journal.close()
    journal.close()

    journal, recovered = open_journal(tmp_path / "state")
    assert recovered == Recovered(None, records, [])
    assert journal.records_since_snapshot() == 50
    assert journal.append(b"next") == 51
    journal.close()
    assert os.stat(tmp_path / "state").st_mode & 0o077 == 0


def test_snapshot_then_records(tmp_path: Path) -> None:
    journal, _ = open_journal(tmp_path)
    append_all(journal, [b"a", b"b"])
    assert journal.records_since_snapshot() == 2
    journal.write_snapshot(b"state after b")
    assert journal.records_since_snapshot() == 0
    append_all(journal, [b"c", b"d"])
    journal.close()

    journal, recovered = open_journal(tmp_path)
    assert recovered == Recovered(b"state after b", [b"c", b"d"], [])
    assert journal.records_since_snapshot() == 2
    assert journal.append(b"e") == 5
    journal.write_snapshot(b"state after e")
    journal.write_snapshot(b"state after e, again")  # no record between: replaces it
    journal.close()

    journal, recovered = open_journal(tmp_path)
    assert recovered == Recovered(b"state after e, again", [], [])
    journal.close()


def test_only_the_two_newest_snapshots_and_their_segments_remain(tmp_path: Path) -> None:
    journal, _ = open_journal(tmp_path)
    for i in range(1, 5):
        append_all(journal, [b"%d-%d" % (i, j) for j in range(3)])
        journal.write_snapshot(b"snapshot %d" % i)
    append_all(journal, [b"last"])
    journal.close()
    assert names(tmp_path, "snapshot-") == [snapshot(tmp_path, 9).name, snapshot(tmp_path, 12).name]
    assert names(tmp_path, "journal-") == [segment(tmp_path, 9).name, segment(tmp_path, 12).name]

    journal, recovered = open_journal(tmp_path)
    assert recovered == Recovered(b"snapshot 4", [b"last"], [])
    journal.close()


def test_snapshot_whose_segment_was_never_created(tmp_path: Path) -> None:
    # A crash between renaming the snapshot into place and creating its segment.
    journal, _ = open_journal(tmp_path)
    append_all(journal, [b"a", b"b", b"c"])
    journal.write_snapshot(b"S3")
    journal.close()
    segment(tmp_path, 3).unlink()

    journal, recovered = open_journal(tmp_path)
    assert recovered == Recovered(b"S3", [], [])
    assert journal.append(b"d") == 4
    journal.close()
    journal, recovered = open_journal(tmp_path)
    assert recovered == Recovered(b"S3", [b"d"], [])
    journal.close()


# -- crash repair -----------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_torn_tail_is_cut_back(tmp_path: Path, damage: str) -> None:
    records = make_records(10)
    journal, _ = open_journal(tmp_path)
    append_all(journal, records)
    journal.close()
    path = segment(tmp_path, 0)
    size = path.stat().st_size
    if damage == "truncate":
        os.truncate(path, size - 7)  # in the middle of the last record
        kept, good_end = records[:-1], size - len(records[-1]) - FRAME_OVERHEAD
    elif damage == "garbage":
        with open(path, "ab") as f:
            f.write(random.Random(7).randbytes(100))
        kept, good_end = records, size
    else:
        flip_byte(path, size - 5)  # the last payload byte
        kept, good_end = records[:-1], size - len(records[-1]) - FRAME_OVERHEAD
    dropped = os.stat(path).st_size - good_end

    journal, recovered = open_journal(tmp_path)
    assert recovered.snapshot is None
    assert recovered.records == kept
    [message] = recovered.messages
    assert path.name in message
    assert f"cut {dropped} bytes" in message
    assert f"offset {good_end}" in message
    assert path.stat().st_size == good_end
    assert journal.append(b"after repair") == len(kept) + 1
    journal.sync(len(kept) + 1)
    journal.close()

    journal, recovered = open_journal(tmp_path)
    assert recovered == Recovered(None, [*kept, b"after repair"], [])
    journal.close()


def test_damage_followed_by_intact_records_is_refused(tmp_path: Path) -> None:
    records = make_records(10)
    journal, _ = open_journal(tmp_path)
    append_all(journal, records)
    journal.close()
    path = segment(tmp_path, 0)
    offset_of_third = sum(len(r) + FRAME_OVERHEAD for r in records[:2])
    flip_byte(path, offset_of_third + FRAME_OVERHEAD - 4 + len(records[2]) // 2)
    before = path.read_bytes()

    with pytest.raises(JournalCorruptError) as info:
        FileJournal(str(tmp_path)).recover()
    assert info.value.path == str(path)
    assert info.value.offset == offset_of_third
    assert path.read_bytes() == before  # nothing was cut


def test_corrupt_newest_snapshot_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    journal, _ = open_journal(tmp_path)
    append_all(journal, [b"r1", b"r2", b"r3"])
    journal.write_snapshot(b"A: state after r3")
    append_all(journal, [b"r4", b"r5", b"r6"])
    journal.write_snapshot(b"B: state after r6")
    append_all(journal, [b"r7", b"r8"])
    journal.close()
    flip_byte(snapshot(tmp_path, 6), SNAPSHOT_HEADER + 3)

    journal, recovered = open_journal(tmp_path)
    expected = [b"r4", b"r5", b"r6", b"r7", b"r8"]
    assert (recovered.snapshot, recovered.records) == (b"A: state after r3", expected)
    [message] = recovered.messages
    assert snapshot(tmp_path, 6).name in message
    assert "checksum" in message
    assert journal.records_since_snapshot() == 5
    assert journal.append(b"r9") == 9
    journal.close()

    journal, recovered = open_journal(tmp_path)
    assert recovered == Recovered(b"A: state after r3", [*expected, b"r9"], [])
    journal.write_snapshot(b"C: state after r9")
    journal.close()
    assert names(tmp_path, "snapshot-") == [
        snapshot(tmp_path, 3).name,
        f"{snapshot(tmp_path, 6).name}.corrupt",
        snapshot(tmp_path, 9).name,
    ]


def test_corrupt_only_snapshot_falls_back_to_the_empty_state(tmp_path: Path) -> None:
    journal, _ = open_journal(tmp_path)
    append_all(journal, [b"r1", b"r2"])
    journal.write_snapshot(b"state after r2")
    append_all(journal, [b"r3"])
    journal.close()
    os.truncate(snapshot(tmp_path, 2), 10)

    journal, recovered = open_journal(tmp_path)
    assert (recovered.snapshot, recovered.records) == (None, [b"r1", b"r2", b"r3"])
    assert len(recovered.messages) == 1
    journal.close()


def test_damage_in_a_segment_that_is_not_the_last_is_refused(tmp_path: Path) -> None:
    journal, _ = open_journal(tmp_path)
    append_all(journal, [b"r1", b"r2"])
    journal.write_snapshot(b"A")
    append_all(journal, [b"r3-" * 20, b"r4-" * 20, b"r5-" * 20])
    journal.write_snapshot(b"B")
    append_all(journal, [b"r6"])
    journal.close()
    flip_byte(snapshot(tmp_path, 5), SNAPSHOT_HEADER)  # fall back to A: journal-2 is needed
    damaged = segment(tmp_path, 2)
    flip_byte(damaged, damaged.stat().st_size // 2)

    with pytest.raises(JournalCorruptError, match=damaged.name) as info:
        FileJournal(str(tmp_path)).recover()
    assert info.value.path == str(damaged)
    assert snapshot(tmp_path, 5).exists()  # a refused recovery changes nothing


def test_a_second_journal_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    first, _ = open_journal(tmp_path)
    second = FileJournal(str(tmp_path))
    with pytest.raises(BlockingIOError, match="in use"):
        second.recover()
    first.close()
    assert second.recover() == Recovered(None, [], [])
    second.close()


def test_misuse_is_refused(tmp_path: Path) -> None:
    journal = FileJournal(str(tmp_path))
    with pytest.raises(RuntimeError):
        journal.append(b"too early")
    journal.recover()
    with pytest.raises(RuntimeError):
        journal.recover()
    journal.sync(0)
    with pytest.raises(ValueError):
        journal.sync(1)
    journal.append(b"a")
    journal.close()
    journal.sync(1)  # durable already
    with pytest.raises(ValueError):
        journal.append(b"too late")


# -- group commit and I/O errors --------------------------------------------------------------


def test_records_appended_during_an_fsync_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal, _ = open_journal(tmp_path)
    real_fsync = os.fsync
    calls: list[int] = []
    in_first_fsync, release_first_fsync = threading.Event(), threading.Event()
    appended = threading.Semaphore(0)

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            in_first_fsync.set()
            assert release_first_fsync.wait(60)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    def writer(i: int) -> Callable[[], None]:
        def run() -> None:
            seq = journal.append(b"%d" % i)
            appended.release()
            journal.sync(seq)

        return run

    nested_errors: list[BaseException] = []

    def others() -> None:
        assert in_first_fsync.wait(60)
        nested_errors.extend(run_threads([writer(i) for i in range(1, 8)]))

    def release() -> None:
        for _ in range(8):
            assert appended.acquire(timeout=60)
        release_first_fsync.set()

    assert run_threads([writer(0), others, release]) == []
    assert nested_errors == []
    assert len(calls) == 2  # one for record 1, one shared by the seven appended meanwhile
    journal.close()
    journal, recovered = open_journal(tmp_path)
    assert sorted(recovered.records) == [b"%d" % i for i in range(8)]
    journal.close()


def test_group_commit_under_contention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads, per_thread = 8, 500
    journal, _ = open_journal(tmp_path)
    real_fsync = os.fsync
    fsyncs = 0

    def counting_fsync(fd: int) -> None:
        nonlocal fsyncs
        fsyncs += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    start = threading.Barrier(threads)

    def writer(t: int) -> Callable[[], None]:
        def run() -> None:
            start.wait(60)
            for i in range(per_thread):
                journal.sync(journal.append(b"%d:%d" % (t, i)))

        return run

    assert run_threads([writer(t) for t in range(threads)]) == []
    journal.close()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert fsyncs < threads * per_thread

    journal, recovered = open_journal(tmp_path)
    journal.close()
    assert len(recovered.records) == threads * per_thread
    by_thread: dict[int, list[int]] = {}
    for record in recovered.records:
        t, i = map(int, record.split(b":"))
        by_thread.setdefault(t, []).append(i)
    assert by_thread == {t: list(range(per_thread)) for t in range(threads)}


def test_an_fsync_error_breaks_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal, _ = open_journal(tmp_path)
    append_all(journal, [b"durable"])
    in_fsync, fail_fsync = threading.Event(), threading.Event()
    appended = threading.Semaphore(0)

    def failing_fsync(fd: int) -> None:
        in_fsync.set()
        assert fail_fsync.wait(60)
        raise OSError(errno.EIO, "simulated disk failure")

    monkeypatch.setattr(os, "fsync", failing_fsync)

    def leader() -> None:
        journal.sync(journal.append(b"lost"))

    def waiter() -> None:
        assert in_fsync.wait(60)
        seq = journal.append(b"waiting")
        appended.release()
        journal.sync(seq)

    def release() -> None:
        for _ in range(3):
            assert appended.acquire(timeout=60)
        fail_fsync.set()

    errors = run_threads([leader, waiter, waiter, waiter, release])
    assert len(errors) == 4
    assert all(isinstance(e, OSError) and e.errno == errno.EIO for e in errors)
    for later in (lambda: journal.sync(1), lambda: journal.append(b"more")):
        with pytest.raises(OSError, match="simulated disk failure"):
            later()
    with pytest.raises(OSError):
        journal.write_snapshot(b"state")
    journal.close()  # releases the directory without writing

    monkeypatch.undo()
    journal, recovered = open_journal(tmp_path)
    journal.close()
    assert recovered.records[0] == b"durable"


# -- the in-memory journal --------------------------------------------------------------------


def test_memory_journal() -> None:
    journal = MemoryJournal()
    with pytest.raises(RuntimeError):
        journal.append(b"too early")
    assert journal.recover() == Recovered(None, [], [])
    with pytest.raises(RuntimeError):
        journal.recover()
    assert [journal.append(b"r%d" % i) for i in range(3)] == [1, 2, 3]
    journal.sync(3)
    with pytest.raises(ValueError):
        journal.sync(4)
    assert journal.records_since_snapshot() == 3
    journal.write_snapshot(b"state")
    assert journal.records_since_snapshot() == 0
    assert journal.append(b"r3") == 4
    assert journal.records_since_snapshot() == 1
    journal.close()
    journal.close()
    with pytest.raises(ValueError):
        journal.append(b"too late")


def test_both_journals_satisfy_the_protocol(tmp_path: Path) -> None:
    journals: list[Journal] = [MemoryJournal(), FileJournal(str(tmp_path))]
    for journal in journals:
        journal.recover()
        append_all(journal, [b"a", b"b"])
        assert journal.records_since_snapshot() == 2
        journal.close()


def test_the_event_codec_gives_back_every_kind_of_durable_event() -> None:
    import marshal
    import pickle

    from mapreduce.core import events as ev
    from mapreduce.core.spec import InputSplit, JobSpec
    from mapreduce.core.tasks import TaskKind, TaskStats
    from mapreduce.master import codec

    ref = ev.AttemptRef("job-1", TaskKind.REDUCE, 7, 2)
    stats = TaskStats(1, 2, 3, 4, 5, 0.25, {"words": 9})
    spec = JobSpec("job-1", "wc.py", splits=(InputSplit("/in/a", 0, 10),), output="/out")
    events: list[ev.Event] = [
        ev.MasterStarted(1.0, 3),
        ev.JobSubmitted(1.0, spec),
        ev.JobSubmitted(1.0, spec, output_at_turn=True),
        ev.JobStarted(1.0, "job-1"),
        ev.JobStartFailed(1.0, "job-1", "--output /out is in use"),
        ev.JobCancelled(1.0, "job-1"),
        ev.JobCommitted(1.0, "job-1"),
        ev.JobCommitFailed(1.0, "job-1", "disk full"),
        ev.WorkerRegistered(
            1.0, "w", "i", "h:1", 2, True, (ev.MapOutputRef("job-1", 0, 1),), (ref,)
        ),
        ev.WorkerExpired(1.0, "w", "i", "silent"),
        ev.AttemptStalled(1.0, ref, "no progress"),
        ev.TaskRequested(1.5, "w", "i", 2),
        ev.MapTaskSucceeded(1.5, "w", "i", ev.AttemptRef("job-1", TaskKind.MAP, 0, 0), stats),
        ev.ReduceCommitRequested(1.5, "w", "i", ref),
        ev.ReduceTaskSucceeded(1.5, "w", "i", ref, stats, True),
        ev.TaskFailed(1.5, "w", "i", ref, "ValueError: x", "/in/a@3", "Traceback...", True),
        ev.TaskFailed(1.5, "w", "i", ref, "OSError: disk full", "", "", False, True),
        ev.TaskFailed(1.5, "w", "i", ref, "ValueError: x", "3", "tb", label="/in/a@3"),
        ev.FetchFailed(1.5, "w", "i", ref, 3, 1),
    ]
    for event in events:
        assert codec.decode(codec.encode(event)) == event
    # records of an older journal, without the newer fields, read back with their defaults
    flat = (4, 1.5, "w", "i", ("job-1", "reduce", 7, 2), "ValueError: x", "", "tb", False)
    assert codec.decode(b"M" + marshal.dumps(flat)) == ev.TaskFailed(
        1.5, "w", "i", ref, "ValueError: x", "", "tb", False
    )
    flat = (4, 1.5, "w", "i", ("job-1", "reduce", 7, 2), "/in/a@3: ValueError: x", "3", "", 0, 0)
    assert codec.decode(b"M" + marshal.dumps(flat)) == ev.TaskFailed(
        1.5, "w", "i", ref, "/in/a@3: ValueError: x", "3"
    )  # before failures carried their record's label
    old = ev.JobSubmitted(1.0, spec, output_at_turn=True)
    object.__delattr__(old, "output_at_turn")  # as pickled before the field existed
    assert codec.decode(b"P" + pickle.dumps(old)) == ev.JobSubmitted(1.0, spec)
    with pytest.raises(ValueError, match="unknown journal record"):
        codec.decode(b"Xjunk")
