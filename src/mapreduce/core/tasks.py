"""Task and attempt records of the master, and their states (paper section 3.2)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from mapreduce.core.policy import SkipNote


class TaskKind(enum.Enum):
    MAP = "map"
    REDUCE = "reduce"

    # Members are singletons: hashing by identity is correct and far cheaper than
    # Enum's hash of the name (task kinds are in every attempt key).
    __hash__ = object.__hash__


class TaskState(enum.Enum):
    """The paper's three task states."""

    IDLE = "idle"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"


class AttemptState(enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # user code or the attempt failed: counts toward max attempts
    KILLED = "killed"  # the framework stopped it (worker lost, lost a race): does not count


#: The most distinct user counters one task may report, and the longest counter name.
MAX_COUNTERS = 1000
MAX_COUNTER_NAME = 256


@dataclass(frozen=True)
class TaskStats:
    """What a successful attempt reports about its work."""

    input_records: int = 0
    input_bytes: int = 0
    output_records: int = 0
    output_bytes: int = 0
    spills: int = 0
    seconds: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class Attempt:
    """One execution of a task on one worker incarnation.

    Attributes:
        epoch: the master epoch that assigned it.
        ended: when it stopped running (None while it runs).
        has_log: the master keeps the end of its log (``mapreduce logs``).
    """

    number: int
    worker_id: str
    incarnation: str
    started: float
    state: AttemptState = AttemptState.RUNNING
    backup: bool = False
    epoch: int = 0
    ended: float | None = None
    has_log: bool = False


@dataclass
class Task:
    """A map or reduce task of a job.

    Attributes:
        kind: map or reduce.
        index: the map task's number or the reduce task's partition.
        state: idle, in-progress or completed.
        attempts: every attempt so far, by number.
        failures: attempts that FAILED (KILLED ones do not count).
        infrastructure_failures: FAILED attempts that their worker's machine caused
            (a full disk), not counted in ``failures`` (up to a bound).
        completed_attempt: the attempt whose output counts (the map output
            reducers fetch, or the committed reduce output).
        commit_granted: the reduce attempt allowed to commit, if any.
        record_failures: how many attempts crashed on each record.
        skip: records the next attempts skip.
        skip_notes: the skipped records with where they are and why (``_summary.json``).
        lost_outputs: how many times a completed map's output was lost.
        stats: what the completed attempt reported (None until completed).
        last_error: the reason and traceback of the last failure.
    """

    kind: TaskKind
    index: int
    state: TaskState = TaskState.IDLE
    attempts: dict[int, Attempt] = field(default_factory=dict)
    failures: int = 0
    infrastructure_failures: int = 0
    completed_attempt: int | None = None
    commit_granted: int | None = None
    record_failures: dict[str, int] = field(default_factory=dict)
    skip: list[str] = field(default_factory=list)
    #: a tuple (a class-level default): snapshots pickled before it existed still load
    skip_notes: tuple[SkipNote, ...] = ()
    lost_outputs: int = 0
    stats: TaskStats | None = None
    last_error: str = ""

    @property
    def task_id(self) -> str:
        return f"{self.kind.value}-{self.index:05d}"

    def running(self) -> list[Attempt]:
        return [a for a in self.attempts.values() if a.state is AttemptState.RUNNING]

    def next_attempt_number(self) -> int:
        return len(self.attempts)
