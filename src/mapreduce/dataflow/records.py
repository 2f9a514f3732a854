"""The one intermediate record format: sorted runs of ``(key_bytes, values)`` groups.

A *run* file holds the records of one reduce partition, sorted by key bytes,
each key at most once.  Its layout::

    b"MRRUN2\\n"                                  magic and version
    block*                                       zero or more blocks
    block   := length:u32be  crc32:u32be  payload
    payload := groups:u32le  values:u32le  key_kind:u8  count_kind:u8  value_kind:u8  0:u8
               keys_length:u32le  keys  counts_length:u32le  counts  values

A block holds whole groups: a key's values are never cut between two blocks.
Its three columns are

* ``keys``: the groups' key bytes (:mod:`mapreduce.dataflow.keys`); key kind
  ``s`` when every key of the block is a ``str`` key (stored without its
  :data:`~mapreduce.dataflow.keys.STR_TAG`, the UTF-8 of the string), ``k``
  for any other key bytes;
* ``counts``: how many values each group has; count kind ``1`` (every group
  has one value, the column is empty) or ``a`` (a u32le per group);
* ``values``: every group's values, group after group, in emission order; value
  kind ``s`` (every value is a ``str``: its UTF-8), ``b`` (``bytes``), ``i``
  (an ``int`` that fits 64 bits: i64le each) or ``p`` (anything else: a pickle,
  protocol 5, of the list of values).

A column of strings or bytes starts with its framing: ``z`` when no item holds
a NUL byte (the items joined by NUL: split in C when read), else ``l`` (a u32le
length per item, then the items one after the other).  So a block of ``str``
keys and ``str``, ``bytes`` or ``int`` values travels without pickle, and its
keys and values come back with a few C-level calls per block, not per record.

Every block carries a CRC-32 of its payload, so a truncated or corrupted run
(on disk or over the network) is detected, never merged.

Values that are not all ``str``, all ``bytes`` or all small ``int`` are
pickled: they can be any picklable Python object.  Run files are exchanged only
between the machines of one cluster, which already run the same job code, so
unpickling them trusts nothing new.
"""

from __future__ import annotations

import bisect
import io
import itertools
import operator
import pickle
import struct
import sys
import zlib
from array import array
from collections.abc import Iterable, Iterator
from itertools import accumulate, chain, repeat
from operator import itemgetter
from typing import IO, Any

from mapreduce.dataflow.keys import STR_TAG

MAGIC = b"MRRUN2\n"
_HEADER = struct.Struct(">II")
_BLOCK_HEAD = struct.Struct("<II4s")
_U32 = struct.Struct("<I")
#: At most this many groups, and (unless one group has more) values, in a block.
_BLOCK_RECORDS = 2048
_BLOCK_VALUES = 65536

_LITTLE = sys.byteorder == "little"
assert array("I").itemsize == 4 and array("q").itemsize == 8

KEYS_STR = b"s"
KEYS_BYTES = b"k"
COUNTS_ONE = b"1"
COUNTS_ARRAY = b"a"
VALUES_STR = b"s"
VALUES_BYTES = b"b"
VALUES_INT = b"i"
VALUES_PICKLE = b"p"
_JOINED = b"z"
_SIZED = b"l"
_NUL = b"\x00"

Group = tuple[bytes, list[Any]]

_first = itemgetter(0)
_second = itemgetter(1)
_after_tag = itemgetter(slice(1, None))
_add_tag = STR_TAG.__add__


class CorruptRunError(Exception):
    """A run file is truncated or fails its checksum."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"corrupt intermediate run {path}: {reason}")
        self.path = path


def _dumps(values: list[Any]) -> bytes:
    """Pickle a block's values: without the memo (much faster) unless they need it.

    Objects that appear twice are then written twice (equal copies come out);
    values that contain themselves are pickled the usual way.
    """
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.fast = True
    try:
        pickler.dump(values)
    except ValueError:  # "fast mode: can't pickle cyclic objects"
        return pickle.dumps(values, protocol=5)
    return buffer.getvalue()


def _u32s_bytes(numbers: Iterable[int]) -> bytes:
    numbers_array = array("I", numbers)
    if not _LITTLE:
        numbers_array.byteswap()
    return numbers_array.tobytes()


def _u32s(data: bytes, count: int) -> list[int]:
    if len(data) != 4 * count:
        raise ValueError("bad length of a u32 column")
    numbers = array("I")
    numbers.frombytes(data)
    if not _LITTLE:
        numbers.byteswap()
    return numbers.tolist()


def _bytes_column(items: list[bytes]) -> list[bytes]:
    """The parts of a column of ``items`` (framing first)."""
    joined = _NUL.join(items)
    if joined.count(_NUL) == len(items) - 1:
        return [_JOINED, joined]
    return [_SIZED, _u32s_bytes(map(len, items)), *items]


def _str_column(items: list[str]) -> list[bytes]:
    joined = "\x00".join(items)
    if joined.count("\x00") == len(items) - 1:
        return [_JOINED, joined.encode("utf-8", "surrogatepass")]
    return _bytes_column(list(map(str.encode, items, repeat("utf-8"), repeat("surrogatepass"))))


def _bytes_items(column: bytes, count: int) -> list[bytes]:
    """Invert :func:`_bytes_column`."""
    framing = column[:1]
    if framing == _JOINED:
        items = column[1:].split(_NUL)
    elif framing == _SIZED:
        body_at = 1 + 4 * count
        ends = list(accumulate(_u32s(column[1:body_at], count)))
        body = column[body_at:]
        if (ends[-1] if ends else 0) != len(body):
            raise ValueError("bad lengths in a column")
        items = list(map(body.__getitem__, map(slice, chain((0,), ends), ends)))
    else:
        raise ValueError(f"unknown column framing {framing!r}")
    if len(items) != count:
        raise ValueError("wrong number of items in a column")
    return items


def _decoded(data: bytes) -> str:
    """UTF-8 as :mod:`~mapreduce.dataflow.keys` writes it (lone surrogates kept); the
    strict decoder first: it is the faster."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogatepass")


def _str_items(column: bytes, count: int) -> list[str]:
    if column[:1] == _JOINED:
        items = _decoded(column[1:]).split("\x00")
        if len(items) != count:
            raise ValueError("wrong number of items in a column")
        return items
    raws = _bytes_items(column, count)
    return list(map(bytes.decode, raws, repeat("utf-8"), repeat("surrogatepass")))


def _values_column(values: list[Any]) -> tuple[bytes, list[bytes]]:
    """The value kind and column parts of a block's values."""
    if values:
        kinds = set(map(type, values))
        if len(kinds) == 1:
            kind = kinds.pop()
            if kind is str:
                return VALUES_STR, _str_column(values)
            if kind is bytes:
                return VALUES_BYTES, _bytes_column(values)
            if kind is int:
                try:
                    numbers = array("q", values)
                except OverflowError:
                    pass
                else:
                    if not _LITTLE:
                        numbers.byteswap()
                    return VALUES_INT, [numbers.tobytes()]
    return VALUES_PICKLE, [_dumps(values)]


def _encode(
    key_kind: bytes, key_parts: list[bytes], counts: list[int] | None, values: list[Any]
) -> bytes:
    """A block's payload; ``counts`` None when every group has one value."""
    groups = len(counts) if counts is not None else len(values)
    if counts is not None and counts.count(1) == groups:
        counts = None
    count_parts = [] if counts is None else [_u32s_bytes(counts)]
    value_kind, value_parts = _values_column(values)
    head = _BLOCK_HEAD.pack(
        groups,
        len(values),
        key_kind + (COUNTS_ONE if counts is None else COUNTS_ARRAY) + value_kind + b"\x00",
    )
    keys_length = sum(map(len, key_parts))
    counts_length = sum(map(len, count_parts))
    return b"".join(
        [
            head,
            _U32.pack(keys_length),
            *key_parts,
            _U32.pack(counts_length),
            *count_parts,
            *value_parts,
        ]
    )


def _keys_column(key_bytes: list[bytes]) -> tuple[bytes, list[bytes]]:
    """The key kind and column of these key bytes: kind ``s`` when every key is a
    ``str`` key (stored without its tag)."""
    joined = _NUL.join(key_bytes)
    separators = len(key_bytes) - 1
    if joined.count(_NUL) == separators:  # every NUL a separator
        if joined[:1] == STR_TAG and joined.count(_NUL + STR_TAG) == separators:
            return KEYS_STR, [_JOINED, joined.replace(_NUL + STR_TAG, _NUL)[1:]]
        return KEYS_BYTES, [_JOINED, joined]
    if all(map(bytes.startswith, key_bytes, repeat(STR_TAG))):
        return KEYS_STR, _bytes_column(list(map(_after_tag, key_bytes)))
    return KEYS_BYTES, _bytes_column(key_bytes)


def encode_groups(groups: list[Group]) -> bytes:
    """The payload of a block of groups (key bytes and their values)."""
    key_bytes = list(map(_first, groups))
    lists = list(map(_second, groups))
    values = list(chain.from_iterable(lists))
    counts = None if len(values) == len(lists) and all(lists) else list(map(len, lists))
    key_kind, key_column = _keys_column(key_bytes)
    return _encode(key_kind, key_column, counts, values)


def encode_str_pairs(keys: list[str], values: list[Any]) -> bytes:
    """The payload of a block of pairs sorted by their ``str`` keys (equal keys adjacent)."""
    if any(map(operator.eq, keys, itertools.islice(keys, 1, None))):
        unique = [key for key, _same in itertools.groupby(keys)]
        counts = [sum(1 for _ in same) for _key, same in itertools.groupby(keys)]
        return _encode(KEYS_STR, _str_column(unique), counts, values)
    return _encode(KEYS_STR, _str_column(keys), None, values)


class Block:
    """One decoded block: its columns, decoded on demand.

    Raises ValueError (from the constructor or a column) on a malformed payload.
    """

    __slots__ = (
        "_counts",
        "_keys",
        "_values",
        "count_kind",
        "groups",
        "key_kind",
        "value_kind",
        "values_count",
    )

    def __init__(self, payload: bytes) -> None:
        self.groups, self.values_count, kinds = _BLOCK_HEAD.unpack_from(payload)
        self.key_kind, self.count_kind, self.value_kind = kinds[0:1], kinds[1:2], kinds[2:3]
        at = _BLOCK_HEAD.size
        (keys_length,) = _U32.unpack_from(payload, at)
        self._keys = payload[at + 4 : at + 4 + keys_length]
        at += 4 + keys_length
        (counts_length,) = _U32.unpack_from(payload, at)
        self._counts = payload[at + 4 : at + 4 + counts_length]
        self._values = payload[at + 4 + counts_length :]
        if len(self._keys) != keys_length or len(self._counts) != counts_length:
            raise ValueError("truncated block columns")
        if self.key_kind not in (KEYS_STR, KEYS_BYTES) or self.count_kind not in (
            COUNTS_ONE,
            COUNTS_ARRAY,
        ):
            raise ValueError("unknown block kinds")
        if self.count_kind == COUNTS_ONE and self.values_count != self.groups:
            raise ValueError("wrong number of values")

    def raw_keys(self) -> list[bytes]:
        """The keys as stored: without their tag for key kind ``s``."""
        return _bytes_items(self._keys, self.groups)

    def key_bytes(self) -> list[bytes]:
        if self.key_kind != KEYS_STR:
            return self.raw_keys()
        column = self._keys
        if column[:1] == _JOINED:  # the tag after every separator, then one split
            items = (STR_TAG + column[1:].replace(_NUL, _NUL + STR_TAG)).split(_NUL)
            if len(items) != self.groups:
                raise ValueError("wrong number of items in a column")
            return items
        return list(map(_add_tag, self.raw_keys()))

    def counts(self) -> list[int] | None:
        """Values per group; None when every group has one."""
        if self.count_kind == COUNTS_ONE:
            return None
        counts = _u32s(self._counts, self.groups)
        if sum(counts) != self.values_count:
            raise ValueError("counts do not add up to the values")
        return counts

    def raw_values(self) -> list[bytes]:
        """The UTF-8 of ``str`` values, or ``bytes`` values, as stored."""
        if self.value_kind not in (VALUES_STR, VALUES_BYTES):
            raise ValueError("not a column of strings")
        return _bytes_items(self._values, self.values_count)

    def values(self) -> list[Any]:
        kind, column, count = self.value_kind, self._values, self.values_count
        if kind == VALUES_STR:
            return _str_items(column, count)
        if kind == VALUES_BYTES:
            return _bytes_items(column, count)
        if kind == VALUES_INT:
            if len(column) != 8 * count:
                raise ValueError("bad length of an int column")
            numbers = array("q")
            numbers.frombytes(column)
            if not _LITTLE:
                numbers.byteswap()
            return numbers.tolist()
        if kind == VALUES_PICKLE:
            values = pickle.loads(column)
            if type(values) is not list or len(values) != count:
                raise ValueError("bad pickled values")
            return values
        raise ValueError(f"unknown value kind {kind!r}")

    def to_groups(self) -> list[Group]:
        key_bytes = self.key_bytes()
        values = self.values()
        counts = self.counts()
        if counts is None:
            return list(zip(key_bytes, map(list, zip(values)), strict=True))
        ends = list(accumulate(counts))
        lists = map(values.__getitem__, map(slice, chain((0,), ends), ends))
        return list(zip(key_bytes, lists, strict=True))


class RunWriter:
    """Writes sorted groups to a run file in checksummed blocks."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._pending: list[Group] = []
        self._pending_values = 0
        self.bytes_written = len(MAGIC)
        self.records = 0
        f.write(MAGIC)

    def add(self, key_bytes: bytes, values: list[Any]) -> None:
        """Append one group; groups must come in increasing key order."""
        self._pending.append((key_bytes, values))
        self.records += len(values)
        self._pending_values += len(values)
        if len(self._pending) >= _BLOCK_RECORDS or self._pending_values >= _BLOCK_VALUES:
            self._flush_block()

    def add_all(self, groups: Iterable[Group]) -> None:
        for key_bytes, values in groups:
            self.add(key_bytes, values)

    def _flush_block(self) -> None:
        if not self._pending:
            return
        self.bytes_written += _write_block(self._f, encode_groups(self._pending))
        self._pending = []
        self._pending_values = 0

    def close(self) -> None:
        """Flush the last block (the caller closes the file)."""
        self._flush_block()


def _write_block(f: IO[bytes], payload: bytes) -> int:
    f.write(_HEADER.pack(len(payload), zlib.crc32(payload)))
    f.write(payload)
    return _HEADER.size + len(payload)


def write_run(path: str, groups: Iterable[Group]) -> tuple[int, int]:
    """Write ``groups`` to a new run file at ``path``; return ``(bytes, records)``."""
    if isinstance(groups, list):
        return _write_run_list(path, groups)
    with open(path, "wb") as f:
        writer = RunWriter(f)
        writer.add_all(groups)
        writer.close()
    return writer.bytes_written, writer.records


def _write_run_list(path: str, groups: list[Group]) -> tuple[int, int]:
    """:func:`write_run` for a list: the same blocks, cut without a call per group."""
    counts = list(itertools.accumulate(map(len, map(_second, groups))))
    written = len(MAGIC)
    with open(path, "wb") as f:
        f.write(MAGIC)
        start = 0
        while start < len(groups):
            before = counts[start - 1] if start else 0
            end = min(start + _BLOCK_RECORDS, bisect.bisect_right(counts, before + _BLOCK_VALUES))
            end = max(end, start + 1)
            written += _write_block(f, encode_groups(groups[start:end]))
            start = end
    return written, counts[-1] if counts else 0


def write_str_run(path: str, keys: list[str], values: list[Any]) -> tuple[int, int]:
    """Write pairs sorted by their ``str`` keys (``keys[i]``, ``values[i]``; equal keys
    adjacent, their values in order) to a new run file; return ``(bytes, records)``.

    Equal keys become one group, as :func:`write_run` would have them.
    """
    written = len(MAGIC)
    with open(path, "wb") as f:
        f.write(MAGIC)
        start, size = 0, len(keys)
        while start < size:
            end = min(size, start + _BLOCK_RECORDS)
            if end < size and keys[end] == keys[end - 1]:  # a key's values stay in one block
                end = bisect.bisect_right(keys, keys[end - 1], end)
            written += _write_block(f, encode_str_pairs(keys[start:end], values[start:end]))
            start = end
    return written, len(keys)


def write_plain_run(
    path: str, rounds: Iterable[tuple[list[bytes], list[bytes]]]
) -> tuple[int, int]:
    """Write sorted pairs of ``str`` keys and ``str`` values, given as their UTF-8, to a new
    run file, without decoding them; return ``(bytes, records)``.

    ``rounds`` yields keys (one per value, in order) and values; a key is in one round.
    Equal keys become one group, as :func:`write_run` would have them.
    """
    written = len(MAGIC)
    records = 0
    with open(path, "wb") as f:
        f.write(MAGIC)
        for keys, values in rounds:
            start, size = 0, len(keys)
            records += size
            while start < size:
                end = min(size, start + _BLOCK_RECORDS)
                if end < size and keys[end] == keys[end - 1]:  # a key stays in one block
                    end = bisect.bisect_right(keys, keys[end - 1], end)
                written += _write_block(f, _encode_plain(keys[start:end], values[start:end]))
                start = end
    return written, records


def _encode_plain(keys: list[bytes], values: list[bytes]) -> bytes:
    counts: list[int] | None = None
    if any(map(operator.eq, keys, itertools.islice(keys, 1, None))):
        counts = [sum(1 for _ in same) for _key, same in itertools.groupby(keys)]
        keys = [key for key, _same in itertools.groupby(keys)]
    groups = len(keys)
    head = _BLOCK_HEAD.pack(
        groups,
        len(values),
        KEYS_STR + (COUNTS_ONE if counts is None else COUNTS_ARRAY) + VALUES_STR + b"\x00",
    )
    key_parts = _bytes_column(keys)
    count_parts = [] if counts is None else [_u32s_bytes(counts)]
    return b"".join(
        [
            head,
            _U32.pack(sum(map(len, key_parts))),
            *key_parts,
            _U32.pack(sum(map(len, count_parts))),
            *count_parts,
            *_bytes_column(values),
        ]
    )


def _payloads(path: str) -> Iterator[bytes]:
    """Every block payload of a run file, its framing and checksum checked."""
    with open(path, "rb", buffering=1 << 20) as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise CorruptRunError(path, "not a run file (bad magic)")
        while True:
            header = f.read(_HEADER.size)
            if not header:
                return
            if len(header) != _HEADER.size:
                raise CorruptRunError(path, "truncated block header")
            length, crc = _HEADER.unpack(header)
            payload = f.read(length)
            if len(payload) != length:
                raise CorruptRunError(path, "truncated block")
            if zlib.crc32(payload) != crc:
                raise CorruptRunError(path, "checksum mismatch")
            yield payload


def read_blocks(path: str) -> Iterator[Block]:
    """Every block of the run file at ``path``, in order, its columns not yet decoded.

    Raises:
        CorruptRunError: bad magic, a truncated block or a checksum mismatch.
    """
    for payload in _payloads(path):
        try:
            yield Block(payload)
        except (ValueError, struct.error) as exc:
            raise CorruptRunError(path, f"malformed block: {exc}") from exc


def read_pairs(path: str) -> Iterator[tuple[list[bytes], list[Any]]]:
    """Every block of the run file at ``path`` as two columns: the key bytes, a key once
    per value, and the values.

    Raises:
        CorruptRunError: bad magic, a truncated or malformed block, a checksum mismatch.
    """
    for block in read_blocks(path):
        try:
            key_bytes, values, counts = block.key_bytes(), block.values(), block.counts()
        except (ValueError, struct.error) as exc:
            raise CorruptRunError(path, f"malformed block: {exc}") from exc
        if counts is not None:
            key_bytes = list(chain.from_iterable(map(repeat, key_bytes, counts)))
        yield key_bytes, values


def read_run(path: str) -> Iterator[Group]:
    """Every group of the run file at ``path``, in order.

    Raises:
        CorruptRunError: bad magic, a truncated block or a checksum mismatch.
    """
    for block in read_blocks(path):
        try:
            groups = block.to_groups()
        except (ValueError, struct.error) as exc:
            raise CorruptRunError(path, f"malformed block: {exc}") from exc
        yield from groups


def verify_run(path: str) -> None:
    """Check a run file's framing and every block's checksum without decoding it.

    Raises:
        CorruptRunError: bad magic, a truncated block or a checksum mismatch.
    """
    for _payload in _payloads(path):
        pass
