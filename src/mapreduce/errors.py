"""User-facing errors.

Every error a user can see is a :class:`MapReduceError`.  They carry the
structured facts (file, byte offset, task, attempt) as attributes, and their
message names them, so a failing job says *where* it failed.
"""

from __future__ import annotations


class MapReduceError(Exception):
    """Base class of every error this package raises on purpose."""


class UsageError(MapReduceError):
    """A command-line flag or option has an invalid value (the message names the flag)."""


class JobDefinitionError(MapReduceError):
    """A job file cannot be used: missing, a syntax error, or no ``map``/``reduce``.

    Attributes:
        path: the job file.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"job file {path}: {reason}")
        self.path = path
        self.reason = reason


class InputError(MapReduceError):
    """An input path does not exist, matches no file, or cannot be read."""


class OutputExistsError(MapReduceError):
    """The output directory exists and ``--overwrite`` was not given."""


class OutputError(MapReduceError):
    """A job's output could not be committed; the output directory was left as it was."""


class OutputBusyError(MapReduceError):
    """Another running job (of another process) is writing the same output directory."""


class KeyTypeError(MapReduceError, TypeError):
    """An intermediate key is of a type that cannot be serialised in sort order."""


class BadRecordError(MapReduceError):
    """An input record cannot be decoded (bad UTF-8, invalid JSON, a TSV line without a tab).

    Attributes:
        path: the input file.
        offset: the byte offset of the record's first byte in that file.
        reason: what is wrong with it.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"bad record in {path} at byte {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class TaskFailedError(MapReduceError):
    """User code raised while processing a record (or a key group, in reduce).

    Attributes:
        task: the task id, such as ``map-00003`` or ``reduce-00001``.
        attempt: the attempt number (0 for the first).
        record: where the record is: ``"path@offset"`` for map input, ``"key=..."``
            for a reduce key group, or ``""`` when the task failed outside a record.
        reason: a one-line description of the exception.
        traceback: the formatted traceback of the user code's exception.
    """

    def __init__(self, task: str, attempt: int, record: str, reason: str, traceback: str) -> None:
        where = f" on record {record}" if record else ""
        tb = f"\n{traceback}" if traceback else ""
        super().__init__(f"task {task} attempt {attempt} failed{where}: {reason}{tb}")
        self.task = task
        self.attempt = attempt
        self.record = record
        self.reason = reason
        self.traceback = traceback


class MasterUnreachable(MapReduceError):
    """The master could not be reached for as long as a client retries."""


class JobFailedError(MapReduceError):
    """A job failed; the message says which task and why.  No ``_SUCCESS`` was written.

    Attributes:
        job_id: the job ("" when unknown).
        task: the task whose failures failed the job, such as ``map-00003`` ("" when the
            job failed otherwise: cancelled, its workers gone, its commit failed).
        attempt: that task's last failed attempt (-1 without a task).
        record: the record its user code crashed on: ``"path@offset"`` for map input,
            ``"key=..."`` for a reduce key group, or "".
        reason: that attempt's error, one line.
        traceback: the formatted traceback of the user code's exception, or "".
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str = "",
        task: str = "",
        attempt: int = -1,
        record: str = "",
        reason: str = "",
        traceback: str = "",
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.task = task
        self.attempt = attempt
        self.record = record
        self.reason = reason
        self.traceback = traceback
