"""``MasterConfig``: the master's timeouts and limits, part of its durable state."""

from __future__ import annotations

from dataclasses import dataclass

from mapreduce.core.spec import DEFAULT_MAX_MAPS, DEFAULT_MAX_REDUCERS, MAX_REDUCERS, MAX_SPLITS


@dataclass(frozen=True)
class MasterConfig:
    """Timeouts and limits of the master, in seconds of its monotonic clock.

    Attributes:
        worker_timeout: a worker silent this long is declared dead (also after a
            master restart: workers that do not come back within it are dead).
        task_timeout: an attempt that reports no progress this long is failed.
        backup_after: a backup attempt is started only for attempts older than this.
        record_failures_to_skip: attempts that must crash on a record before it is skipped.
        max_lost_outputs: how often one map's output may be lost to fetch failures.
        max_infrastructure_failures: failures of one task that its worker's machine
            caused (a full disk) and that do not count against ``max_attempts``; more count.
        max_maps, max_reducers: the most map and reduce tasks a submitted job may have
            (checked when a job is submitted, not when the journal is replayed).
    """

    worker_timeout: float = 10.0
    task_timeout: float = 600.0
    backup_after: float = 5.0
    record_failures_to_skip: int = 2
    max_lost_outputs: int = 4
    max_infrastructure_failures: int = 10
    max_maps: int = DEFAULT_MAX_MAPS
    max_reducers: int = DEFAULT_MAX_REDUCERS

    def validate(self) -> None:
        if self.worker_timeout <= 0 or self.task_timeout <= 0 or self.backup_after < 0:
            raise ValueError("timeouts must be positive")
        if self.record_failures_to_skip < 1 or self.max_lost_outputs < 1:
            raise ValueError("record_failures_to_skip and max_lost_outputs must be at least 1")
        if self.max_infrastructure_failures < 0:
            raise ValueError("max_infrastructure_failures must be 0 or more")
        if not 1 <= self.max_maps <= MAX_SPLITS:
            raise ValueError(f"--max-maps must be 1 to {MAX_SPLITS} (got {self.max_maps})")
        if not 1 <= self.max_reducers <= MAX_REDUCERS:
            raise ValueError(
                f"--max-reducers must be 1 to {MAX_REDUCERS} (got {self.max_reducers})"
            )
