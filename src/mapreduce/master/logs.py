"""``LogStore``: the ends of attempt logs that workers send with their reports.

The master's durable state records only that an attempt has a log; the text
is kept here: in memory, or with ``--state-dir`` in files under
``DIR/logs/JOB/TASK.attempt-N.log``, so ``mapreduce logs`` works after a
restart.  Each text is capped at :data:`MAX_LOG_CHARS`.
"""

from __future__ import annotations

import os
import threading

from mapreduce.core.spec import check_job_id
from mapreduce.core.tasks import TaskKind

#: The most characters of one attempt's log the master keeps (the end of it).
MAX_LOG_CHARS = 64 << 10


class LogStore:
    """Attempt logs by (job, kind, index, attempt); in ``directory`` when given."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory
        self._memory: dict[tuple[str, TaskKind, int, int], str] = {}
        self._lock = threading.Lock()

    def _path(self, job_id: str, kind: TaskKind, index: int, attempt: int) -> str:
        assert self.directory is not None
        check_job_id(job_id)
        return os.path.join(
            self.directory, job_id, f"{kind.value}-{index:05d}.attempt-{attempt}.log"
        )

    def put(self, job_id: str, kind: TaskKind, index: int, attempt: int, text: str) -> None:
        text = text[-MAX_LOG_CHARS:]
        if self.directory is None:
            with self._lock:
                self._memory[(job_id, kind, index, attempt)] = text
            return
        path = self._path(job_id, kind, index, attempt)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        temporary = path + ".tmp"
        with open(temporary, "w", encoding="utf-8", errors="replace") as f:
            f.write(text)
        os.replace(temporary, path)

    def get(self, job_id: str, kind: TaskKind, index: int, attempt: int) -> str:
        if self.directory is None:
            with self._lock:
                return self._memory.get((job_id, kind, index, attempt), "")
        try:
            with open(self._path(job_id, kind, index, attempt), encoding="utf-8") as f:
                return f.read()
        except OSError:
            return ""
