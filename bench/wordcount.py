#!/usr/bin/env python3
"""Word-count benchmark: ``mapreduce run``, sequential and on the embedded cluster,
against one core of plain Python.

One command, standard library only.  It

1. generates a deterministic corpus *outside* the repository with
   ``../shared/bench/gen_corpus.py`` (seed 42), in
   ``WORK_DIR/corpus-<mb>mb-<files>f``, and reuses it when it is already there
   and complete;
2. runs, ``--repeat`` times each and alternating, these child processes:

   * the baseline: plain Python, ``collections.Counter`` over ``line.split()``
     of every line of every file, written as ``word<TAB>count`` lines;
   * ``mapreduce run bench/jobs/wordcount_split.py --input CORPUS --output DIR
     --reducers R --split-size S --local --overwrite -q`` (the same word
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
   MB/s (input bytes / 10**6 / median wall) and the ratio of its median wall
   to the baseline's, measured in the same run; then the ratio of the largest
   cluster's wall to the one-worker cluster's (0.50x would be perfect scaling
   from 1 to 2 workers, 1.00x no gain at all).

Every figure is taken from outside the child: wall is ``time.monotonic()``
around spawn and reap; CPU and peak RSS come from ``os.wait4``.  CPU is user +
system time of the child and of *all* its descendants.  That needs care for
the cluster: ``wait4`` of the ``run`` process covers its workers (it waits for
them), but not the task processes, which are forked and reaped by each
worker's ``multiprocessing`` fork server, which the worker never waits for;
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
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from measuring import (
    REPO,
    BenchError,
    Sample,
    enable_subreaper,
    mapreduce_command,
    measure,
)

GEN_CORPUS = REPO.parent / "shared" / "bench" / "gen_corpus.py"
JOB = REPO / "bench" / "jobs" / "wordcount_split.py"
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "mapreduce-bench"
SEED = 42
MARKER = "_COMPLETE.json"  # mapreduce skips input names starting with "_"

DEFAULTS = {"mb": 64.0, "files": 8, "repeat": 3}
QUICK = {"mb": 2.0, "files": 2, "repeat": 1}
DEFAULT_WORKERS = (1, 2)
MIN_MAP_TASKS = 8  # the automatic split size aims at max(this, 2 x workers) map tasks

#: The baseline, run as ``python -c BASELINE OUTPUT FILE...``.
BASELINE = """\
import sys
from collections import Counter

counts = Counter()
for path in sys.argv[2:]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            counts.update(line.split())
with open(sys.argv[1], "w", encoding="utf-8") as out:
    for word, count in counts.items():
        out.write(f"{word}\\t{count}\\n")
"""

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass(frozen=True)
class Corpus:
    path: Path
    files: tuple[Path, ...]
    bytes: int
    reused: bool


@dataclass
class Contender:
    """A command under test, its samples and outputs."""

    name: str
    argv: list[str]  # with OUT where the output path goes
    env: dict[str, str] | None = None
    workers: int = 0  # 0: not the embedded cluster
    samples: list[Sample] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)

    def median_wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    def command(self, output: Path) -> list[str]:
        return [str(output) if arg == "OUT" else arg for arg in self.argv]


# --------------------------------------------------------------------------- corpus


def _corpus_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.txt"))


def _complete(directory: Path, mb: float, files: int) -> bool:
    """Whether ``directory`` holds a whole corpus made with these arguments."""
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    sizes = marker.get("sizes", {})
    if (marker.get("mb"), marker.get("files"), marker.get("seed")) != (mb, files, SEED):
        return False
    names = [p.name for p in _corpus_files(directory)]
    if sorted(sizes) != names or len(names) != files:
        return False
    return all((directory / name).stat().st_size == size for name, size in sizes.items())


def ensure_corpus(work_dir: Path, mb: float, files: int) -> Corpus:
    """The corpus for ``mb`` and ``files`` under ``work_dir``, generated if needed.

    It is generated in a temporary directory, marked complete, then renamed
    into place, so an interrupted generation is never mistaken for a corpus.
    """
    target = work_dir / f"corpus-{mb:g}mb-{files}f"
    reused = _complete(target, mb, files)
    if not reused:
        if not GEN_CORPUS.is_file():
            raise SystemExit(f"error: corpus generator not found: {GEN_CORPUS}")
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=work_dir))
        print(f"generating {mb:g} MB in {files} files in {target} ...", flush=True)
        command = [sys.executable, str(GEN_CORPUS), str(staging), "--mb", f"{mb:g}"]
        command += ["--files", str(files), "--seed", str(SEED)]
        result = subprocess.run(command, check=False, capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise BenchError(f"corpus generation failed:\n{result.stderr}")
        sizes = {p.name: p.stat().st_size for p in _corpus_files(staging)}
        marker = {"mb": mb, "files": files, "seed": SEED, "sizes": sizes}
        (staging / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)  # an incomplete or stale corpus of ours
        try:
            staging.rename(target)
        except OSError:  # another run put a corpus there meanwhile
            shutil.rmtree(staging, ignore_errors=True)
            if not _complete(target, mb, files):
                raise
    paths = tuple(_corpus_files(target))
    return Corpus(target, paths, sum(p.stat().st_size for p in paths), reused)


def warm_page_cache(corpus: Corpus) -> None:
    """Read the corpus once so that no measured run pays for the disk."""
    buffer = bytearray(1 << 20)
    for path in corpus.files:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass


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
            if output.is_dir() and not (output / "_SUCCESS").exists():
                raise BenchError(f"{output}: no _SUCCESS")
            counts = read_counts(parts)
            if counts != reference:
                raise BenchError(
                    f"{output} ({contender.name}) disagrees with {first}:\n"
                    + describe_difference(reference, counts)
                )
    return reference


def map_tasks(contenders: Sequence[Contender]) -> list[int]:
    """The distinct numbers of map tasks the mapreduce runs report in ``_summary.json``."""
    found: set[int] = set()
    for contender in contenders:
        for output in contender.outputs:
            if output.is_dir():
                summary = json.loads((output / "_summary.json").read_text(encoding="utf-8"))
                found.add(int(summary["system"]["map_tasks"]))
    return sorted(found)


# --------------------------------------------------------------------------- report


def print_table(corpus: Corpus, contenders: Sequence[Contender]) -> None:
    header = (
        f"{'name':<24} {'wall s (min-max)':>22} {'cpu s':>8} {'peak MiB':>9} {'MB/s':>7}"
        f" {'x baseline':>10}"
    )
    print(header)
    print("-" * len(header))
    reference = contenders[0].median_wall()
    for c in contenders:
        walls = [s.wall for s in c.samples]
        wall = statistics.median(walls)
        cpu = statistics.median(s.cpu for s in c.samples)
        peak_bytes = statistics.median(s.peak_bytes for s in c.samples)
        floor = max(s.floor_bytes for s in c.samples)
        peak = f"{peak_bytes / (1 << 20):.1f}"
        if peak_bytes <= floor:
            peak = "<=" + peak  # the child stayed under this script's own peak
        spread = f"{wall:.3f} ({min(walls):.3f}-{max(walls):.3f})"
        mbps = corpus.bytes / 1e6 / wall
        ratio = f"{wall / reference:.2f}x"
        print(f"{c.name:<24} {spread:>22} {cpu:>8.3f} {peak:>9} {mbps:>7.1f} {ratio:>10}")


def parse_size(text: str) -> int:
    """``"auto"`` as 0, else ``"4096"``, ``"64K"``, ``"8M"`` as bytes (binary units)."""
    if text.strip().lower() == "auto":
        return 0
    match = _SIZE.match(text)
    if not match or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto or a size such as 4096, 64K, 8M")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def auto_split_size(sizes: Sequence[int], workers: Sequence[int]) -> int:
    """The largest split size that cuts files of ``sizes`` into max(8, 2 x workers) tasks or more.

    Files are cut one by one (a file of ``n`` bytes gives ``ceil(n / size)``
    splits), so the candidates are ``ceil(n / k)`` for each file and each
    number of pieces ``k``; the largest one that makes enough splits avoids
    slivers (8 files of 7.99 to 8.00 MB: one split each, not 8 plus 4 slivers).
    """
    tasks = max(MIN_MAP_TASKS, 2 * max(workers, default=1))
    candidates = {math.ceil(n / k) for n in sizes if n > 0 for k in range(1, tasks + 1)}
    for size in sorted(candidates, reverse=True):
        if sum(math.ceil(n / size) for n in sizes) >= tasks:
            return size
    return 1  # fewer bytes than tasks: as many tasks as there can be


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Word count: mapreduce run --local and on the embedded cluster "
        "against one core of plain Python.",
        epilog="--mb, --files and --repeat default to 64, 8 and 3 (with --quick: 2, 2, 1).",
    )
    parser.add_argument("--mb", type=float, help="corpus size in 10**6 bytes")
    parser.add_argument("--files", type=int, help="number of corpus files")
    parser.add_argument("--repeat", type=int, help="measured runs of each command (median)")
    parser.add_argument("--reducers", type=int, default=2, help="mapreduce --reducers (2)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="*",
        default=list(DEFAULT_WORKERS),
        metavar="N",
        help="embedded cluster sizes to measure, each a mapreduce run --workers N "
        "(default: 1 2; none: --local only)",
    )
    parser.add_argument(
        "--split-size",
        type=parse_size,
        default=0,
        metavar="SIZE",
        help="mapreduce --split-size of every mapreduce run, e.g. 8M (default auto: "
        f"the largest that gives max({MIN_MAP_TASKS}, 2 x the most workers) map tasks)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a seconds-long smoke test: 2 MB, 2 files, 1 run"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        help=f"where the corpus and outputs go, outside the repository ({DEFAULT_WORK_DIR})",
    )
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.mb <= 0 or args.files < 1 or args.repeat < 1 or args.reducers < 1:
        parser.error("--mb must be positive; --files, --repeat and --reducers at least 1")
    if any(n < 1 for n in args.workers):
        parser.error("--workers must be at least 1")
    args.workers = sorted(set(args.workers))
    work_dir = args.work_dir.resolve()
    if work_dir == REPO or REPO in work_dir.parents:
        parser.error(f"--work-dir {work_dir} is inside the repository; use a directory outside")
    args.work_dir = work_dir
    return args


def contenders_for(args: argparse.Namespace, corpus: Corpus, split_size: int) -> list[Contender]:
    """The baseline, then mapreduce --local, then one mapreduce per cluster size."""
    mapreduce, env = mapreduce_command()
    files = [str(p) for p in corpus.files]
    common = [*mapreduce, "run", str(JOB), "--input", str(corpus.path), "--output", "OUT"]
    common += ["--reducers", str(args.reducers), "--split-size", str(split_size)]
    common += ["--overwrite", "-q"]
    contenders = [
        Contender("python Counter (1 core)", [sys.executable, "-c", BASELINE, "OUT", *files]),
        Contender("mapreduce --local", [*common, "--local"], env),
    ]
    for n in args.workers:
        name = f"mapreduce --workers {n}"
        contenders.append(Contender(name, [*common, "--workers", str(n)], env, workers=n))
    return contenders


def print_ratios(contenders: Sequence[Contender]) -> None:
    baseline, *others = contenders
    for c in others:
        ratio = c.median_wall() / baseline.median_wall()
        print(f"ratio {c.name.removeprefix('mapreduce ')}/baseline wall: {ratio:.2f}x")
    clusters = [c for c in others if c.workers]
    if len(clusters) >= 2 and clusters[0].workers == 1:
        one, most = clusters[0], clusters[-1]
        ratio = most.median_wall() / one.median_wall()
        ideal = 1 / most.workers
        print(
            f"ratio --workers {most.workers}/--workers 1 wall: {ratio:.2f}x "
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
    runs = Path(tempfile.mkdtemp(prefix="runs-", dir=args.work_dir))

    print(f"corpus    {corpus.path}: {corpus.bytes:,} bytes in {len(corpus.files)} files", end="")
    print(" (reused)" if corpus.reused else " (generated)")
    print(f"python    {sys.executable} ({platform.python_implementation()} ", end="")
    print(f"{platform.python_version()}), {os.cpu_count()} CPUs, ", end="")
    print("load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"baseline  python -c <Counter over line.split()> OUT {corpus.path}/part-*.txt")
    for c in contenders[1:]:
        print(f"mapreduce {shlex.join(c.argv)}")
    print(f"runs      {args.repeat} of each, alternating; figures are medians", flush=True)

    try:
        for i in range(args.repeat):
            for k, c in enumerate(contenders):
                out = runs / (f"{k}-{i}.tsv" if k == 0 else f"{k}-{i}")
                c.samples.append(measure(c.command(out), runs / f"{k}-{i}.log", c.env))
                c.outputs.append(out)
        counts = check_outputs(contenders)
        tasks = map_tasks(contenders[1:])
    except BenchError as exc:
        raise BenchError(f"{exc}\noutputs and logs kept in {runs}") from exc
    except BaseException:
        shutil.rmtree(runs, ignore_errors=True)
        raise
    shutil.rmtree(runs)

    print()
    print_table(corpus, contenders)
    print()
    runs_total = len(contenders) * args.repeat
    print(f"outputs agree: {sum(counts.values()):,} words, {len(counts):,} distinct, ", end="")
    print(f"all {runs_total} runs")
    shown = "/".join(map(str, tasks))
    print(f"map tasks: {shown} per mapreduce run (--split-size {split_size}), ", end="")
    print(f"R={args.reducers}")
    if args.workers and min(tasks) < 2 * max(args.workers):
        print(f"  warning: fewer than 2 x {max(args.workers)} map tasks; lower --split-size")
    if subreaper:
        counted = [
            f"{c.name.removeprefix('mapreduce ')}: {'/'.join(map(str, orphans))}"
            for c in contenders
            if any(orphans := sorted({s.orphans for s in c.samples}))
        ]
        if counted:
            print("cpu includes the orphans reaped by this script (the workers' fork servers")
            print(
                "  and resource trackers, with the task processes they reaped), per run: ", end=""
            )
            print(", ".join(counted))
    else:
        print("warning: no subreaper (not Linux?): the cluster's cpu misses its task processes")
    floor = max(s.floor_bytes for c in contenders for s in c.samples) / (1 << 20)
    print(f"peak RSS floor: {floor:.1f} MiB (this script's own peak, charged to each child;")
    print("  a peak shown as <=X never rose above it); peak = largest single process")
    print_ratios(contenders)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
