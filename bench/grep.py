#!/usr/bin/env python3
"""Distributed-grep benchmark: ``mapreduce run examples/grep.py``, sequential and on the
embedded cluster, against one core of plain Python and a hand-written ``multiprocessing.Pool``.

One command, standard library only.  It

1. generates (or reuses) the corpus of ``bench/wordcount.py``, the same
   files: ``../shared/bench/gen_corpus.py`` (seed 42) in
   ``WORK_DIR/corpus-<mb>mb-<files>f``, outside the repository;
2. runs, ``--repeat`` times each and alternating, these child processes:

   * the baseline: plain Python on one core, ``re.search`` on every line of
     every file as read, the matching lines written in input order
     (``bench/baselines.py grep single``);
   * the same by hand on ``--pool`` cores (default 2): a
     ``multiprocessing.Pool`` whose workers each search a share of the files
     (a file each when there are at least 4 x N files of about the same size,
     else byte ranges cut at line boundaries), the parent writing the matching
     lines in input order (``bench/baselines.py grep pool``);
   * ``mapreduce run examples/grep.py --input CORPUS --output DIR --reducers
     R --split-size S --param pattern=REGEX --overwrite -q --local``;
   * the same with ``--workers N`` instead of ``--local``, for each N of
     ``--workers`` (default 2): the embedded cluster;

   every mapreduce run gets the same ``--split-size``, as in
   ``bench/wordcount.py`` (by default one map task per file of the default
   corpus);
3. checks the outputs: every run must find the same multiset of matching
   lines as the one-core baseline.  Each mapreduce output line is
   ``["PATH", OFFSET]<TAB>LINE``; besides its lines, the check reads every
   ``OFFSET`` of ``PATH`` to make sure that ``LINE`` is there, and that the
   keys increase through the part files in order (the job's total order);
4. prints, for each, the median wall seconds (min-max), CPU seconds, peak RSS,
   MB/s (input bytes / 10**6 / median wall) and the ratios of its median wall
   to both baselines', measured in the same run.

The pattern is a rare word, as in the performance anchors
(``../shared/research/perf-anchors.md``): ``brsvzx`` is the Zipf rank-50,000
word of the generator's 100,000 (seed 42), about 1.6 words in a million:
17 matching lines in the default 64 MB corpus, 119 in 512 MB.  It is not a
substring of any other word of the vocabulary.  With ``--quick`` (2 MB) it
would match nothing, so the quick default is ``qgbnj``, the rank-1,000 word
(35 lines in 2 MB, 832 in 64 MB).  ``--pattern`` takes any Python regular
expression; the baselines search each line with its ``\\n``, mapreduce
without it, so a pattern that can match the line ending (``\\s$``) makes the
check fail.  Measurement (wall, CPU of every descendant, peak RSS of the
largest process) is as in ``bench/wordcount.py``; see ``bench/measuring.py``.

Usage, from anywhere (``python`` must be 3.11+; mapreduce is taken from this
checkout's ``src/``)::

    python bench/grep.py                      # 64 MB in 8 files, brsvzx, 3 runs each
    python bench/grep.py --mb 512 --files 16  # the size of the performance anchors
    python bench/grep.py --pattern '\\bqgbnj\\b' --workers 1 2
    python bench/grep.py --quick              # 2 MB, 2 files, qgbnj, 1 run: a smoke test

Exit status: 0 when every run succeeded and all outputs agree, 1 when a run
failed or the outputs disagree, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

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

JOB = REPO / "examples" / "grep.py"

#: The Zipf rank-50,000 word of gen_corpus.py's vocabulary (seed 42), as in perf-anchors.md.
RARE_WORD = "brsvzx"
#: The rank-1,000 word: a few dozen lines in the 2 MB --quick corpus.
QUICK_WORD = "qgbnj"

DEFAULTS = {"mb": 64.0, "files": 8, "repeat": 3, "pattern": RARE_WORD}
QUICK = {"mb": 2.0, "files": 2, "repeat": 1, "pattern": QUICK_WORD}
DEFAULT_WORKERS = (2,)


# --------------------------------------------------------------------------- checking


def read_lines(path: Path) -> Counter[str]:
    """The lines of a baseline's output, each with its ``\\n``, as a multiset."""
    with open(path, encoding="utf-8") as f:
        return Counter(f)


def read_matches(output: Path) -> list[tuple[str, int, str]]:
    """``(path, offset, line)`` of every line of a mapreduce output, part files in order."""
    matches: list[tuple[str, int, str]] = []
    for part in sorted(output.glob("part-*")):
        with open(part, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                key, tab, text = line.removesuffix("\n").partition("\t")
                try:
                    path, offset = json.loads(key)
                except (ValueError, TypeError):
                    path = offset = None
                if not tab or not isinstance(path, str) or type(offset) is not int:
                    raise BenchError(f"{part}:{number}: not ['PATH', OFFSET]<TAB>LINE: {line!r}")
                matches.append((path, offset, text))
    return matches


def check_keys(output: Path, matches: Sequence[tuple[str, int, str]]) -> None:
    """Each ``(path, offset)`` holds its line in the input; the keys increase."""
    files: dict[str, BinaryIO] = {}
    try:
        for i, (path, offset, text) in enumerate(matches):
            if i and matches[i - 1][:2] >= (path, offset):
                raise BenchError(f"{output}: key {[path, offset]} after {list(matches[i - 1][:2])}")
            if path not in files:
                files[path] = open(path, "rb")  # noqa: SIM115 (closed below)
            files[path].seek(offset)
            found = files[path].readline().removesuffix(b"\n").removesuffix(b"\r")
            if found != text.encode("utf-8"):
                raise BenchError(
                    f"{output}: {path} at {offset} holds {found[:80]!r}, not {text[:80]!r}"
                )
    except OSError as exc:
        raise BenchError(f"{output}: cannot read a matched input file: {exc}") from exc
    finally:
        for f in files.values():
            f.close()


def describe_difference(want: Counter[str], got: Counter[str]) -> str:
    missing, extra = want - got, got - want
    lines = [f"  missing {line!r} x{n}" for line, n in list(missing.items())[:3]]
    lines += [f"  extra {line!r} x{n}" for line, n in list(extra.items())[:3]]
    return f"{sum(missing.values())} lines missing, {sum(extra.values())} extra:\n" + "\n".join(
        lines
    )


def check_outputs(contenders: Sequence[Contender]) -> Counter[str]:
    """The baseline's matching lines, once every output has been found to agree."""
    first = contenders[0].outputs[0]
    reference = read_lines(first)
    for contender in contenders:
        for output in contender.outputs:
            if contender.mapreduce:
                matches = read_matches(output)
                check_keys(output, matches)
                lines = Counter(f"{text}\n" for _path, _offset, text in matches)
            else:
                lines = read_lines(output)
            if lines != reference:
                raise BenchError(
                    f"{output} ({contender.name}) disagrees with {first}: "
                    + describe_difference(reference, lines)
                )
    return reference


# --------------------------------------------------------------------------- report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Distributed grep: mapreduce run examples/grep.py --local and on the "
        "embedded cluster against one core of plain Python and a multiprocessing.Pool.",
        epilog="--mb, --files, --repeat and --pattern default to 64, 8, 3 and "
        f"{RARE_WORD} (with --quick: 2, 2, 1 and {QUICK_WORD}).",
    )
    parser.add_argument("--mb", type=float, help="corpus size in 10**6 bytes")
    parser.add_argument("--files", type=int, help="number of corpus files")
    parser.add_argument(
        "--pattern",
        help=f"Python regular expression (default {RARE_WORD}, the Zipf rank-50,000 "
        f"word; with --quick {QUICK_WORD}, rank 1,000)",
    )
    add_common_arguments(parser, reducers=2, workers=DEFAULT_WORKERS)
    args = finish_arguments(parser, parser.parse_args(argv), DEFAULTS, QUICK)
    if args.mb <= 0 or args.files < 1:
        parser.error("--mb must be positive; --files at least 1")
    try:
        re.compile(args.pattern)
    except re.error as exc:
        parser.error(f"--pattern {args.pattern!r}: {exc}")
    return args


def contenders_for(args: argparse.Namespace, corpus: Dataset, split_size: int) -> list[Contender]:
    """The baselines, then mapreduce --local, then one mapreduce per cluster size."""
    pool = f"Pool({args.pool})"
    pattern = ["--pattern", args.pattern]
    return [
        baseline("python re (1 core)", "1-core", "grep", "single", corpus.files, *pattern),
        baseline(
            f"python {pool} re",
            pool,
            "grep",
            "pool",
            corpus.files,
            *pattern,
            "--processes",
            str(args.pool),
        ),
        *mapreduce_runs(
            JOB,
            corpus,
            args.reducers,
            split_size,
            args.workers,
            ["--param", f"pattern={args.pattern}"],
        ),
    ]


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

    with run_directory(args.work_dir, "grep-") as runs:
        run_alternating(contenders, args.repeat, runs)
        lines = check_outputs(contenders)

    print()
    print_table(contenders, corpus.bytes)
    print()
    total = sum(lines.values())
    print(
        f"outputs agree: {total:,} lines match {args.pattern!r} ({len(lines):,} distinct), ", end=""
    )
    print(f"all {len(contenders) * args.repeat} runs; every mapreduce key points at its line")
    if not total:
        print("  warning: no line matches: the runs measure the scan alone; try another --pattern")
    print_map_tasks(contenders, split_size, args.reducers, args.workers)
    print_notes(contenders, subreaper)
    print_ratios(contenders)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
