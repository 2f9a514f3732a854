"""``Liveness``: who is alive and which attempts make progress; not durable state.

Heartbeats, progress reports and ticks are far too frequent to journal.  They
only update this object, which the master keeps beside its durable
:class:`~mapreduce.core.master.MasterState`; on a tick it turns what it sees
into durable events (:class:`~mapreduce.core.events.WorkerExpired`,
:class:`~mapreduce.core.events.AttemptStalled`) that go through the journal
like any other.  After a master restart it starts afresh: every worker and
attempt of the recovered state gets ``worker_timeout`` (and ``task_timeout``)
from the restart to be heard of again.
"""

from __future__ import annotations

import hmac

from mapreduce.core import events as ev
from mapreduce.core.master import AttemptKey, JobState, MasterState
from mapreduce.core.tasks import AttemptState, TaskKind

#: The most live workers a master keeps: a registration of another id beyond it is refused.
MAX_WORKERS = 10_000


class Liveness:
    """Last time each worker incarnation was heard of, and each attempt progressed.

    Args:
        started: the time this master started: nothing is older than that.
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self._heard: dict[tuple[str, str], float] = {}
        self._progress: dict[AttemptKey, float] = {}
        self._paused: dict[tuple[str, str], str] = {}

    def heard_from(self, worker_id: str, incarnation: str, now: float) -> None:
        self._heard[(worker_id, incarnation)] = now

    def paused(self, worker_id: str, incarnation: str, reason: str) -> None:
        """What a worker's last heartbeat said about taking no task ("" if it takes them)."""
        if reason:
            self._paused[(worker_id, incarnation)] = reason[:1000]
        else:
            self._paused.pop((worker_id, incarnation), None)

    def why_paused(self, state: MasterState, worker_id: str) -> str:
        """Why a live worker takes no task now, as it said ("" if it takes them)."""
        return self._paused.get((worker_id, state.workers[worker_id].incarnation), "")

    def progressed(self, ref: ev.AttemptRef, now: float) -> None:
        self._progress[(ref.job_id, ref.kind, ref.index, ref.attempt)] = now

    def last_heard(self, state: MasterState, worker_id: str) -> float:
        """When a live worker was last heard of (its registration, at the earliest)."""
        worker = state.workers[worker_id]
        heard = self._heard.get((worker_id, worker.incarnation), worker.registered)
        return max(heard, self.started)

    def registration_refusal(
        self, state: MasterState, event: ev.WorkerRegistered, now: float
    ) -> str:
        """Why ``event`` may not register ("" if it may); a refused one changes nothing.

        A worker id belongs to its live incarnation.  Another registration may take it
        over only by showing the same worker key (a restart from the same ``--workdir``,
        or a worker process starting a new incarnation), or once the holder has been
        silent past the worker timeout.  So neither a second worker given the same name
        by mistake nor a client that knows only the id can push a live worker out.
        """
        holder = state.workers.get(event.worker_id)
        if holder is None:
            if len(state.workers) >= MAX_WORKERS:
                return f"the master already has {MAX_WORKERS} live workers, its limit"
            return ""
        if holder.key_digest and hmac.compare_digest(holder.key_digest, event.key_digest):
            return ""
        silent = now - self.last_heard(state, event.worker_id)
        timeout = state.config.worker_timeout
        if silent > timeout:
            return ""
        return (
            f"worker id {event.worker_id!r} belongs to a live worker at {holder.address} "
            f"(heard {silent:.1f}s ago): give this worker its own --name, or restart that "
            f"worker with the same --workdir to take its id over at once; otherwise the id "
            f"is free once that worker has been silent for {timeout:g}s"
        )

    def expired(self, state: MasterState, now: float) -> list[ev.Event]:
        """Durable events for every silent worker and every stalled attempt, at ``now``."""
        config = state.config
        out: list[ev.Event] = []
        for worker in sorted(state.workers.values(), key=lambda w: w.worker_id):
            silent = now - self.last_heard(state, worker.worker_id)
            if silent > config.worker_timeout:
                out.append(
                    ev.WorkerExpired(
                        now, worker.worker_id, worker.incarnation, f"no heartbeat for {silent:.1f}s"
                    )
                )
        if len(self._heard) > 2 * len(state.workers) + 16:  # forget dead incarnations
            live = {(w.worker_id, w.incarnation) for w in state.workers.values()}
            self._heard = {k: v for k, v in self._heard.items() if k in live}
            self._paused = {k: v for k, v in self._paused.items() if k in live}
        job = state.active_job()
        progress: dict[AttemptKey, float] = {}
        if job is not None and job.state is JobState.RUNNING:
            for kind in (TaskKind.MAP, TaskKind.REDUCE):
                tasks = job.tasks(kind)
                for index in job.in_progress[kind]:
                    for attempt in tasks[index].attempts.values():
                        if attempt.state is not AttemptState.RUNNING:
                            continue
                        key = (job.job_id, kind, index, attempt.number)
                        last = max(self._progress.get(key, attempt.started), self.started)
                        progress[key] = last
                        if now - last > config.task_timeout:
                            out.append(
                                ev.AttemptStalled(
                                    now, ev.AttemptRef(*key), f"no progress for {now - last:.1f}s"
                                )
                            )
        self._progress = {k: v for k, v in self._progress.items() if k in progress}
        return out
