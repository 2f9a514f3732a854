"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.netbed import Netbed, sigterm_as_interrupt, unavailable

# No timing assertions anywhere (issue 10): Hypothesis fails an example that takes longer than
# its deadline (200 ms by default), which a busy machine turns into failures that have nothing
# to do with the code.  This profile, loaded for the whole suite, switches deadlines off;
# ``@settings(...)`` on a test inherits it.  HYPOTHESIS_PROFILE=default brings them back.
settings.register_profile("suite", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

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


@pytest.fixture
def netbed(tmp_path: Path) -> Iterator[Callable[..., Netbed]]:
    """Make ``netbed(hosts, syn_retries=None)``: a :class:`tests.netbed.Netbed` that is up.

    Skips (with the reason) where network namespaces cannot be made (not root, no ``ip``).
    Every netbed made is torn down at the end of the test, whatever happens (also on Ctrl-C
    or SIGTERM); the next run removes what a killed run left behind.
    """
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"no network namespaces here: {reason}")
    count = itertools.count()
    with sigterm_as_interrupt(), contextlib.ExitStack() as teardown:

        def make(hosts: int = 4, syn_retries: int | None = None) -> Netbed:
            bed = Netbed(hosts, tmp_path / f"netbed-{next(count)}", syn_retries=syn_retries)
            bed.up()
            teardown.callback(bed.down)  # every one runs, even when another fails
            return bed

        yield make
