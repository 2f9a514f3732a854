"""The distributed sort example against Python's sorted() on records from gen_records.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLES, SHARED, read_output, run_cli

GEN_RECORDS = SHARED / "bench" / "gen_records.py"


def input_records(directory: Path) -> list[str]:
    """Every input line without its newline, in input order (files by name, then line)."""
    records: list[str] = []
    for path in sorted(directory.iterdir()):
        records.extend(path.read_text(encoding="ascii").splitlines())
    return records


def run_sort(records: Path, output: Path, reducers: int, split_size: str) -> None:
    result = run_cli(
        "run",
        EXAMPLES / "sort.py",
        "--input",
        records,
        "--output",
        output,
        "--reducers",
        str(reducers),
        "--split-size",
        split_size,
        "--local",
    )
    assert result.returncode == 0, result.stderr


def test_sort_is_globally_sorted_and_balanced(tmp_path: Path) -> None:
    records = tmp_path / "records"
    options = ["--records", "20000", "--files", "4", "--seed", "3", "--jobs", "1"]
    subprocess.run(
        [sys.executable, GEN_RECORDS, records, *options],
        check=True,
        capture_output=True,
        timeout=120,
    )
    output = tmp_path / "out"
    run_sort(records, output, reducers=4, split_size="200K")
    parts = sorted(output.glob("part-*"))
    assert [p.name for p in parts] == [f"part-{i:05d}" for i in range(4)]

    lines = read_output(output)
    assert all(len(line) == 100 and line[10] == "\t" for line in lines)  # 99 + the TAB
    expected = sorted(input_records(records), key=lambda record: record[:10])
    assert [line[:10] + line[11:] for line in lines] == expected
    # The concatenation is sorted by key; every part holds one range of keys.
    keys = [line[:10] for line in lines]
    assert keys == sorted(keys)

    # Range partitioning from a sample of the keys: no part is empty or far off R's share.
    sizes = [len(part.read_text(encoding="ascii").splitlines()) for part in parts]
    assert sum(sizes) == 20000
    assert all(2500 <= size <= 7500 for size in sizes), sizes


def test_equal_keys_keep_input_order(tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    keys = ["KKKKKKKKKB", "KKKKKKKKKA", "KKKKKKKKKB", "short", "KKKKKKKKKA", "KKKKKKKKKB"]
    for file in range(2):
        lines = [
            key if key == "short" else f"{key} file {file} record {i}" for i, key in enumerate(keys)
        ]
        (records / f"in-{file}.txt").write_text("".join(line + "\n" for line in lines))
    output = tmp_path / "out"
    run_sort(records, output, reducers=2, split_size="64")
    lines = read_output(output)
    expected = sorted(input_records(records), key=lambda record: record[:10])
    assert [line.replace("\t", "", 1) for line in lines] == expected
    assert lines[0] == "KKKKKKKKKA\t file 0 record 1"
    assert lines.count("short\t") == 2
