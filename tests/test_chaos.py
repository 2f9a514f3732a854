"""A small seeded chaos run (scripts/chaos.py): jobs under random faults on namespace hosts.

Two jobs, a master and three workers; the script exits 0 only when every output is
byte-identical to ``--local``, and its last line says how many faults it injected (at least
one: the first fault starts with the first job).  Skips where network namespaces or nftables
are missing, as the scenarios of tests/test_netbed.py do.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.netbed import nft_missing, unavailable

SEED = 20261201


def test_small_seeded_chaos_run_is_identical_to_local(tmp_path: Path) -> None:
    reason = unavailable() or nft_missing()
    if reason is not None:
        pytest.skip(f"no chaos here: {reason}")
    command = [sys.executable, str(REPO / "scripts" / "chaos.py"), "--seed", str(SEED)]
    command += ["--jobs", "2", "--hosts", "4", "--dir", str(tmp_path / "chaos")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    last = re.fullmatch(r"chaos: 2 jobs, (\d+) faults, 2 identical", lines[-1])
    assert last is not None, lines[-1]
    assert int(last[1]) >= 1
    assert any(line.startswith("faults by kind: kill-worker ") for line in lines)
    assert not (tmp_path / "chaos").exists()  # removed after a run without differences
