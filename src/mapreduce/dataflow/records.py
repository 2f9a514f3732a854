"""The one intermediate record format: sorted runs of ``(key_bytes, values)`` groups.

A *run* file holds the records of one reduce partition, sorted by key bytes,
each key at most once.  Its layout::

    b"MRRUN1\\n"                                  magic and version
    block*                                       zero or more blocks
    block  := length:u32be  crc32:u32be  payload
    payload:= pickle (protocol 5) of list[tuple[bytes, list[value]]]

``key_bytes`` is the order-preserving key of :mod:`mapreduce.dataflow.keys`;
``values`` are the (possibly combined) values emitted for it, in emission
order.  Every block carries a CRC-32 of its payload, so a truncated or
corrupted run (on disk or over the network) is detected, never merged.

Values are pickled: they can be any picklable Python object.  Run files are
exchanged only between the machines of one cluster, which already run the
same job code, so unpickling them trusts nothing new.
"""

from __future__ import annotations

import bisect
import io
import itertools
import pickle
import struct
import zlib
from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import IO, Any

MAGIC = b"MRRUN1\n"
_HEADER = struct.Struct(">II")
_BLOCK_RECORDS = 2048
_BLOCK_VALUES = 65536

Group = tuple[bytes, list[Any]]


class CorruptRunError(Exception):
    """A run file is truncated or fails its checksum."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"corrupt intermediate run {path}: {reason}")
        self.path = path


def _dumps(groups: list[Group]) -> bytes:
    """Pickle a block: without the memo (much faster) unless the values need it.

    Objects that appear twice are then written twice (equal copies come out);
    values that contain themselves are pickled the usual way.
    """
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.fast = True
    try:
        pickler.dump(groups)
    except ValueError:  # "fast mode: can't pickle cyclic objects"
        return pickle.dumps(groups, protocol=5)
    return buffer.getvalue()


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
        payload = _dumps(self._pending)
        self._f.write(_HEADER.pack(len(payload), zlib.crc32(payload)))
        self._f.write(payload)
        self.bytes_written += _HEADER.size + len(payload)
        self._pending = []
        self._pending_values = 0

    def close(self) -> None:
        """Flush the last block (the caller closes the file)."""
        self._flush_block()


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
    counts = list(itertools.accumulate(map(len, map(itemgetter(1), groups))))
    written = len(MAGIC)
    with open(path, "wb") as f:
        f.write(MAGIC)
        start = 0
        while start < len(groups):
            before = counts[start - 1] if start else 0
            end = min(start + _BLOCK_RECORDS, bisect.bisect_right(counts, before + _BLOCK_VALUES))
            end = max(end, start + 1)
            payload = _dumps(groups[start:end])
            f.write(_HEADER.pack(len(payload), zlib.crc32(payload)))
            f.write(payload)
            written += _HEADER.size + len(payload)
            start = end
    return written, counts[-1] if counts else 0


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


def read_run(path: str) -> Iterator[Group]:
    """Every group of the run file at ``path``, in order.

    Raises:
        CorruptRunError: bad magic, a truncated block or a checksum mismatch.
    """
    for payload in _payloads(path):
        yield from pickle.loads(payload)


def verify_run(path: str) -> None:
    """Check a run file's framing and every block's checksum without unpickling it.

    Raises:
        CorruptRunError: bad magic, a truncated block or a checksum mismatch.
    """
    for _payload in _payloads(path):
        pass
