"""View models of the status pages: plain dicts built from the master's state.

The JSON API serves these dicts as they are; the HTML pages and ``/metrics``
render them.  Everything is read under the driver's lock, in one go, so a
page is a consistent snapshot.
"""

from __future__ import annotations

import re
from typing import Any

from mapreduce.core.tasks import AttemptState, Task, TaskKind, TaskState
from mapreduce.master.driver import JobEntry, MasterDriver

_TASK_ID = re.compile(r"^(map|reduce)-([0-9]{1,9})$")

#: The task table of a job page lists at most this many tasks.
MAX_TASK_ROWS = 1000


def _counts(tasks: list[Task]) -> dict[str, int]:
    counts = {"total": len(tasks), "idle": 0, "in_progress": 0, "completed": 0}
    for task in tasks:
        counts[task.state.name.lower()] += 1
    return counts


def job_brief(driver: MasterDriver, job_id: str) -> dict[str, Any]:
    """A job's state, task counts and progress (call with the driver's lock held).

    Raises:
        KeyError: no such job.
    """
    now = driver.now()
    job = driver.state.jobs[job_id]
    entry = driver.jobs[job_id]
    state = job.state.value
    if state == "succeeded" and not entry.summary_json:
        state = "running"  # its output is being committed
    end = entry.finished if entry.finished is not None else now
    input_done = sum(
        result.input_bytes
        for (kind, index), result in entry.results.items()
        if kind is TaskKind.MAP and job.maps[index].state is TaskState.COMPLETED
    )
    return {
        "id": job.job_id,
        "state": state,
        "reason": job.reason,
        "job_file": entry.shipped.job_file_name,
        "output": entry.shipped.output,
        "submitted_seconds_ago": round(now - entry.submitted, 3),
        "elapsed_seconds": round(end - entry.submitted, 3),
        "maps": _counts(job.maps),
        "reduces": _counts(job.reduces),
        "failed_attempts": len(entry.failures),
        "input_bytes_done": input_done,
        "input_bytes_total": sum(s.end - s.start for s in entry.shipped.splits),
    }


def cluster_view(driver: MasterDriver) -> dict[str, Any]:
    """Workers (alive and lost) and every job the master knows, newest last."""
    with driver.lock:
        now = driver.now()
        done: dict[str, int] = {}
        current: dict[str, list[str]] = {}
        for job in driver.state.jobs.values():
            for task in [*job.maps, *job.reduces]:
                for attempt in task.attempts.values():
                    if attempt.state is AttemptState.SUCCEEDED:
                        done[attempt.worker_id] = done.get(attempt.worker_id, 0) + 1
                    elif attempt.state is AttemptState.RUNNING:
                        current.setdefault(attempt.worker_id, []).append(
                            f"{job.job_id}/{task.task_id}#{attempt.number}"
                        )
        workers = [
            {
                "id": w.worker_id,
                "address": w.address,
                "state": "alive",
                "last_heartbeat_seconds": round(now - w.last_heartbeat, 3),
                "slots": w.slots,
                "tasks_done": done.get(w.worker_id, 0),
                "running": sorted(current.get(w.worker_id, [])),
                "reason": "",
            }
            for w in sorted(driver.state.workers.values(), key=lambda w: w.worker_id)
        ]
        workers += [
            {
                "id": lost.worker_id,
                "address": lost.address,
                "state": "lost",
                "last_heartbeat_seconds": round(now - lost.last_heartbeat, 3),
                "slots": 0,
                "tasks_done": done.get(lost.worker_id, 0),
                "running": [],
                "reason": lost.reason,
            }
            for lost in sorted(driver.lost_workers.values(), key=lambda w: w.worker_id)
            if lost.worker_id not in driver.state.workers
        ]
        jobs = [job_brief(driver, job_id) for job_id in driver.state.queue]
        return {
            "uptime_seconds": round(now - driver.started, 3),
            "workers": workers,
            "jobs": jobs,
        }


def _task_row(task: Task, entry: JobEntry, now: float) -> dict[str, Any]:
    result = entry.results.get((task.kind, task.index))
    completed = task.state is TaskState.COMPLETED and result is not None
    attempts = []
    for attempt in task.attempts.values():
        if attempt.state is AttemptState.RUNNING:
            seconds: float | None = now - attempt.started
        elif completed and result is not None and attempt.number == task.completed_attempt:
            seconds = result.seconds
        else:
            seconds = None
        attempts.append(
            {
                "attempt": attempt.number,
                "worker": attempt.worker_id,
                "state": attempt.state.value,
                "backup": attempt.backup,
                "seconds": None if seconds is None else round(seconds, 3),
            }
        )
    return {
        "id": task.task_id,
        "kind": task.kind.value,
        "state": task.state.name.lower(),
        "attempts": attempts,
        "input_bytes": result.input_bytes if completed and result else None,
        "output_bytes": result.output_bytes if completed and result else None,
        "output_records": result.output_records if completed and result else None,
    }


def job_view(driver: MasterDriver, job_id: str) -> dict[str, Any]:
    """Everything about one job.

    Raises:
        KeyError: no such job.
    """
    with driver.lock:
        now = driver.now()
        job = driver.state.jobs[job_id]
        entry = driver.jobs[job_id]
        view = job_brief(driver, job_id)
        summary = driver.summary_of(job_id)
        system = summary.system_counters()
        elapsed = max(view["elapsed_seconds"], 1e-9)
        total = len(job.maps) + len(job.reduces)
        finished = view["maps"]["completed"] + view["reduces"]["completed"]
        fraction = finished / total if total else 1.0
        eta = None
        if view["state"] in ("running", "queued") and 0 < fraction < 1:
            eta = round(elapsed * (1 - fraction) / fraction, 1)
        view.update(
            {
                "progress": {
                    "map": view["maps"]["completed"] / len(job.maps) if job.maps else 1.0,
                    "reduce": (
                        view["reduces"]["completed"] / len(job.reduces) if job.reduces else 1.0
                    ),
                },
                "bytes": {
                    "input_total": view["input_bytes_total"],
                    "input_done": system["map_input_bytes"],
                    "intermediate": system["intermediate_bytes"],
                    "output": system["output_bytes"],
                },
                "records": {
                    "input": system["map_input_records"],
                    "intermediate": system["map_output_records"],
                    "output": system["reduce_output_records"],
                },
                "rates": {
                    "input_bytes_per_second": round(system["map_input_bytes"] / elapsed, 1),
                    "input_records_per_second": round(system["map_input_records"] / elapsed, 1),
                },
                "eta_seconds": eta,
                "counters": summary.counters(),
                "system_counters": system,
                "failures": [
                    {
                        "task": f.task,
                        "attempt": f.attempt,
                        "worker": f.worker,
                        "reason": f.reason,
                        "record": f.record,
                        "traceback": f.traceback,
                    }
                    for f in entry.failures
                ],
                "skipped_records": [{"task": s.task, "record": s.record} for s in summary.skipped],
                "tasks": [
                    _task_row(task, entry, now)
                    for task in [*job.maps, *job.reduces][:MAX_TASK_ROWS]
                ],
                "tasks_listed": min(total, MAX_TASK_ROWS),
                "tasks_total": total,
            }
        )
        return view


def task_logs_view(driver: MasterDriver, job_id: str, task_id: str) -> dict[str, Any]:
    """Each attempt of one task with its log and error.

    Raises:
        KeyError: no such job or task.
    """
    match = _TASK_ID.match(task_id)
    if match is None:
        raise KeyError(task_id)
    kind = TaskKind.MAP if match.group(1) == "map" else TaskKind.REDUCE
    index = int(match.group(2))
    with driver.lock:
        job = driver.state.jobs[job_id]
        entry = driver.jobs[job_id]
        tasks = job.tasks(kind)
        if index >= len(tasks):
            raise KeyError(task_id)
        task = tasks[index]
        errors = {f.attempt: f for f in entry.failures if f.task == task.task_id}
        return {
            "job": job_id,
            "task": task.task_id,
            "attempts": [
                {
                    "attempt": n,
                    "worker": attempt.worker_id,
                    "state": attempt.state.value,
                    "log": entry.logs.get((kind, index, n), ""),
                    "error": (errors[n].line() + "\n" + errors[n].traceback if n in errors else ""),
                }
                for n, attempt in sorted(task.attempts.items())
            ],
        }


def metrics_text(driver: MasterDriver) -> str:
    """Prometheus text exposition of the master's state."""
    cluster = cluster_view(driver)
    lines = [
        "# HELP mapreduce_workers Workers known to the master, by state.",
        "# TYPE mapreduce_workers gauge",
    ]
    for state in ("alive", "lost"):
        count = sum(w["state"] == state for w in cluster["workers"])
        lines.append(f'mapreduce_workers{{state="{state}"}} {count}')
    lines += ["# HELP mapreduce_jobs Jobs by state.", "# TYPE mapreduce_jobs gauge"]
    for state in ("queued", "running", "succeeded", "failed", "cancelled"):
        count = sum(j["state"] == state for j in cluster["jobs"])
        lines.append(f'mapreduce_jobs{{state="{state}"}} {count}')
    lines += [
        "# HELP mapreduce_tasks Tasks by job, kind and state.",
        "# TYPE mapreduce_tasks gauge",
    ]
    for job in cluster["jobs"]:
        for kind_name, counts in (("map", job["maps"]), ("reduce", job["reduces"])):
            for state in ("idle", "in_progress", "completed"):
                lines.append(
                    f'mapreduce_tasks{{job="{job["id"]}",kind="{kind_name}",state="{state}"}} '
                    f"{counts[state]}"
                )
    shuffled = 0
    durations = {"map": [0.0, 0], "reduce": [0.0, 0]}
    failed = 0
    with driver.lock:
        for job_id, entry in driver.jobs.items():
            job = driver.state.jobs[job_id]
            failed += len(entry.failures)
            for (kind, index), result in entry.results.items():
                if job.tasks(kind)[index].state is not TaskState.COMPLETED:
                    continue
                if kind is TaskKind.MAP:
                    shuffled += result.output_bytes
                durations[kind.value][0] += result.seconds
                durations[kind.value][1] += 1
    lines += [
        "# HELP mapreduce_shuffle_bytes_total Bytes of map output written for the shuffle.",
        "# TYPE mapreduce_shuffle_bytes_total counter",
        f"mapreduce_shuffle_bytes_total {shuffled}",
        "# HELP mapreduce_failed_attempts_total Task attempts that failed.",
        "# TYPE mapreduce_failed_attempts_total counter",
        f"mapreduce_failed_attempts_total {failed}",
        "# HELP mapreduce_task_duration_seconds Duration of completed task attempts.",
        "# TYPE mapreduce_task_duration_seconds summary",
    ]
    for kind_name, (total, count) in durations.items():
        lines.append(f'mapreduce_task_duration_seconds_sum{{kind="{kind_name}"}} {total:.6f}')
        lines.append(f'mapreduce_task_duration_seconds_count{{kind="{kind_name}"}} {count}')
    return "\n".join(lines) + "\n"
