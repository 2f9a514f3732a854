"""Fault injection that users can turn on: ``mapreduce run JOB ... --chaos SPEC --chaos-seed S``.

On the embedded cluster, so users can watch re-execution, fetch-failure recovery
and backup tasks work on their own jobs; the output is still the same as with
``--local``.  SPEC is a comma-separated list of ``kind=value``:

==================  ==============================================================
``kill-worker=R``   each second, with probability R, a worker process is SIGKILLed
                    (a new one starts in its place)
``drop-fetch=P``    each fetch of a map output fails with probability P
``crash-task=P``    each task attempt's process is killed with probability P
``slow-worker=N``   N workers wait ``SLOW_SECONDS`` before each task (stragglers)
==================  ==============================================================

Every injected fault is counted: ``_summary.json`` and the end-of-job summary
say how many of each kind, and the status page shows them as they happen.

Injected faults never fail a job on their own: a map output loses at most
:data:`MAX_DROPS` fetches to ``drop-fetch`` (the master gives up on an output lost
more than 4 times) and a task at most one attempt to ``crash-task``.
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass

from mapreduce.errors import UsageError

#: How long a slow worker waits before each task.
SLOW_SECONDS = 3.0
#: Injected fetch failures of one map output, at most (below the master's limit of losses).
MAX_DROPS = 2
KINDS = ("kill-worker", "drop-fetch", "crash-task", "slow-worker")


@dataclass(frozen=True)
class ChaosSpec:
    """What to inject (all off by default)."""

    kill_worker: float = 0.0
    drop_fetch: float = 0.0
    crash_task: float = 0.0
    slow_worker: int = 0

    @property
    def active(self) -> bool:
        return any((self.kill_worker, self.drop_fetch, self.crash_task, self.slow_worker))

    def text(self) -> str:
        """The SPEC that parses back to this."""
        values = (self.kill_worker, self.drop_fetch, self.crash_task, self.slow_worker)
        return ",".join(f"{k}={v:g}" for k, v in zip(KINDS, values, strict=True) if v)


def parse_chaos(text: str) -> ChaosSpec:
    """``kill-worker=0.1,drop-fetch=0.05,slow-worker=1,crash-task=0.02`` as a :class:`ChaosSpec`.

    Raises:
        UsageError: an unknown kind, a value that is not a number, or one out of range.
    """
    values: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        kind, sep, value = item.partition("=")
        if not sep or kind not in KINDS:
            raise UsageError(f"--chaos {item!r}: expected KIND=VALUE with KIND one of {KINDS}")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"--chaos {item!r}: {value!r} is not a number") from None
        if kind == "slow-worker":
            if number < 0 or number != int(number):
                raise UsageError(f"--chaos {item!r}: a number of workers (0, 1, 2...)")
        elif not 0 <= number <= 1:
            raise UsageError(f"--chaos {item!r}: a probability from 0 to 1")
        values[kind] = number
    return ChaosSpec(
        values.get("kill-worker", 0.0),
        values.get("drop-fetch", 0.0),
        values.get("crash-task", 0.0),
        int(values.get("slow-worker", 0)),
    )


class Injector:
    """Draws the faults of one process (seeded) and counts them in a file of the cluster's.

    Args:
        spec: what to inject.
        seed: this process's seed.
        record: the file each injected fault's kind is appended to (a line each).
        slow: whether this process is one of the slow workers.
    """

    def __init__(self, spec: ChaosSpec, seed: int, record: str, slow: bool = False) -> None:
        self.spec = spec
        self.slow = slow
        self._random = random.Random(seed)
        self._record = record
        self._lock = threading.Lock()

    def _happens(self, probability: float, kind: str, *slots: str) -> bool:
        """Draw; a hit also needs one of ``slots`` free (claimed across the cluster's processes)."""
        with self._lock:
            hit = self._random.random() < probability
        if hit and slots:
            hit = any(self._claim(slot) for slot in slots)
        if hit:
            self.count(kind)
        return hit

    def _claim(self, slot: str) -> bool:
        path = os.path.join(os.path.dirname(self._record), "claimed-" + slot)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        return True

    def count(self, kind: str) -> None:
        with self._lock, open(self._record, "a", encoding="utf-8") as f:
            f.write(kind + "\n")

    def drop_fetch(self, job_id: str, map_index: int) -> bool:
        slots = [f"drop-{job_id}-{map_index}-{n}" for n in range(MAX_DROPS)]
        return self._happens(self.spec.drop_fetch, "drop-fetch", *slots)

    def crash_task(self, job_id: str, task: str) -> bool:
        return self._happens(self.spec.crash_task, "crash-task", f"crash-{job_id}-{task}")

    def kill_worker(self) -> bool:
        return self._happens(self.spec.kill_worker, "kill-worker")

    def slow_down(self, stop: threading.Event) -> None:
        """A slow worker waits before a task (counted), unless stopping."""
        if self.slow:
            self.count("slow-worker")
            stop.wait(SLOW_SECONDS)

    def pick(self, count: int) -> int:
        with self._lock:
            return self._random.randrange(count)


def injected(directory: str) -> dict[str, int]:
    """Faults injected so far, by kind, from the count files in ``directory``."""
    counts = dict.fromkeys(KINDS, 0)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return counts
    for name in names:
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                for line in f:
                    if line.strip() in counts and not name.startswith("claimed-"):
                        counts[line.strip()] += 1
        except OSError:
            continue
    return counts
