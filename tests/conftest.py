"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
GUTENBERG = SHARED / "data" / "gutenberg"
EXAMPLES = REPO / "examples"
JOBS = Path(__file__).resolve().parent / "jobs"


def run_cli(
    *args: str | os.PathLike[str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mapreduce ARGS`` in a real child process."""
    return subprocess.run(
        [sys.executable, "-m", "mapreduce", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        check=False,
    )


def read_output(output: Path) -> list[str]:
    """Every line of every part file, in part-file order."""
    lines: list[str] = []
    for part in sorted(output.glob("part-*")):
        text = part.read_text(encoding="utf-8")
        lines.extend(text.split("\n")[:-1] if text else [])  # only \n ends a line
    return lines


def output_pairs(output: Path) -> dict[str, str]:
    """``key -> value`` from an output whose keys are unique."""
    pairs: dict[str, str] = {}
    for line in read_output(output):
        key, _tab, value = line.partition("\t")
        assert key not in pairs, f"key {key!r} written twice"
        pairs[key] = value
    return pairs


@pytest.fixture
def gutenberg() -> Path:
    if not GUTENBERG.is_dir():
        pytest.fail(f"test data missing: {GUTENBERG} (the shared/ folder beside the repo)")
    return GUTENBERG
