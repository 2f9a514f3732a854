"""Input events of the master state machine: frozen, plain values, named in the past tense.

Every event carries ``now``, the master's clock reading when the event arrived:
seconds since the Unix epoch, so times in the journal keep their meaning after
a restart and on another host.  Events about a task attempt carry the ids that
make them idempotent: the worker and its incarnation, the job, the task and the
attempt.

Two kinds of events:

* **durable** events (every type in :data:`DURABLE`) change the master's
  durable state; the shell appends them to the journal before it acts on their
  outcome, and replaying them rebuilds the state exactly.  A
  :class:`TaskRequested` is durable only when it assigned a task.
* **liveness** events (:class:`HeartbeatReceived`, :class:`Tick`) only feed
  :class:`~mapreduce.core.liveness.Liveness`; when it finds a silent worker or
  a stalled attempt it emits a durable :class:`WorkerExpired` or
  :class:`AttemptStalled`, so the journal does not grow with heartbeats.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mapreduce.core.config import MasterConfig
from mapreduce.core.spec import JobSpec
from mapreduce.core.tasks import TaskKind, TaskStats


@dataclass(frozen=True)
class MasterStarted:
    """A master process started on this state (the journal's ``epoch``-th start), with the
    settings it decides by from now on."""

    now: float
    epoch: int
    config: MasterConfig = field(default_factory=MasterConfig)


@dataclass(frozen=True)
class JobSubmitted:
    """A job was submitted: one map task per split, ``spec.num_reducers`` reduce tasks.

    ``output_at_turn``: its output is prepared when its turn comes (``PrepareOutput``,
    then ``JobStarted``), so a queued job holds nothing.  False in journals written
    before that was so (the output was prepared at submission and the job ran at its
    turn): replaying them gives the state they recorded.
    """

    now: float
    spec: JobSpec
    output_at_turn: bool = False

    @property
    def job_id(self) -> str:
        return self.spec.job_id


@dataclass(frozen=True)
class JobStarted:
    """The job's output was prepared (its lock taken, its staging directory made): it runs."""

    now: float
    job_id: str


@dataclass(frozen=True)
class JobStartFailed:
    """The job's output could not be prepared when its turn came: it fails without running."""

    now: float
    job_id: str
    reason: str


@dataclass(frozen=True)
class JobCommitted:
    """The job's output was committed (``_SUCCESS`` written, directory in place)."""

    now: float
    job_id: str


@dataclass(frozen=True)
class JobCommitFailed:
    """Committing the job's output failed (the output was left as it was)."""

    now: float
    job_id: str
    reason: str


@dataclass(frozen=True)
class JobCancelled:
    now: float
    job_id: str
    reason: str = "cancelled by the user"


@dataclass(frozen=True)
class WorkerRegistered:
    """A worker process started (a new ``incarnation``) and can run ``slots`` tasks at once.

    A worker that sees a new master epoch registers again with the same
    incarnation and ``rejoin`` set: ``held`` lists the map outputs it still
    serves and ``running`` the attempts it still runs, so the master re-runs
    what was lost while it was away.
    """

    now: float
    worker_id: str
    incarnation: str
    address: str
    slots: int = 1
    rejoin: bool = False
    held: tuple[MapOutputRef, ...] = ()
    running: tuple[AttemptRef, ...] = ()
    #: a digest of the worker's key: only an incarnation showing the same key may take
    #: over a live worker's id (see :meth:`Liveness.registration_refusal`)
    key_digest: str = ""


@dataclass(frozen=True)
class MapOutputRef:
    """Names the output of one map attempt on a worker's disk."""

    job_id: str
    index: int
    attempt: int


@dataclass(frozen=True)
class WorkerExpired:
    """Liveness found a worker incarnation silent for too long: it is dead."""

    now: float
    worker_id: str
    incarnation: str
    reason: str


@dataclass(frozen=True)
class AttemptStalled:
    """Liveness found a running attempt that made no progress for too long."""

    now: float
    ref: AttemptRef
    reason: str


@dataclass(frozen=True)
class HeartbeatReceived:
    """A worker is alive; ``progressed`` lists the attempts it runs that made progress;
    ``paused`` says why it takes no task now (its disk is full), or is empty."""

    now: float
    worker_id: str
    incarnation: str
    progressed: tuple[AttemptRef, ...] = ()
    paused: str = ""


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
    stats: TaskStats = field(default_factory=TaskStats)
    has_log: bool = False


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
    stats: TaskStats = field(default_factory=TaskStats)
    has_log: bool = False


@dataclass(frozen=True)
class TaskFailed:
    """An attempt failed; ``record`` names the record user code crashed on, if any (its id:
    the offset of a map input record, the hex of a reduce key), ``label`` where it is
    (``path@offset``, ``key=...``; "" in journals written before labels were reported).

    ``infrastructure``: the worker's own machine failed the attempt (its work
    directory's disk is full or failing), not the task: the failure is shown
    but not counted against ``max_attempts`` (up to a bound), and no record is blamed.
    """

    now: float
    worker_id: str
    incarnation: str
    ref: AttemptRef
    reason: str
    record: str = ""
    traceback: str = ""
    has_log: bool = False
    infrastructure: bool = False
    label: str = ""


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
    MasterStarted
    | JobSubmitted
    | JobStarted
    | JobStartFailed
    | JobCancelled
    | JobCommitted
    | JobCommitFailed
    | WorkerRegistered
    | WorkerExpired
    | AttemptStalled
    | HeartbeatReceived
    | TaskRequested
    | MapTaskSucceeded
    | ReduceCommitRequested
    | ReduceTaskSucceeded
    | TaskFailed
    | FetchFailed
    | Tick
)

#: Event types that change durable state (TaskRequested only when it assigns a task).
DURABLE = (
    MasterStarted,
    JobSubmitted,
    JobStarted,
    JobStartFailed,
    JobCancelled,
    JobCommitted,
    JobCommitFailed,
    WorkerRegistered,
    WorkerExpired,
    AttemptStalled,
    TaskRequested,
    MapTaskSucceeded,
    ReduceCommitRequested,
    ReduceTaskSucceeded,
    TaskFailed,
    FetchFailed,
)
