"""Input events of the master state machine: frozen, plain values, named in the past tense.

Every event carries ``now``, the master's monotonic clock reading when the
event arrived.  Events about a task attempt carry the ids that make them
idempotent: the worker and its incarnation, the job, the task and the attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mapreduce.core.tasks import TaskKind


@dataclass(frozen=True)
class JobSubmitted:
    """A job was submitted with ``num_maps`` map tasks and ``num_reduces`` reduce tasks."""

    now: float
    job_id: str
    num_maps: int
    num_reduces: int
    max_attempts: int = 4
    skip_bad_records: int = 0
    backup_tasks: bool = True


@dataclass(frozen=True)
class JobCancelled:
    now: float
    job_id: str
    reason: str = "cancelled by the user"


@dataclass(frozen=True)
class WorkerRegistered:
    """A worker process started (a new ``incarnation``) and can run ``slots`` tasks at once."""

    now: float
    worker_id: str
    incarnation: str
    address: str
    slots: int = 1


@dataclass(frozen=True)
class HeartbeatReceived:
    """A worker is alive; ``progressed`` lists the attempts it runs that made progress."""

    now: float
    worker_id: str
    incarnation: str
    progressed: tuple[AttemptRef, ...] = ()


@dataclass(frozen=True)
class AttemptRef:
    """Names one attempt of one task."""

    job_id: str
    kind: TaskKind
    index: int
    attempt: int


@dataclass(frozen=True)
class TaskRequested:
    """A worker asks for up to ``free_slots`` tasks."""

    now: float
    worker_id: str
    incarnation: str
    free_slots: int = 1


@dataclass(frozen=True)
class MapTaskSucceeded:
    """A map attempt finished; its R partitions are on the worker's disk."""

    now: float
    worker_id: str
    incarnation: str
    ref: AttemptRef
    output_bytes: int = 0
    counters: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReduceCommitRequested:
    """A reduce attempt wrote its output and asks whether it may commit (rename) it."""

    now: float
    worker_id: str
    incarnation: str
    ref: AttemptRef


@dataclass(frozen=True)
class ReduceTaskSucceeded:
    """A reduce attempt that was granted the commit renamed its output into place."""

    now: float
    worker_id: str
    incarnation: str
    ref: AttemptRef
    output_bytes: int = 0
    counters: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskFailed:
    """An attempt failed; ``record`` names the record user code crashed on, if any."""

    now: float
    worker_id: str
    incarnation: str
    ref: AttemptRef
    reason: str
    record: str = ""
    traceback: str = ""


@dataclass(frozen=True)
class FetchFailed:
    """A reduce attempt could not fetch the output of attempt ``map_attempt`` of a map task."""

    now: float
    worker_id: str
    incarnation: str
    reduce: AttemptRef
    map_index: int
    map_attempt: int


@dataclass(frozen=True)
class Tick:
    """Time passed: check heartbeat expiry, progress timeouts and backups."""

    now: float


Event = (
    JobSubmitted
    | JobCancelled
    | WorkerRegistered
    | HeartbeatReceived
    | TaskRequested
    | MapTaskSucceeded
    | ReduceCommitRequested
    | ReduceTaskSucceeded
    | TaskFailed
    | FetchFailed
    | Tick
)
