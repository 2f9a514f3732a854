"""The binary record path: run blocks without pickle, map output without a dictionary, and
the pass-through reduce give the same bytes as the pickle path, for every key and value type."""

from __future__ import annotations

import struct
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest

from mapreduce.core.spec import JobSpec
from mapreduce.dataflow import records, runner, sort
from mapreduce.dataflow.keys import decode_key, encode_key
from mapreduce.dataflow.partition import partition_of
from mapreduce.dataflow.records import (
    MAGIC,
    CorruptRunError,
    read_blocks,
    read_run,
    verify_run,
    write_run,
    write_str_run,
)
from mapreduce.dataflow.runner import RecordFailure, TaskError, format_field, run_reduce_task
from mapreduce.local import run_local
from mapreduce.planning import JobOptions

#: Keys of every supported kind; equal numbers (1, 1.0, True) are one key.
KEYS: list[Any] = [
    "w",
    "",
    "tab\there",
    "nul\x00in",
    "é€😀",
    b"raw",
    b"",
    b"\x00\xff",
    0,
    1,
    -7,
    2**70,
    -(2**70),
    1.5,
    -0.25,
    1e300,
    None,
    True,
    ("a", 1),
    ("a", ("x\x00", None)),
    (),
]
#: Values of every kind a job may emit (the pickle path keeps the others).
VALUES: list[Any] = [
    "text",
    "",
    "nul\x00and\ttab",
    "é€😀",
    b"bytes",
    b"\x00",
    0,
    -(2**63),
    2**63 - 1,
    2**64,
    True,
    False,
    1.25,
    None,
    (1, "a"),
    [1, [2]],
    {"k": [None]},
]


def _groups_round_trip(tmp_path: Path, groups: list[records.Group]) -> None:
    path = tmp_path / "g.run"
    size, count = write_run(str(path), groups)
    assert size == path.stat().st_size
    assert count == sum(len(values) for _k, values in groups)
    assert list(read_run(str(path))) == groups
    # iterated one group at a time, the same blocks
    write_run(str(path), iter(groups))
    assert list(read_run(str(path))) == groups
    verify_run(str(path))


def test_every_column_kind_round_trips(tmp_path: Path) -> None:
    sorted_keys = sorted({encode_key(key) for key in KEYS})
    cases: list[list[Any]] = [
        ["s", "", "x\x00y", "é"],  # str, NUL inside: sized framing
        ["plain", "ascii"],  # str, joined by NUL
        ["lone \udc80 surrogate"],
        [b"b", b"", b"\x00"],  # bytes, sized
        [b"b", b"c"],  # bytes, joined
        [0, -1, 2**63 - 1, -(2**63)],  # i64
        [2**64, 1],  # too large for i64: pickled
        [True, 1],  # a bool stays a bool
        VALUES,
    ]
    for values in cases:
        groups = [(key, list(values)) for key in sorted_keys]
        _groups_round_trip(tmp_path, groups)
        first = values[:1] * 3
        _groups_round_trip(tmp_path, [(key, list(first)) for key in sorted_keys])
        # one value a group, and groups with none (a combiner may emit nothing)
        single = [(key, [values[i % len(values)]]) for i, key in enumerate(sorted_keys)]
        _groups_round_trip(tmp_path, single)
        _groups_round_trip(tmp_path, [(k, v if i % 3 else []) for i, (k, v) in enumerate(single)])
    path = tmp_path / "b.run"
    write_run(str(path), [(b"A", [True, 1])])
    ((_key, (flag, one)),) = read_run(str(path))
    assert type(flag) is bool and type(one) is int


def test_str_pairs_become_the_groups_write_run_makes(tmp_path: Path) -> None:
    keys = sorted(["a", "b", "b", "c", "", "é", "x\x00", "x\x00", "x\x00"] * 700)
    values: list[Any] = [f"v{i}" for i in range(len(keys))]
    expected: dict[str, list[Any]] = {}
    for key, value in zip(keys, values, strict=True):
        expected.setdefault(key, []).append(value)
    path = tmp_path / "s.run"
    size, count = write_str_run(str(path), keys, values)
    assert (size, count) == (path.stat().st_size, len(keys))
    groups = list(read_run(str(path)))
    assert groups == [(b"A" + key.encode(), vals) for key, vals in expected.items()]
    blocks = list(read_blocks(str(path)))
    assert len(blocks) > 1
    assert all(block.key_kind == records.KEYS_STR for block in blocks)
    assert all(block.value_kind == records.VALUES_STR for block in blocks)


@pytest.mark.parametrize("damage", ["flip-key", "flip-value", "truncate", "magic", "version"])
def test_a_damaged_binary_block_is_detected(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "run"
    keys = sorted(f"k{i:05d}" for i in range(5000))
    write_str_run(str(path), keys, [f"value {i}" for i in range(5000)])
    data = bytearray(path.read_bytes())
    if damage == "flip-key":
        data[len(MAGIC) + 8 + 40] ^= 0x01
    elif damage == "flip-value":
        data[len(data) // 2] ^= 0x20
    elif damage == "truncate":
        del data[-10:]
    elif damage == "magic":
        data[0:3] = b"XXX"
    else:
        data[len(MAGIC) - 2] ^= 0x01  # MRRUN1: the pickled format
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRunError):
        verify_run(str(path))
    with pytest.raises(CorruptRunError):
        list(read_run(str(path)))
    reduce_job = tmp_path / "identity.py"
    reduce_job.write_text(
        "import mapreduce\n\ndef map(k, v):\n    yield v, v\n\nreduce = mapreduce.identity_reduce\n"
    )
    with pytest.raises(TaskError, match="corrupt intermediate run"):
        run_reduce_task(
            JobSpec("job-x", "identity.py"), str(reduce_job), 0, [str(path)], str(tmp_path / "o")
        )


def test_a_block_whose_columns_disagree_is_corrupt_even_with_a_good_checksum(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run"
    write_str_run(str(path), ["a", "b"], ["x", "y"])
    payload = bytearray(path.read_bytes()[len(MAGIC) + 8 :])
    struct.pack_into("<I", payload, 0, 3)  # three groups claimed, two stored
    bad = bytes(payload)
    path.write_bytes(MAGIC + struct.pack(">II", len(bad), zlib.crc32(bad)) + bad)
    verify_run(str(path))  # the framing and checksum are fine
    with pytest.raises(CorruptRunError, match="malformed block"):
        list(read_run(str(path)))


def test_a_pass_through_reduce_is_recognised() -> None:
    def plain(key: Any, values: Any) -> Any:
        yield from values

    def documented(k: Any, vs: Any) -> Any:
        """Every value."""
        yield from vs

    def other_argument(key: Any, values: Any) -> Any:
        yield from key

    def more(key: Any, values: Any) -> Any:
        yield from values
        yield 1

    def defaults(key: Any, values: Any = ()) -> Any:
        yield from values

    assert sort.passes_values_through(sort.identity_reduce)
    assert sort.passes_values_through(plain)
    assert sort.passes_values_through(documented)
    for fn in (other_argument, more, defaults, lambda key, values: values, print):
        assert not sort.passes_values_through(fn)


MIXED_JOB = """
import mapreduce
{partition}
KEYS = {keys!r}
VALUES = {values!r}

def map(key, line):
    n = int(line)
    if n % 5 == 0:  # some records emit only str keys and str values
        yield "w" + str(n % 7), "v" + str(n)
        return
    yield KEYS[n % len(KEYS)], VALUES[n % len(VALUES)]
    yield KEYS[(n * 7) % len(KEYS)], [n, repr(VALUES[(n * 3) % len(VALUES)])]
    yield "w" + str(n % 11), str(n)

{reduce}
"""


def _write_job(tmp_path: Path, name: str, *, reduce: str, partition: str = "") -> Path:
    source = MIXED_JOB.format(partition=partition, keys=KEYS, values=VALUES, reduce=reduce)
    path = tmp_path / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


FILES, LINES = 3, 20_000


def _inputs(tmp_path: Path, files: int = FILES, lines: int = LINES) -> Path:
    directory = tmp_path / "in"
    directory.mkdir(exist_ok=True)
    for f in range(files):
        numbers = range(f * lines, (f + 1) * lines)
        (directory / f"{f}.txt").write_text("".join(f"{n}\n" for n in numbers))
    return directory


def _run(tmp_path: Path, job: Path, out: str, reducers: int, memory_mb: int = 256) -> list[bytes]:
    output = tmp_path / out
    summary = run_local(
        JobOptions(
            job_path=str(job),
            inputs=(str(_inputs(tmp_path)),),
            output=str(output),
            num_reducers=reducers,
            split_size=64 * 1024,
            memory_mb=memory_mb,
            job_id="job-binary",
        )
    )
    spills = summary.to_dict()["system"]["map_spills"]
    assert (spills > 0) == (memory_mb < 2), spills
    return [(output / f"part-{i:05d}").read_bytes() for i in range(reducers)]


def _pickle_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as before the binary path: values pickled, a dictionary of lists, reduce called."""

    def pickled(values: list[Any]) -> tuple[bytes, list[bytes]]:
        return records.VALUES_PICKLE, [records._dumps(values)]

    monkeypatch.setattr(records, "_values_column", pickled)
    monkeypatch.setattr(runner, "sort_str_pairs", lambda *args, **kwargs: None)
    monkeypatch.setattr(runner, "passes_values_through", lambda fn: False)


def _expected(reducers: int) -> list[bytes]:
    """The output, computed here: keys grouped by their bytes, sorted, hash-partitioned;
    values in emission order (map tasks are whole files here, in name order)."""
    keys = KEYS
    grouped: dict[bytes, list[Any]] = {}
    for n in range(FILES * LINES):
        if n % 5 == 0:
            pairs: list[tuple[Any, Any]] = [("w" + str(n % 7), "v" + str(n))]
        else:
            pairs = [
                (keys[n % len(keys)], VALUES[n % len(VALUES)]),
                (keys[(n * 7) % len(keys)], [n, repr(VALUES[(n * 3) % len(VALUES)])]),
                ("w" + str(n % 11), str(n)),
            ]
        for key, value in pairs:
            grouped.setdefault(encode_key(key), []).append(value)
    parts: list[list[str]] = [[] for _ in range(reducers)]
    for key_bytes in sorted(grouped):
        shown = format_field(decode_key(key_bytes))
        for value in grouped[key_bytes]:
            line = shown + "\t" + format_field(value)
            parts[partition_of(key_bytes, reducers)].append(line + "\n")
    return ["".join(lines).encode() for lines in parts]


@pytest.mark.parametrize("reduce", ["yield from values", "identity", "a loop"])
def test_mixed_keys_and_values_give_the_bytes_of_the_pickle_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reduce: str
) -> None:
    source = {
        "yield from values": "def reduce(key, values):\n    yield from values\n",
        "identity": "reduce = mapreduce.identity_reduce\n",
        "a loop": "def reduce(key, values):\n    for value in values:\n        yield value\n",
    }[reduce]
    job = _write_job(tmp_path, "mixed.py", reduce=source)
    binary = _run(tmp_path, job, "binary", reducers=3)
    spilled = _run(tmp_path, job, "spilled", reducers=3, memory_mb=1)
    assert binary == spilled == _expected(3)
    with monkeypatch.context() as patched:
        _pickle_path(patched)
        assert _run(tmp_path, job, "pickled", reducers=3) == binary


@pytest.mark.parametrize("memory_mb", [256, 1])
def test_str_records_range_partitioned_give_the_bytes_of_the_pickle_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_mb: int
) -> None:
    """The sort's path: str keys and values, a range partitioner, a pass-through reduce;
    duplicate keys, NUL, tabs and non-ASCII text included."""
    job = tmp_path / "strsort.py"
    job.write_text(
        textwrap.dedent(
            """
            import mapreduce
            partition = mapreduce.RangePartitioner()
            reduce = mapreduce.identity_reduce

            def map(key, line):
                n = int(line)
                yield chr(0x61 + n % 26) + str(n % 97), "v\\x00" * (n % 2) + "é" * (n % 3) + line
                if n % 4 == 0:
                    yield "", "\\t"
            """
        ),
        encoding="utf-8",
    )
    binary = _run(tmp_path, job, "binary", reducers=4, memory_mb=memory_mb)
    with monkeypatch.context() as patched:
        _pickle_path(patched)
        assert _run(tmp_path, job, "pickled", reducers=4) == binary
    text = b"".join(binary).decode()
    keys = [line.split("\t", 1)[0] for line in text.split("\n")[:-1] if not line.startswith("\x00")]
    assert len(text.split("\n")) > 6000
    assert sorted(keys) == keys


def test_a_value_that_cannot_be_written_fails_the_same_way(tmp_path: Path) -> None:
    """A lone surrogate cannot be written as UTF-8: the pass-through reduce hands over to
    the usual loop, which blames the key, as before."""
    path = tmp_path / "run"
    write_str_run(str(path), ["a", "b"], ["fine", "lone \udc80"])
    job = tmp_path / "identity.py"
    job.write_text("def map(k, v):\n    yield v, v\n\ndef reduce(k, vs):\n    yield from vs\n")
    with pytest.raises(RecordFailure) as failure:
        run_reduce_task(
            JobSpec("job-x", "identity.py"), str(job), 0, [str(path)], str(tmp_path / "o")
        )
    assert failure.value.record_id == b"Ab"


@pytest.mark.parametrize("memory_mb", [256, 1])
def test_a_pass_through_reduce_that_meets_other_keys_midway_starts_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_mb: int
) -> None:
    """Blocks of str keys come first in a run (str < tuple): the pass-through writes some
    before it meets a tuple key, then the usual loop writes the whole output again (and
    so does the merge of a map task's spills)."""
    job = tmp_path / "late.py"
    job.write_text(
        textwrap.dedent(
            """
            def map(key, line):
                n = int(line)
                yield "k%05d" % (n % 9000), line
                if n % 1000 == 0:
                    yield (n, "late"), line

            def reduce(key, values):
                yield from values
            """
        ),
        encoding="utf-8",
    )
    binary = _run(tmp_path, job, "binary", reducers=1, memory_mb=memory_mb)
    lines = b"".join(binary).split(b"\n")
    assert len(lines) == FILES * LINES + FILES * LINES // 1000 + 1
    assert lines[-2].startswith(b'[59000, "late"]\t')
    with monkeypatch.context() as patched:
        _pickle_path(patched)
        assert _run(tmp_path, job, "pickled", reducers=1) == binary
