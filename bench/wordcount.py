#!/usr/bin/env python3
"""Word-count benchmark: ``mapreduce run --local`` against one core of plain Python.

One command, standard library only.  It

1. generates a deterministic corpus *outside* the repository with
   ``../shared/bench/gen_corpus.py`` (seed 42), in
   ``WORK_DIR/corpus-<mb>mb-<files>f``, and reuses it when it is already there
   and complete;
2. runs, ``--repeat`` times each and alternating, two child processes:

   * the baseline: plain Python, ``collections.Counter`` over ``line.split()``
     of every line of every file, written as ``word<TAB>count`` lines;
   * ``mapreduce run bench/jobs/wordcount_split.py --input CORPUS --output DIR
     --reducers R --local --overwrite -q`` (the same word count, the natural
     way: ``map`` yields ``(word, 1)`` for ``line.split()``, plus a combiner);

3. checks that every run of both wrote exactly the same counts (exit status 1
   if not, and the outputs are kept for inspection);
4. prints, for each, the median wall seconds (min-max), CPU seconds (user +
   system of the child and its descendants), peak RSS of the child, MB/s
   (input bytes / 10**6 / median wall), and the ratio of the mapreduce median
   wall to the baseline median wall measured in the same run.

Every figure is taken from outside the child: wall is ``time.monotonic()``
around spawn and reap, CPU and peak RSS come from ``os.wait4`` on that child's
pid.  Linux charges a child with its parent's peak RSS until it calls exec, so
this script measures every run before it parses any output (it stays small)
and prints its own peak: no peak below it means anything.

Usage, from anywhere (``python`` must be 3.11+; mapreduce is taken from this
checkout's ``src/``)::

    python bench/wordcount.py                  # 64 MB in 8 files, 3 runs each
    python bench/wordcount.py --mb 512 --files 16 --reducers 4
    python bench/wordcount.py --quick          # 2 MB, 2 files, 1 run: a smoke test
    python bench/wordcount.py --work-dir DIR   # corpus and outputs under DIR

Exit status: 0 when every run succeeded and all outputs agree, 1 when a run
failed or the outputs disagree, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GEN_CORPUS = REPO.parent / "shared" / "bench" / "gen_corpus.py"
JOB = REPO / "bench" / "jobs" / "wordcount_split.py"
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "mapreduce-bench"
SEED = 42
MARKER = "_COMPLETE.json"  # mapreduce skips input names starting with "_"

DEFAULTS = {"mb": 64.0, "files": 8, "repeat": 3}
QUICK = {"mb": 2.0, "files": 2, "repeat": 1}

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


class BenchError(Exception):
    """A run failed or the outputs disagree (exit status 1)."""


@dataclass(frozen=True)
class Corpus:
    path: Path
    files: tuple[Path, ...]
    bytes: int
    reused: bool


@dataclass(frozen=True)
class Sample:
    """One measured run of one command."""

    wall: float
    cpu: float
    peak_bytes: int
    floor_bytes: int  # this script's own peak when it spawned the child


@dataclass
class Contender:
    """A command under test and its samples."""

    name: str
    samples: list[Sample] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)

    def median_wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)


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


# --------------------------------------------------------------------------- measuring


def _peak_bytes(maxrss: int) -> int:
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # Linux: KiB


def own_peak_bytes() -> int:
    """This process's peak RSS, which Linux also charges to every child it spawns."""
    return _peak_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def measure(argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Sample:
    """Run ``argv`` as a child; return its wall and CPU seconds and peak RSS.

    Raises:
        BenchError: the command exited with a non-zero status.
    """
    floor = own_peak_bytes()
    with open(log, "wb") as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if proc.returncode != 0:
        text = log.read_text(encoding="utf-8", errors="replace")
        raise BenchError(f"exit status {proc.returncode}: {shlex.join(argv)}\n{text}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, _peak_bytes(usage.ru_maxrss), floor)


def mapreduce_command() -> tuple[list[str], dict[str, str]]:
    """``mapreduce`` (the script beside this interpreter, else ``python -m``) on this checkout."""
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    script = Path(sys.executable).parent / "mapreduce"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)], env
    return [sys.executable, "-m", "mapreduce"], env


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


def check_outputs(baseline: Contender, mapreduce: Contender) -> dict[str, int]:
    """The baseline's counts, once every output of both has been found equal to them."""
    reference = read_counts([baseline.outputs[0]])
    for contender in (baseline, mapreduce):
        for output in contender.outputs:
            parts = sorted(output.glob("part-*")) if output.is_dir() else [output]
            if output.is_dir() and not (output / "_SUCCESS").exists():
                raise BenchError(f"{output}: no _SUCCESS")
            counts = read_counts(parts)
            if counts != reference:
                raise BenchError(
                    f"{output} disagrees with {baseline.outputs[0]}:\n"
                    + describe_difference(reference, counts)
                )
    return reference


# --------------------------------------------------------------------------- report


def print_table(corpus: Corpus, contenders: Sequence[Contender]) -> None:
    header = f"{'name':<22} {'wall s (min-max)':>22} {'cpu s':>8} {'peak MiB':>9} {'MB/s':>7}"
    print(header)
    print("-" * len(header))
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
        print(f"{c.name:<22} {spread:>22} {cpu:>8.3f} {peak:>9} {mbps:>7.1f}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Word count: mapreduce run --local against one core of plain Python.",
        epilog="--mb, --files and --repeat default to 64, 8 and 3 (with --quick: 2, 2, 1).",
    )
    parser.add_argument("--mb", type=float, help="corpus size in 10**6 bytes")
    parser.add_argument("--files", type=int, help="number of corpus files")
    parser.add_argument("--repeat", type=int, help="measured runs of each command (median)")
    parser.add_argument("--reducers", type=int, default=2, help="mapreduce --reducers (2)")
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
    work_dir = args.work_dir.resolve()
    if work_dir == REPO or REPO in work_dir.parents:
        parser.error(f"--work-dir {work_dir} is inside the repository; use a directory outside")
    args.work_dir = work_dir
    return args


def run(args: argparse.Namespace) -> None:
    args.work_dir.mkdir(parents=True, exist_ok=True)
    corpus = ensure_corpus(args.work_dir, args.mb, args.files)
    warm_page_cache(corpus)
    runs = Path(tempfile.mkdtemp(prefix="runs-", dir=args.work_dir))
    mapreduce, env = mapreduce_command()
    files = [str(p) for p in corpus.files]
    baseline = Contender("python Counter (1 core)")
    local = Contender(f"mapreduce --local R={args.reducers}")

    print(f"corpus    {corpus.path}: {corpus.bytes:,} bytes in {len(files)} files", end="")
    print(" (reused)" if corpus.reused else " (generated)")
    print(f"python    {sys.executable} ({platform.python_implementation()} ", end="")
    print(f"{platform.python_version()}), {os.cpu_count()} CPUs, ", end="")
    print("load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"baseline  python -c <Counter over line.split()> OUT {corpus.path}/part-*.txt")
    example = [*mapreduce, "run", str(JOB), "--input", str(corpus.path), "--output", "OUT"]
    example += ["--reducers", str(args.reducers), "--local", "--overwrite", "-q"]
    print(f"mapreduce {shlex.join(example)}")
    print(f"runs      {args.repeat} of each, alternating; figures are medians", flush=True)

    try:
        for i in range(args.repeat):
            out = runs / f"baseline-{i}.tsv"
            argv = [sys.executable, "-c", BASELINE, str(out), *files]
            baseline.samples.append(measure(argv, runs / f"baseline-{i}.log"))
            baseline.outputs.append(out)

            out = runs / f"mapreduce-{i}"
            argv = [*mapreduce, "run", str(JOB), "--input", str(corpus.path)]
            argv += ["--output", str(out), "--reducers", str(args.reducers)]
            argv += ["--local", "--overwrite", "-q"]
            local.samples.append(measure(argv, runs / f"mapreduce-{i}.log", env))
            local.outputs.append(out)

        counts = check_outputs(baseline, local)
    except BenchError as exc:
        raise BenchError(f"{exc}\noutputs and logs kept in {runs}") from exc
    except BaseException:
        shutil.rmtree(runs, ignore_errors=True)
        raise
    shutil.rmtree(runs)

    print()
    print_table(corpus, [baseline, local])
    print()
    print(f"outputs agree: {sum(counts.values()):,} words, {len(counts):,} distinct, ", end="")
    print(f"all {2 * args.repeat} runs")
    floor = max(s.floor_bytes for c in (baseline, local) for s in c.samples) / (1 << 20)
    print(f"peak RSS floor: {floor:.1f} MiB (this script's own peak, charged to each child;")
    print("  a peak shown as <=X never rose above it)")
    ratio = local.median_wall() / baseline.median_wall()
    print(f"ratio mapreduce/baseline wall: {ratio:.2f}x")


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
