"""Input formats: how the bytes of a split become ``(key, value)`` records.

=========  ====================================  ==========================================
format     key                                   value
=========  ====================================  ==========================================
``lines``  ``(path, byte_offset)``               the line, without ``\\n`` / ``\\r\\n``
``jsonl``  ``(path, byte_offset)``               the parsed JSON value (blank lines skipped)
``tsv``    the text before the first tab         the text after it (``""`` if no tab)
``files``  the file's path                       the whole file as text
=========  ====================================  ==========================================

Text is UTF-8.  ``.gz``, ``.bz2`` and ``.zst`` files are decompressed transparently
(offsets are then offsets in the decompressed text).  A split's path is a plain path or a
URL (read through :mod:`mapreduce.dataflow.storage`, with ranged reads).  A record that
cannot be decoded raises :class:`~mapreduce.errors.BadRecordError` naming the file and offset.

Every reader yields ``(offset, key, value)``: the offset identifies the record
for error messages and bad-record skipping.
"""

from __future__ import annotations

import bisect
import itertools
import json
import operator
import sys
from collections.abc import Iterator, Mapping, Sequence, Sized
from typing import IO, Any, overload

from mapreduce.core.spec import INPUT_FORMATS, InputSplit
from mapreduce.dataflow.storage import is_compressed, is_url, open_input, open_raw
from mapreduce.errors import BadRecordError

Record = tuple[int, Any, Any]
#: Records ``(offsets, keys, values)``, three sequences of equal length: lists, but the
#: keys of lines (:class:`LineKeys`).
Batch = tuple[list[int], Sequence[Any], list[Any]]

__all__ = ["INPUT_FORMATS", "read_batches", "read_split"]

#: Lines are read, decoded and cut a block at a time.  Blocks of this size stay in the
#: CPU's cache while they are cut: measured on a 32 MB text split, 4 MB blocks took
#: twice the CPU time of 64-128 KB blocks (0.127 s against 0.061 s).
_BLOCK_BYTES = 128 << 10
_FIRST_BLOCK_BYTES = 64 << 10
#: Storage options (``--storage-option``) of the inputs that are URLs.
Options = Mapping[str, str] | None


class LineKeys(Sequence[tuple[str, int]]):
    """The keys of a batch of lines, ``(path, offset)`` for each of ``offsets``, made as
    they are iterated: no tuple is kept for each line (iterated by :func:`zip`, which
    reuses its tuple when the previous one was let go, a key often costs nothing).
    ``offsets`` is the batch's own list: cutting it cuts the keys too."""

    __slots__ = ("offsets", "path")

    def __init__(self, path: str, offsets: list[int]) -> None:
        self.path = path
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return zip(itertools.repeat(self.path), self.offsets)

    @overload
    def __getitem__(self, index: int) -> tuple[str, int]: ...
    @overload
    def __getitem__(self, index: slice) -> LineKeys: ...
    def __getitem__(self, index: int | slice) -> tuple[str, int] | LineKeys:
        if isinstance(index, slice):
            return LineKeys(self.path, self.offsets[index])
        return (self.path, self.offsets[index])

    def __repr__(self) -> str:
        return f"LineKeys({self.path!r}, {self.offsets!r})"


def _open(path: str, options: Options = None) -> IO[bytes]:
    return open_input(path, options)


def raw_lines(split: InputSplit, options: Options = None) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` for every line that *starts* in ``split``, newline included.

    A split that does not start at 0 first skips the rest of the line that
    straddles its start: that line belongs to the previous split.
    """
    with _open(split.path, options) as f:
        whole = is_compressed(split.path)
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


def read_lines(
    split: InputSplit, skip: frozenset[int] = frozenset(), options: Options = None
) -> Iterator[Batch]:
    """The ``lines`` format."""
    if is_compressed(split.path):
        return _batched(_read_lines_one_by_one(split, skip, options))
    return _read_lines_in_blocks(split, skip, options)


def _batched(records: Iterator[Record], size: int = 1024) -> Iterator[Batch]:
    """Records grouped into batches of ``size``."""
    while True:
        chunk = list(itertools.islice(records, size))
        if not chunk:
            return
        offsets, keys, values = zip(*chunk, strict=True)
        yield list(offsets), list(keys), list(values)


def _read_lines_one_by_one(
    split: InputSplit, skip: frozenset[int], options: Options = None
) -> Iterator[Record]:
    path = split.path
    for offset, line in raw_lines(split, options):
        if skip and offset in skip:
            continue
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        yield offset, (path, offset), _decode_line(split, offset, line)


def _read_lines_in_blocks(
    split: InputSplit, skip: frozenset[int], options: Options = None
) -> Iterator[Batch]:
    """The lines of ``split`` read a block at a time, a batch a block.

    A block that is valid UTF-8 (the common case) is decoded and split in a few
    C calls; the byte offsets of its lines come from the lengths of the lines
    of the undecoded block (``\\n`` is one byte in UTF-8 and never part of
    another character), summed in C.
    """
    path = split.path
    end = split.end
    with open_raw(path, options) as f:
        pos = split.start
        if pos > 0:  # the line that straddles the start belongs to the previous split
            f.seek(pos - 1)
            pos += len(f.readline()) - 1
        carry = b""
        size = _FIRST_BLOCK_BYTES  # small at first: a sample needs only the first lines
        # a store is asked for little beyond the split's end (its last line's rest)
        stop = end + _FIRST_BLOCK_BYTES if is_url(path) else sys.maxsize
        while pos < end:
            block = f.read(min(size, max(stop - pos - len(carry), _FIRST_BLOCK_BYTES)))
            size = min(2 * size, _BLOCK_BYTES)
            if not block:  # a last line without a newline
                if carry and not (skip and pos in skip):
                    yield [pos], [(path, pos)], [_decode_line(split, pos, carry)]
                return
            data = carry + block if carry else block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            carry = data[cut + 1 :]
            batch, error = _block_lines(split, pos, data[:cut], skip)
            offsets = batch[0]
            # every line starts before the block's end; those starting at or after
            # the split's end belong to the next split
            count = bisect.bisect_left(offsets, end)
            if count < len(offsets):
                del offsets[count:], batch[2][count:]  # the keys are the offsets' (LineKeys)
                pos = end
            else:
                pos += cut + 1
            if skip:
                batch = _without(batch, skip)
            if batch[0]:
                yield batch
            if error is not None:
                raise error


def _block_lines(
    split: InputSplit, pos: int, body: bytes, skip: frozenset[int]
) -> tuple[Batch, BadRecordError | None]:
    """The lines of ``body`` (complete lines, without the last one's ``\\n``), from ``pos``.

    Returns:
        the batch, and the error of its first line that is not valid UTF-8 (the
        batch then ends before that line), unless that line is skipped or not
        in the split.
    """
    error = None
    if body.isascii():
        values = body.decode("ascii").split("\n")
        offsets = _starts(pos, values)  # a character is a byte
    else:
        raws = body.split(b"\n")
        offsets = _starts(pos, raws)
        try:
            values = body.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            values, error = _decode_lines(split, offsets, raws, skip)
            del offsets[len(values) :]
            return (offsets, LineKeys(split.path, offsets), values), error
    if b"\r" in body:
        values = [v[:-1] if v[-1:] == "\r" else v for v in values]
    return (offsets, LineKeys(split.path, offsets), values), error


def _decode_lines(
    split: InputSplit, offsets: list[int], raws: list[bytes], skip: frozenset[int]
) -> tuple[list[str], BadRecordError | None]:
    """Decode lines one by one up to the first that is not UTF-8 (and is not skipped)."""
    values = []
    for offset, raw in zip(offsets, raws, strict=True):
        try:
            values.append(_decode_line(split, offset, raw[:-1] if raw[-1:] == b"\r" else raw))
        except BadRecordError as exc:
            if offset < split.end and offset not in skip:
                return values, exc
            values.append("")  # dropped by the caller
    return values, None


def _starts(pos: int, lines: Sequence[Sized]) -> list[int]:
    """The offset of each of ``lines``, the first at ``pos``, each followed by one byte."""
    lengths = map(operator.add, map(len, lines), itertools.repeat(1))  # with the newline
    starts = list(itertools.accumulate(lengths, initial=pos))
    starts.pop()  # where the line after the last would start
    return starts


def _without(batch: Batch, skip: frozenset[int]) -> Batch:
    kept = [i for i, offset in enumerate(batch[0]) if offset not in skip]
    return [batch[0][i] for i in kept], [batch[1][i] for i in kept], [batch[2][i] for i in kept]


def _decode_line(split: InputSplit, offset: int, line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return _decode(split, offset, line)


def read_jsonl(
    split: InputSplit, skip: frozenset[int] = frozenset(), options: Options = None
) -> Iterator[Batch]:
    """The ``jsonl`` format: one JSON value a line (blank lines skipped)."""
    path = split.path
    for offsets, _keys, texts in read_lines(split, skip, options):
        kept: list[int] = []
        values: list[Any] = []
        for offset, text in zip(offsets, texts, strict=True):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BadRecordError(
                    path, offset, f"invalid JSON ({exc.msg} at column {exc.colno})"
                ) from None
            kept.append(offset)
            values.append(value)
        if kept:
            yield kept, LineKeys(path, kept), values


def read_tsv(
    split: InputSplit, skip: frozenset[int] = frozenset(), options: Options = None
) -> Iterator[Batch]:
    """The ``tsv`` format: ``key<TAB>value`` lines, as the output of a job."""
    for offsets, _keys, texts in read_lines(split, skip, options):
        parts = [text.partition("\t") for text in texts]
        yield offsets, [p[0] for p in parts], [p[2] for p in parts]


def read_files(
    split: InputSplit, skip: frozenset[int] = frozenset(), options: Options = None
) -> Iterator[Batch]:
    """The ``files`` format: one record per file."""
    if 0 in skip:
        return
    with _open(split.path, options) as f:
        data = f.read()
    yield [0], [split.path], [_decode(split, 0, data)]


_READERS = {
    "lines": read_lines,
    "jsonl": read_jsonl,
    "tsv": read_tsv,
    "files": read_files,
}


def read_batches(
    split: InputSplit,
    input_format: str,
    skip: frozenset[int] = frozenset(),
    options: Options = None,
) -> Iterator[Batch]:
    """The records of ``split`` under ``input_format`` (but those at the offsets in
    ``skip``) as batches ``(offsets, keys, values)`` of three lists of equal length.
    ``options``: the storage options of a split whose path is a URL."""
    return _READERS[input_format](split, skip, options)


def read_split(
    split: InputSplit,
    input_format: str,
    skip: frozenset[int] = frozenset(),
    options: Options = None,
) -> Iterator[Record]:
    """Every record of ``split`` under ``input_format``, but those at the offsets in ``skip``."""
    for offsets, keys, values in read_batches(split, input_format, skip, options):
        yield from zip(offsets, keys, values, strict=True)
