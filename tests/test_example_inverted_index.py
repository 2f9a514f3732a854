"""The inverted index example against sets of words built file by file in plain Python."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from tests.conftest import EXAMPLES, output_pairs, run_cli


def expected_index(directory: Path) -> dict[str, list[str]]:
    word = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
    documents: defaultdict[str, set[str]] = defaultdict(set)
    for path in sorted(directory.iterdir()):
        for found in set(word.findall(path.read_text(encoding="utf-8").lower())):
            documents[found].add(path.name)
    return {found: sorted(names) for found, names in documents.items()}


def test_inverted_index_matches_sets_of_words(gutenberg: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = run_cli(
        "run",
        EXAMPLES / "inverted_index.py",
        "--input",
        gutenberg,
        "--output",
        output,
        "--reducers",
        "4",
        "--local",
    )
    assert result.returncode == 0, result.stderr
    got = {found: json.loads(names) for found, names in output_pairs(output).items()}
    expected = expected_index(gutenberg)
    assert got == expected
    every_book = sorted(path.name for path in gutenberg.iterdir())
    assert got["the"] == every_book
    assert any(len(names) == 1 for names in got.values())
    for part in output.glob("part-*"):
        words = [line.split("\t")[0] for line in part.read_text().splitlines()]
        assert words == sorted(words)
