"""Failover time: from SIGKILL of the leading master candidate to the first task its successor
assigns.

Each round starts three master candidates (``--raft``/``--peers``, default Raft timeouts) and two
workers on loopback, submits a word count of many small map tasks, kills the leader with SIGKILL
once some maps are done, and reads the new leader's log line "first task assigned in epoch N at
T" (T: its wall clock).  Prints each round and the median.

    python bench/failover.py              # 5 rounds
    python bench/failover.py --rounds 3
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the process-test helpers launch the candidates

from tests.daemons import Candidates, wait_until  # noqa: E402

_FIRST = re.compile(r"first task assigned in epoch (\d+) at ([0-9.]+)")


def write_input(directory: Path, files: int) -> None:
    directory.mkdir()
    for i in range(files):
        lines = (f"word{j % 97} other{i} the quick brown fox\n" for j in range(400))
        (directory / f"part-{i:03d}.txt").write_text("".join(lines))


def one_round(work: Path) -> float:
    """Seconds from the leader's SIGKILL to the new leader's first assignment."""
    candidates = Candidates(work)
    try:
        candidates.start_all()
        candidates.start_workers(2)
        old = candidates.wait_for_leader()
        inputs = work / "in"
        write_input(inputs, 200)
        job = str(REPO / "tests" / "jobs" / "slow_wordcount.py")
        submit = subprocess.Popen(
            [
                sys.executable, "-m", "mapreduce", "submit", job, "--master", candidates.address,
                "-i", str(inputs), "-o", str(work / "out"), "-p", "delay=0.005", "-q",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        job_id = (submit.communicate(timeout=120)[0] or "").strip()
        wait_until(lambda: candidates.job(job_id).maps_done >= 20, "20 maps done", timeout=120)
        killed_at = time.time()
        candidates.kill(old)

        def first_assignment() -> float | None:
            for i in candidates.masters:
                for match in _FIRST.finditer((work / f"candidate-{i}.err").read_text()):
                    if float(match.group(2)) > killed_at:
                        return float(match.group(2))
            return None

        wait_until(lambda: first_assignment() is not None, "a task from the new leader")
        assigned = first_assignment()
        assert assigned is not None
        return assigned - killed_at
    finally:
        candidates.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work-dir", default=None, help="scratch space (default: /tmp)")
    args = parser.parse_args(argv)
    seconds = []
    for n in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix="failover-", dir=args.work_dir))
        try:
            seconds.append(one_round(work))
        finally:
            print(f"round {n + 1}: {seconds[-1]:.2f} s from SIGKILL to the new leader's first task")
    print(
        f"failover: median {statistics.median(seconds):.2f} s over {len(seconds)} rounds "
        f"(min {min(seconds):.2f}, max {max(seconds):.2f}; target at most 3 s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
