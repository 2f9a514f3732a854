"""Measuring a child process and every process it starts: shared by the bench/ scripts.

Not a benchmark itself; ``bench/wordcount.py`` and ``bench/startup.py`` import
it (a script's own directory is on ``sys.path``).  Standard library only.

Why not just ``os.wait4`` on the child?  ``wait4`` reports the child's CPU and
that of the descendants the child (or they, recursively) waited for.  The
embedded cluster of ``mapreduce run`` waits for its worker processes
(``Popen.wait``), but each worker also forks a fork server that it never waits
for, and every map and reduce task runs in a process forked, and reaped, by
that fork server.  When the worker exits it is orphaned: reparented to init and
reaped there, so all the CPU of the task code is missing from ``wait4`` of the
``run`` process.  (Measured, when a worker left 2 orphans, a ``multiprocessing``
fork server and its resource tracker: ``mapreduce run --workers 1`` over 8 MB,
``wait4`` of the run process 0.45 s of CPU; with the orphans, 1.78 s;
``--local`` on the same input, 1.31 s.)

So :func:`enable_subreaper` makes this process a *child subreaper*
(``prctl(PR_SET_CHILD_SUBREAPER)``, Linux): orphaned descendants are then
reparented to this process instead of init, and :func:`measure` reaps them
after the child and adds up their resource usage.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import ctypes
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "mapreduce-bench"

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>

#: How long the orphans of a finished child may take to exit.
ORPHAN_TIMEOUT = 60.0


class BenchError(Exception):
    """A run failed, left processes behind or wrote a wrong output (exit status 1)."""


@dataclass(frozen=True)
class Sample:
    """One measured run of one command.

    Attributes:
        wall: monotonic seconds from just before spawning the child to reaping it.
        cpu: user + system seconds of the child and of every descendant reaped,
            by it or (orphans, with a subreaper) by this process.
        peak_bytes: the largest peak RSS of any one of those processes.
        floor_bytes: this process's own peak when it spawned the child (Linux
            charges a child with its parent's peak until it calls exec).
        start_time: ``time.time()`` just before spawning the child.
        orphans: descendants that outlived their parent and were reaped here.
    """

    wall: float
    cpu: float
    peak_bytes: int
    floor_bytes: int
    start_time: float
    orphans: int


def enable_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants; False where impossible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _peak_bytes(maxrss: int) -> int:
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # Linux: KiB


def own_peak_bytes() -> int:
    """This process's peak RSS, which Linux also charges to every child it spawns."""
    return _peak_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _reap_orphans(deadline: float) -> tuple[int, float, int]:
    """Reap every remaining child of this process: (count, cpu seconds, largest peak RSS).

    The scripts using this run one child at a time, so only orphans of the last
    child can be left.
    """
    count, cpu, peak = 0, 0.0, 0
    while True:
        try:
            pid, _status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return count, cpu, peak
        if pid == 0:
            if time.monotonic() > deadline:
                left = _kill_children()
                raise BenchError(
                    f"descendants still running {ORPHAN_TIMEOUT:g}s after the run: "
                    f"killed {', '.join(map(str, left))}"
                )
            time.sleep(0.005)
            continue
        count += 1
        cpu += usage.ru_utime + usage.ru_stime
        peak = max(peak, _peak_bytes(usage.ru_maxrss))


def _kill_children() -> list[int]:
    """SIGKILL and reap every child of this process, orphans included; return their pids."""
    killed: list[int] = []
    for _round in range(100):
        pids = [
            int(pid)
            for children in Path(f"/proc/{os.getpid()}/task").glob("*/children")
            for pid in children.read_text(encoding="ascii").split()
        ]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        killed += pids
    return killed


def measure(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Sample:
    """Run ``argv`` as a child (output to ``log``); measure it and its descendants.

    Raises:
        BenchError: the command exited with a non-zero status, or its
            descendants did not exit within :data:`ORPHAN_TIMEOUT`.
    """
    _reap_orphans(time.monotonic() + ORPHAN_TIMEOUT)  # leftovers of earlier commands
    floor = own_peak_bytes()
    with open(log, "wb") as out:
        start_time = time.time()
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    orphans, orphan_cpu, orphan_peak = _reap_orphans(time.monotonic() + ORPHAN_TIMEOUT)
    if proc.returncode != 0:
        text = log.read_text(encoding="utf-8", errors="replace")
        raise BenchError(f"exit status {proc.returncode}: {shlex.join(argv)}\n{text}")
    return Sample(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime + orphan_cpu,
        peak_bytes=max(_peak_bytes(usage.ru_maxrss), orphan_peak),
        floor_bytes=floor,
        start_time=start_time,
        orphans=orphans,
    )


def add_work_dir_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--work-dir``: where ``what`` goes (checked by :func:`work_dir_outside_repository`)."""
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        help=f"where {what} go, outside the repository ({DEFAULT_WORK_DIR})",
    )


def work_dir_outside_repository(parser: argparse.ArgumentParser, work_dir: Path) -> Path:
    """``work_dir`` made absolute; a usage error if it is inside this repository."""
    work_dir = work_dir.resolve()
    if work_dir == REPO or REPO in work_dir.parents:
        parser.error(f"--work-dir {work_dir} is inside the repository; use a directory outside")
    return work_dir


def mapreduce_command() -> tuple[list[str], dict[str, str]]:
    """``mapreduce`` (the script beside this interpreter, else ``python -m``) on this checkout.

    The checkout's sources are compiled to ``__pycache__`` first, as a first run
    leaves them: with ``PYTHONDONTWRITEBYTECODE`` set (some sandboxes and CI do)
    every process of every run would compile them again (about 0.04 s each).  All of
    them, always (``force``): compileall keeps a ``.pyc`` whose source has the same
    modification second, but the importer also compares the size, so a source edited
    within a second of its compilation would be compiled again by every process.
    """
    compileall.compile_dir(str(REPO / "src"), quiet=1, force=True)
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    script = Path(sys.executable).parent / "mapreduce"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)], env
    return [sys.executable, "-m", "mapreduce"], env


def run_main(
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], object],
    argv: Sequence[str] | None,
) -> int:
    """A benchmark script's ``main``: 0 on success, 1 (with the reason) on a BenchError."""
    args = parse_args(argv)
    try:
        run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
