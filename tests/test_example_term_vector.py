"""The term vector per host example against per-host Counters built in plain Python."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, output_pairs, run_cli

GENERATOR = EXAMPLES / "gen_web_docs.py"
WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
HOST = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]+)")


def generate(out_dir: Path, docs: int, seed: int, files: int = 2) -> None:
    more = ["--seed", str(seed), "--malformed", "0.02"]
    subprocess.run(
        [sys.executable, GENERATOR, out_dir, "--docs", str(docs), "--files", str(files), *more],
        check=True,
        capture_output=True,
        timeout=60,
    )


def expected(directory: Path, top: int) -> tuple[dict[str, list[list[object]]], int]:
    """``host -> [[word, count], ...]`` (the ``top`` most frequent) and the malformed records."""
    vectors: defaultdict[str, Counter[str]] = defaultdict(Counter)
    malformed = 0
    for path in sorted(directory.iterdir()):
        for line in path.read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)
            match = HOST.match(doc.get("url", "")) if isinstance(doc, dict) else None
            if match is None or not isinstance(doc.get("text"), str):
                malformed += 1
                continue
            vectors[match.group(1).lower()].update(WORD.findall(doc["text"].lower()))
    result = {}
    for host, counts in vectors.items():
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        result[host] = [[word, count] for word, count in ranked[:top]]
    return result, malformed


def run_term_vector(
    docs: Path, output: Path, *params: str, flags: tuple[str, ...] = ()
) -> tuple[int, str]:
    args: list[str | Path] = ["run", EXAMPLES / "term_vector.py", "-i", docs, "-o", output]
    args += ["--reducers", "2", "--split-size", "128K", "--local", *flags]
    for param in params:
        args += ["--param", param]
    result = run_cli(*args)
    return result.returncode, result.stderr


def test_generator_is_deterministic(tmp_path: Path) -> None:
    for name, seed in [("a", 4), ("b", 4), ("c", 5)]:
        generate(tmp_path / name, 300, seed)
    files = [sorted((tmp_path / name).iterdir()) for name in "abc"]
    assert [p.name for p in files[0]] == ["docs-00000.jsonl", "docs-00001.jsonl"]
    assert [p.read_bytes() for p in files[0]] == [p.read_bytes() for p in files[1]]
    assert [p.read_bytes() for p in files[0]] != [p.read_bytes() for p in files[2]]


@pytest.mark.parametrize("top", [None, 3, 1000])
def test_term_vectors_match_counters(tmp_path: Path, top: int | None) -> None:
    docs = tmp_path / "docs"
    generate(docs, 3000, seed=9)
    output = tmp_path / "out"
    params = [] if top is None else [f"top={top}"]
    status, stderr = run_term_vector(docs, output, *params)
    assert status == 0, stderr
    want, malformed = expected(docs, 10 if top is None else top)
    assert len(want) == 12 and malformed > 20
    got = {host: json.loads(vector) for host, vector in output_pairs(output).items()}
    assert got == want
    summary = json.loads((output / "_summary.json").read_text())
    assert summary["counters"]["malformed records"] == malformed
    assert summary["system"]["map_tasks"] > 2


def test_the_combiner_changes_nothing(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    generate(docs, 3000, seed=9, files=1)
    outputs = []
    for name, flags in [
        ("plain", ()),
        ("no-combiner", ("--no-combiner",)),
        # A map buffer over its budget: the combiner also runs on the buffer mid-task.
        ("small-buffer", ("--memory-mb", "1", "--split-size", "4M")),
    ]:
        status, stderr = run_term_vector(docs, tmp_path / name, "top=1000", flags=flags)
        assert status == 0, stderr
        outputs.append([part.read_bytes() for part in sorted((tmp_path / name).glob("part-*"))])
    assert outputs[0] == outputs[1] == outputs[2]


@pytest.mark.parametrize("top", ["0", "-2", "ten", ""])
def test_a_bad_top_fails_naming_the_param(tmp_path: Path, top: str) -> None:
    docs = tmp_path / "docs"
    generate(docs, 20, seed=1)
    status, stderr = run_term_vector(docs, tmp_path / "out", f"top={top}")
    assert status == 2  # refused by setup() before any task ran
    assert f"--param top={top!r} must be a positive integer" in stderr
    assert not (tmp_path / "out").exists()
