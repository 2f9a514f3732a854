#!/usr/bin/env python3
"""Word count with its input on an S3 server against the same files on local disk.

One command.  It

1. generates (or reuses) the ``../shared/bench/gen_corpus.py`` corpus outside the
   repository, as ``bench/wordcount.py`` does;
2. starts a real S3-protocol server on loopback (moto's standalone server, a test
   dependency of the project: ``tests/s3server.py``) and uploads the corpus to it
   (not measured);
3. runs, ``--repeat`` times each and alternating, ``mapreduce run
   bench/jobs/wordcount_split.py --workers N`` (default 2) with the same split size:

   * ``disk``: input and output on local disk (the baseline);
   * ``S3 input``: ``--input s3://bench/corpus``, output on local disk;
   * ``S3 input+output``: input and output on the server (``--output s3://...``: the
     store's commit protocol, lock object and ``_SUCCESS`` manifest included);

4. checks that every run counted the same words (the S3 output is downloaded after its
   run, outside the measurement), and prints the table and the ratios of each wall time
   to the disk run's, measured in the same run.

The server is a Python process on the same machine: what it spends serving the reads
(HTTP, its own bookkeeping) is part of the S3 figures and competes for the same cores, so
the ratio is an upper bound of the cost of a store that runs elsewhere.

Usage, from anywhere::

    python bench/s3.py                     # 512 MB in 16 files, 1 run each
    python bench/s3.py --mb 128 --files 8  # smaller
    python bench/s3.py --quick             # 2 MB, 2 files: a smoke test

Exit status: 0 when every run succeeded and all outputs agree, 1 otherwise, 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import (
    Contender,
    add_common_arguments,
    auto_split_size,
    ensure_corpus,
    finish_arguments,
    print_environment,
    print_ratios,
    print_table,
    run_directory,
    summary_map_tasks,
    warm_page_cache,
)
from measuring import REPO, BenchError, enable_subreaper, mapreduce_command, measure, run_main
from wordcount import describe_difference, read_counts

sys.path.insert(0, str(REPO))
from tests.s3server import S3Server, s3_server

JOB = REPO / "bench" / "jobs" / "wordcount_split.py"
BUCKET = "bench"
DEFAULTS = {"mb": 512.0, "files": 16, "repeat": 1}
QUICK = {"mb": 2.0, "files": 2, "repeat": 1}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Word count reading its input from an S3 server against local disk.",
        epilog="--mb, --files and --repeat default to 512, 16 and 1 (with --quick: 2, 2, 1).",
    )
    parser.add_argument("--mb", type=float, help="corpus size in 10**6 bytes")
    parser.add_argument("--files", type=int, help="number of corpus files")
    add_common_arguments(parser, reducers=2, workers=(2,))
    args = finish_arguments(parser, parser.parse_args(argv), DEFAULTS, QUICK)
    if args.mb <= 0 or args.files < 1 or len(args.workers) != 1:
        parser.error("--mb must be positive, --files at least 1, and one --workers N")
    return args


def server_cpu(server: S3Server) -> float:
    """CPU seconds the S3 server has used so far (user + system, from /proc)."""
    try:
        with open(f"/proc/{server.pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def upload(server: S3Server, files: Sequence[Path], prefix: str) -> None:
    fs = server.filesystem()
    if not fs.exists(BUCKET):  # type: ignore[attr-defined]
        fs.mkdir(BUCKET)  # type: ignore[attr-defined]
    for path in files:
        fs.put_file(str(path), f"{BUCKET}/{prefix}/{path.name}")  # type: ignore[attr-defined]


def download(server: S3Server, url: str, target: Path) -> None:
    """The parts and the markers of a store output into a local directory (for checking)."""
    fs = server.filesystem()
    target.mkdir(parents=True, exist_ok=True)
    prefix = url.removeprefix("s3://")
    for name in fs.ls(prefix, detail=False):  # type: ignore[attr-defined]
        base = name.rsplit("/", 1)[1]
        if not base.startswith("_temporary"):
            (target / base).write_bytes(fs.cat_file(name))  # type: ignore[attr-defined]


def check_outputs(contenders: Sequence[Contender]) -> dict[str, int]:
    """The disk run's counts, once every run's output has been found equal to them."""
    first = contenders[0].outputs[0]
    reference = read_counts(sorted(first.glob("part-*")))
    for contender in contenders:
        for output in contender.outputs:
            counts = read_counts(sorted(output.glob("part-*")))
            if counts != reference:
                raise BenchError(
                    f"{output} ({contender.name}) disagrees with {first}:\n"
                    + describe_difference(reference, counts)
                )
    return reference


def run(args: argparse.Namespace) -> None:
    args.work_dir.mkdir(parents=True, exist_ok=True)
    corpus = ensure_corpus(args.work_dir, args.mb, args.files)
    warm_page_cache(corpus)
    workers = args.workers[0]
    split_size = args.split_size or auto_split_size(
        [p.stat().st_size for p in corpus.files], args.workers
    )
    print(f"corpus    {corpus.path}: {corpus.bytes:,} bytes in {len(corpus.files)} files")
    print_environment()
    mapreduce, env = mapreduce_command()
    with (
        run_directory(args.work_dir, "s3-runs-") as runs,
        s3_server(log=runs / "s3-server.log", detached=True) as server,
    ):
        subreaper = enable_subreaper()  # after the server started: it is no descendant
        store_env = {**env, **server.env()}
        prefix = corpus.path.name
        upload(server, corpus.files, prefix)
        print(f"server    {server.endpoint}: corpus uploaded to s3://{BUCKET}/{prefix}")
        common = [*mapreduce, "run", str(JOB), "--reducers", str(args.reducers)]
        common += ["--split-size", str(split_size), "--workers", str(workers), "-q"]
        common += ["--overwrite"]
        store_in = f"s3://{BUCKET}/{prefix}"
        contenders = [
            Contender("disk", [*common, "-i", str(corpus.path), "-o", "OUT"], env, "disk", True),
            Contender("S3 input", [*common, "-i", store_in, "-o", "OUT"], store_env, "", True),
            Contender(
                "S3 input+output", [*common, "-i", store_in, "-o", "STORE"], store_env, "", True
            ),
        ]
        for c in contenders:
            print(f"mapreduce {' '.join(c.argv[len(mapreduce) :])}")
        print(f"runs      {args.repeat} of each, alternating; figures are medians", flush=True)
        served: dict[str, list[float]] = {c.name: [] for c in contenders}
        for i in range(args.repeat):
            for k, c in enumerate(contenders):
                out = runs / f"{k}-{i}"
                store_out = f"s3://{BUCKET}/out-{k}-{i}"
                argv = [store_out if a == "STORE" else a for a in c.command(out)]
                before = server_cpu(server)
                c.samples.append(measure(argv, runs / f"{k}-{i}.log", c.env))
                served[c.name].append(server_cpu(server) - before)
                if "STORE" in c.argv:
                    download(server, store_out, out)
                if not (out / "_SUCCESS").exists():
                    raise BenchError(f"{out}: no _SUCCESS (see {runs / f'{k}-{i}.log'})")
                c.outputs.append(out)
                c.map_tasks.append(summary_map_tasks(out))
        counts = check_outputs(contenders)
    print()
    print_table(contenders, corpus.bytes)
    print()
    print(f"outputs agree: {sum(counts.values()):,} words, {len(counts):,} distinct")
    tasks = sorted({n for c in contenders for n in c.map_tasks})
    print(f"map tasks: {'/'.join(map(str, tasks))} per run (--split-size {split_size}), ", end="")
    print(f"R={args.reducers}, --workers {workers}")
    if not subreaper:
        print("warning: no subreaper (not Linux?): cpu misses the task processes")
    print("cpu s above is the job's; the S3 server's own cpu during each run (median):")
    for c in contenders:
        server = statistics.median(served[c.name])
        total = statistics.median(s.cpu for s in c.samples) + server
        print(f"  {c.name:<17} server {server:7.3f} s; job + server {total:7.3f} s")
    print_ratios(contenders)
    disk = statistics.median(s.cpu for s in contenders[0].samples)
    for c in contenders[1:]:
        total = statistics.median(s.cpu for s in c.samples) + statistics.median(served[c.name])
        print(f"ratio {c.name}/disk cpu (job + server): {total / disk:.2f}x")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
