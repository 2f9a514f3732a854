#!/usr/bin/env python3
"""Distributed-sort benchmark: ``mapreduce run examples/sort.py``, sequential and on the
embedded cluster, against one core of plain Python, a hand-written ``multiprocessing.Pool``
and GNU sort.

One command, standard library only.  It

1. generates deterministic TeraSort-style records *outside* the repository
   with ``../shared/bench/gen_records.py`` (seed 42): 100-byte lines, a
   10-byte printable key, a space, the record's number in 32 hex digits, a
   space, filler; in ``WORK_DIR/records-<n>-<files>f``, reused when it is
   already there and complete;
2. runs, ``--repeat`` times each and alternating, these child processes:

   * the baseline: plain Python on one core, every line of every file read
     as bytes, ``list.sort()``, written (``bench/baselines.py sort single``);
   * the same by hand on ``--pool`` cores (default 2): the input cut into
     that many contiguous parts of about equal bytes, each read and sorted
     by a ``multiprocessing.Pool`` worker, the sorted parts merged by the
     parent with ``heapq.merge`` (``bench/baselines.py sort pool``);
   * GNU sort: ``env LC_ALL=C sort --parallel=N -S 50% -o OUT FILE...``
     (N = ``--pool``; left out, with a note, where ``sort`` is not GNU's);
   * ``mapreduce run examples/sort.py --input RECORDS --output DIR
     --reducers R --split-size S --overwrite -q --local`` (R = 4 by default:
     ``examples/sort.py`` is range-partitioned, so the part files in name
     order are globally sorted);
   * the same with ``--workers N`` instead of ``--local``, for each N of
     ``--workers`` (default 2): the embedded cluster;

   every mapreduce run gets the same ``--split-size``, by default the largest
   that makes at least max(8, 2 x the most workers) map tasks (for the
   default input: one task per file);
3. checks every output, right after its run (then deletes it, so that a
   large sort does not fill the disk): the first baseline run's output is
   the reference, which must hold as many bytes as the input, in
   non-decreasing line order; every other output must equal it byte for
   byte.  For mapreduce that is ``cat part-*`` with, on every line, the TAB
   the job puts after the 10-character key removed (it must be there).
   Comparing whole outputs is exact because a whole-line sort *is* the
   stable sort by key on these records: a record's number follows its key
   and grows in input order, so records with equal keys (rare: keys are
   random over 94**10) sort by their input position, as ``examples/sort.py``
   keeps them.  So GNU sort sorts whole lines (as in the performance
   anchors), which is also what ``sort -s -k1.1,1.10`` would give;
4. prints, for each, the median wall seconds (min-max), CPU seconds, peak RSS,
   MB/s (input bytes / 10**6 / median wall) and the ratios of its median wall
   to the three baselines', measured in the same run.

Measurement (wall, CPU of every descendant, peak RSS of the largest single
process) is as in ``bench/wordcount.py``; see ``bench/measuring.py``.  The
checking runs between measured runs but only streams files, so this script's
own peak, which Linux charges to each child until exec, stays small.

Usage, from anywhere (``python`` must be 3.11+; mapreduce is taken from this
checkout's ``src/``)::

    python bench/sort.py                                # 1,000,000 records in 8 files, 3 runs
    python bench/sort.py --records 5000000 --files 16   # the size of the performance anchors
    python bench/sort.py --reducers 8 --workers 1 2
    python bench/sort.py --quick                        # 20,000 records, 2 files, 1 run
    python bench/sort.py --security                     # the cost of the secret and TLS

With ``--security`` the contenders are the 1-core baseline (the reference output)
and the same ``examples/sort.py`` job submitted to a master and ``--workers``
workers started for each run by ``bench/daemon_run.py``: with no secret, with the
cluster secret, and with the secret and mutual TLS on every connection (the
shuffle's included); it prints the ratios of the last two to the first.

Exit status: 0 when every run succeeded and all outputs agree, 1 when a run
failed or the outputs disagree, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import (
    Contender,
    Dataset,
    add_common_arguments,
    auto_split_size,
    baseline,
    ensure_dataset,
    finish_arguments,
    mapreduce_runs,
    print_commands,
    print_environment,
    print_map_tasks,
    print_notes,
    print_ratios,
    print_table,
    run_alternating,
    run_directory,
    warm_page_cache,
)
from measuring import REPO, BenchError, enable_subreaper, mapreduce_command, run_main

JOB = REPO / "examples" / "sort.py"
DAEMON_RUN = REPO / "bench" / "daemon_run.py"
SECURITY_MODES = ("none", "secret", "tls")
KEY_LENGTH = 10  # examples/sort.py's key: the first 10 characters of a record
CHUNK = 1 << 20

DEFAULTS = {"records": 1_000_000, "files": 8, "repeat": 3}
QUICK = {"records": 20_000, "files": 2, "repeat": 1}
DEFAULT_WORKERS = (2,)


# --------------------------------------------------------------------------- checking


@dataclass
class Reference:
    """The first baseline output: what every other output must equal."""

    path: Path
    lines: int


def file_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from f


def untabbed_lines(output: Path) -> Iterator[bytes]:
    """``cat OUTPUT/part-*``, the TAB after each line's key removed (an error if missing)."""
    for part in sorted(output.glob("part-*")):
        for number, line in enumerate(file_lines(part), 1):
            if line[KEY_LENGTH : KEY_LENGTH + 1] != b"\t":
                raise BenchError(f"{part}:{number}: no TAB after the key: {line[:40]!r}")
            yield line[:KEY_LENGTH] + line[KEY_LENGTH + 1 :]


def check_reference(output: Path, input_bytes: int) -> Reference:
    """The first baseline output: the input's size, lines in non-decreasing order."""
    size = output.stat().st_size
    if size != input_bytes:
        raise BenchError(f"{output}: {size:,} bytes, the input {input_bytes:,}")
    previous = b""
    count = 0
    for count, line in enumerate(file_lines(output), 1):
        if line < previous:
            raise BenchError(f"{output}:{count}: {line[:20]!r} after {previous[:20]!r}")
        previous = line
    return Reference(output, count)


def same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            chunk = fa.read(CHUNK)
            if chunk != fb.read(CHUNK):
                return False
            if not chunk:
                return True


def first_difference(reference: Path, lines: Iterator[bytes]) -> str:
    """Where ``lines`` first differ from the reference file's lines ("" if nowhere)."""
    pairs = itertools.zip_longest(file_lines(reference), lines)
    for number, (want, got) in enumerate(pairs, 1):
        if want != got:
            return f"line {number}: expected {want!r}, got {got!r}"
    return ""


def check_output(reference: Reference, contender: Contender, output: Path) -> None:
    """Raise unless ``output`` equals the reference; delete it if it does."""
    if contender.mapreduce:
        where = first_difference(reference.path, untabbed_lines(output))
    elif same_bytes(reference.path, output):
        where = ""
    else:
        where = first_difference(reference.path, file_lines(output))
    if where:
        raise BenchError(f"{output} ({contender.name}) differs from {reference.path}: {where}")
    if output.is_dir():
        shutil.rmtree(output)
    else:
        output.unlink()


# --------------------------------------------------------------------------- report


def gnu_sort() -> str | None:
    """The path of ``sort`` if it is GNU coreutils' (which has --parallel), else None."""
    path = shutil.which("sort")
    if path is None:
        return None
    try:
        result = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return path if "GNU coreutils" in result.stdout else None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Distributed sort: mapreduce run examples/sort.py --local and on the "
        "embedded cluster against one core of plain Python, a multiprocessing.Pool and "
        "GNU sort.",
        epilog="--records, --files and --repeat default to 1000000, 8 and 3 "
        "(with --quick: 20000, 2, 1).",
    )
    parser.add_argument("--records", type=int, help="number of 100-byte records")
    parser.add_argument("--files", type=int, help="number of input files")
    parser.add_argument(
        "--security",
        action="store_true",
        help="measure jobs on daemons with no secret, the secret, and the secret with TLS",
    )
    add_common_arguments(parser, reducers=4, workers=DEFAULT_WORKERS)
    args = finish_arguments(parser, parser.parse_args(argv), DEFAULTS, QUICK)
    if args.records < 1 or args.files < 1:
        parser.error("--records and --files must be at least 1")
    return args


def contenders_for(
    args: argparse.Namespace, records: Dataset, split_size: int, sort: str | None
) -> list[Contender]:
    """The baselines (GNU sort if there is one), mapreduce --local, a mapreduce per cluster size."""
    pool = f"Pool({args.pool})"
    contenders = [
        baseline("python sort (1 core)", "1-core", "sort", "single", records.files),
        baseline(
            f"python {pool} sort+merge",
            pool,
            "sort",
            "pool",
            records.files,
            "--processes",
            str(args.pool),
        ),
    ]
    if sort is not None:
        argv = ["env", "LC_ALL=C", sort, f"--parallel={args.pool}", "-S", "50%", "-o", "OUT"]
        argv += [str(p) for p in records.files]
        contenders.append(Contender(f"GNU sort --parallel={args.pool}", argv, label="GNU sort"))
    contenders += mapreduce_runs(JOB, records, args.reducers, split_size, args.workers)
    return contenders


def security_contenders(
    args: argparse.Namespace, records: Dataset, split_size: int
) -> list[Contender]:
    """The 1-core baseline, then the job on daemons without and with the secret and TLS."""
    contenders = [baseline("python sort (1 core)", "1-core", "sort", "single", records.files)]
    workers = max(args.workers or [2])
    _mapreduce, env = mapreduce_command()
    for mode in SECURITY_MODES:
        argv = [sys.executable, str(DAEMON_RUN), "--security", mode, "--workers", str(workers)]
        argv += ["--", str(JOB), "--input", str(records.path), "--output", "OUT", "--reducers"]
        argv += [str(args.reducers), "--split-size", str(split_size), "-q"]
        name = f"mapreduce daemons {mode}"
        contenders.append(Contender(name, argv, env, mapreduce=True, workers=workers))
    return contenders


def print_security_ratios(contenders: Sequence[Contender]) -> None:
    """``ratio daemons secret/none wall: 1.02x cpu: 1.01x`` and the same for TLS."""
    runs = {c.name.rsplit(" ", 1)[-1]: c for c in contenders if c.mapreduce}
    if set(runs) != set(SECURITY_MODES):
        return
    for mode in SECURITY_MODES[1:]:
        ratio = runs[mode].median_wall() / runs["none"].median_wall()
        cpu = median_cpu(runs[mode]) / median_cpu(runs["none"])
        print(f"ratio daemons {mode}/none wall: {ratio:.3f}x cpu: {cpu:.3f}x")


def median_cpu(contender: Contender) -> float:
    return statistics.median(s.cpu for s in contender.samples)


def run(args: argparse.Namespace) -> None:
    args.work_dir.mkdir(parents=True, exist_ok=True)
    target = args.work_dir / f"records-{args.records}-{args.files}f"
    options = {"records": args.records, "files": args.files}
    what = f"{args.records:,} records in {args.files} files"
    records = ensure_dataset(target, "gen_records.py", options, what)
    warm_page_cache(records)
    subreaper = enable_subreaper()  # after generating: no orphan of that is counted
    split_size = args.split_size or auto_split_size(
        [p.stat().st_size for p in records.files], args.workers
    )
    sort = None if args.security else gnu_sort()
    if args.security:
        contenders = security_contenders(args, records, split_size)
    else:
        contenders = contenders_for(args, records, split_size, sort)

    print(f"records   {records.path}: {args.records:,} records, {records.bytes:,} bytes ", end="")
    print(f"in {len(records.files)} files", "(reused)" if records.reused else "(generated)")
    print_environment()
    print_commands(contenders, records)
    if sort is None and not args.security:
        print("note      no GNU sort on the PATH: its baseline is left out")
    print(f"runs      {args.repeat} of each, alternating; figures are medians", flush=True)

    with run_directory(args.work_dir, "sort-") as runs:
        reference: Reference | None = None

        def check(contender: Contender, output: Path) -> None:
            nonlocal reference
            if reference is None:
                reference = check_reference(output, records.bytes)  # the first run's
            else:
                check_output(reference, contender, output)

        run_alternating(contenders, args.repeat, runs, check)
        if reference is None:
            raise BenchError("no run made a reference output")
        count = reference.lines

    print()
    print_table(contenders, records.bytes)
    print()
    print(
        f"outputs agree: {count:,} records, all {len(contenders) * args.repeat} runs equal ", end=""
    )
    print("byte for byte the sorted input (mapreduce: part files in order, TAB after key removed)")
    print_map_tasks(contenders, split_size, args.reducers, args.workers)
    print_notes(contenders, subreaper)
    print_ratios(contenders)
    print_security_ratios(contenders)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
