"""Output actions of the master state machine: frozen values, named in the imperative."""

from __future__ import annotations

from dataclasses import dataclass

from mapreduce.core.tasks import TaskKind


@dataclass(frozen=True)
class AssignTask:
    """Run attempt ``attempt`` of a task on the worker, skipping the records in ``skip``."""

    worker_id: str
    incarnation: str
    job_id: str
    kind: TaskKind
    index: int
    attempt: int
    skip: tuple[str, ...] = ()


@dataclass(frozen=True)
class KillAttempt:
    """Stop an attempt (a backup lost the race, its job ended, or it made no progress)."""

    worker_id: str
    incarnation: str
    job_id: str
    kind: TaskKind
    index: int
    attempt: int
    reason: str


@dataclass(frozen=True)
class AnnounceMapOutput:
    """Map task ``index``'s output is at ``address`` (attempt ``attempt``): reducers fetch it."""

    job_id: str
    index: int
    attempt: int
    worker_id: str
    address: str


@dataclass(frozen=True)
class RetractMapOutput:
    """Map task ``index``'s output (attempt ``attempt``) is lost: reducers wait for a new one."""

    job_id: str
    index: int
    attempt: int


@dataclass(frozen=True)
class GrantCommit:
    worker_id: str
    incarnation: str
    job_id: str
    partition: int
    attempt: int


@dataclass(frozen=True)
class DenyCommit:
    worker_id: str
    incarnation: str
    job_id: str
    partition: int
    attempt: int


@dataclass(frozen=True)
class ReRegisterWorker:
    """The worker's incarnation is unknown or was declared dead: it must register anew."""

    worker_id: str
    incarnation: str


@dataclass(frozen=True)
class WorkerLost:
    """The master declared a worker incarnation dead (last heard of at ``last_heartbeat``)."""

    worker_id: str
    incarnation: str
    reason: str
    last_heartbeat: float


@dataclass(frozen=True)
class JobSucceeded:
    """Every reduce partition is committed: commit the job's output."""

    job_id: str


@dataclass(frozen=True)
class JobFailed:
    """The job failed; ``reason`` names the task, the record and the last traceback."""

    job_id: str
    reason: str


Action = (
    AssignTask
    | KillAttempt
    | AnnounceMapOutput
    | RetractMapOutput
    | GrantCommit
    | DenyCommit
    | ReRegisterWorker
    | WorkerLost
    | JobSucceeded
    | JobFailed
)
