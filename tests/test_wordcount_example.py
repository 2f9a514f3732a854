"""The word count example against an independent count with collections.Counter."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from tests.conftest import EXAMPLES, output_pairs, run_cli


def expected_counts(directory: Path) -> Counter[str]:
    word = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
    counts: Counter[str] = Counter()
    for path in sorted(directory.iterdir()):
        counts.update(word.findall(path.read_text(encoding="utf-8").lower()))
    return counts


def test_wordcount_matches_counter(gutenberg: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = run_cli(
        "run",
        EXAMPLES / "wordcount.py",
        "--input",
        gutenberg,
        "--output",
        output,
        "--reducers",
        "3",
        "--split-size",
        "256K",
        "--local",
    )
    assert result.returncode == 0, result.stderr
    assert (output / "_SUCCESS").exists()
    assert sorted(p.name for p in output.glob("part-*")) == [
        "part-00000",
        "part-00001",
        "part-00002",
    ]
    got = {word: int(count) for word, count in output_pairs(output).items()}
    assert got == dict(expected_counts(gutenberg))
    for part in output.glob("part-*"):
        keys = [line.split("\t")[0] for line in part.read_text().splitlines()]
        assert keys == sorted(keys)
