"""Smoke test of ``bench/wordcount.py --quick``: it runs and the outputs agree.

Only correctness is asserted (exit status 0 means every run succeeded and the
mapreduce output equals the plain-Python count); timings are never asserted.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED

BENCH = REPO / "bench" / "wordcount.py"
GEN_CORPUS = SHARED / "bench" / "gen_corpus.py"


def test_wordcount_bench_quick(tmp_path: Path) -> None:
    if not GEN_CORPUS.is_file():
        pytest.fail(f"corpus generator missing: {GEN_CORPUS} (the shared/ folder beside the repo)")
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--work-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "outputs agree" in result.stdout
    assert re.search(r"^ratio mapreduce/baseline wall: \d+\.\d+x$", result.stdout, re.MULTILINE)
    # The corpus stays for reuse; the run outputs are cleaned up.
    assert (tmp_path / "corpus-2mb-2f" / "_COMPLETE.json").is_file()
    assert not list(tmp_path.glob("runs-*"))
