#!/usr/bin/env python3
"""Start-up benchmark: how long ``mapreduce run`` takes on a tiny input, and until its first task.

One command, standard library only.  It writes a tiny input (``--kb``, default
1 KB of text lines) in a temporary directory *outside* the repository, then
runs, ``--repeat`` times each and alternating, these child processes:

* ``python -c pass``: the interpreter's own start-up, the unit of the ratios
  (the interpreter is this script's, the one ``mapreduce`` runs on);
* ``mapreduce --version``: the ``mapreduce`` command's imports (gRPC, protobuf,
  the runtime), with no work;
* ``mapreduce run bench/jobs/first_task_probe.py --input TINY --output DIR
  --param stamp=FILE --overwrite -q --local``: the sequential runner;
* the same command with ``--workers N`` instead of ``--local``, for each N of
  ``--workers`` (default 1 and 2): the embedded cluster (a master in the
  ``run`` process, N worker processes on loopback).

For each it prints the median wall seconds (min-max), from just before
spawning the child to reaping it, and its ratio to the ``python -c pass``
median.  For the ``mapreduce run`` commands also the *time to first task*:
from the same instant to the first call of the job's ``map`` in any task, and
its ratio to ``python -c pass``.  The probe job's ``map`` appends
``time.time()`` to ``FILE`` on its first call in each process; this script
records ``time.time()`` just before ``Popen``.  Both are the wall clock of the
same machine, so they compare; the earliest stamp counts.  "after" is the
rest of the wall time: the job's work once the first task runs (tiny here),
the output commit and the shutdown of the cluster.  CPU (user + system) is
that of the child and all its descendants, the workers' orphaned fork servers
and their task processes included (see ``bench/measuring.py``); peak RSS is
the largest of any one of those processes.

Every run's output is checked (``_SUCCESS``, and the line count of the input);
figures are never trusted from a failed run.

Usage, from anywhere (``python`` must be 3.11+; mapreduce is taken from this
checkout's ``src/``)::

    python bench/startup.py                  # 5 runs of each, medians
    python bench/startup.py --repeat 11 --workers 1 2 4
    python bench/startup.py --quick          # 2 runs of each: a smoke test
    python bench/startup.py --work-dir DIR   # input and outputs under DIR

Exit status: 0 when every run succeeded and its output is right, 1 when a run
failed or an output is wrong, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from measuring import (
    REPO,
    BenchError,
    Sample,
    add_work_dir_argument,
    enable_subreaper,
    mapreduce_command,
    measure,
    run_main,
    work_dir_outside_repository,
)

JOB = REPO / "bench" / "jobs" / "first_task_probe.py"
DEFAULT_REPEAT = 5
QUICK_REPEAT = 2
DEFAULT_WORKERS = (1, 2)

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "map",
    "and",
    "reduce",
    "run",
]


@dataclass
class Contender:
    """A command under test and its measurements."""

    name: str
    argv: list[str]  # with OUT and STAMP where those paths go
    env: dict[str, str] | None = None
    probe: bool = False  # a mapreduce run of the probe job: has a first-task time
    samples: list[Sample] = field(default_factory=list)
    first_task: list[float] = field(default_factory=list)  # seconds after start_time

    def command(self, output: Path, stamp: Path) -> list[str]:
        paths = {"OUT": str(output), "STAMP": f"stamp={stamp}"}
        return [paths.get(arg, arg) for arg in self.argv]


def write_tiny_input(path: Path, size: int) -> int:
    """About ``size`` bytes of short text lines at ``path``; returns the number of lines."""
    lines: list[str] = []
    total = 0
    i = 0
    while total < size:
        line = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(8))
        lines.append(line)
        total += len(line) + 1
        i += 1
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return len(lines)


def contenders_for(workers: Sequence[int], tiny: Path) -> list[Contender]:
    mapreduce, env = mapreduce_command()
    common = [*mapreduce, "run", str(JOB), "--input", str(tiny), "--output", "OUT"]
    common += ["--param", "STAMP", "--overwrite", "-q"]
    contenders = [
        Contender("python -c pass", [sys.executable, "-c", "pass"]),
        Contender("mapreduce --version", [*mapreduce, "--version"], env),
        Contender("mapreduce run --local", [*common, "--local"], env, probe=True),
    ]
    for n in workers:
        argv = [*common, "--workers", str(n)]
        contenders.append(Contender(f"mapreduce run --workers {n}", argv, env, probe=True))
    return contenders


def check_run(output: Path, stamp: Path, lines: int) -> float:
    """The earliest stamp of a probe run, once its output is found right."""
    if not (output / "_SUCCESS").exists():
        raise BenchError(f"{output}: no _SUCCESS")
    text = "".join(p.read_text(encoding="utf-8") for p in sorted(output.glob("part-*")))
    if text != f"lines\t{lines}\n":
        raise BenchError(f"{output}: expected 'lines\\t{lines}', got {text!r}")
    try:
        stamps = [float(s) for s in stamp.read_text(encoding="utf-8").split()]
    except (OSError, ValueError) as exc:
        raise BenchError(f"{stamp}: no time stamp from the probe job ({exc})") from exc
    if not stamps:
        raise BenchError(f"{stamp}: no time stamp from the probe job")
    return min(stamps)


def _spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def print_table(contenders: Sequence[Contender]) -> None:
    header = (
        f"{'name':<26} {'wall s (min-max)':>22} {'x py':>6} {'first task s (min-max)':>23}"
        f" {'x py':>6} {'after s':>7} {'cpu s':>6} {'peak MiB':>8}"
    )
    print(header)
    print("-" * len(header))
    unit = statistics.median(s.wall for s in contenders[0].samples)
    for c in contenders:
        walls = [s.wall for s in c.samples]
        wall = statistics.median(walls)
        cpu = statistics.median(s.cpu for s in c.samples)
        peak_bytes = statistics.median(s.peak_bytes for s in c.samples)
        peak = f"{peak_bytes / (1 << 20):.1f}"
        if peak_bytes <= max(s.floor_bytes for s in c.samples):
            peak = "<=" + peak  # the child stayed under this script's own peak
        first, first_ratio, after = "-", "-", "-"
        if c.first_task:
            first = _spread(c.first_task)
            first_ratio = f"{statistics.median(c.first_task) / unit:.1f}x"
            rest = [s.wall - f for s, f in zip(c.samples, c.first_task, strict=True)]
            after = f"{statistics.median(rest):.3f}"
        print(
            f"{c.name:<26} {_spread(walls):>22} {wall / unit:>5.1f}x {first:>23}"
            f" {first_ratio:>6} {after:>7} {cpu:>6.3f} {peak:>8}"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Start-up of mapreduce run (--local and embedded cluster) on a tiny "
        "input: total wall and time to the first task, against python -c pass.",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help=f"measured runs of each command (median; default {DEFAULT_REPEAT}, "
        f"with --quick {QUICK_REPEAT})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="*",
        default=list(DEFAULT_WORKERS),
        metavar="N",
        help="embedded cluster sizes to measure (default: 1 2; none: --local only)",
    )
    parser.add_argument("--kb", type=float, default=1.0, help="tiny input size in KB (1)")
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke test: {QUICK_REPEAT} runs of each"
    )
    add_work_dir_argument(parser, "the input and outputs")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = QUICK_REPEAT if args.quick else DEFAULT_REPEAT
    if args.repeat < 1 or args.kb <= 0 or any(n < 1 for n in args.workers):
        parser.error("--repeat and --workers must be at least 1, --kb positive")
    args.workers = sorted(set(args.workers))
    args.work_dir = work_dir_outside_repository(parser, args.work_dir)
    return args


def run(args: argparse.Namespace) -> None:
    args.work_dir.mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix="startup-", dir=args.work_dir))
    tiny = runs / "tiny.txt"
    lines = write_tiny_input(tiny, round(args.kb * 1000))
    subreaper = enable_subreaper()
    contenders = contenders_for(args.workers, tiny)

    print(f"input     {tiny}: {tiny.stat().st_size:,} bytes, {lines} lines")
    print(f"python    {sys.executable} ({platform.python_implementation()} ", end="")
    print(f"{platform.python_version()}), {os.cpu_count()} CPUs, ", end="")
    print("load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    for c in contenders[1:]:
        print(f"command   {shlex.join(c.argv)}")
    print(f"runs      {args.repeat} of each, alternating; figures are medians", flush=True)

    try:
        for i in range(args.repeat):
            for k, c in enumerate(contenders):
                out, stamp = runs / f"out-{k}-{i}", runs / f"stamp-{k}-{i}.txt"
                c.samples.append(measure(c.command(out, stamp), runs / f"{k}-{i}.log", c.env))
        for k, c in enumerate(contenders):
            if c.probe:
                for i, sample in enumerate(c.samples):
                    stamp = runs / f"stamp-{k}-{i}.txt"
                    first = check_run(runs / f"out-{k}-{i}", stamp, lines)
                    c.first_task.append(first - sample.start_time)
    except BenchError as exc:
        raise BenchError(f"{exc}\noutputs and logs kept in {runs}") from exc
    except BaseException:
        shutil.rmtree(runs, ignore_errors=True)
        raise
    shutil.rmtree(runs)

    print()
    print_table(contenders)
    print()
    print(f"outputs right: all {sum(c.probe for c in contenders) * args.repeat} mapreduce runs")
    print("x py: median / median wall of python -c pass; first task: from spawning")
    print("  the command to the first call of map; after: wall - first task")
    floor = max(s.floor_bytes for c in contenders for s in c.samples) / (1 << 20)
    print(f"peak: largest single process; <=X: never above this script's own peak ({floor:.1f}")
    print("  MiB), which Linux charges to each child until it calls exec")
    if not subreaper:
        print("warning: no subreaper (not Linux?): the cluster's cpu misses its task processes")
    unit = statistics.median(s.wall for s in contenders[0].samples)
    for c in contenders[2:]:
        first = statistics.median(c.first_task)
        print(f"ratio {c.name.removeprefix('mapreduce ')} first task/python -c pass: ", end="")
        print(f"{first / unit:.1f}x ({first:.3f}s)")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
