"""The URL access frequency example against a hand-written log parser and a Counter."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.conftest import EXAMPLES, output_pairs, read_output, run_cli

GENERATOR = EXAMPLES / "gen_access_logs.py"


def generate(out_dir: Path, lines: int, seed: int) -> None:
    more = ["--seed", str(seed), "--malformed", "0.02"]
    subprocess.run(
        [sys.executable, GENERATOR, out_dir, "--lines", str(lines), "--files", "3", *more],
        check=True,
        capture_output=True,
        timeout=60,
    )


def url_of(line: str) -> str | None:
    """``host ident user [date] "request" status bytes ["referer" "agent"]`` -> URL or None."""
    head, bracket, rest = line.partition(" [")
    fields = head.split(" ")
    if not bracket or len(fields) != 3 or any(not f or not f.isprintable() for f in fields):
        return None
    date, quote, rest = rest.partition('] "')
    if not quote or "]" in date:
        return None
    request, quote, rest = rest.partition('" ')
    if not quote or '"' in request:
        return None
    status, _space, rest = rest.partition(" ")
    size, _space, extra = rest.partition(" ")
    if len(status) != 3 or not status.isdigit() or not (size == "-" or size.isdigit()):
        return None
    if extra:
        referer_and_agent = extra.split('"')
        if len(referer_and_agent) != 5 or referer_and_agent[::2] != ["", " ", ""]:
            return None
    words = request.split(" ")
    if len(words) not in (2, 3) or "" in words:
        return None
    return words[1]


def expected(directory: Path) -> tuple[Counter[str], int]:
    counts: Counter[str] = Counter()
    malformed = 0
    for path in sorted(directory.iterdir()):
        for line in path.read_text(encoding="utf-8").splitlines():
            url = url_of(line)
            if url is None:
                malformed += 1
            else:
                counts[url] += 1
    return counts, malformed


def test_generator_is_deterministic(tmp_path: Path) -> None:
    for name, seed in [("a", 5), ("b", 5), ("c", 6)]:
        generate(tmp_path / name, 2000, seed)
    files = [sorted((tmp_path / name).iterdir()) for name in "abc"]
    assert [p.name for p in files[0]] == [
        "access-00000.log",
        "access-00001.log",
        "access-00002.log",
    ]
    assert [p.read_bytes() for p in files[0]] == [p.read_bytes() for p in files[1]]
    assert [p.read_bytes() for p in files[0]] != [p.read_bytes() for p in files[2]]
    assert sum(len(p.read_text().splitlines()) for p in files[0]) == 2000


def run_url_frequency(logs: Path, output: Path, *flags: str) -> None:
    result = run_cli(
        "run",
        EXAMPLES / "url_frequency.py",
        "--input",
        logs,
        "--output",
        output,
        "--reducers",
        "2",
        "--split-size",
        "256K",
        "--local",
        *flags,
    )
    assert result.returncode == 0, result.stderr


def test_url_frequency_matches_an_independent_parse(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    generate(logs, 20_000, seed=11)
    output = tmp_path / "out"
    run_url_frequency(logs, output)
    counts, malformed = expected(logs)
    assert 200 < malformed < 600  # about 2% of the lines
    lines = [line for path in logs.iterdir() for line in path.read_text().splitlines()]
    assert "" in lines and any('] "-" ' in line for line in lines)
    assert len(counts) > 300
    got = {url: int(count) for url, count in output_pairs(output).items()}
    assert got == dict(counts)
    summary = json.loads((output / "_summary.json").read_text())
    assert summary["counters"]["malformed lines"] == malformed
    assert summary["system"]["map_tasks"] > 3
    for part in output.glob("part-*"):
        urls = [line.split("\t")[0] for line in part.read_text().splitlines()]
        assert urls == sorted(urls)
    # The combiner changes nothing.
    run_url_frequency(logs, tmp_path / "no-combiner", "--no-combiner")
    assert read_output(tmp_path / "no-combiner") == read_output(output)
