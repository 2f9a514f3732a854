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
    epoch: int = 0


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
    """The reduce attempt may rename its output into place (grants are fenced by ``epoch``)."""

    worker_id: str
    incarnation: str
    job_id: str
    partition: int
    attempt: int
    epoch: int = 0


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
    """The master declared a worker incarnation dead."""

    worker_id: str
    incarnation: str
    reason: str


@dataclass(frozen=True)
class PrepareOutput:
    """The job's turn has come: prepare its output (take its lock, make its staging
    directory), then report back with ``JobStarted`` or ``JobStartFailed``.  Queued jobs
    hold nothing (no lock, no file descriptor) until then."""

    job_id: str


@dataclass(frozen=True)
class CommitJob:
    """Every reduce partition is committed: commit the job's output, then report back."""

    job_id: str


@dataclass(frozen=True)
class AbortJob:
    """The job failed or was cancelled: remove what it staged; ``reason`` says why."""

    job_id: str
    reason: str


@dataclass(frozen=True)
class RefuseJob:
    """A submission is refused (another running job writes the same output)."""

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
    | PrepareOutput
    | CommitJob
    | AbortJob
    | RefuseJob
)
