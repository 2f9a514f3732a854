"""Order-preserving serialisation of intermediate keys.

Every intermediate key is turned into bytes whose byte-wise order is the
key's natural order, so that sorting, merging, grouping and range
partitioning all work on plain ``bytes`` (fast, C-level comparisons) and give
the same answer in every process and on every machine.

Supported key types: ``None``, ``bool``, ``int``, ``float``, ``str``,
``bytes`` and tuples (or lists, which come back as tuples) of these.  Keys of
different types sort by type first, in this order::

    None < bool < int < float < bytes < str < tuple

Within a type, keys sort as Python sorts them (strings by code point, tuples
element by element, a shorter tuple before a longer one that starts with it).
``1`` and ``1.0`` are different keys: give a job's keys one type.

This module is pure: no I/O.
"""

from __future__ import annotations

import struct
from typing import Any

from mapreduce.errors import KeyTypeError

Key = Any

_END = 0x00
_NONE = 0x05
_FALSE = 0x06
_TRUE = 0x07
_INT_ZERO = 0x20  # 0x18..0x1F negative with 8..1 bytes, 0x21..0x28 positive with 1..8 bytes
_INT_NEG_BIG = 0x17  # followed by a length byte (complemented) and the complemented magnitude
_INT_POS_BIG = 0x29  # followed by a length byte and the magnitude
_FLOAT = 0x31
_BYTES = 0x40
_STR = 0x41
_TUPLE = 0x50

_STR_TAG = bytes([_STR])
_DOUBLE = struct.Struct(">d")
_U64 = struct.Struct(">Q")


def encode_key(key: Key) -> bytes:
    """Return the order-preserving bytes of ``key``.

    Raises:
        KeyTypeError: the key (or an element of it) is not of a supported type.
    """
    if type(key) is str:
        # Top-level strings are the common case: no escaping, no terminator.
        return _STR_TAG + key.encode("utf-8", "surrogatepass")
    out = bytearray()
    _encode_into(key, out, nested=False)
    return bytes(out)


def decode_key(data: bytes) -> Key:
    """Invert :func:`encode_key`."""
    if data[:1] == _STR_TAG:
        return data[1:].decode("utf-8", "surrogatepass")
    value, pos = _decode_at(data, 0, nested=False)
    if pos != len(data):
        raise ValueError(f"trailing bytes in encoded key {data!r}")
    return value


def _escape(raw: bytes) -> bytes:
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00"


def _encode_int(value: int, out: bytearray) -> None:
    if value == 0:
        out.append(_INT_ZERO)
        return
    magnitude = abs(value)
    length = (magnitude.bit_length() + 7) // 8
    raw = magnitude.to_bytes(length, "big")
    if value > 0:
        if length <= 8:
            out.append(_INT_ZERO + length)
        else:
            if length > 255:
                raise KeyTypeError(f"integer key too large ({length} bytes)")
            out.append(_INT_POS_BIG)
            out.append(length)
        out += raw
    else:
        inverted = bytes(0xFF - b for b in raw)
        if length <= 8:
            out.append(_INT_ZERO - length)
        else:
            if length > 255:
                raise KeyTypeError(f"integer key too large ({length} bytes)")
            out.append(_INT_NEG_BIG)
            out.append(0xFF - length)
        out += inverted


def _encode_float(value: float, out: bytearray) -> None:
    (bits,) = _U64.unpack(_DOUBLE.pack(value))
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits & (1 << 63) else bits | (1 << 63)
    out.append(_FLOAT)
    out += _U64.pack(bits)


def _encode_into(key: Key, out: bytearray, *, nested: bool) -> None:
    kind = type(key)
    if key is None:
        out.append(_NONE)
    elif kind is bool:
        out.append(_TRUE if key else _FALSE)
    elif kind is int:
        _encode_int(key, out)
    elif kind is float:
        _encode_float(key, out)
    elif kind is str:
        raw = key.encode("utf-8", "surrogatepass")
        out.append(_STR)
        out += _escape(raw) if nested else raw
    elif kind is bytes:
        out.append(_BYTES)
        out += _escape(key) if nested else key
    elif kind is tuple or kind is list:
        out.append(_TUPLE)
        for item in key:
            _encode_into(item, out, nested=True)
        out.append(_END)
    else:
        raise KeyTypeError(
            f"unsupported key type {kind.__name__!r} (key {key!r}); keys must be None, bool, "
            "int, float, str, bytes or tuples of these"
        )


def _unescape_until_end(data: bytes, pos: int) -> tuple[bytes, int]:
    out = bytearray()
    while True:
        end = data.index(b"\x00", pos)
        out += data[pos:end]
        if end + 1 < len(data) and data[end + 1] == 0xFF:
            out.append(0)
            pos = end + 2
        else:
            return bytes(out), end + 1


def _decode_at(data: bytes, pos: int, *, nested: bool) -> tuple[Key, int]:
    tag = data[pos]
    pos += 1
    if tag == _NONE:
        return None, pos
    if tag == _FALSE:
        return False, pos
    if tag == _TRUE:
        return True, pos
    if tag == _INT_ZERO:
        return 0, pos
    if _INT_ZERO < tag <= _INT_ZERO + 8:
        length = tag - _INT_ZERO
        return int.from_bytes(data[pos : pos + length], "big"), pos + length
    if _INT_ZERO - 8 <= tag < _INT_ZERO:
        length = _INT_ZERO - tag
        raw = bytes(0xFF - b for b in data[pos : pos + length])
        return -int.from_bytes(raw, "big"), pos + length
    if tag == _INT_POS_BIG:
        length = data[pos]
        return int.from_bytes(data[pos + 1 : pos + 1 + length], "big"), pos + 1 + length
    if tag == _INT_NEG_BIG:
        length = 0xFF - data[pos]
        raw = bytes(0xFF - b for b in data[pos + 1 : pos + 1 + length])
        return -int.from_bytes(raw, "big"), pos + 1 + length
    if tag == _FLOAT:
        (bits,) = _U64.unpack_from(data, pos)
        bits = bits ^ (1 << 63) if bits & (1 << 63) else bits ^ 0xFFFFFFFFFFFFFFFF
        return _DOUBLE.unpack(_U64.pack(bits))[0], pos + 8
    if tag in (_STR, _BYTES):
        if nested:
            raw, pos = _unescape_until_end(data, pos)
        else:
            raw, pos = data[pos:], len(data)
        return (raw.decode("utf-8", "surrogatepass") if tag == _STR else raw), pos
    if tag == _TUPLE:
        items = []
        while data[pos] != _END:
            item, pos = _decode_at(data, pos, nested=True)
            items.append(item)
        return tuple(items), pos + 1
    raise ValueError(f"corrupt encoded key: unknown tag {tag:#x} at {pos - 1} in {data!r}")
