#!/usr/bin/env python3
"""Memory benchmark: word count and sort on inputs much larger than a task's memory budget.

One command, standard library only.  It

1. generates (or reuses) outside the repository, with ``../shared/bench/``
   generators (seed 42), a word-count corpus (``--wc-mb``, default 4096 MB in
   ``--wc-files`` 64 files) and TeraSort-style records (``--sort-records``,
   default 20,000,000 in ``--sort-files`` 64 files);
2. runs, once each, ``mapreduce run bench/jobs/wordcount_split.py`` and
   ``mapreduce run examples/sort.py`` on them with ``--memory-mb M`` (default
   256, the default budget of a task's buffer), ``--workers W`` (2) and
   ``--reducers R`` (4), and ``--split-size`` if given (say ``512M`` with
   ``--sort-files 4``: map tasks of 500 MB, whose buffers must spill);
3. checks each output against the input without mapreduce: ``_SUCCESS``; word
   count, no word written twice and the counts summing to the corpus's words
   as ``wc -w`` counts them; sort, as many lines as records, keys in order
   through the part files, and the same records (an order-free sum of CRC-32s
   of the lines, TAB after the key removed);
4. prints for each run its wall and CPU seconds, the peak RSS of its largest
   single process (the tasks, the workers, their fork servers and the master in
   the ``run`` process included, see ``bench/measuring.py``), that peak over the
   budget against the target (under 2x: PASS), and the spills the job reports.

Usage, from anywhere (``python`` must be 3.11+; mapreduce is taken from this
checkout's ``src/``)::

    python bench/memory.py                              # 4 GB word count, 20 M-record sort
    python bench/memory.py --only sort --sort-files 4 --split-size 512M
    python bench/memory.py --quick                      # seconds: a smoke test

``--quick`` (8 MB, 100,000 records, ``--memory-mb 4`` so that map tasks spill
and reduce tasks merge) checks the outputs only: its peak is the interpreter's
own, far above a 4 MiB budget, so its verdicts mean nothing.

Exit status: 0 when every run succeeded and its output is right (whatever the
memory verdict), 1 when a run failed or an output is wrong, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness import (
    Dataset,
    ensure_corpus,
    ensure_dataset,
    parse_size,
    run_directory,
    warm_page_cache,
)
from measuring import (
    REPO,
    BenchError,
    Sample,
    add_work_dir_argument,
    enable_subreaper,
    mapreduce_command,
    measure,
    own_peak_bytes,
    run_main,
    work_dir_outside_repository,
)

WORDCOUNT_JOB = REPO / "bench" / "jobs" / "wordcount_split.py"
SORT_JOB = REPO / "examples" / "sort.py"
KEY_LENGTH = 10  # examples/sort.py
TARGET = 2.0  # peak RSS / budget

DEFAULTS = {"wc_mb": 4096.0, "wc_files": 64, "sort_records": 20_000_000, "sort_files": 64}
QUICK = {"wc_mb": 8.0, "wc_files": 2, "sort_records": 100_000, "sort_files": 2, "memory_mb": 4}


# --------------------------------------------------------------------------- checking


def _part_lines(output: Path) -> Iterator[bytes]:
    for part in sorted(output.glob("part-*")):
        with open(part, "rb") as f:
            yield from f


def check_wordcount(output: Path, corpus: Dataset) -> str:
    """Every word once, and as many words in all as ``wc -w`` counts in the corpus."""
    seen: set[bytes] = set()
    total = 0
    for line in _part_lines(output):
        word, _tab, count = line.rstrip(b"\n").partition(b"\t")
        if word in seen:
            raise BenchError(f"{output}: word {word!r} written twice")
        seen.add(word)
        total += int(count)
    expected = count_words(corpus.files)
    if total != expected:
        raise BenchError(f"{output}: counts sum to {total:,}, the corpus has {expected:,} words")
    return f"{total:,} words ({len(seen):,} distinct) = wc -w of the corpus"


def count_words(files: Sequence[Path]) -> int:
    """Words as ``str.split`` finds them (``wc -w``, C speed, when there is one)."""
    wc = shutil.which("wc")
    if wc is not None:
        done = subprocess.run([wc, "-w", *map(str, files)], capture_output=True, text=True)
        if done.returncode == 0:
            lines = done.stdout.strip().splitlines()
            return int(lines[-1].split()[0])  # the total (the only line for one file)
    total = 0
    for path in files:
        with open(path, "rb") as f:
            total += sum(len(line.split()) for line in f)
    return total


def _record_sum(lines: Iterator[bytes]) -> tuple[int, int]:
    """An order-free fingerprint of lines: ``(count, sum of CRC-32s mod 2**64)``."""
    count = total = 0
    for line in lines:
        count += 1
        total += zlib.crc32(line.rstrip(b"\n"))
    return count, total % (1 << 64)


def _input_lines(files: Sequence[Path]) -> Iterator[bytes]:
    for path in files:
        with open(path, "rb") as f:
            yield from f


def _sorted_records(output: Path) -> Iterator[bytes]:
    """The output's records (TAB after the key removed), checking that keys never decrease."""
    previous = b""
    for line in _part_lines(output):
        key, tab, rest = line.partition(b"\t")
        if not tab or len(key) != KEY_LENGTH:
            raise BenchError(f"{output}: not a KEY<TAB>REST line: {line[:40]!r}")
        if key < previous:
            raise BenchError(f"{output}: key {key!r} after {previous!r}: not sorted")
        previous = key
        yield key + rest


def check_sort(output: Path, records: Dataset, expected_records: int) -> str:
    """As many lines as records, in key order, the same records as the input."""
    got = _record_sum(_sorted_records(output))
    want = _record_sum(_input_lines(records.files))
    if got[0] != expected_records or want[0] != expected_records:
        raise BenchError(f"{output}: {got[0]:,} lines, input {want[0]:,}, {expected_records:,}")
    if got != want:
        raise BenchError(f"{output}: not the input's records (fingerprints differ)")
    return f"{got[0]:,} records, in key order, the same as the input's"


# --------------------------------------------------------------------------- runs


def run_job(
    args: argparse.Namespace, job: Path, data: Dataset, output: Path, log: Path
) -> tuple[Sample, dict[str, object]]:
    mapreduce, env = mapreduce_command()
    argv = [*mapreduce, "run", str(job), "--input", str(data.path), "--output", str(output)]
    argv += ["--reducers", str(args.reducers), "--memory-mb", str(args.memory_mb)]
    argv += ["--workers", str(args.workers), "--overwrite", "-q"]
    if args.split_size:
        argv += ["--split-size", str(args.split_size)]
    print(f"running   {' '.join(argv[len(mapreduce) :])}", flush=True)
    sample = measure(argv, log, env)
    if not (output / "_SUCCESS").is_file():
        raise BenchError(f"{output}: no _SUCCESS")
    try:
        summary = json.loads((output / "_summary.json").read_text(encoding="utf-8"))
        system: dict[str, object] = summary["system"]
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"{output}: no job summary ({exc})") from exc
    return sample, system


def report(
    name: str, sample: Sample, system: dict[str, object], budget_mb: int, check: str
) -> bool:
    peak_mib = sample.peak_bytes / (1 << 20)
    ratio = peak_mib / budget_mb
    verdict = "PASS" if ratio < TARGET else "FAIL"
    print(
        f"{name:<10} wall {sample.wall:8.2f} s  cpu {sample.cpu:8.2f} s  peak {peak_mib:7.1f} MiB"
        f"  = {ratio:.2f}x the {budget_mb} MiB budget (target < {TARGET:g}x): {verdict}"
    )
    print(
        f"{'':<10} map tasks {system.get('map_tasks')}, map spills {system.get('map_spills')}, "
        f"reduce tasks {system.get('reduce_tasks')}, "
        f"intermediate {system.get('intermediate_bytes', 0):,} bytes"
    )
    print(f"{'':<10} output: {check}", flush=True)
    return verdict == "PASS"


def run(args: argparse.Namespace) -> None:
    args.work_dir.mkdir(parents=True, exist_ok=True)
    jobs = ["wordcount", "sort"] if args.only is None else [args.only]
    data: dict[str, Dataset] = {}
    if "wordcount" in jobs:
        data["wordcount"] = ensure_corpus(args.work_dir, args.wc_mb, args.wc_files)
    if "sort" in jobs:
        target = args.work_dir / f"records-{args.sort_records}-{args.sort_files}f"
        options = {"records": args.sort_records, "files": args.sort_files}
        what = f"{args.sort_records:,} records in {args.sort_files} files"
        data["sort"] = ensure_dataset(target, "gen_records.py", options, what)
    subreaper = enable_subreaper()  # after generating: no orphan of that is counted
    for name, dataset in data.items():
        print(f"input     {name}: {dataset.path}, {dataset.bytes:,} bytes in ", end="")
        print(f"{len(dataset.files)} files", "(reused)" if dataset.reused else "(generated)")
    if not subreaper:
        print("note      no child subreaper (not Linux): peaks miss the task processes")
    verdicts = []
    with run_directory(args.work_dir, "memory-") as runs:
        for name in jobs:
            dataset = data[name]
            warm_page_cache(dataset)
            output = runs / name
            job = WORDCOUNT_JOB if name == "wordcount" else SORT_JOB
            sample, system = run_job(args, job, dataset, output, runs / f"{name}.log")
            if name == "wordcount":
                check = check_wordcount(output, dataset)
            else:
                check = check_sort(output, dataset, args.sort_records)
            verdicts.append(report(name, sample, system, args.memory_mb, check))
            shutil.rmtree(output)  # a 2 GB sort output need not wait for the next run
    floor = own_peak_bytes() / (1 << 20)
    print(f"peak RSS floor: {floor:.1f} MiB (this script's own; no peak below it means anything)")
    print(f"memory target (every peak under {TARGET:g}x the budget): ", end="")
    print("met" if all(verdicts) else "NOT met", "(outputs right)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Memory: word count and sort far larger than a task's memory budget, "
        "peak RSS of every process against the budget.",
        epilog="--wc-mb, --wc-files, --sort-records and --sort-files default to 4096, 64, "
        "20000000 and 64 (with --quick: 8, 2, 100000, 2, and --memory-mb 4).",
    )
    parser.add_argument("--wc-mb", type=float, help="word-count corpus size in 10**6 bytes")
    parser.add_argument("--wc-files", type=int, help="number of corpus files")
    parser.add_argument("--sort-records", type=int, help="number of 100-byte records")
    parser.add_argument("--sort-files", type=int, help="number of record files")
    parser.add_argument("--only", choices=["wordcount", "sort"], help="run just one of the two")
    parser.add_argument("--memory-mb", type=int, help="mapreduce --memory-mb (256)")
    parser.add_argument("--workers", type=int, default=2, help="mapreduce --workers (2)")
    parser.add_argument("--reducers", type=int, default=4, help="mapreduce --reducers (4)")
    parser.add_argument(
        "--split-size", type=parse_size, default=0, metavar="SIZE", help="mapreduce --split-size"
    )
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke test")
    add_work_dir_argument(parser, "the inputs and outputs")
    args = parser.parse_args(argv)
    for name, value in {**DEFAULTS, "memory_mb": 256, **(QUICK if args.quick else {})}.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.wc_mb, args.wc_files, args.sort_records, args.sort_files) <= 0:
        parser.error("--wc-mb, --wc-files, --sort-records and --sort-files must be positive")
    if min(args.memory_mb, args.workers, args.reducers) < 1:
        parser.error("--memory-mb, --workers and --reducers must be at least 1")
    args.work_dir = work_dir_outside_repository(parser, args.work_dir)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
