"""``validate(state)``: cross-structure consistency checks, run after every event in tests."""

from __future__ import annotations

from mapreduce.core.master import JobState, MasterState
from mapreduce.core.tasks import AttemptState, TaskKind, TaskState


class InvariantViolation(AssertionError):
    """The state machine reached a state that must be impossible: a bug."""


def validate(state: MasterState) -> None:
    """Raise :class:`InvariantViolation` if ``state`` is inconsistent."""
    live = {(w.worker_id, w.incarnation) for w in state.workers.values()}
    running_keys = set()
    for worker in state.workers.values():
        running_keys |= worker.running
    for job in state.jobs.values():
        for kind in (TaskKind.MAP, TaskKind.REDUCE):
            tasks = job.tasks(kind)
            done = sum(t.state is TaskState.COMPLETED for t in tasks)
            if done != job.completed[kind]:
                raise InvariantViolation(
                    f"{job.job_id} {kind}: count {job.completed[kind]} != {done}"
                )
            for task in tasks:
                running = task.running()
                for attempt in running:
                    if (attempt.worker_id, attempt.incarnation) not in live:
                        raise InvariantViolation(f"{task.task_id} runs on a dead worker")
                    key = (job.job_id, kind, task.index, attempt.number)
                    if key not in running_keys:
                        raise InvariantViolation(f"{task.task_id} attempt not on its worker")
                if (task.state is TaskState.IN_PROGRESS) != (task.index in job.in_progress[kind]):
                    raise InvariantViolation(f"{task.task_id} misfiled in the in-progress index")
                if task.state is TaskState.IN_PROGRESS and not running:
                    raise InvariantViolation(f"{task.task_id} in progress with no attempt")
                if task.state is TaskState.IDLE and running:
                    raise InvariantViolation(f"{task.task_id} idle with running attempts")
                if job.state is not JobState.RUNNING and running:
                    raise InvariantViolation(f"{task.task_id} runs in a {job.state.value} job")
                succeeded = [a for a in task.attempts.values() if a.state is AttemptState.SUCCEEDED]
                if kind is TaskKind.REDUCE and len(succeeded) > 1:
                    raise InvariantViolation(
                        f"{task.task_id} committed by {len(succeeded)} attempts"
                    )
                if task.state is TaskState.COMPLETED and task.completed_attempt is None:
                    raise InvariantViolation(f"{task.task_id} completed by no attempt")
                if len(task.attempts) - len(running) > 0 and task.failures > job.spec.max_attempts:
                    raise InvariantViolation(f"{task.task_id} failed beyond the limit")
    active = [j for j in state.jobs.values() if j.state is JobState.RUNNING]
    if len(active) > 1:
        raise InvariantViolation("more than one job running")
