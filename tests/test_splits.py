"""Splits: every line read exactly once whatever the split size; inputs expansion."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapreduce.dataflow import formats
from mapreduce.dataflow.formats import raw_lines, read_split
from mapreduce.dataflow.splits import InputSplit, expand_inputs, plan_splits
from mapreduce.errors import BadRecordError, InputError

line_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=30
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(line_text, max_size=40),
    trailing_newline=st.booleans(),
    crlf=st.booleans(),
    split_size=st.integers(min_value=1, max_value=200),
)
def test_every_line_is_read_exactly_once(
    tmp_path: Path, lines: list[str], trailing_newline: bool, crlf: bool, split_size: int
) -> None:
    newline = "\r\n" if crlf else "\n"
    text = newline.join(lines) + (newline if trailing_newline and lines else "")
    path = tmp_path / "input.txt"
    data = text.encode("utf-8")
    path.write_bytes(data)
    splits = plan_splits([str(path)], "lines", split_size)
    records = [rec for split in splits for rec in read_split(split, "lines")]
    expected = text.split(newline) if text else []
    if text.endswith(newline):
        expected = expected[:-1]
    assert [value for _offset, _key, value in records] == expected
    offsets = [offset for offset, _key, _value in records]
    assert offsets == sorted(set(offsets))
    for offset, key, _value in records:
        assert key == (str(path), offset)
        assert offset == 0 or data[offset - 1 : offset] == b"\n"
    # raw byte ranges: the lines of all splits concatenate to the file
    assert b"".join(line for s in splits for _o, line in raw_lines(s)) == data


def test_line_keys_are_the_path_and_offset_of_each_line() -> None:
    keys = formats.LineKeys("/in/a.txt", [0, 4, 9])
    assert list(keys) == [("/in/a.txt", 0), ("/in/a.txt", 4), ("/in/a.txt", 9)]
    assert len(keys) == 3 and keys[1] == ("/in/a.txt", 4) and keys[-1] == ("/in/a.txt", 9)
    assert isinstance(keys[1:], formats.LineKeys)
    assert list(keys[1:]) == [("/in/a.txt", 4), ("/in/a.txt", 9)]
    # the tuples zip makes (and reuses once let go) are never changed while one is held
    held = [key for key in keys]
    assert held == [("/in/a.txt", 0), ("/in/a.txt", 4), ("/in/a.txt", 9)]
    keys.offsets.pop()  # the batch's offsets: cutting them cuts the keys
    assert list(keys) == [("/in/a.txt", 0), ("/in/a.txt", 4)]


def test_split_count_follows_split_size(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("x" * 99 + "\n")
    assert len(plan_splits([str(path)], "lines", 10)) == 10
    assert len(plan_splits([str(path)], "files", 10)) == 1


def test_gzip_is_one_split_and_read_transparently(tmp_path: Path) -> None:
    path = tmp_path / "a.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("one\ntwo\nthree\n")
    splits = plan_splits([str(path)], "lines", 4)
    assert len(splits) == 1
    assert [(o, v) for o, _k, v in read_split(splits[0], "lines")] == [
        (0, "one"),
        (4, "two"),
        (8, "three"),
    ]


def test_expand_inputs_dirs_globs_and_hidden(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ["d/b.txt", "d/a.txt", "d/sub/c.txt", "d/_SUCCESS", "d/.hidden", "e.log"]:
        (tmp_path / name).write_text("x\n")
    got = expand_inputs([str(tmp_path / "d"), str(tmp_path / "*.log"), str(tmp_path / "d/a.txt")])
    assert [Path(p).relative_to(tmp_path).as_posix() for p in got] == [
        "d/a.txt",
        "d/b.txt",
        "d/sub/c.txt",
        "e.log",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.txt", "does not exist"),
        ("*.nothing", "matches no file"),
        ("empty", "hold no file"),
    ],
)
def test_bad_inputs_are_named(tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=message):
        expand_inputs([str(tmp_path / spec)])


def test_lines_longer_than_a_read_block(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    lines = ["x" * (5 << 20), "short", "é" * 3_000_000, "", "last without newline"]
    data = "\n".join(lines).encode("utf-8")
    path.write_bytes(data)
    for split_size in (3 << 20, 64 << 20):
        splits = plan_splits([str(path)], "lines", split_size)
        got = [value for s in splits for _o, _k, value in read_split(s, "lines")]
        assert got == lines


raw_line = st.one_of(
    line_text.map(lambda text: text.encode("utf-8")),
    st.binary(max_size=12).filter(lambda data: b"\n" not in data),  # often invalid UTF-8
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(st.tuples(raw_line, st.sampled_from([b"\n", b"\r\n"])), max_size=30),
    trailing_newline=st.booleans(),
    block=st.integers(min_value=1, max_value=64),
    split_size=st.integers(min_value=1, max_value=300),
    skip_every=st.integers(min_value=0, max_value=4),
)
def test_block_reader_gives_the_records_and_errors_of_the_line_reader(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lines: list[tuple[bytes, bytes]],
    trailing_newline: bool,
    block: int,
    split_size: int,
    skip_every: int,
) -> None:
    """Blocks of any size, any text (invalid UTF-8 too), any skip set: the same as line by line."""
    monkeypatch.setattr(formats, "_FIRST_BLOCK_BYTES", block)
    monkeypatch.setattr(formats, "_BLOCK_BYTES", 2 * block)
    data = b"".join(text + newline for text, newline in lines)
    if not trailing_newline and lines:
        data = data[: -len(lines[-1][1])]
    path = tmp_path / "input.txt"
    path.write_bytes(data)
    offsets = [o for s in plan_splits([str(path)], "lines", split_size) for o, _l in raw_lines(s)]
    skip = frozenset(offsets[::skip_every] if skip_every else [])

    def outcome(reader: Callable[..., Iterator[Any]], split: InputSplit) -> list[Any]:
        got: list[Any] = []
        try:
            for item in reader(split, skip):
                got.append(item)
        except BadRecordError as exc:
            got.append(("error", exc.path, exc.offset, exc.reason))
        return got

    for split in plan_splits([str(path)], "lines", split_size):
        one_by_one = outcome(formats._read_lines_one_by_one, split)
        batches = outcome(formats._read_lines_in_blocks, split)
        flat = [r for b in batches if b[0] != "error" for r in zip(*b, strict=True)]
        flat += [b for b in batches if b[0] == "error"]
        assert flat == one_by_one
        assert all(b[0] for b in batches)  # no empty batch
