"""The job summary: counters, record and byte counts, phase times, skipped records.

Built from the committed attempt of every task (never from failed or
duplicate attempts), printed at the end of a run and written to
``OUTPUT/_summary.json``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mapreduce.core.spec import JobSpec

#: How many skipped records the summary lists (all are counted).
SKIPPED_LISTED = 20


@dataclass(frozen=True)
class SkippedRecord:
    """A record a job skipped (``--skip-bad-records``).

    Attributes:
        task: the task that met it.
        record: ``path@offset`` for map input, ``key=...`` for a reduce key group.
        reason: the error it raised.
    """

    task: str
    record: str
    reason: str


class TaskCounts(Protocol):
    """What the summary reads of a committed attempt (a runner's result or a report's stats)."""

    @property
    def input_records(self) -> int: ...
    @property
    def input_bytes(self) -> int: ...
    @property
    def output_records(self) -> int: ...
    @property
    def output_bytes(self) -> int: ...
    @property
    def spills(self) -> int: ...
    @property
    def counters(self) -> Mapping[str, int]: ...


@dataclass
class JobSummary:
    """What a finished job did; :meth:`to_dict` is the ``_summary.json`` content."""

    spec: JobSpec
    map_results: list[TaskCounts] = field(default_factory=list)
    reduce_results: list[TaskCounts] = field(default_factory=list)
    skipped: list[SkippedRecord] = field(default_factory=list)
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def counters(self) -> dict[str, int]:
        """User counters summed over committed attempts, sorted by name."""
        total: Counter[str] = Counter()
        for result in [*self.map_results, *self.reduce_results]:
            total.update(result.counters)
        return dict(sorted(total.items()))

    def system_counters(self) -> dict[str, int]:
        maps, reduces = self.map_results, self.reduce_results
        return {
            "map_tasks": len(maps),
            "reduce_tasks": len(reduces),
            "map_input_records": _sum(r.input_records for r in maps),
            "map_input_bytes": _sum(r.input_bytes for r in maps),
            "map_output_records": _sum(r.output_records for r in maps),
            "intermediate_bytes": _sum(r.output_bytes for r in maps),
            "map_spills": _sum(r.spills for r in maps),
            "reduce_input_records": _sum(r.input_records for r in reduces),
            "reduce_output_records": _sum(r.output_records for r in reduces),
            "output_bytes": _sum(r.output_bytes for r in reduces),
            "skipped_records": len(self.skipped),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.spec.job_id,
            "job_file": self.spec.job_file_name,
            "output": self.spec.output,
            "input_format": self.spec.input_format,
            "num_reducers": self.spec.num_reducers,
            "params": self.spec.params,
            "status": "succeeded",
            "counters": self.counters(),
            "system": self.system_counters(),
            "phase_seconds": {k: round(v, 3) for k, v in self.phase_seconds.items()},
            "skipped_records": [
                {"task": s.task, "record": s.record, "reason": s.reason}
                for s in self.skipped[:SKIPPED_LISTED]
            ],
        }


def _sum(values: Iterable[int]) -> int:
    return sum(values)


def render_summary(summary: dict[str, Any]) -> str:
    """The end-of-job summary: where the output is, record counts, counters."""
    system = summary.get("system") or {}
    counters = summary.get("counters") or {}
    phases = summary.get("phase_seconds") or {}
    lines = [f"job {summary.get('job_id')} succeeded: output in {summary.get('output')}"]
    if system:
        lines.append(
            f"  {system.get('map_tasks')} map tasks, {system.get('reduce_tasks')} reduce tasks"
            + (f" in {phases['total']:.2f}s" if "total" in phases else "")
        )
        lines.append(
            f"  map input: {system.get('map_input_records')} records, "
            f"{system.get('map_input_bytes')} bytes; intermediate: "
            f"{system.get('map_output_records')} records, {system.get('intermediate_bytes')} bytes"
        )
        lines.append(
            f"  output: {system.get('reduce_output_records')} records, "
            f"{system.get('output_bytes')} bytes"
        )
        if system.get("skipped_records"):
            lines.append(f"  skipped {system['skipped_records']} bad records:")
            lines.extend(
                f"    {s['record']} ({s['task']}): {s['reason']}"
                for s in summary.get("skipped_records") or []
            )
    if counters:
        lines.append("  counters:")
        lines.extend(f"    {name}: {value}" for name, value in counters.items())
    return "\n".join(lines)
