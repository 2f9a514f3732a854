"""The distributed grep example against a line-by-line scan of the files in plain Python."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import EXAMPLES, read_output, run_cli

PATTERN = r"\b(?:Watson|Holmes|Frankenstein)\b[,.]"


def expected_matches(directory: Path, pattern: str) -> list[tuple[str, int, str]]:
    """``(path, byte offset, line)`` of every matching line, in path then offset order."""
    regex = re.compile(pattern)
    found = []
    for path in sorted(directory.iterdir()):
        offset = 0
        for raw in path.read_bytes().splitlines(keepends=True):
            line = raw.decode("utf-8").rstrip("\n").removesuffix("\r")
            if regex.search(line):
                found.append((str(path), offset, line))
            offset += len(raw)
    return found


def run_grep(gutenberg: Path, output: Path, *params: str) -> tuple[int, str]:
    args: list[str | Path] = ["run", EXAMPLES / "grep.py", "-i", gutenberg, "-o", output]
    args += ["--reducers", "3", "--split-size", "256K", "--local"]
    for param in params:
        args += ["--param", param]
    result = run_cli(*args)
    return result.returncode, result.stderr


def test_grep_matches_a_scan_of_the_files(gutenberg: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    status, stderr = run_grep(gutenberg, output, f"pattern={PATTERN}")
    assert status == 0, stderr
    assert (output / "_SUCCESS").exists()
    got = []
    for line in read_output(output):
        key, _tab, text = line.partition("\t")
        path, offset = json.loads(key)
        got.append((path, offset, text))
    expected = expected_matches(gutenberg, PATTERN)
    assert len(expected) > 100  # the pattern is not trivially rare
    # cat part-* lists the matches in input order (range partitioning by (path, offset)).
    assert got == expected
    # Every key points at the line it names.
    for path, offset, text in got[:50]:
        with open(path, "rb") as f:
            f.seek(offset)
            assert f.readline().decode("utf-8").rstrip("\r\n") == text


def test_grep_without_a_pattern_fails_naming_the_param(gutenberg: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    status, stderr = run_grep(gutenberg, output)
    assert status == 2  # refused before any task ran
    assert "grep.py: setup() failed: ValueError" in stderr
    assert "--param pattern=REGEX" in stderr
    assert not output.exists()


def test_grep_with_an_invalid_pattern_fails_naming_the_param(
    gutenberg: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    status, stderr = run_grep(gutenberg, output, "pattern=(unclosed")
    assert status == 2
    assert "--param pattern='(unclosed' is not a valid regular expression" in stderr
    assert not output.exists()
