"""Input formats: how the bytes of a split become ``(key, value)`` records.

=========  ====================================  ==========================================
format     key                                   value
=========  ====================================  ==========================================
``lines``  ``(path, byte_offset)``               the line, without ``\\n`` / ``\\r\\n``
``jsonl``  ``(path, byte_offset)``               the parsed JSON value (blank lines skipped)
``tsv``    the text before the first tab         the text after it (``""`` if no tab)
``files``  the file's path                       the whole file as text
=========  ====================================  ==========================================

Text is UTF-8.  ``.gz`` files are decompressed transparently (offsets are
then offsets in the decompressed text).  A record that cannot be decoded
raises :class:`~mapreduce.errors.BadRecordError` naming the file and offset.

Every reader yields ``(offset, key, value)``: the offset identifies the record
for error messages and bad-record skipping.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import IO, Any, cast

from mapreduce.dataflow.splits import InputSplit
from mapreduce.errors import BadRecordError

Record = tuple[int, Any, Any]

INPUT_FORMATS = frozenset({"lines", "files", "jsonl", "tsv"})

_READ_BUFFER = 1 << 20
_BLOCK_BYTES = 4 << 20


def _open(path: str) -> IO[bytes]:
    if path.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb", buffering=_READ_BUFFER)


def raw_lines(split: InputSplit) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` for every line that *starts* in ``split``, newline included.

    A split that does not start at 0 first skips the rest of the line that
    straddles its start: that line belongs to the previous split.
    """
    with _open(split.path) as f:
        whole = split.path.endswith(".gz")
        pos = split.start
        if pos > 0 and not whole:
            f.seek(pos - 1)
            pos += len(f.readline()) - 1
        end = split.end
        for line in f:
            if pos >= end and not whole:
                break
            yield pos, line
            pos += len(line)


def _decode(split: InputSplit, offset: int, line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRecordError(
            split.path, offset, f"invalid UTF-8 at byte {offset + exc.start} ({exc.reason})"
        ) from None


def read_lines(split: InputSplit, skip: frozenset[int] = frozenset()) -> Iterator[Record]:
    """The ``lines`` format."""
    if split.path.endswith(".gz"):
        return _read_lines_one_by_one(split, skip)
    return _read_lines_in_blocks(split, skip)


def _read_lines_one_by_one(split: InputSplit, skip: frozenset[int]) -> Iterator[Record]:
    path = split.path
    for offset, line in raw_lines(split):
        if skip and offset in skip:
            continue
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = _decode(split, offset, line)
        yield offset, (path, offset), text


def _read_lines_in_blocks(split: InputSplit, skip: frozenset[int]) -> Iterator[Record]:
    """The same records as :func:`_read_lines_one_by_one`, read a block at a time.

    A block of ASCII text (the common case) is decoded and split in two C calls,
    and its byte offsets are its character offsets.
    """
    path = split.path
    end = split.end
    with open(path, "rb", buffering=0) as f:
        pos = split.start
        if pos > 0:  # the line that straddles the start belongs to the previous split
            f.seek(pos - 1)
            pos += len(f.readline()) - 1
        carry = b""
        while pos < end:
            block = f.read(_BLOCK_BYTES)
            if not block:  # a last line without a newline
                if carry and not (skip and pos in skip):
                    yield pos, (path, pos), _decode_line(split, pos, carry)
                return
            data = carry + block if carry else block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            carry = data[cut + 1 :]
            body = data[:cut]
            if body.isascii():
                for line in body.decode("ascii").split("\n"):
                    if pos >= end:
                        return
                    offset = pos
                    pos += len(line) + 1
                    if skip and offset in skip:
                        continue
                    if line[-1:] == "\r":
                        line = line[:-1]
                    yield offset, (path, offset), line
            else:
                for raw in body.split(b"\n"):
                    if pos >= end:
                        return
                    offset = pos
                    pos += len(raw) + 1
                    if skip and offset in skip:
                        continue
                    if raw[-1:] == b"\r":
                        raw = raw[:-1]
                    yield offset, (path, offset), _decode_line(split, offset, raw)


def _decode_line(split: InputSplit, offset: int, line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return _decode(split, offset, line)


def read_jsonl(split: InputSplit, skip: frozenset[int] = frozenset()) -> Iterator[Record]:
    """The ``jsonl`` format: one JSON value a line."""
    path = split.path
    for offset, key, text in read_lines(split, skip):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRecordError(
                path, offset, f"invalid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        yield offset, key, value


def read_tsv(split: InputSplit, skip: frozenset[int] = frozenset()) -> Iterator[Record]:
    """The ``tsv`` format: ``key<TAB>value`` lines, as the output of a job."""
    for offset, _key, text in read_lines(split, skip):
        key, _tab, value = text.partition("\t")
        yield offset, key, value


def read_files(split: InputSplit, skip: frozenset[int] = frozenset()) -> Iterator[Record]:
    """The ``files`` format: one record per file."""
    if 0 in skip:
        return
    with _open(split.path) as f:
        data = f.read()
    yield 0, split.path, _decode(split, 0, data)


_READERS = {
    "lines": read_lines,
    "jsonl": read_jsonl,
    "tsv": read_tsv,
    "files": read_files,
}


def read_split(
    split: InputSplit, input_format: str, skip: frozenset[int] = frozenset()
) -> Iterator[Record]:
    """Every record of ``split`` under ``input_format``, but those at the offsets in ``skip``."""
    return _READERS[input_format](split, skip)
