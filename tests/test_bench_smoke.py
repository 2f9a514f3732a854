"""Smoke tests of the ``bench/`` scripts, each run with ``--quick``.

Only correctness is asserted (exit status 0 means every run succeeded and
every output was checked: the word counts equal the plain-Python count, grep
found the same lines as a plain-Python scan, the sort equals ``sorted()``
byte for byte, the start-up probe counted its input); timings are never
asserted, only that each figure is printed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED

BENCH = REPO / "bench" / "wordcount.py"
GREP = REPO / "bench" / "grep.py"
SORT = REPO / "bench" / "sort.py"
STARTUP = REPO / "bench" / "startup.py"
MEMORY = REPO / "bench" / "memory.py"
S3 = REPO / "bench" / "s3.py"
GEN_CORPUS = SHARED / "bench" / "gen_corpus.py"
GEN_RECORDS = SHARED / "bench" / "gen_records.py"

NUMBER = r"\d+\.\d+x"


def run_bench(script: Path, work_dir: Path, *extra: str) -> str:
    result = subprocess.run(
        [sys.executable, str(script), "--quick", "--work-dir", str(work_dir), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def has_line(pattern: str, text: str) -> bool:
    return re.search(f"^{pattern}$", text, re.MULTILINE) is not None


def test_wordcount_bench_quick(tmp_path: Path) -> None:
    if not GEN_CORPUS.is_file():
        pytest.fail(f"corpus generator missing: {GEN_CORPUS} (the shared/ folder beside the repo)")
    out = run_bench(BENCH, tmp_path, "--job", "both")
    assert "outputs agree" in out
    names = ("python Counter", r"python Pool\(2\) Counter", "mapreduce --local")
    for name in (*names, "mapreduce --workers 1", "mapreduce block --workers 2"):
        assert has_line(rf"{name}.* {NUMBER} +{NUMBER}", out), name
    for run in ("--local", "--workers 1", "--workers 2", "block --local", "block --workers 2"):
        assert has_line(rf"ratio {run}/1-core wall: {NUMBER}", out), run
        assert has_line(rf"ratio {run}/Pool\(2\) wall: {NUMBER}", out), run
    for job in ("", "block "):
        assert has_line(rf"ratio {job}--workers 2/--workers 1 wall: {NUMBER} \(parallel .*\)", out)
    # Enough map tasks for two workers, and the orphaned task CPU is counted.
    match = re.search(r"^map tasks: (\d+) per mapreduce run", out, re.MULTILINE)
    assert match and int(match.group(1)) >= 4, out
    if sys.platform.startswith("linux"):
        assert "cpu includes the orphans reaped by this script" in out
    # The corpus stays for reuse; the run outputs are cleaned up.
    assert (tmp_path / "corpus-2mb-2f" / "_COMPLETE.json").is_file()
    assert not list(tmp_path.glob("runs-*"))


def test_s3_bench_quick(tmp_path: Path) -> None:
    """Word count reading from (and writing to) a real S3 server against local disk."""
    out = run_bench(S3, tmp_path)
    assert "outputs agree" in out
    for name in ("disk", "S3 input", r"S3 input\+output"):
        assert has_line(rf"{name} .* {NUMBER}", out), name
    for name in ("S3 input", r"S3 input\+output"):
        assert has_line(rf"ratio {name}/disk wall: {NUMBER}", out), name
        assert has_line(rf"ratio {name}/disk cpu \(job \+ server\): {NUMBER}", out), name
    assert not list(tmp_path.glob("s3-runs-*"))


def test_grep_bench_quick(tmp_path: Path) -> None:
    if not GEN_CORPUS.is_file():
        pytest.fail(f"corpus generator missing: {GEN_CORPUS} (the shared/ folder beside the repo)")
    out = run_bench(GREP, tmp_path)
    # The quick pattern matches a few dozen lines: the check compared real matches.
    match = re.search(r"^outputs agree: ([\d,]+) lines match 'qgbnj'", out, re.MULTILINE)
    assert match and int(match.group(1).replace(",", "")) > 0, out
    assert "every mapreduce key points at its line" in out
    for name in (
        "python re",
        r"python Pool\(2\) re",
        "mapreduce --local",
        "mapreduce --workers 2",
    ):
        assert has_line(rf"{name}.* {NUMBER} +{NUMBER}", out), name
    for run in ("--local", "--workers 2"):
        assert has_line(rf"ratio {run}/1-core wall: {NUMBER}", out), run
        assert has_line(rf"ratio {run}/Pool\(2\) wall: {NUMBER}", out), run
    # The corpus is wordcount's, kept for reuse; the run outputs are cleaned up.
    assert (tmp_path / "corpus-2mb-2f" / "_COMPLETE.json").is_file()
    assert not list(tmp_path.glob("grep-*"))


def test_sort_bench_quick(tmp_path: Path) -> None:
    if not GEN_RECORDS.is_file():
        pytest.fail(f"record generator missing: {GEN_RECORDS} (the shared/ folder beside the repo)")
    out = run_bench(SORT, tmp_path)
    assert has_line(r"outputs agree: 20,000 records, all \d+ runs equal byte for byte .*", out)
    names = [
        "python sort",
        r"python Pool\(2\) sort\+merge",
        "mapreduce --local",
        "mapreduce --workers 2",
    ]
    baselines = ["1-core", r"Pool\(2\)"]
    if "GNU sort --parallel=2" in out:  # wherever sort is GNU coreutils'
        names.append("GNU sort --parallel=2")
        baselines.append("GNU sort")
    for name in names:
        assert has_line(rf"{name}.* {NUMBER}", out), name
    for run in ("--local", "--workers 2"):
        for base in baselines:
            assert has_line(rf"ratio {run}/{base} wall: {NUMBER}", out), (run, base)
    # The records stay for reuse; the run outputs are cleaned up.
    assert (tmp_path / "records-20000-2f" / "_COMPLETE.json").is_file()
    assert not list(tmp_path.glob("sort-*"))


def test_sort_bench_security_quick(tmp_path: Path) -> None:
    """The same job on daemons with no secret, the secret, and mutual TLS: same output."""
    if not GEN_RECORDS.is_file():
        pytest.fail(f"record generator missing: {GEN_RECORDS} (the shared/ folder beside the repo)")
    out = run_bench(SORT, tmp_path, "--security")
    assert has_line(r"outputs agree: 20,000 records, all 4 runs equal byte for byte .*", out)
    for mode in ("none", "secret", "tls"):
        assert has_line(rf"mapreduce daemons {mode} .* {NUMBER}", out), mode
    for mode in ("secret", "tls"):
        assert has_line(rf"ratio daemons {mode}/none wall: {NUMBER} cpu: {NUMBER}", out), mode
    assert not list(tmp_path.glob("sort-*"))


def test_shuffle_bench_quick(tmp_path: Path) -> None:
    if not GEN_RECORDS.is_file():
        pytest.fail(f"record generator missing: {GEN_RECORDS} (the shared/ folder beside the repo)")
    out = run_bench(REPO / "bench" / "shuffle.py", tmp_path)
    assert has_line(r"map outputs: 2 runs, [\d,]+ bytes; 2 rounds, alternating", out), out
    for name in ("gRPC shuffle", "plain TCP"):
        assert has_line(rf"{name} +\d+\.\d+ \(.*\) +\d+\.\d+", out), name
    assert has_line(rf"ratio gRPC shuffle/plain TCP wall: {NUMBER}", out)
    assert not list(tmp_path.glob("fetched-*"))  # the fetched copies are removed
    (runs,) = tmp_path.glob("shuffle-runs-*-20000-2f")
    assert (runs / "map-00000" / "part-00000.run").is_file()


def test_startup_bench_quick(tmp_path: Path) -> None:
    out = run_bench(STARTUP, tmp_path)
    assert "outputs right: all 6 mapreduce runs" in out
    assert has_line(r"python -c pass .* 1\.0x .*", out)
    for name in ("run --local", "run --workers 1", "run --workers 2"):
        assert has_line(rf"mapreduce {name} .*", out), name
        assert has_line(rf"ratio {name} first task/python -c pass: \d+\.\dx \(\d+\.\d+s\)", out)
    # Everything it wrote is cleaned up.
    assert not list(tmp_path.iterdir())


def test_master_simulation_quick(tmp_path: Path) -> None:
    """The master schedules a simulated job with failing workers to the end, journal on and off,
    and a new master recovers the journal to the same state."""
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "master_sim.py"),
            "--quick",
            "--work-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "final state committing" in result.stdout
    assert re.search(r"scheduling decisions: [\d,]+ in", result.stdout)
    assert re.search(r"with the journal on disk: [\d,]+ decisions", result.stdout)
    assert "the job's state after recovery: committing" in result.stdout
    assert not list(tmp_path.iterdir())
    assert "died mid-job" in result.stdout


def test_memory_bench_quick(tmp_path: Path) -> None:
    """Tiny budget: map tasks spill, reduce tasks merge, and both outputs check out."""
    if not (GEN_CORPUS.is_file() and GEN_RECORDS.is_file()):
        pytest.fail(
            f"generators missing in {SHARED / 'bench'} (the shared/ folder beside the repo)"
        )
    out = run_bench(MEMORY, tmp_path)
    for name in ("wordcount", "sort"):
        assert has_line(
            rf"{name} +wall +\d+\.\d+ s  cpu +\d+\.\d+ s  peak +\d+\.\d+ MiB  = {NUMBER} the 4 "
            r"MiB budget \(target < 2x\): (PASS|FAIL)",
            out,
        ), name
        spills = re.search(rf"^{name} .*\n +map tasks \d+, map spills (\d+),", out, re.MULTILINE)
        assert spills is not None and int(spills.group(1)) > 0, name
    assert has_line(r" +output: [\d,]+ words \([\d,]+ distinct\) = wc -w of the corpus", out)
    assert has_line(r" +output: 100,000 records, in key order, the same as the input's", out)
