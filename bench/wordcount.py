#!/usr/bin/env python3
"""Word-count benchmark: ``mapreduce run``, sequential and on the embedded cluster,
against one core of plain Python and a hand-written ``multiprocessing.Pool``.

One command, standard library only.  It

1. generates a deterministic corpus *outside* the repository with
   ``../shared/bench/gen_corpus.py`` (seed 42), in
   ``WORK_DIR/corpus-<mb>mb-<files>f``, and reuses it when it is already there
   and complete (``bench/grep.py`` reads the same corpus);
2. runs, ``--repeat`` times each and alternating, these child processes:

   * the baseline: plain Python on one core, ``collections.Counter`` over
     ``line.split()`` of every line of every file, written as
     ``word<TAB>count`` lines (``bench/baselines.py wordcount single``);
   * the same by hand on ``--pool`` cores (default 2): a
     ``multiprocessing.Pool`` whose workers each count a share of the files
     (a file each when there are at least 4 x N files of about the same size,
     else byte ranges cut at line boundaries) into a ``Counter``, merged by
     the parent (``bench/baselines.py wordcount pool``);
   * ``mapreduce run bench/jobs/wordcount_split.py --input CORPUS --output DIR
     --reducers R --split-size S --overwrite -q --local`` (the same word
     count, the natural way: ``map`` yields ``(word, 1)`` for
     ``line.split()``, plus a combiner);
   * the same command with ``--workers N`` instead of ``--local``, for each N
     of ``--workers`` (default 1 and 2): the embedded cluster, a master in the
     ``run`` process and N worker processes on loopback;

   every mapreduce run gets the same ``--split-size``, by default the largest
   that cuts the corpus into at least max(8, 2 x the most workers) map tasks
   (for the default corpus: one task per 8 MB file), so that there are at
   least twice as many map tasks as workers;
3. checks that every run wrote exactly the same counts as the baseline (exit
   status 1 if not, and the outputs are kept for inspection);
4. prints, for each, the median wall seconds (min-max), CPU seconds, peak RSS,
   MB/s (input bytes / 10**6 / median wall) and the ratios of its median wall
   to the two baselines', measured in the same run; then the ratio of the
   largest cluster's wall to the one-worker cluster's (0.50x would be perfect
   scaling from 1 to 2 workers, 1.00x no gain at all).

Every figure is taken from outside the child: wall is ``time.monotonic()``
around spawn and reap; CPU and peak RSS come from ``os.wait4``.  CPU is user +
system time of the child and of *all* its descendants.  That needs care for
the cluster: ``wait4`` of the ``run`` process covers its workers (it waits for
them), but not the task processes, which are forked and reaped by each
worker's fork server (a child of the worker), which the worker never waits for;
on exit it is orphaned and reaped by init, taking the tasks' CPU with it
(measured: ``--workers 1`` on 8 MB, 0.45 s by ``wait4`` of the run process,
1.78 s in all; ``--local``, 1.31 s).  So this script makes itself a child
subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``, Linux) and reaps and counts the
orphans too; see ``bench/measuring.py``.  Without a subreaper (not Linux) it
says so, and the cluster's CPU figures miss the tasks.  Peak RSS is the
largest of any single process of the run (not a sum).  Linux charges a child
with its parent's peak RSS until it calls exec, so this script measures every
run before it parses any output (it stays small) and prints its own peak: no
peak below it means anything.

Usage, from anywhere (``python`` must be 3.11+; mapreduce is taken from this
checkout's ``src/``)::

    python bench/wordcount.py                  # 64 MB in 8 files, 3 runs each
    python bench/wordcount.py --mb 512 --files 16 --reducers 4 --workers 1 2 4
    python bench/wordcount.py --split-size 4M  # more, smaller map tasks
    python bench/wordcount.py --quick          # 2 MB, 2 files, 1 run: a smoke test
    python bench/wordcount.py --work-dir DIR   # corpus and outputs under DIR

Exit status: 0 when every run succeeded and all outputs agree, 1 when a run
failed or the outputs disagree, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import (
    Contender,
    Dataset,
    add_common_arguments,
    auto_split_size,
    baseline,
    ensure_corpus,
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
from measuring import REPO, BenchError, enable_subreaper, run_main

JOB = REPO / "bench" / "jobs" / "wordcount_split.py"
BLOCK_JOB = REPO / "bench" / "jobs" / "wordcount_block.py"

DEFAULTS = {"mb": 64.0, "files": 8, "repeat": 3}
QUICK = {"mb": 2.0, "files": 2, "repeat": 1}
DEFAULT_WORKERS = (1, 2)


# --------------------------------------------------------------------------- checking


def read_counts(paths: Sequence[Path]) -> dict[str, int]:
    """``word -> count`` from ``word<TAB>count`` files; a word written twice is an error."""
    counts: dict[str, int] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                word, _tab, count = line.rstrip("\n").partition("\t")
                if word in counts:
                    raise BenchError(f"{path}: word {word!r} written twice")
                counts[word] = int(count)
    return counts


def describe_difference(want: dict[str, int], got: dict[str, int]) -> str:
    lines = []
    for word in sorted(want.keys() | got.keys()):
        if want.get(word) != got.get(word):
            lines.append(f"  {word!r}: baseline {want.get(word)}, got {got.get(word)}")
            if len(lines) == 5:
                break
    return "\n".join(lines)


def check_outputs(contenders: Sequence[Contender]) -> dict[str, int]:
    """The baseline's counts, once every output of every contender has been found equal."""
    first = contenders[0].outputs[0]
    reference = read_counts([first])
    for contender in contenders:
        for output in contender.outputs:
            parts = sorted(output.glob("part-*")) if output.is_dir() else [output]
            counts = read_counts(parts)
            if counts != reference:
                raise BenchError(
                    f"{output} ({contender.name}) disagrees with {first}:\n"
                    + describe_difference(reference, counts)
                )
    return reference


# --------------------------------------------------------------------------- report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Word count: mapreduce run --local and on the embedded cluster "
        "against one core of plain Python and a multiprocessing.Pool.",
        epilog="--mb, --files and --repeat default to 64, 8 and 3 (with --quick: 2, 2, 1).",
    )
    parser.add_argument("--mb", type=float, help="corpus size in 10**6 bytes")
    parser.add_argument("--files", type=int, help="number of corpus files")
    parser.add_argument(
        "--job",
        choices=("natural", "block", "both"),
        default="natural",
        help="natural: map() yields (word, 1), with a combiner (bench/jobs/wordcount_split.py); "
        "block: map_split() counts a whole split in a Counter (bench/jobs/wordcount_block.py); "
        "both: each, in one run (default natural)",
    )
    add_common_arguments(parser, reducers=2, workers=DEFAULT_WORKERS)
    args = finish_arguments(parser, parser.parse_args(argv), DEFAULTS, QUICK)
    if args.mb <= 0 or args.files < 1:
        parser.error("--mb must be positive; --files at least 1")
    return args


def contenders_for(args: argparse.Namespace, corpus: Dataset, split_size: int) -> list[Contender]:
    """The baselines, then mapreduce --local, then one mapreduce per cluster size."""
    pool = f"Pool({args.pool})"
    return [
        baseline("python Counter (1 core)", "1-core", "wordcount", "single", corpus.files),
        baseline(
            f"python {pool} Counter",
            pool,
            "wordcount",
            "pool",
            corpus.files,
            "--processes",
            str(args.pool),
        ),
        *(
            mapreduce_runs(JOB, corpus, args.reducers, split_size, args.workers)
            if args.job in ("natural", "both")
            else []
        ),
        *(
            mapreduce_runs(
                BLOCK_JOB, corpus, args.reducers, split_size, args.workers, label="block"
            )
            if args.job in ("block", "both")
            else []
        ),
    ]


def print_scaling(contenders: Sequence[Contender]) -> None:
    """``ratio --workers N/--workers 1 wall`` for each job measured on both."""
    for label in ("", "block "):
        clusters = [c for c in contenders if c.workers and c.short.startswith(label + "--")]
        if len(clusters) < 2 or clusters[0].workers != 1:
            continue
        one, most = clusters[0], clusters[-1]
        ratio = most.median_wall() / one.median_wall()
        ideal = 1 / most.workers
        print(
            f"ratio {label}--workers {most.workers}/--workers 1 wall: {ratio:.2f}x "
            f"(parallel efficiency {ideal / ratio:.0%}: {ideal:.2f}x would be perfect "
            "scaling, 1.00x no gain)"
        )


def run(args: argparse.Namespace) -> None:
    args.work_dir.mkdir(parents=True, exist_ok=True)
    corpus = ensure_corpus(args.work_dir, args.mb, args.files)
    warm_page_cache(corpus)
    subreaper = enable_subreaper()  # after generating: no orphan of that is counted
    split_size = args.split_size or auto_split_size(
        [p.stat().st_size for p in corpus.files], args.workers
    )
    contenders = contenders_for(args, corpus, split_size)

    print(f"corpus    {corpus.path}: {corpus.bytes:,} bytes in {len(corpus.files)} files", end="")
    print(" (reused)" if corpus.reused else " (generated)")
    print_environment()
    print_commands(contenders, corpus)
    print(f"runs      {args.repeat} of each, alternating; figures are medians", flush=True)

    with run_directory(args.work_dir, "runs-") as runs:
        run_alternating(contenders, args.repeat, runs)
        counts = check_outputs(contenders)

    print()
    print_table(contenders, corpus.bytes)
    print()
    runs_total = len(contenders) * args.repeat
    print(f"outputs agree: {sum(counts.values()):,} words, {len(counts):,} distinct, ", end="")
    print(f"all {runs_total} runs")
    print_map_tasks(contenders, split_size, args.reducers, args.workers)
    print_notes(contenders, subreaper)
    print_ratios(contenders)
    print_scaling(contenders)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
