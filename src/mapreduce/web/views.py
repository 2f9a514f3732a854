"""View models of the status pages: plain dicts made from :mod:`mapreduce.core.queries` snapshots.

The JSON API serves these dicts as they are; the HTML pages render them
(``/metrics`` is :mod:`mapreduce.web.metrics`).  Everything is read under the
driver's lock, in one go, so a page is a consistent snapshot.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mapreduce.core import queries
from mapreduce.master.driver import MasterDriver

MAX_TASK_ROWS = queries.MAX_TASK_ROWS


def _brief(brief: queries.JobBrief) -> dict[str, Any]:
    return dataclasses.asdict(brief)


def cluster_view(driver: MasterDriver) -> dict[str, Any]:
    """Workers (alive and lost) and every job the master knows, newest last."""
    with driver.lock:
        snapshot = queries.cluster(driver.state, driver.liveness, driver.now())
    view = dataclasses.asdict(snapshot)
    for worker in view["workers"]:
        worker["running"] = list(worker["running"])
    if driver.annotate is not None:
        view.update(driver.annotate())
    return view


def job_view(driver: MasterDriver, job_id: str) -> dict[str, Any]:
    """Everything about one job.

    Raises:
        KeyError: no such job.
    """
    with driver.lock:
        detail = queries.job_detail(driver.state, job_id, driver.now())
    view = _brief(detail.brief)
    summary = detail.summary
    system = summary.system_counters()
    elapsed = max(view["elapsed_seconds"], 1e-9)
    total = detail.tasks_total
    finished = view["maps"]["completed"] + view["reduces"]["completed"]
    fraction = finished / total if total else 1.0
    eta = None
    if view["state"] in ("running", "queued") and 0 < fraction < 1:
        eta = round(elapsed * (1 - fraction) / fraction, 1)
    maps, reduces = view["maps"], view["reduces"]
    view.update(
        {
            "progress": {
                "map": maps["completed"] / maps["total"] if maps["total"] else 1.0,
                "reduce": reduces["completed"] / reduces["total"] if reduces["total"] else 1.0,
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
                    "record": f.label or f.record,
                    "traceback": f.traceback,
                    "infrastructure": f.infrastructure,
                }
                for f in detail.failures
            ],
            "skipped_records": [
                {"task": s.task, "record": s.record, "reason": s.reason} for s in summary.skipped
            ],
            "tasks": [
                {
                    **dataclasses.asdict(row),
                    "attempts": [dataclasses.asdict(a) for a in row.attempts],
                }
                for row in detail.tasks
            ],
            "tasks_listed": len(detail.tasks),
            "tasks_total": total,
        }
    )
    return view


def task_logs_view(driver: MasterDriver, job_id: str, task_id: str) -> dict[str, Any]:
    """Each attempt of one task with its log and error.

    Raises:
        KeyError: no such job or task.
    """
    with driver.lock:
        attempts = queries.task_logs(driver.state, job_id, task_id, driver.logs.get)
    kind, index = queries.parse_task_id(task_id)
    return {
        "job": job_id,
        "task": f"{kind.value}-{index:05d}",
        "attempts": [dataclasses.asdict(a) for a in attempts],
    }
