"""The block map API: a job may define ``map_split(records)`` instead of ``map``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, GUTENBERG, JOBS, run_cli
from tests.daemons import parts


@pytest.mark.parametrize("where", [["--local"], ["--workers", "2"]], ids=["local", "cluster"])
def test_map_split_word_count_gives_the_output_of_map(tmp_path: Path, where: list[str]) -> None:
    """examples/wordcount_block.py (a Counter per split) and examples/wordcount.py (a pair
    per word, with a combiner): the same part files, byte for byte, over several splits."""
    inputs = sorted(GUTENBERG.glob("*.txt"))[:2]
    outputs = {}
    for job in ("wordcount.py", "wordcount_block.py"):
        out = tmp_path / job
        argv = ["run", EXAMPLES / job, "-i", *inputs, "-o", out, "-r", "3", "-q"]
        result = run_cli(*argv, "--split-size", "256K", *where)
        assert result.returncode == 0, result.stderr
        outputs[job] = parts(out)
        summary = json.loads((out / "_summary.json").read_text())
        assert summary["system"]["map_tasks"] > 2
    assert outputs["wordcount.py"] == outputs["wordcount_block.py"]
    assert sum(len(text) for text in outputs["wordcount.py"].values()) > 10_000
    # the block job emits each word once per split, not once per occurrence
    block = json.loads((tmp_path / "wordcount_block.py" / "_summary.json").read_text())
    natural = json.loads((tmp_path / "wordcount.py" / "_summary.json").read_text())
    assert block["system"]["map_input_records"] == natural["system"]["map_input_records"]


def test_a_failing_map_split_is_blamed_on_its_split_and_skipping_skips_the_split(
    tmp_path: Path,
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.txt").write_text("good words here\n" * 10)
    (inputs / "b.txt").write_text("fine\nPOISON\nlost words\n")
    out = tmp_path / "out"
    base = ["run", JOBS / "poison_split.py", "-i", inputs, "-o", out, "--overwrite", "-q"]
    for where in (["--local"], ["--workers", "2"]):
        failed = run_cli(*base, "--max-attempts", "2", *where)
        assert failed.returncode == 1
        assert f"{inputs / 'b.txt'}@0 (the whole split: map_split)" in failed.stderr
        assert "ValueError: poisoned split" in failed.stderr
        skipped = run_cli(*base, "--skip-bad-records", "1", *where)
        assert skipped.returncode == 0, skipped.stderr
        assert parts(out) == {"part-00000": "good\t10\nhere\t10\nwords\t10\n"}
        summary = json.loads((out / "_summary.json").read_text())
        (record,) = summary["skipped_records"]
        assert record["record"] == f"{inputs / 'b.txt'}@0 (the whole split: map_split)"


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("both_maps.py", "defines both `map` and `map_split`: define one"),
        ("no_reduce.py", "defines no `reduce` function"),
    ],
)
def test_a_job_must_define_map_or_map_split(tmp_path: Path, job: str, message: str) -> None:
    (tmp_path / "in.txt").write_text("x\n")
    result = run_cli("run", JOBS / job, "-i", tmp_path / "in.txt", "-o", tmp_path / "o", "--local")
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("memory_mb", ["256", "1"], ids=["in-memory", "spilling"])
def test_map_split_pairs_are_combined_like_map_pairs(tmp_path: Path, memory_mb: str) -> None:
    """A map_split job that emits a pair per word (its pairs kept in a list, the combiner
    run on each key when they are sorted, and on spills when they are merged) writes
    what examples/wordcount.py writes; the combiner did shrink its output."""
    inputs = sorted(GUTENBERG.glob("*.txt"))[:1]
    outputs, summaries = {}, {}
    for job in (EXAMPLES / "wordcount.py", JOBS / "split_pairs.py"):
        out = tmp_path / job.name
        argv = ["run", job, "-i", *inputs, "-o", out, "-r", "2", "-q", "--local"]
        result = run_cli(*argv, "--memory-mb", memory_mb)
        assert result.returncode == 0, result.stderr
        outputs[job.name] = parts(out)
        summaries[job.name] = json.loads((out / "_summary.json").read_text())["system"]
    assert outputs["wordcount.py"] == outputs["split_pairs.py"]
    pairs = summaries["split_pairs.py"]
    assert pairs["map_output_records"] < pairs["map_input_records"] * 2
