"""Order-preserving serialisation of intermediate keys.

Every intermediate key is turned into bytes whose byte-wise order is the
key's natural order, so that sorting, merging, grouping and range
partitioning all work on plain ``bytes`` (fast, C-level comparisons) and give
the same answer in every process and on every machine.

Supported key types: ``None``, numbers (``bool``, ``int``, ``float``),
``str``, ``bytes`` and tuples of these.  Keys that Python considers equal are
the same key, and numbers compare as numbers, so ``1``, ``1.0`` and ``True``
are one key, sorted between ``0.5`` and ``1.5``; such a key comes back from
:func:`decode_key` as an ``int`` (a number with a fraction as a ``float``).
Keys of different kinds sort by kind first, in this order::

    None < numbers < bytes < str < tuple

Within a kind, keys sort as Python sorts them (strings by code point, tuples
element by element, a shorter tuple before a longer one that starts with it).

This module is pure: no I/O.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from mapreduce.errors import KeyTypeError

Key = Any

_END = 0x00
_NONE = 0x05
_NAN = 0x08  # sorts first among numbers
_NEG_INF = 0x10
_INT_NEG_BIG = 0x17  # followed by a length byte (complemented) and the complemented magnitude
_INT_ZERO = 0x20  # 0x18..0x1F negative with 8..1 bytes, 0x21..0x28 positive with 1..8 bytes
_INT_POS_BIG = 0x29  # followed by a length byte and the magnitude
_POS_INF = 0x30
_BYTES = 0x40
_STR = 0x41
_TUPLE = 0x50

# After the integer part of a number (truncated toward zero): a negative
# fraction (8 bytes), none, or a positive fraction (8 bytes).
_NEG_FRACTION = 0x01
_WHOLE = 0x02
_POS_FRACTION = 0x03
_U64 = struct.Struct(">Q")

STR_TAG = bytes([_STR])  # the first byte of every top-level str key
_DOUBLE = struct.Struct(">d")


def encode_key(key: Key) -> bytes:
    """Return the order-preserving bytes of ``key``.

    Raises:
        KeyTypeError: the key (or an element of it) is not of a supported type.
    """
    if type(key) is str:
        # Top-level strings are the common case: no escaping, no terminator.
        return STR_TAG + key.encode("utf-8", "surrogatepass")
    out = bytearray()
    _encode_into(key, out, nested=False)
    return bytes(out)


def decode_key(data: bytes) -> Key:
    """Invert :func:`encode_key`."""
    if data[:1] == STR_TAG:
        return data[1:].decode("utf-8", "surrogatepass")
    value, pos = _decode_at(data, 0, nested=False)
    if pos != len(data):
        raise ValueError(f"trailing bytes in encoded key {data!r}")
    return value


def _escape(raw: bytes) -> bytes:
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00"


def _encode_integer_part(value: int, out: bytearray) -> None:
    if value == 0:
        out.append(_INT_ZERO)
        return
    magnitude = abs(value)
    length = (magnitude.bit_length() + 7) // 8
    if length > 255:
        raise KeyTypeError(f"integer key too large ({length} bytes)")
    raw = magnitude.to_bytes(length, "big")
    if value > 0:
        if length <= 8:
            out.append(_INT_ZERO + length)
        else:
            out.append(_INT_POS_BIG)
            out.append(length)
        out += raw
    else:
        if length <= 8:
            out.append(_INT_ZERO - length)
        else:
            out.append(_INT_NEG_BIG)
            out.append(0xFF - length)
        out += bytes(0xFF - b for b in raw)


def _encode_number(value: float, out: bytearray) -> None:
    """Numbers in one order: the integer part, then the fraction (if any)."""
    if type(value) is not float:
        _encode_integer_part(int(value), out)
        out.append(_WHOLE)
        return
    if math.isnan(value):
        out.append(_NAN)
    elif math.isinf(value):
        out.append(_POS_INF if value > 0 else _NEG_INF)
    else:
        fraction, whole = math.modf(value)  # both exact
        _encode_integer_part(int(whole), out)
        if fraction > 0:
            out.append(_POS_FRACTION)
            out += _DOUBLE.pack(fraction)  # in (0, 1): IEEE bits sort as the numbers do
        elif fraction < 0:
            (bits,) = _U64.unpack(_DOUBLE.pack(-fraction))
            out.append(_NEG_FRACTION)
            out += _U64.pack(bits ^ 0xFFFFFFFFFFFFFFFF)  # larger magnitude sorts first
        else:
            out.append(_WHOLE)


def _encode_into(key: Key, out: bytearray, *, nested: bool) -> None:
    kind = type(key)
    if key is None:
        out.append(_NONE)
    elif kind is int or kind is float or kind is bool:
        _encode_number(key, out)
    elif kind is str:
        raw = key.encode("utf-8", "surrogatepass")
        out.append(_STR)
        out += _escape(raw) if nested else raw
    elif kind is bytes:
        out.append(_BYTES)
        out += _escape(key) if nested else key
    elif kind is tuple:
        out.append(_TUPLE)
        for item in key:
            _encode_into(item, out, nested=True)
        out.append(_END)
    else:
        raise KeyTypeError(
            f"unsupported key type {kind.__name__!r} (key {key!r}); keys must be None, "
            "numbers, str, bytes or tuples of these"
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


def _decode_integer_part(tag: int, data: bytes, pos: int) -> tuple[int, int]:
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
    length = 0xFF - data[pos]
    raw = bytes(0xFF - b for b in data[pos + 1 : pos + 1 + length])
    return -int.from_bytes(raw, "big"), pos + 1 + length


def _decode_at(data: bytes, pos: int, *, nested: bool) -> tuple[Key, int]:
    tag = data[pos]
    pos += 1
    if tag == _NONE:
        return None, pos
    if tag == _NAN:
        return math.nan, pos
    if tag == _NEG_INF:
        return -math.inf, pos
    if tag == _POS_INF:
        return math.inf, pos
    if _INT_NEG_BIG <= tag <= _INT_POS_BIG:
        whole, pos = _decode_integer_part(tag, data, pos)
        marker = data[pos]
        if marker == _WHOLE:
            return whole, pos + 1
        if marker == _POS_FRACTION:
            (fraction,) = _DOUBLE.unpack_from(data, pos + 1)
        else:
            (bits,) = _U64.unpack_from(data, pos + 1)
            (fraction,) = _DOUBLE.unpack(_U64.pack(bits ^ 0xFFFFFFFFFFFFFFFF))
            fraction = -fraction
        return whole + fraction, pos + 9
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
