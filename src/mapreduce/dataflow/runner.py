"""The task runners: :func:`run_map_task` and :func:`run_reduce_task`.

These are the only code that runs a job's map, combine and reduce functions.
The sequential runner (:mod:`mapreduce.local`) calls them in-process, one
task after the other; a worker calls the very same functions, so the two
produce the same bytes.

A runner executes one *attempt* of one task.  When user code raises on a
record, the attempt stops with :class:`RecordFailure`, which names the
record; the caller decides whether the next attempt skips it (the paper's
section 4.6) or whether the job fails.  A runner never commits anything: a
map task leaves its R partition runs in its work directory, a reduce task
writes its output to the path it is given, and the caller commits.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import inspect
import itertools
import json
import operator
import os
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, ParamSpec, TypeVar, cast

from mapreduce import context
from mapreduce.core.spec import InputSplit, JobSpec
from mapreduce.core.tasks import MAX_COUNTER_NAME, MAX_COUNTERS
from mapreduce.dataflow.formats import Batch, read_batches
from mapreduce.dataflow.keys import STR_TAG, decode_key
from mapreduce.dataflow.partition import HashPartitioner, RangeCuts, make_partitioner
from mapreduce.dataflow.records import (
    CorruptRunError,
    Group,
    read_blocks,
    read_pairs,
    read_run,
    write_run,
    write_str_run,
)
from mapreduce.dataflow.sort import (
    NotPassthrough,
    StrPairs,
    combine_sorted_pairs,
    grouped_values,
    grouped_values_in_memory,
    merge_run_files,
    partition_and_sort,
    passes_values_through,
    passthrough_lines,
    sort_str_pairs,
)
from mapreduce.errors import BadRecordError
from mapreduce.jobfile import Job, load_job

#: Rough per-entry overheads (bytes) of the map buffer's dict slot and list.
_KEY_OVERHEAD = 120
_VALUE_OVERHEAD = 8
#: The same for a pair in a list of pairs: the tuple and the list's pointer.
_PAIR_OVERHEAD = 72
#: How many buffer entries the size estimate samples.
_SAMPLE = 16
#: Bounds, in records, of the interval between two checks of the map buffer's size.
_MIN_CHECK = 16
_MAX_CHECK = 65536
#: How many new container objects a map task lets pile up before it collects cycles, at
#: least: or twice its buffer's entries, when that is more (:meth:`_MapBuffer.check`).
_YOUNG_OBJECTS = 200_000
#: The most records mapped between two progress reports (and checks of the buffer).
_CHUNK = 1024
#: The most keys reduced between two progress reports.
_KEYS_PER_REPORT = 256
#: Progress reports are this many seconds apart at most, unless one record or key takes longer.
_REPORT_SECONDS = 0.5
#: Output lines a reduce task writes at once.
_LINES_PER_WRITE = 4096
_STR_TAG_BYTE = STR_TAG[0]
#: How many times its serialised size a reduce task's input takes in memory, at most.
_IN_MEMORY_FACTOR = 8


@dataclass(frozen=True)
class TaskResult:
    """What one successful attempt produced.

    Attributes:
        task_id: ``map-00003`` or ``reduce-00001``.
        attempt: the attempt number.
        outputs: a map task's R partition run files, or a reduce task's output file.
        output_sizes: the size in bytes of each of ``outputs``.
        input_records: records read (map) or values reduced (reduce).
        input_bytes: bytes of input read.
        output_records: pairs emitted after combining (map) or lines written (reduce).
        output_bytes: bytes written.
        counters: user counters incremented by this attempt.
        spills: how many times a map task spilled its buffer to disk.
        seconds: wall time of the attempt.
    """

    task_id: str
    attempt: int
    outputs: tuple[str, ...]
    output_sizes: tuple[int, ...]
    input_records: int
    input_bytes: int
    output_records: int
    output_bytes: int
    counters: dict[str, int]
    spills: int
    seconds: float


class RecordFailure(Exception):
    """User code (or input decoding) failed on one record; the attempt is over.

    Attributes:
        record_id: what identifies the record for skipping: the byte offset of a
            map input record, or the key bytes of a reduce key group.
        label: a human-readable location: ``path@offset`` or ``key=...``.
        reason: one line describing the error.
        traceback: the formatted traceback (empty for decoding errors).
    """

    def __init__(self, record_id: int | bytes, label: str, reason: str, tb: str) -> None:
        super().__init__(f"{label}: {reason}")
        self.record_id = record_id
        self.label = label
        self.reason = reason
        self.traceback = tb

    @property
    def record_key(self) -> str:
        """The record's id as the skip policy and the master name it: the offset in
        decimal, or the key's bytes in hex."""
        if isinstance(self.record_id, bytes):
            return self.record_id.hex()
        return str(self.record_id)


class TaskError(Exception):
    """The attempt failed outside any one record (a bad key type, a failing combiner).

    Attributes:
        reason: one line describing the error.
        traceback: the formatted traceback.
    """

    def __init__(self, reason: str, tb: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.traceback = tb


class InfrastructureError(TaskError):
    """The machine failed the attempt, not its data: a full disk, an I/O error, too many
    open files.  Never blamed on a record (so never a reason to skip one).

    Attributes:
        errno: the ``errno`` of the :class:`OSError` behind it.
    """

    def __init__(self, reason: str, tb: str, number: int) -> None:
        super().__init__(reason, tb)
        self.errno = number


#: ``errno`` values that mean the machine failed, not the record or the code.
INFRASTRUCTURE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EMFILE, errno.ENFILE}
)
#: Of those, the ones that say a disk is full or failing.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


def infrastructure_errno(exc: BaseException | None) -> int | None:
    """The errno if ``exc``, or an exception it was raised from or while handling, is an
    :class:`OSError` of :data:`INFRASTRUCTURE_ERRNOS`; else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in INFRASTRUCTURE_ERRNOS:
            return exc.errno
        if isinstance(exc, InfrastructureError):
            return exc.errno
        exc = exc.__cause__ or exc.__context__
    return None


def _infrastructure(exc: BaseException) -> InfrastructureError | None:
    number = infrastructure_errno(exc)
    if number is None:
        return None
    if isinstance(exc, InfrastructureError):
        return exc
    root: BaseException | None = exc
    while root is not None and not isinstance(root, OSError):
        root = root.__cause__ or root.__context__
    # No traceback: the machine failed, not the code; the reason says how.
    return InfrastructureError(_describe(root or exc), "", number)


P = ParamSpec("P")
R = TypeVar("R")


def _infrastructure_classified(run: Callable[P, R]) -> Callable[P, R]:
    """A task runner whose failures caused by the machine (a full disk, an I/O error, too
    many open files: anywhere, in user code too) are :class:`InfrastructureError`,
    never a :class:`RecordFailure`; other :class:`OSError` are a :class:`TaskError`."""

    @functools.wraps(run)
    def classified(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return run(*args, **kwargs)
        except (TaskError, RecordFailure, OSError) as exc:
            infrastructure = _infrastructure(exc)
            if infrastructure is not None and infrastructure is not exc:
                raise infrastructure from exc
            if isinstance(exc, OSError):
                raise TaskError(_describe(exc), _user_traceback(exc)) from exc
            raise

    return classified


def _checked_counters(counters: Counter[str]) -> dict[str, int]:
    """The attempt's counters, within what a master accepts in a report."""
    if len(counters) > MAX_COUNTERS:
        raise TaskError(
            f"the task made {len(counters)} distinct counters; at most {MAX_COUNTERS}", ""
        )
    for name in counters:
        if len(name) > MAX_COUNTER_NAME:
            raise TaskError(
                f"counter name {name[:60]!r}... is longer than {MAX_COUNTER_NAME} characters", ""
            )
    return dict(counters)


def map_task_id(index: int) -> str:
    return f"map-{index:05d}"


def reduce_task_id(partition: int) -> str:
    return f"reduce-{partition:05d}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _user_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def format_field(value: Any) -> str:
    """How a key or value is written to an output line: str as-is, others as JSON."""
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)  # as json.dumps writes it, faster
    if type(value) is bytes:
        return value.decode("utf-8", "backslashreplace")
    return json.dumps(value, ensure_ascii=False)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's automatic cyclic garbage collection while a task runs.

    A task allocates millions of short container objects (pairs, keys, value
    lists) that the reference counts free; the automatic collector would
    traverse them over and over (measured: a fifth of a word-count map task).
    A map task still collects the cycles user code leaves behind: when it checks
    its buffer and more than :data:`_YOUNG_OBJECTS` objects, and more than twice the
    buffer's entries, were made since and are still alive.  (Each collection traverses
    every young object still alive, the buffer's pairs included: with a bound that grows
    with the buffer, a buffer's pairs are not traversed at all unless other objects pile
    up as fast, and what cyclic garbage can pile up stays within the buffer's own size.)
    Every object that is not in a cycle is freed as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


#: In a process that ends after its task (:func:`ending_with_the_process`), the map
#: buffers kept until the exit; None in any other.
_kept_until_exit: list[MapOutput] | None = None


def ending_with_the_process() -> None:
    """Say that this process ends (with ``os._exit``) after the task it runs next, as a
    worker's task process does: a map task then leaves its buffer to the exit instead
    of freeing its pairs one by one (a tenth of a sort map task's CPU)."""
    global _kept_until_exit
    _kept_until_exit = []


def _let_go(buffer: MapOutput) -> None:
    """Let go of a map task's buffer while the collector is still paused (its first
    collection would traverse every pair still alive): freed now, or, in a process
    that ends after the task, kept and hidden from the collector (:func:`gc.freeze`)."""
    if _kept_until_exit is not None:
        _kept_until_exit.append(buffer)
        gc.freeze()
    else:
        buffer.clear()


def _setup(job: Job) -> None:
    """Run the job's ``setup()`` before a task's first record."""
    if job.setup_fn is None:
        return
    try:
        job.setup_fn()
    except Exception as exc:
        raise TaskError(f"setup() failed: {_describe(exc)}", _user_traceback(exc)) from exc


class _MapBuffer:
    """The map task's in-memory output, grouped by key, and its spills."""

    def __init__(self, job: Job, spec: JobSpec, workdir: str) -> None:
        self.job = job
        self.spec = spec
        self.workdir = workdir
        self.partitioner = make_partitioner(
            spec.num_reducers,
            job.partition_fn,
            list(spec.boundaries) if spec.boundaries is not None else None,
        )
        self.combine_fn = job.combine_fn if spec.use_combiner else None
        #: With the default or a range partitioner, output is kept as a list of pairs
        #: (sorted when written, the combiner then run on each key with several
        #: values), not a dictionary of lists: for ``map`` with no combiner, and for
        #: ``map_split``, whose pairs are mostly combined in the mapper already.
        self.flat = (self.combine_fn is None or job.map_split_fn is not None) and isinstance(
            self.partitioner, HashPartitioner | RangeCuts
        )
        self.spill_files: list[list[str]] = []
        #: Whether a key of the pairs buffered since the last spill is not a ``str``
        #: (:func:`_check_pairs` tells, a chunk at a time).
        self.other_keys = False
        self._records_at_check = 0
        self._size_after_check = 0

    def estimate(self, buffer: dict[Any, list[Any]]) -> int:
        """Approximate bytes held by ``buffer``: counts exactly, sizes from a sample."""
        if not buffer:
            return 0
        values = sum(map(len, buffer.values()))
        sample = list(itertools.islice(buffer.items(), _SAMPLE))
        getsizeof = sys.getsizeof
        key_size = sum(getsizeof(k) for k, _vs in sample) / len(sample)
        value_size = sum(getsizeof(vs[-1]) for _k, vs in sample if vs) / len(sample)
        return int(
            len(buffer) * (key_size + _KEY_OVERHEAD) + values * (value_size + _VALUE_OVERHEAD)
        )

    def estimate_pairs(self, pairs: list[tuple[Any, Any]]) -> int:
        """Approximate bytes held by a list of pairs: sizes from a sample of its end."""
        if not pairs:
            return 0
        sample = pairs[-_SAMPLE:]
        getsizeof = sys.getsizeof
        pair_size = sum(getsizeof(k) + getsizeof(v) for k, v in sample) / len(sample)
        return int(len(pairs) * (pair_size + _PAIR_OVERHEAD))

    def check(self, buffer: MapOutput, records: int) -> tuple[bool, int]:
        """Combine or spill ``buffer`` if it outgrew the budget.

        Returns:
            whether the buffer was spilled (the caller starts a new one), and the
            record count at which to check again, chosen so that the buffer grows
            by about a quarter of the headroom left until then.
        """
        # collect cycles made since (_collector_paused)
        if gc.get_count()[0] > max(_YOUNG_OBJECTS, 2 * len(buffer)):
            gc.collect(0)
        limit = self.spec.memory_bytes
        size = self.estimate_pairs(buffer) if isinstance(buffer, list) else self.estimate(buffer)
        growth = (size - self._size_after_check) / max(1, records - self._records_at_check)
        spilled = False
        if size > limit:
            if self.combine_fn is not None and isinstance(buffer, dict):
                self.combine_in_place(buffer)
                size = self.estimate(buffer)
            if size > limit // 2:
                self.spill(buffer)
                spilled = True
                size = 0
        self._records_at_check, self._size_after_check = records, size
        interval = int((limit - size) / 4 / max(growth, 1.0))
        return spilled, records + min(max(interval, _MIN_CHECK), _MAX_CHECK)

    def sorted_parts(self, buffer: MapOutput) -> list[list[Group] | StrPairs]:
        """The buffer's R partitions, sorted: groups, or pairs sorted by ``str`` keys."""
        try:
            if isinstance(buffer, list):
                parts = sort_str_pairs(
                    buffer, self.partitioner, self.spec.num_reducers, checked=not self.other_keys
                )
                if parts is not None:
                    if self.combine_fn is None:
                        return [*parts]
                    return [combine_sorted_pairs(*part, self.combine_fn) for part in parts]
                grouped: defaultdict[Any, list[Any]] = defaultdict(list)
                for k, v in buffer:
                    grouped[k].append(v)
                buffer = grouped
            return [
                *partition_and_sort(
                    buffer, self.partitioner, self.spec.num_reducers, self.combine_fn
                )
            ]
        except Exception as exc:
            raise TaskError(_describe(exc), _user_traceback(exc)) from exc

    def combine_in_place(self, buffer: dict[Any, list[Any]]) -> None:
        combine = self.combine_fn
        assert combine is not None
        try:
            for key, values in buffer.items():
                if len(values) > 1:
                    buffer[key] = list(combine(key, iter(values)))
        except Exception as exc:
            raise TaskError(_describe(exc), _user_traceback(exc)) from exc

    def spill(self, buffer: MapOutput) -> None:
        number = len(self.spill_files)
        paths = []
        for part, groups in enumerate(self.sorted_parts(buffer)):
            path = os.path.join(self.workdir, f"spill-{number:04d}-part-{part:05d}.run")
            _write_part(path, groups)
            paths.append(path)
        self.spill_files.append(paths)
        self.other_keys = False  # the caller starts a new buffer

    def finish(self, buffer: MapOutput) -> tuple[list[str], list[int], int]:
        """Write the final run of every partition; return paths, sizes and records."""
        paths, sizes, records = [], [], 0
        if self.spill_files:
            if buffer:
                self.spill(buffer)
            for part in range(self.spec.num_reducers):
                path = os.path.join(self.workdir, f"part-{part:05d}.run")
                inputs = [spill[part] for spill in self.spill_files]
                try:
                    size, count = merge_run_files(inputs, path, self.combine_fn)
                except Exception as exc:
                    raise TaskError(_describe(exc), _user_traceback(exc)) from exc
                paths.append(path)
                sizes.append(size)
                records += count
            return paths, sizes, records
        for part, groups in enumerate(self.sorted_parts(buffer)):
            path = os.path.join(self.workdir, f"part-{part:05d}.run")
            size, count = _write_part(path, groups)
            paths.append(path)
            sizes.append(size)
            records += count
        return paths, sizes, records


def _write_part(path: str, part: list[Group] | StrPairs) -> tuple[int, int]:
    """Write one sorted partition as a run file; return its bytes and records."""
    if isinstance(part, tuple):
        return write_str_run(path, *part)
    return write_run(path, part)


#: A map task's buffer: a dictionary of each key's values, or a list of pairs
#: (:attr:`_MapBuffer.flat`).
MapOutput = dict[Any, list[Any]] | list[tuple[Any, Any]]

_not_none = functools.partial(operator.is_not, None)
_first = operator.itemgetter(0)


def _check_pairs(pairs: list[tuple[Any, Any]], start: int) -> bool:
    """Make ``pairs[start:]`` 2-tuples, as ``for k, v in ...`` unpacks them, raising as
    it would on an item that is not a pair, or as a dictionary would on an unhashable
    key (checked in C when all are tuples of 2 with ``str`` keys).  Returns whether
    every new key is a ``str``."""
    new = pairs[start:]
    if not new:
        return True
    if set(map(type, new)) != {tuple} or set(map(len, new)) != {2}:
        new = [(k, v) for k, v in new]
        pairs[start:] = new
    if set(map(type, map(_first, new))) != {str}:
        set(map(_first, new))  # TypeError if unhashable
        return False
    return True


def _emitted(
    map_fn: Callable[[Any, Any], Any], keys: Sequence[Any], values: list[Any], generator: bool
) -> Iterator[Any]:
    """Every pair ``map`` emits for these records, in order.

    The records are handed to ``map`` and its results iterated by C code
    (``map``, ``filter``, ``chain``), so the only Python code that runs per
    record is the user's.  A ``map`` that is a ``generator`` function never
    returns None, so its results need no filter.
    """
    results = map(map_fn, keys, values)
    return itertools.chain.from_iterable(results if generator else filter(_not_none, results))


class _Pacer:
    """How many records (or keys) to handle before the next progress report.

    Starts at one and doubles while reports come quickly, up to ``most``; halves
    when one took longer than :data:`_REPORT_SECONDS`.  Slow user code thus
    still reports often enough for a task timeout, fast code rarely.
    """

    def __init__(self, most: int) -> None:
        self.most = most
        self.size = 1
        self._last = time.monotonic()

    def reported(self) -> int:
        """Call after a report: the number of items until the next one."""
        now = time.monotonic()
        took, self._last = now - self._last, now
        if took > _REPORT_SECONDS:
            self.size = max(1, self.size // 2)
        elif took < _REPORT_SECONDS / 8:
            self.size = min(self.most, self.size * 2)
        return self.size


def _failing_record(
    map_fn: Callable[[Any, Any], Any],
    split: InputSplit,
    offsets: list[int],
    keys: Sequence[Any],
    values: list[Any],
    exc: Exception,
) -> Exception:
    """The :class:`RecordFailure` of the record of a chunk that made mapping it raise ``exc``.

    The chunk is mapped again one record at a time, into a scratch buffer, to find
    the record (the attempt is over either way).  User code that does not fail
    again is not deterministic: the attempt fails with a :class:`TaskError`.
    """
    scratch: defaultdict[Any, list[Any]] = defaultdict(list)
    for offset, key, value in zip(offsets, keys, values, strict=True):
        try:
            out = map_fn(key, value)
            if out is not None:
                for k, v in out:
                    scratch[k].append(v)
        except Exception as again:
            return RecordFailure(
                offset, f"{split.path}@{offset}", _describe(again), _user_traceback(again)
            )
    return TaskError(
        f"map failed on a record of {split.path}@{offsets[0]}.. but not when run again: "
        + _describe(exc),
        _user_traceback(exc),
    )


@_infrastructure_classified
def run_map_task(
    spec: JobSpec,
    job_file: str,
    index: int,
    split: InputSplit,
    workdir: str,
    *,
    attempt: int = 0,
    worker: str = "local",
    skip: frozenset[int] = frozenset(),
    progress: Callable[[], None] | None = None,
) -> TaskResult:
    """Run one attempt of map task ``index`` over ``split``.

    Writes ``workdir/part-NNNNN.run`` for each of the R partitions (``workdir``
    must exist and be private to this attempt).  ``progress`` is called at least
    every :data:`_REPORT_SECONDS` (unless one record takes longer) and at most
    every 1,024 records, so a supervisor can tell a slow task from a stuck one.

    Raises:
        RecordFailure: ``map`` raised on a record, or a record could not be decoded.
        TaskError: the attempt failed outside a record; an :class:`InfrastructureError`
            when the machine failed it (a full disk, an I/O error, too many open files).
    """
    started = time.monotonic()
    job = load_job(job_file)
    task_id = map_task_id(index)
    counters: Counter[str] = Counter()
    task = context.TaskContext(
        spec.job_id, task_id, "map", index, attempt, worker, spec.num_reducers
    )
    buffers = _MapBuffer(job, spec, workdir)
    buffer: MapOutput
    with context.activated(task, spec.params, counters), _collector_paused():
        _setup(job)
        try:
            if job.map_split_fn is not None:
                whole = WHOLE_SPLIT in skip
                batches = (
                    []
                    if whole
                    else read_batches(split, spec.input_format, skip, spec.storage_options)
                )
                records, buffer = _map_whole_split(
                    job.map_split_fn, split, batches, buffers, progress
                )
            else:
                assert job.map_fn is not None
                records, buffer = _map_records(job.map_fn, split, spec, skip, buffers, progress)
        except (TaskError, RecordFailure, KeyboardInterrupt):
            raise
        except OSError as exc:  # a disk or an input file, not the record's fault
            raise TaskError(_describe(exc), _user_traceback(exc)) from exc
        except BadRecordError as exc:
            raise RecordFailure(exc.offset, f"{exc.path}@{exc.offset}", exc.reason, "") from exc
        paths, sizes, out_records = buffers.finish(buffer)
        _let_go(buffer)
    return TaskResult(
        task_id=task_id,
        attempt=attempt,
        outputs=tuple(paths),
        output_sizes=tuple(sizes),
        input_records=records,
        input_bytes=split.end - split.start,
        output_records=out_records,
        output_bytes=sum(sizes),
        counters=_checked_counters(counters),
        spills=len(buffers.spill_files),
        seconds=time.monotonic() - started,
    )


def _map_records(
    map_fn: Callable[[Any, Any], Any],
    split: InputSplit,
    spec: JobSpec,
    skip: frozenset[int],
    buffers: _MapBuffer,
    progress: Callable[[], None] | None,
) -> tuple[int, MapOutput]:
    """Call ``map`` on every record of ``split`` (but those in ``skip``), a chunk of records
    at a time; buffer the pairs.  Returns the records read and the buffer."""
    generator = inspect.isgeneratorfunction(map_fn)
    buffer: defaultdict[Any, list[Any]] = defaultdict(list)
    pairs: list[tuple[Any, Any]] = []  # instead of buffer, when buffers.flat
    flat = buffers.flat
    records = 0
    next_check = _MIN_CHECK
    pacer = _Pacer(_CHUNK)
    chunk = pacer.size
    batches = read_batches(split, spec.input_format, skip, spec.storage_options)
    for offsets, keys, values in batches:
        start, size = 0, len(keys)
        while start < size:
            # a chunk ends where the buffer's size is due to be checked
            stop = min(size, start + max(1, min(chunk, next_check - records)))
            chunk_keys, chunk_values = keys[start:stop], values[start:stop]
            try:
                if flat:
                    mark = len(pairs)
                    pairs.extend(_emitted(map_fn, chunk_keys, chunk_values, generator))
                    buffers.other_keys |= not _check_pairs(pairs, mark)
                else:
                    for k, v in _emitted(map_fn, chunk_keys, chunk_values, generator):
                        buffer[k].append(v)
            except (TaskError, KeyboardInterrupt, OSError):
                raise
            except Exception as exc:
                raise _failing_record(
                    map_fn, split, offsets[start:stop], chunk_keys, chunk_values, exc
                ) from exc
            records += stop - start
            start = stop
            if progress is not None:
                progress()
            chunk = pacer.reported()
            if records >= next_check:
                spilled, next_check = buffers.check(pairs if flat else buffer, records)
                if spilled:
                    buffer = defaultdict(list)
                    pairs = []
    return records, (pairs if flat else buffer)


#: The record id that stands for a whole split in a ``map_split`` job: user code that
#: fails there is blamed on the split, and skipping it skips the split.
WHOLE_SPLIT = -1


def _map_whole_split(
    map_split: Callable[[Iterator[tuple[Any, Any]]], Any],
    split: InputSplit,
    batches: Iterable[Batch],
    buffers: _MapBuffer,
    progress: Callable[[], None] | None,
) -> tuple[int, MapOutput]:
    """Call ``map_split`` once with every record of ``split``; buffer the pairs it gives
    (as :func:`_map_records` does: a list of pairs when ``buffers.flat``).

    Records are counted, and progress reported, a batch (a block of input) at a
    time; the buffer is checked (combined, spilled) as the pairs come.  Returns the
    records read and the buffer.
    """
    read = [0]

    def counted() -> Iterator[tuple[Sequence[Any], list[Any]]]:
        for _offsets, keys, values in batches:
            read[0] += len(keys)
            yield keys, values
            if progress is not None:
                progress()

    def records() -> Iterator[tuple[Any, Any]]:
        # a batch at a time in Python; its records are handed over by C code (zip, chain)
        return itertools.chain.from_iterable(itertools.starmap(zip, counted()))

    buffer: defaultdict[Any, list[Any]] = defaultdict(list)
    flat: list[tuple[Any, Any]] = []  # instead of buffer, when buffers.flat
    emitted, next_check = 0, _MIN_CHECK
    try:
        emitting = iter(map_split(records()) or ())
        while True:
            chunk = list(itertools.islice(emitting, max(1, next_check - emitted)))
            if not chunk:
                break
            if buffers.flat:
                flat.extend(chunk)
                buffers.other_keys |= not _check_pairs(flat, len(flat) - len(chunk))
            else:
                for k, v in chunk:
                    buffer[k].append(v)
            emitted += len(chunk)
            if emitted >= next_check:
                spilled, next_check = buffers.check(flat if buffers.flat else buffer, emitted)
                if spilled:
                    buffer = defaultdict(list)
                    flat = []
    except (TaskError, KeyboardInterrupt, OSError, BadRecordError):
        raise
    except Exception as exc:
        raise RecordFailure(
            WHOLE_SPLIT,
            f"{split.path}@{split.start} (the whole split: map_split)",
            _describe(exc),
            _user_traceback(exc),
        ) from exc
    return read[0], (flat if buffers.flat else buffer)


class _Counted:
    """Counts the values that go through the reducers' iterators, group by group."""

    def __init__(self) -> None:
        self.values = 0

    def groups(self, runs: list[Iterator[Group]]) -> Iterator[Iterable[Group]]:
        for run in runs:
            yield self._count(run)

    def _count(self, run: Iterator[Group]) -> Iterator[Group]:
        for key_bytes, values in run:
            self.values += len(values)
            yield key_bytes, values


def _write_passthrough(
    runs: list[str], out: BinaryIO, progress: Callable[[], None] | None
) -> tuple[bool, int]:
    """Write the output of a reduce that yields every value as it is (see
    :func:`~mapreduce.dataflow.sort.passes_values_through`), without a Python call per
    record: the merged runs' keys and values, when they are all ``str``, are the lines.

    Returns:
        whether it did (else nothing is written: some key or value is not a ``str``,
        or not valid UTF-8, and the caller reduces the usual way), and the lines written.
    """
    lines = 0
    try:
        for text, count in passthrough_lines([read_blocks(path) for path in runs]):
            out.write(text)
            lines += count
            if progress is not None:
                progress()
    except NotPassthrough:
        out.seek(0)
        out.truncate(0)
        return False, 0
    return True, lines


@_infrastructure_classified
def run_reduce_task(
    spec: JobSpec,
    job_file: str,
    partition: int,
    runs: list[str],
    out_path: str,
    *,
    attempt: int = 0,
    worker: str = "local",
    skip: frozenset[bytes] = frozenset(),
    progress: Callable[[], None] | None = None,
) -> TaskResult:
    """Run one attempt of reduce task ``partition``.

    Merges the sorted ``runs`` (the partition's run from every map task, in map
    task order), calls ``reduce`` once per distinct key in increasing key order
    and writes ``key<TAB>value`` lines to ``out_path``.

    Raises:
        RecordFailure: ``reduce`` raised on a key group.
        TaskError: the attempt failed outside a key group (a corrupt run); an
            :class:`InfrastructureError` when the machine failed it (a full disk...).
    """
    started = time.monotonic()
    job = load_job(job_file)
    reduce_fn = job.reduce_fn
    task_id = reduce_task_id(partition)
    counters: Counter[str] = Counter()
    task = context.TaskContext(
        spec.job_id, task_id, "reduce", partition, attempt, worker, spec.num_reducers
    )
    counted = _Counted()
    lines = 0
    input_bytes = sum(os.path.getsize(p) for p in runs)
    key: Any = None
    with (
        context.activated(task, spec.params, counters),
        _collector_paused(),
        open(out_path, "w", encoding="utf-8", newline="\n") as out,
    ):
        write = out.write
        _setup(job)
        key_bytes = b""
        try:
            passed = False
            groups: Iterator[tuple[bytes, Iterator[Any]]]
            if runs and not skip and passes_values_through(reduce_fn):
                passed, lines = _write_passthrough(runs, cast(BinaryIO, out.buffer), progress)
                counted.values = lines
            if passed:
                groups = iter(())
            # Runs that fit the memory budget together (unpickled objects take several
            # times their serialised size) are grouped in a table, others merged.
            elif input_bytes * _IN_MEMORY_FACTOR <= spec.memory_bytes:
                counted.values, groups = grouped_values_in_memory([read_pairs(p) for p in runs])
            else:
                groups = grouped_values(list(counted.groups([read_run(p) for p in runs])))
            pending: list[str] = []  # output lines, written a batch at a time
            pacer = _Pacer(_KEYS_PER_REPORT)
            keys, report_at = 0, 1
            for key_bytes, values in groups:
                keys += 1
                if keys >= report_at:
                    if progress is not None:
                        progress()
                    report_at = keys + pacer.reported()
                if skip and key_bytes in skip:
                    continue
                # str keys and values, the common case, inline (see decode_key, format_field)
                if key_bytes[0] == _STR_TAG_BYTE:
                    key = key_bytes[1:].decode("utf-8", "surrogatepass")
                    prefix = key + "\t"
                else:
                    key = decode_key(key_bytes)
                    prefix = format_field(key) + "\t"
                for value in reduce_fn(key, values):
                    pending.append(prefix + (value if type(value) is str else format_field(value)))
                if len(pending) >= _LINES_PER_WRITE:
                    write("\n".join(pending) + "\n")
                    lines += len(pending)
                    pending.clear()
            if pending:
                write("\n".join(pending) + "\n")
                lines += len(pending)
        except KeyboardInterrupt:
            raise
        except CorruptRunError as exc:
            raise TaskError(str(exc), "") from exc
        except Exception as exc:
            if not key_bytes:
                raise TaskError(_describe(exc), _user_traceback(exc)) from exc
            raise RecordFailure(
                key_bytes, f"key={key!r}", _describe(exc), _user_traceback(exc)
            ) from exc
    output_bytes = os.path.getsize(out_path)
    return TaskResult(
        task_id=task_id,
        attempt=attempt,
        outputs=(out_path,),
        output_sizes=(output_bytes,),
        input_records=counted.values,
        input_bytes=input_bytes,
        output_records=lines,
        output_bytes=output_bytes,
        counters=_checked_counters(counters),
        spills=0,
        seconds=time.monotonic() - started,
    )
