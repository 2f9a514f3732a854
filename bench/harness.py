"""What the data benchmarks of ``bench/`` share: inputs, contenders, the run loop, the report.

Not a benchmark itself; ``bench/wordcount.py``, ``bench/grep.py`` and
``bench/sort.py`` import it (a script's own directory is on ``sys.path``).
Standard library only.

* :func:`ensure_dataset` runs a generator of ``../shared/bench/`` into a
  directory *outside* the repository (by default under
  ``/tmp/mapreduce-bench``) and marks it complete, so that the next run reuses
  it;
* a :class:`Contender` is one command under test: a plain-Python baseline
  (``bench/baselines.py``), a system tool or a ``mapreduce run``;
  :func:`run_alternating` measures each ``--repeat`` times, alternating, with
  :func:`measuring.measure`;
* :func:`print_table` prints the medians, with one ratio column per baseline,
  each measured in the same run; :func:`print_ratios` the same ratios as
  ``ratio NAME/BASELINE wall: 1.23x`` lines.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from measuring import (
    REPO,
    BenchError,
    Sample,
    add_work_dir_argument,
    mapreduce_command,
    measure,
    work_dir_outside_repository,
)

SHARED_BENCH = REPO.parent / "shared" / "bench"
BASELINES = REPO / "bench" / "baselines.py"
SEED = 42
MARKER = "_COMPLETE.json"  # mapreduce skips input names starting with "_"
MIN_MAP_TASKS = 8  # the automatic split size aims at max(this, 2 x workers) map tasks

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Dataset:
    """Generated input files (``part-*.txt``, in name order) in one directory."""

    path: Path
    files: tuple[Path, ...]
    bytes: int
    reused: bool


def _data_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.txt"))


def _complete(directory: Path, identity: Mapping[str, float | int]) -> bool:
    """Whether ``directory`` holds a whole data set generated with ``identity``."""
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if any(marker.get(name) != value for name, value in identity.items()):
        return False
    sizes = marker.get("sizes", {})
    names = [p.name for p in _data_files(directory)]
    if sorted(sizes) != names or len(names) != identity["files"]:
        return False
    return all((directory / name).stat().st_size == size for name, size in sizes.items())


def ensure_dataset(
    target: Path, generator: str, options: Mapping[str, float | int], what: str
) -> Dataset:
    """The output of ``../shared/bench/GENERATOR --OPTION VALUE ... --seed 42`` in ``target``.

    Generated only when ``target`` does not already hold it, complete (the
    marker file records the options and every file's size): in a temporary
    directory beside it, marked complete, then renamed into place, so an
    interrupted generation is never mistaken for a data set.  ``options`` must
    hold ``files``; ``what`` describes the data in the progress message.
    """
    identity = {**options, "seed": SEED}
    reused = _complete(target, identity)
    if not reused:
        script = SHARED_BENCH / generator
        if not script.is_file():
            raise SystemExit(f"error: generator not found: {script}")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
        print(f"generating {what} in {target} ...", flush=True)
        command = [sys.executable, str(script), str(staging)]
        for name, value in identity.items():
            command += [f"--{name}", f"{value:g}" if isinstance(value, float) else str(value)]
        result = subprocess.run(command, check=False, capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise BenchError(f"{generator} failed:\n{result.stderr}")
        sizes = {p.name: p.stat().st_size for p in _data_files(staging)}
        marker = {**identity, "sizes": sizes}
        (staging / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)  # an incomplete or stale data set of ours
        try:
            staging.rename(target)
        except OSError:  # another run put a data set there meanwhile
            shutil.rmtree(staging, ignore_errors=True)
            if not _complete(target, identity):
                raise
    paths = tuple(_data_files(target))
    return Dataset(target, paths, sum(p.stat().st_size for p in paths), reused)


def ensure_corpus(work_dir: Path, mb: float, files: int) -> Dataset:
    """The ``gen_corpus.py`` corpus of ``mb`` 10**6 bytes in ``files`` files (word count, grep)."""
    target = work_dir / f"corpus-{mb:g}mb-{files}f"
    options = {"mb": mb, "files": files}
    return ensure_dataset(target, "gen_corpus.py", options, f"{mb:g} MB in {files} files")


def warm_page_cache(dataset: Dataset) -> None:
    """Read the input once so that no measured run pays for the disk."""
    buffer = bytearray(1 << 20)
    for path in dataset.files:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass


# --------------------------------------------------------------------------- contenders


@dataclass
class Contender:
    """A command under test, its samples and outputs.

    ``label`` is set for a baseline: every contender's wall gets a ratio to
    each baseline's, under that label.  ``mapreduce`` marks a ``mapreduce run``
    (its ``_summary.json`` tells the number of map tasks); ``workers`` is the
    size of its embedded cluster (0: ``--local`` or not mapreduce).
    """

    name: str
    argv: list[str]  # with OUT where the output path goes
    env: dict[str, str] | None = None
    label: str = ""
    mapreduce: bool = False
    workers: int = 0
    samples: list[Sample] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    map_tasks: list[int] = field(default_factory=list)

    @property
    def short(self) -> str:
        """The name without ``mapreduce ``, as in the ratio lines."""
        return self.name.removeprefix("mapreduce ")

    def median_wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    def command(self, output: Path) -> list[str]:
        return [str(output) if arg == "OUT" else arg for arg in self.argv]


def baseline(
    name: str, label: str, workload: str, mode: str, files: Sequence[Path], *extra: str
) -> Contender:
    """``python bench/baselines.py WORKLOAD MODE OUT FILE... EXTRA...`` as a baseline."""
    argv = [sys.executable, str(BASELINES), workload, mode, "OUT", *map(str, files), *extra]
    return Contender(name, argv, label=label)


def mapreduce_runs(
    job: Path,
    dataset: Dataset,
    reducers: int,
    split_size: int,
    workers: Sequence[int],
    extra: Sequence[str] = (),
    label: str = "",
) -> list[Contender]:
    """``mapreduce run JOB ... --local``, then the same with ``--workers N`` for each N
    (named ``mapreduce LABEL --local``... when a ``label`` tells jobs apart)."""
    mapreduce, env = mapreduce_command()
    common = [*mapreduce, "run", str(job), "--input", str(dataset.path), "--output", "OUT"]
    common += ["--reducers", str(reducers), "--split-size", str(split_size), *extra]
    common += ["--overwrite", "-q"]
    name = f"mapreduce {label} " if label else "mapreduce "
    runs = [Contender(f"{name}--local", [*common, "--local"], env, mapreduce=True)]
    for n in workers:
        argv = [*common, "--workers", str(n)]
        runs.append(Contender(f"{name}--workers {n}", argv, env, mapreduce=True, workers=n))
    return runs


def summary_map_tasks(output: Path) -> int:
    """The number of map tasks a mapreduce run reports in ``OUTPUT/_summary.json``."""
    try:
        summary = json.loads((output / "_summary.json").read_text(encoding="utf-8"))
        return int(summary["system"]["map_tasks"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"{output}: no map task count in _summary.json ({exc})") from exc


def run_alternating(
    contenders: Sequence[Contender],
    repeat: int,
    runs: Path,
    after_run: Callable[[Contender, Path], None] | None = None,
) -> None:
    """Measure every contender ``repeat`` times, alternating, outputs and logs under ``runs``.

    A mapreduce run's output must have ``_SUCCESS``; its map task count is
    recorded.  ``after_run(contender, output)`` is called after each run (to
    check a large output at once and delete it, say); the rest of the checking
    is the caller's, after every run, so that this process stays small while
    it measures (Linux charges a child with its parent's peak RSS until exec).
    """
    for i in range(repeat):
        for k, c in enumerate(contenders):
            out = runs / (f"{k}-{i}" if c.mapreduce else f"{k}-{i}.out")
            c.samples.append(measure(c.command(out), runs / f"{k}-{i}.log", c.env))
            c.outputs.append(out)
            if c.mapreduce:
                if not (out / "_SUCCESS").exists():
                    raise BenchError(f"{out}: no _SUCCESS")
                c.map_tasks.append(summary_map_tasks(out))
            if after_run is not None:
                after_run(c, out)


@contextlib.contextmanager
def run_directory(work_dir: Path, prefix: str) -> Iterator[Path]:
    """A new directory for the runs' outputs and logs: removed, unless a check failed."""
    runs = Path(tempfile.mkdtemp(prefix=prefix, dir=work_dir))
    try:
        yield runs
    except BenchError as exc:
        raise BenchError(f"{exc}\noutputs and logs kept in {runs}") from exc
    except BaseException:
        shutil.rmtree(runs, ignore_errors=True)
        raise
    shutil.rmtree(runs)


# --------------------------------------------------------------------------- report


def print_commands(contenders: Sequence[Contender], dataset: Dataset) -> None:
    """Each contender's command line, the input files shown as ``DIR/part-*.txt``."""
    files = [str(p) for p in dataset.files]
    for c in contenders:
        argv = list(c.argv)
        for i in range(len(argv)) if files else ():
            if argv[i : i + len(files)] == files:
                argv[i : i + len(files)] = [str(dataset.path / "part-*.txt")]
                break
        kind = "mapreduce" if c.mapreduce else "baseline"
        print(f"{kind:<9} {shlex.join(argv)}")


def print_environment() -> None:
    print(f"python    {sys.executable} ({platform.python_implementation()} ", end="")
    print(f"{platform.python_version()}), {os.cpu_count()} CPUs, ", end="")
    print("load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


def print_table(contenders: Sequence[Contender], input_bytes: int) -> None:
    """Medians of wall (min-max), CPU, peak RSS; MB/s; a ratio column per baseline."""
    baselines = [c for c in contenders if c.label]
    ratio_heads = [f"x {b.label}" for b in baselines]
    widths = [max(8, len(head)) for head in ratio_heads]
    header = (
        f"{'name':<26} {'wall s (min-max)':>22} {'cpu s':>8} {'peak MiB':>9} {'MB/s':>7}"
        + "".join(f" {head:>{w}}" for head, w in zip(ratio_heads, widths, strict=True))
    )
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
        mbps = input_bytes / 1e6 / wall
        ratios = "".join(
            f" {wall / b.median_wall():>{w - 1}.2f}x"
            for b, w in zip(baselines, widths, strict=True)
        )
        print(f"{c.name:<26} {spread:>22} {cpu:>8.3f} {peak:>9} {mbps:>7.1f}{ratios}")


def print_ratios(contenders: Sequence[Contender]) -> None:
    """``ratio NAME/BASELINE wall: 1.23x`` for every contender that is not a baseline."""
    baselines = [c for c in contenders if c.label]
    for c in contenders:
        if not c.label:
            for b in baselines:
                print(f"ratio {c.short}/{b.label} wall: {c.median_wall() / b.median_wall():.2f}x")


def print_map_tasks(
    contenders: Sequence[Contender], split_size: int, reducers: int, workers: Sequence[int]
) -> None:
    tasks = sorted({n for c in contenders for n in c.map_tasks})
    if not tasks:
        return
    print(f"map tasks: {'/'.join(map(str, tasks))} per mapreduce run ", end="")
    print(f"(--split-size {split_size}), R={reducers}")
    if workers and min(tasks) < 2 * max(workers):
        print(f"  warning: fewer than 2 x {max(workers)} map tasks; lower --split-size")


def print_notes(contenders: Sequence[Contender], subreaper: bool) -> None:
    """What the CPU and peak figures include."""
    if subreaper:
        counted = [
            f"{c.short}: {'/'.join(map(str, orphans))}"
            for c in contenders
            if any(orphans := sorted({s.orphans for s in c.samples}))
        ]
        if counted:
            print("cpu includes the orphans reaped by this script (the workers' fork servers")
            print("  with the task processes they reaped), per run: ", end="")
            print(", ".join(counted))
    else:
        print("warning: no subreaper (not Linux?): the cluster's cpu misses its task processes")
    floor = max(s.floor_bytes for c in contenders for s in c.samples) / (1 << 20)
    print(f"peak RSS floor: {floor:.1f} MiB (this script's own peak, charged to each child;")
    print("  a peak shown as <=X never rose above it); peak = largest single process")


# --------------------------------------------------------------------------- arguments


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


def add_common_arguments(
    parser: argparse.ArgumentParser, reducers: int, workers: Sequence[int]
) -> None:
    """--repeat, --reducers, --workers, --pool, --split-size, --quick and --work-dir."""
    parser.add_argument("--repeat", type=int, help="measured runs of each command (median)")
    parser.add_argument(
        "--reducers", type=int, default=reducers, help=f"mapreduce --reducers ({reducers})"
    )
    shown = " ".join(map(str, workers))
    parser.add_argument(
        "--workers",
        type=int,
        nargs="*",
        default=list(workers),
        metavar="N",
        help="embedded cluster sizes to measure, each a mapreduce run --workers N "
        f"(default: {shown}; none: --local only)",
    )
    parser.add_argument(
        "--pool",
        type=int,
        default=2,
        metavar="N",
        help="processes of the multiprocessing.Pool baseline (2)",
    )
    parser.add_argument(
        "--split-size",
        type=parse_size,
        default=0,
        metavar="SIZE",
        help="mapreduce --split-size of every mapreduce run, e.g. 8M (default auto: "
        f"the largest that gives max({MIN_MAP_TASKS}, 2 x the most workers) map tasks)",
    )
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke test")
    add_work_dir_argument(parser, "the input and outputs")


def finish_arguments(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    defaults: Mapping[str, object],
    quick: Mapping[str, object],
) -> argparse.Namespace:
    """Fill in the defaults (``quick`` ones with --quick); check the common arguments."""
    for name, value in (quick if args.quick else defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.repeat < 1 or args.reducers < 1 or args.pool < 1:
        parser.error("--repeat, --reducers and --pool must be at least 1")
    if any(n < 1 for n in args.workers):
        parser.error("--workers must be at least 1")
    args.workers = sorted(set(args.workers))
    args.work_dir = work_dir_outside_repository(parser, args.work_dir)
    return args
