"""The Python API: mapreduce.run() in the three modes, jobs given as functions, failures,
read_output(), and one definition of the options for the command and the API."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import types
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mapreduce
from mapreduce.cli import build_parser
from mapreduce.dataflow.runner import format_field
from mapreduce.errors import JobFailedError, OutputError, UsageError
from mapreduce.options import BY_KEYWORD
from tests.conftest import EXAMPLES, GUTENBERG, run_cli
from tests.daemons import Daemons

WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
DOCUMENTS = ("pg-being_ernest.txt", "pg-metamorphosis.txt")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("corpus")
    for name in DOCUMENTS:
        shutil.copy(GUTENBERG / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    cluster = Daemons(tmp_path_factory.mktemp("daemons"), 2)
    yield cluster
    cluster.close()


def modes(daemons: Daemons) -> dict[str, dict[str, Any]]:
    """The keywords of the three ways to run a job."""
    return {
        "local": {"local": True},
        "embedded": {"workers": 2},
        "daemons": {"master": daemons.address, "secret_file": str(daemons.secret)},
    }


# A job defined as functions in this module: shipped by source, with the helper, the
# regular expression and the constant they use.
STOP_WORDS = frozenset({"the", "and", "a"})


def words_of(line: str) -> list[str]:
    return [w for w in WORD.findall(line.lower()) if w not in STOP_WORDS]


def count_map(key: tuple[str, int], line: str) -> Iterator[tuple[str, int]]:
    for word in words_of(line):
        yield word, 1


def count_reduce(word: str, counts: Iterable[int]) -> Iterator[int]:
    total = sum(counts)
    if total >= 100:
        mapreduce.increment_counter("frequent words")
    yield total


def count_combine(word: str, counts: Iterable[int]) -> Iterator[int]:
    yield sum(counts)


def failing_map(key: tuple[str, int], line: str) -> Iterator[tuple[str, int]]:
    if "Metamorphosis" in line:
        raise ValueError("no metamorphosis here")
    yield line[:1], 1


def test_word_count_and_inverted_index_give_identical_records_in_every_mode(
    tmp_path: Path, corpus: Path, daemons: Daemons
) -> None:
    expected: Counter[str] = Counter()
    documents: dict[str, set[str]] = {}
    for name in DOCUMENTS:
        text = (corpus / name).read_text(encoding="utf-8")
        for word in WORD.findall(text.lower()):
            expected[word] += 1
            documents.setdefault(word, set()).add(name)
    for job, check in (
        # keys as written (a word such as "1887" or "true" reads back as a number or a bool)
        ("wordcount", lambda records: {format_field(k): v for k, v in records} == expected),
        (
            "inverted_index",
            lambda records: {format_field(k): set(v) for k, v in records} == documents,
        ),
    ):
        seen = {}
        for mode, keywords in modes(daemons).items():
            result = mapreduce.run(
                EXAMPLES / f"{job}.py", corpus, tmp_path / f"{job}-{mode}", reducers=3, **keywords
            )
            assert result.job_id.startswith("job-")
            assert result.output == str(tmp_path / f"{job}-{mode}")
            assert result.summary["system"]["reduce_tasks"] == 3
            seen[mode] = list(result.records())
        assert seen["local"] == seen["embedded"] == seen["daemons"], job
        assert check(seen["local"]), job


def test_a_job_of_functions_defined_in_a_test_module_runs_in_every_mode(
    tmp_path: Path, corpus: Path, daemons: Daemons
) -> None:
    job = types.SimpleNamespace(map=count_map, reduce=count_reduce, combine=count_combine)
    expected = Counter(
        w
        for name in DOCUMENTS
        for line in (corpus / name).read_text(encoding="utf-8").splitlines()
        for w in words_of(line)
    )
    seen = {}
    for mode, keywords in modes(daemons).items():
        result = mapreduce.run(job, [corpus], tmp_path / mode, reducers=2, **keywords)
        seen[mode] = (list(result.records()), result.counters)
    assert seen["local"] == seen["embedded"] == seen["daemons"]
    records, counters = seen["local"]
    assert {format_field(k): v for k, v in records} == expected
    assert counters == {"frequent words": sum(1 for n in expected.values() if n >= 100)}


def test_a_failing_job_raises_with_the_task_record_and_traceback(
    tmp_path: Path, corpus: Path, daemons: Daemons
) -> None:
    job = types.SimpleNamespace(map=failing_map, reduce=count_reduce)
    path = corpus / "pg-metamorphosis.txt"
    offset = path.read_bytes().index(b"Metamorphosis")
    line_start = path.read_bytes().rfind(b"\n", 0, offset) + 1
    for mode, keywords in modes(daemons).items():
        with pytest.raises(JobFailedError) as info:
            mapreduce.run(job, path, tmp_path / mode, max_attempts=1, **keywords)
        error = info.value
        assert error.task == "map-00000", mode
        assert error.record == f"{path}@{line_start}", mode
        assert "ValueError: no metamorphosis here" in error.reason, mode
        assert "in failing_map" in error.traceback, mode
        assert error.job_id.startswith("job-"), mode
        assert not (tmp_path / mode).exists()


def test_jobs_that_cannot_be_shipped_are_refused_before_anything_runs(
    tmp_path: Path, corpus: Path
) -> None:
    offset = 10

    def closure(key: Any, line: str) -> Iterator[tuple[str, int]]:
        yield line[offset:], 1

    cases = {
        "a closure": (closure, "closure (over offset)"),
        "a lambda": (lambda key, line: [(line, 1)], "a lambda cannot be shipped"),
    }
    for what, (map_fn, message) in cases.items():
        job = types.SimpleNamespace(map=map_fn, reduce=count_reduce)
        with pytest.raises(UsageError, match=re.escape(message)):
            mapreduce.run(job, corpus, tmp_path / "out", local=True)
        assert not (tmp_path / "out").exists(), what
    with pytest.raises(UsageError, match="no `reduce` function"):
        mapreduce.run(types.SimpleNamespace(map=count_map), corpus, tmp_path / "out", local=True)
    with pytest.raises(TypeError, match="no_such_option"):
        mapreduce.run(EXAMPLES / "wordcount.py", corpus, tmp_path / "out", no_such_option=1)
    with pytest.raises(UsageError, match="split_size="):
        mapreduce.run(EXAMPLES / "wordcount.py", corpus, tmp_path / "out", split_size=[1])


class LengthJob:
    """A job as a class of static functions, with a RangePartitioner shipped by value."""

    partition = mapreduce.RangePartitioner()

    @staticmethod
    def map(key: tuple[str, int], line: str) -> Iterator[tuple[int, str]]:
        for word in words_of(line):
            yield len(word), word

    @staticmethod
    def reduce(length: int, words: Iterable[str]) -> Iterator[int]:
        yield len(set(words))


def test_a_job_class_of_static_functions_with_a_range_partitioner(
    tmp_path: Path, corpus: Path
) -> None:
    result = mapreduce.run(LengthJob, corpus, tmp_path / "out", reducers=3, local=True)
    records = list(result.records())
    expected: dict[int, set[str]] = {}
    for name in DOCUMENTS:
        for line in (corpus / name).read_text(encoding="utf-8").splitlines():
            for word in words_of(line):
                expected.setdefault(len(word), set()).add(word)
    assert records == sorted((n, len(ws)) for n, ws in expected.items())  # a total order


KEYS_JOB = """
INPUT_FORMAT = "jsonl"

def as_key(k):
    return tuple(as_key(x) for x in k) if isinstance(k, list) else k

def map(key, record):
    yield as_key(record["key"]), record["value"]

def reduce(key, values):
    for value in values:
        yield value
"""


def test_read_output_round_trips_tuples_numbers_and_strings(tmp_path: Path) -> None:
    pairs = [
        (("grimm", 3), {"count": 1}),
        (("a", ("nested", 2.5)), [1, "two"]),
        (7, "seven"),
        (-1.25, None),
        (10**20, True),
        ("word", 1),
        ("two words", "x\\y"),
        ('"quoted"', "[not json"),
        ("007", "1e5"),
        ("NaN", "Infinity"),
    ]
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"key": k, "value": v}) + "\n" for k, v in pairs))
    job = tmp_path / "keys.py"
    job.write_text(KEYS_JOB)
    result = mapreduce.run(job, inputs, tmp_path / "out", reducers=2, local=True)
    records = list(result.records())
    assert sorted(records, key=repr) == sorted(pairs, key=repr)
    assert list(mapreduce.read_output(tmp_path / "out")) == records
    # partition order, then key order: part-00000's lines first
    first = (tmp_path / "out" / "part-00000").read_text().splitlines()
    assert [format_field(k) for k, _v in records[: len(first)]] == [
        line.partition("\t")[0] for line in first
    ]
    # a string that reads as a number comes back as the number (the README says so)
    (tmp_path / "in.jsonl").write_text(json.dumps({"key": "42", "value": "true"}) + "\n")
    again = mapreduce.run(job, inputs, tmp_path / "out", local=True, overwrite=True)
    assert list(again.records()) == [(42, True)]
    (tmp_path / "out" / "_SUCCESS").unlink()
    with pytest.raises(OutputError, match="no _SUCCESS"):
        mapreduce.read_output(tmp_path / "out")


def _run_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            run: argparse.ArgumentParser = action.choices["run"]
            return run
    raise AssertionError("no run command")


def test_every_option_of_the_run_command_is_a_keyword_of_run_with_the_same_default() -> None:
    run = _run_parser()
    positional = {"help", "job", "input", "output"}
    flags = {a.dest: a for a in run._actions if a.dest not in positional}
    assert set(flags) == set(BY_KEYWORD)
    for name, action in flags.items():
        option = BY_KEYWORD[name]
        assert list(action.option_strings) == list(option.flags), name
        if option.kind in ("list", "pairs"):
            assert action.default == [], name
        elif name != "quiet":  # the API is quiet unless asked
            assert action.default == option.default_value(python=True), name
    # and the keyword reaches the run: a bad value is refused naming it
    assert "max_attempts" in BY_KEYWORD
    assert os.cpu_count() is None or BY_KEYWORD["workers"].default_value() == os.cpu_count()


NOTEBOOK = """
import sys, types
from collections import Counter
import mapreduce

MIN_LENGTH = 4  # a global value, shipped by value

class Tokenizer:  # a class of __main__, shipped by source with what its body reads
    minimum = MIN_LENGTH

    def words(self, line):
        return [w for w in line.lower().split() if len(w) >= self.minimum]

def long_words(line, tokenizer=Tokenizer()):  # a default value made when it is defined
    return tokenizer.words(line)

def map(key, line):
    for word in long_words(line):
        yield word, 1

def reduce(word, counts):
    yield sum(counts)

result = mapreduce.run(sys.modules[__name__], sys.argv[1], sys.argv[2], workers=2)
print(dict(result.records()) == Counter(w for l in open(sys.argv[1]) for w in long_words(l)))
"""


def test_functions_of_a_script_run_as_main_are_shipped_to_the_workers(tmp_path: Path) -> None:
    script = tmp_path / "notebook.py"
    script.write_text(NOTEBOOK)
    text = tmp_path / "in.txt"
    text.write_text("Gregor Samsa awoke one morning\nfrom uneasy dreams, Gregor\n")
    done = subprocess.run(
        [sys.executable, str(script), str(text), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True", done.stderr


def test_version_is_the_package_version() -> None:
    from importlib.metadata import version

    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"mapreduce {version('mapreduce')}"
    assert mapreduce.__version__ == version("mapreduce")


class BlockWordCount:
    """A job object with ``map_split`` instead of ``map``: one Counter per split."""

    @staticmethod
    def map_split(records: Iterator[tuple[Any, str]]) -> Iterable[tuple[str, int]]:
        counts: Counter[str] = Counter()
        for _key, line in records:
            counts.update(line.split())
        return counts.items()

    @staticmethod
    def reduce(word: str, counts: Iterable[int]) -> Iterator[int]:
        yield sum(counts)


def test_a_job_object_with_map_split_runs_locally_and_on_the_embedded_cluster(
    tmp_path: Path, corpus: Path
) -> None:
    expected: Counter[str] = Counter()
    for name in DOCUMENTS:
        expected.update((corpus / name).read_text(encoding="utf-8").split())
    for keywords in ({"local": True}, {"workers": 2}):
        out = tmp_path / "-".join(keywords)
        result = mapreduce.run(BlockWordCount, corpus, out, reducers=2, **keywords)
        got = {format_field(k): v for k, v in result.records()}  # "true" reads back as True
        assert got == {k: v for k, v in expected.items()}
