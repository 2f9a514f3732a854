"""The sequential runner end to end, through the real command in child processes."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import JOBS, output_pairs, read_output, run_cli


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def summary(output: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((output / "_summary.json").read_text())


def split_counts(directory: Path) -> dict[str, str]:
    counts: Counter[str] = Counter()
    for path in sorted(directory.iterdir()):
        counts.update(path.read_text(encoding="utf-8").split())
    return {word: str(n) for word, n in counts.items()}


def test_combiner_on_and_off_give_identical_bytes(gutenberg: Path, tmp_path: Path) -> None:
    outputs = []
    for flag in ["", "--no-combiner"]:
        out = tmp_path / f"out{flag}"
        args = ["run", JOBS / "wordcount_plain.py", "-i", gutenberg, "-o", out, "-r", "3"]
        result = run_cli(*args, "--local", "--split-size", "512K", *([flag] if flag else []))
        assert result.returncode == 0, result.stderr
        outputs.append([(out / f"part-0000{i}").read_bytes() for i in range(3)])
    assert outputs[0] == outputs[1]
    assert output_pairs(tmp_path / "out") == split_counts(gutenberg)


def test_spill_and_merge_with_a_tiny_memory_budget(gutenberg: Path, tmp_path: Path) -> None:
    big, small = tmp_path / "big", tmp_path / "small"
    base = ["run", JOBS / "wordcount_plain.py", "-i", gutenberg, "-r", "2", "--local"]
    assert run_cli(*base, "-o", big).returncode == 0
    result = run_cli(*base, "-o", small, "--memory-mb", "1", "--no-combiner")
    assert result.returncode == 0, result.stderr
    assert summary(small)["system"]["map_spills"] > len(list(gutenberg.iterdir()))
    assert summary(big)["system"]["map_spills"] == 0
    assert read_output(small) == read_output(big)
    assert output_pairs(small) == split_counts(gutenberg)


def test_values_reach_reduce_in_map_task_then_emission_order(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    write_lines(inp / "a.txt", ["x 1", "y 1", "x 2"])
    write_lines(inp / "b.txt", ["x 3", "x 4"])
    out = tmp_path / "out"
    result = run_cli(
        "run",
        JOBS / "value_order.py",
        "-i",
        inp,
        "-o",
        out,
        "--split-size",
        "4",
        "--local",
        "--memory-mb",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(output_pairs(out)["x"]) == [
        ["a.txt", 0],
        ["a.txt", 8],
        ["b.txt", 0],
        ["b.txt", 4],
    ]


def test_keys_of_several_types_sorted_and_formatted(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "n.txt", [str(n) for n in [5, -3, 10, 0]])
    out = tmp_path / "out"
    assert run_cli("run", JOBS / "typed_keys.py", "-i", inp, "-o", out, "--local").returncode == 0
    keys = [line.split("\t")[0] for line in read_output(out)]
    assert output_pairs(out) == {
        "-3": "-3",
        "-0.75": "1",
        "0": "1",  # 0 and 0.0 are one key; the values 0 (int key) + 1 (float key)
        "1.25": "1",
        "2.5": "1",
        "5": "5",
        "10": "10",
        '["pair", 0, 0]': "1",
        '["pair", 0, 3]': "1",
        '["pair", 1, -10]': "1",
        '["pair", 2, -5]': "1",
    }
    assert keys == list(output_pairs(out))  # written in key order


def test_counters_params_and_task_context(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.txt", ["a", "", "b", "c"])
    out = tmp_path / "out"
    result = run_cli(
        "run",
        JOBS / "counters_and_context.py",
        "-i",
        inp,
        "-o",
        out,
        "-r",
        "2",
        "--split-size",
        "3",
        "--param",
        "color=blue",
        "-p",
        "n=1",
        "--local",
    )
    assert result.returncode == 0, result.stderr
    assert "lines: 4" in result.stdout and "blank lines: 1" in result.stdout
    s = summary(out)
    assert s["counters"] == {"blank lines": 1, "lines": 4}
    assert s["system"]["map_input_records"] == 4
    assert s["system"]["map_tasks"] == 3
    (value,) = output_pairs(out).values()
    record = json.loads(value)
    assert record["map"][0] == "map" and record["map"][1].startswith("map-0000")
    assert record["map"][2:] == [0, 2]
    assert record["reduce"][0] == "reduce"
    assert record["params"] == {"color": "blue", "n": "1"}


def test_existing_output_is_refused_then_overwritten(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.txt", ["a b", "b"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious").write_text("keep me")
    args = ["run", JOBS / "wordcount_plain.py", "-i", inp, "-o", out, "--local"]
    result = run_cli(*args)
    assert result.returncode == 2
    assert "already exists" in result.stderr and "--overwrite" in result.stderr
    assert (out / "precious").read_text() == "keep me"
    assert run_cli(*args, "--overwrite").returncode == 0
    assert not (out / "precious").exists()
    assert output_pairs(out) == {"a": "1", "b": "2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out"]


def test_failed_job_leaves_no_output_and_keeps_the_old_one(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.txt", ["fine line", "a POISON line", "more"])
    out = tmp_path / "out"
    result = run_cli("run", JOBS / "poison.py", "-i", inp, "-o", out, "--local")
    assert result.returncode == 1
    assert f"{inp}@10" in result.stderr
    assert "ValueError: poisoned line" in result.stderr
    assert "map-00000" in result.stderr
    assert 'poison.py", line' in result.stderr  # the user's traceback
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
    # with an old output under --overwrite, the old output survives the failure
    out.mkdir()
    (out / "part-00000").write_text("old\t1\n")
    result = run_cli("run", JOBS / "poison.py", "-i", inp, "-o", out, "--local", "--overwrite")
    assert result.returncode == 1
    assert (out / "part-00000").read_text() == "old\t1\n"


def test_bad_records_are_skipped_when_allowed(tmp_path: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_bytes(b"a POISON\nb b\nbad \xff byte\nc\nVENOM x\nPOISON again\n")
    out = tmp_path / "out"
    base = ["run", JOBS / "poison.py", "-i", inp, "-o", out, "--local"]
    too_few = run_cli(*base, "--skip-bad-records", "2")
    assert too_few.returncode == 1
    assert not out.exists()
    result = run_cli(*base, "--skip-bad-records", "4")
    assert result.returncode == 0, result.stderr
    assert output_pairs(out) == {"b": "2", "c": "1", "x": "1"}
    s = summary(out)
    assert s["system"]["skipped_records"] == 4
    reasons = {(r["record"], r["reason"]) for r in s["skipped_records"]}
    assert (f"{inp}@0", "ValueError: poisoned line") in reasons
    assert (f"{inp}@13", "invalid UTF-8 at byte 17 (invalid start byte)") in reasons
    assert ("key='VENOM'", "RuntimeError: poisoned key") in reasons
    assert "skipped 4 bad records" in result.stdout


def test_undecodable_input_names_file_and_offset(tmp_path: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_bytes(b"good\nbad \xc3\x28\n")
    result = run_cli("run", JOBS / "wordcount_plain.py", "-i", inp, "-o", tmp_path / "o", "--local")
    assert result.returncode == 1
    assert f"{inp}@5" in result.stderr and "invalid UTF-8 at byte 9" in result.stderr


def test_each_input_format(tmp_path: Path) -> None:
    lines = write_lines(tmp_path / "l.txt", ["one", "two"])
    jsonl = write_lines(tmp_path / "j.jsonl", ['{"a": 1}', "", "[2, 3]"])
    tsv = write_lines(tmp_path / "t.tsv", ["k1\tv1\tmore", "lonely"])
    gz = tmp_path / "g.txt.gz"
    with gzip.open(gz, "wt") as f:
        f.write("zipped\n")
    expected = {
        ("lines", lines): [[[str(lines), 0], "one"], [[str(lines), 4], "two"]],
        ("jsonl", jsonl): [[[str(jsonl), 0], {"a": 1}], [[str(jsonl), 10], [2, 3]]],
        ("tsv", tsv): [["k1", "v1\tmore"], ["lonely", ""]],
        ("files", lines): [[str(lines), "one\ntwo\n"]],
        ("lines", gz): [[[str(gz), 0], "zipped"]],
    }
    for (fmt, path), records in expected.items():
        out = tmp_path / f"out-{fmt}-{path.name}"
        result = run_cli(
            "run", JOBS / "echo_records.py", "-i", path, "-o", out, "--input-format", fmt, "--local"
        )
        assert result.returncode == 0, result.stderr
        got = []
        for line in read_output(out):
            key, _tab, value = line.partition("\t")
            got.append([json.loads(key), json.loads(value)])  # echo_records writes JSON
        assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, records)), fmt


def test_invalid_json_line_names_file_and_offset(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", ['{"ok": 1}', "{not json"])
    result = run_cli(
        "run",
        JOBS / "echo_records.py",
        "-i",
        inp,
        "-o",
        tmp_path / "o",
        "--input-format",
        "jsonl",
        "--local",
    )
    assert result.returncode == 1
    assert f"{inp}@10" in result.stderr and "invalid JSON" in result.stderr


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("no_reduce.py", "defines no `reduce` function"),
        ("import_error.py", "No module named 'this_module_does_not_exist'"),
        ("missing.py", "no such file"),
    ],
)
def test_bad_job_files_are_named(tmp_path: Path, job: str, message: str) -> None:
    inp = write_lines(tmp_path / "in.txt", ["x"])
    result = run_cli("run", JOBS / job, "-i", inp, "-o", tmp_path / "o", "--local")
    assert result.returncode == 2
    assert f"job file {JOBS / job}" in result.stderr and message in result.stderr


def test_syntax_error_in_job_file(tmp_path: Path) -> None:
    job = tmp_path / "broken.py"
    job.write_text("def map(key, value)\n    yield key, value\n")
    inp = write_lines(tmp_path / "in.txt", ["x"])
    result = run_cli("run", job, "-i", inp, "-o", tmp_path / "o", "--local")
    assert result.returncode == 2
    assert f"job file {job}: syntax error at line 1" in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--reducers", "0"], "--reducers must be 1 to 100000 (got 0)"),
        (["--reducers", "5000000000"], "--reducers must be 1 to 100000 (got 5000000000)"),
        (["--max-attempts", "1000"], "--max-attempts must be 1 to 100"),
        (["--split-size", "lots"], "is not a size"),
        (["--param", "novalue"], "is not NAME=VALUE"),
        (["--input-format", "xml"], "invalid choice"),
    ],
)
@pytest.mark.parametrize("local", [["--local"], ["--workers", "1"]])
def test_bad_flags_are_named(
    tmp_path: Path, flags: list[str], message: str, local: list[str]
) -> None:
    """In a local run and on an embedded cluster (planned as `submit` plans a job):
    a clear message naming the flag and exit 2, never a traceback."""
    inp = write_lines(tmp_path / "in.txt", ["x"])
    result = run_cli(
        "run", JOBS / "wordcount_plain.py", "-i", inp, "-o", tmp_path / "o", *flags, *local
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_python_dash_m_and_help() -> None:
    result = run_cli("run", "--help")
    assert result.returncode == 0
    for flag in [
        "--input",
        "--output",
        "--reducers",
        "--local",
        "--input-format",
        "--split-size",
        "--memory-mb",
        "--param",
        "--overwrite",
        "--skip-bad-records",
        "--no-combiner",
    ]:
        assert flag in result.stdout


def test_setup_checks_params_before_any_task(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.txt", ["a", "b"])
    refused = run_cli("run", JOBS / "setup_check.py", "-i", inp, "-o", tmp_path / "o", "--local")
    assert refused.returncode == 2
    assert "setup_check.py: setup() failed: ValueError: needs --param n=NUMBER" in refused.stderr
    assert not (tmp_path / "o").exists()
    out = tmp_path / "out"
    result = run_cli("run", JOBS / "setup_check.py", "-i", inp, "-o", out, "--local", "-p", "n=1")
    assert result.returncode == 0, result.stderr
    # once when planned, then once before the map task (same process in --local)
    assert output_pairs(out) == {"map": "2"}
