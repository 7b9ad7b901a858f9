"""A small CBOR codec (RFC 8949) for the Smithy RPC v2 CBOR protocol.

Only what AWS's RPC v2 services put on the wire: unsigned and negative integers, byte and
text strings (definite or indefinite length), arrays, maps, booleans, null/undefined,
half/single/double floats, and tag 1 (epoch-seconds timestamps), which decodes to
``Epoch`` and which ``Epoch`` values encode to. Other tags (bignums, decimals, …) are
refused: no operation spotrun answers takes them.

Decoding is strict, since a request body comes from anyone who can reach the port: text
must be valid UTF-8, map keys must be strings, nesting is bounded, and nothing may follow
the single top-level item. Every failure is a ``CborError`` (a ``ValueError``).
"""

from __future__ import annotations

import math
import struct
from typing import Any

__all__ = ["CborError", "Epoch", "decode", "encode"]

#: deeper request bodies are refused rather than risking the interpreter's stack
MAX_DEPTH = 64

_BREAK = 0xFF
_INDEFINITE = 31


class CborError(ValueError):
    """The bytes are not CBOR this codec accepts (the message says why)."""


class Epoch(float):
    """A timestamp in epoch seconds. A ``float`` to everything else (JSON writes it as a
    number); the CBOR encoder writes it under tag 1, as Smithy's protocol requires."""

    __slots__ = ()


# -- encoding --------------------------------------------------------------------------


def encode(value: Any) -> bytes:
    """The CBOR bytes of ``value``: dict (string keys), list/tuple, str, bytes, bool, None,
    int (64-bit), float, ``Epoch``."""
    out = bytearray()
    _encode(out, value, 0)
    return bytes(out)


def _head(out: bytearray, major: int, n: int) -> None:
    if n < 24:
        out.append(major << 5 | n)
    elif n < 1 << 8:
        out += bytes((major << 5 | 24, n))
    elif n < 1 << 16:
        out.append(major << 5 | 25)
        out += n.to_bytes(2, "big")
    elif n < 1 << 32:
        out.append(major << 5 | 26)
        out += n.to_bytes(4, "big")
    elif n < 1 << 64:
        out.append(major << 5 | 27)
        out += n.to_bytes(8, "big")
    else:
        raise CborError(f"{n} does not fit in 64 bits")


def _encode(out: bytearray, v: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CborError(f"nested deeper than {MAX_DEPTH} levels")
    if v is None:
        out.append(0xF6)
    elif v is True:
        out.append(0xF5)
    elif v is False:
        out.append(0xF4)
    elif isinstance(v, Epoch):
        out.append(0xC1)  # tag 1
        t = float(v)
        if t.is_integer() and abs(t) < 2**63:
            _encode(out, int(t), depth + 1)
        else:
            _encode(out, t, depth + 1)
    elif isinstance(v, int):
        if v >= 0:
            _head(out, 0, v)
        else:
            _head(out, 1, -1 - v)
    elif isinstance(v, float):
        out.append(0xFB)
        out += struct.pack(">d", v)
    elif isinstance(v, str):
        data = v.encode("utf-8")
        _head(out, 3, len(data))
        out += data
    elif isinstance(v, bytes | bytearray):
        _head(out, 2, len(v))
        out += v
    elif isinstance(v, list | tuple):
        _head(out, 4, len(v))
        for item in v:
            _encode(out, item, depth + 1)
    elif isinstance(v, dict):
        _head(out, 5, len(v))
        for key, item in v.items():
            if not isinstance(key, str):
                raise CborError(f"map keys must be strings, not {type(key).__name__}")
            _encode(out, key, depth + 1)
            _encode(out, item, depth + 1)
    else:
        raise CborError(f"cannot encode a {type(v).__name__}")


# -- decoding --------------------------------------------------------------------------


def decode(data: bytes) -> Any:
    """The one data item ``data`` holds; ``CborError`` if it is malformed, holds something
    this codec does not accept, or has bytes after the item."""
    reader = _Reader(data)
    value = reader.item(0)
    if reader.pos != len(data):
        raise CborError(f"{len(data) - reader.pos} unexpected byte(s) after the data item")
    return value


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise CborError("the data ends in the middle of an item")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def argument(self, info: int) -> int:
        if info < 24:
            return info
        if info in (24, 25, 26, 27):
            return int.from_bytes(self.take(1 << (info - 24)), "big")
        raise CborError(f"additional information {info} is reserved or not allowed here")

    def at_break(self) -> bool:
        if self.pos >= len(self.data):
            raise CborError("the data ends inside an indefinite-length item")
        if self.data[self.pos] == _BREAK:
            self.pos += 1
            return True
        return False

    def item(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise CborError(f"nested deeper than {MAX_DEPTH} levels")
        initial = self.take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if major == 0:
            return self.argument(info)
        if major == 1:
            return -1 - self.argument(info)
        if major in (2, 3):
            raw = self.string(major, info)
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CborError(f"a text string is not valid UTF-8 ({e.reason})") from None
        if major == 4:
            return self.array(info, depth)
        if major == 5:
            return self.map(info, depth)
        if major == 6:
            return self.tag(info, depth)
        return self.simple(info)

    def string(self, major: int, info: int) -> bytes:
        if info != _INDEFINITE:
            return self.take(self.argument(info))
        chunks: list[bytes] = []
        while not self.at_break():
            initial = self.take(1)[0]
            if initial >> 5 != major or initial & 0x1F == _INDEFINITE:
                raise CborError("an indefinite-length string holds a chunk of another type")
            chunks.append(self.take(self.argument(initial & 0x1F)))
        return b"".join(chunks)

    def array(self, info: int, depth: int) -> list[Any]:
        if info == _INDEFINITE:
            items: list[Any] = []
            while not self.at_break():
                items.append(self.item(depth + 1))
            return items
        n = self.argument(info)
        if n > len(self.data) - self.pos:  # every item takes at least a byte
            raise CborError(f"an array claims {n} items, more than the data holds")
        return [self.item(depth + 1) for _ in range(n)]

    def map(self, info: int, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if info == _INDEFINITE:
            while not self.at_break():
                self.pair(out, depth)
            return out
        n = self.argument(info)
        if 2 * n > len(self.data) - self.pos:
            raise CborError(f"a map claims {n} entries, more than the data holds")
        for _ in range(n):
            self.pair(out, depth)
        return out

    def pair(self, out: dict[str, Any], depth: int) -> None:
        key = self.item(depth + 1)
        if not isinstance(key, str):
            raise CborError(f"map keys must be text strings, not {type(key).__name__}")
        if key in out:
            raise CborError(f"the map key {key!r} appears twice")
        out[key] = self.item(depth + 1)

    def tag(self, info: int, depth: int) -> Epoch:
        number = self.argument(info)
        if number != 1:
            raise CborError(f"tag {number} is not supported (only tag 1, epoch timestamps)")
        value = self.item(depth + 1)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CborError("a tag 1 timestamp must hold a number of seconds")
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds):
            raise CborError("a tag 1 timestamp must be finite")
        return Epoch(seconds)

    def simple(self, info: int) -> Any:
        if info == 20:
            return False
        if info == 21:
            return True
        if info in (22, 23):
            return None
        if info == 25:
            return float(struct.unpack(">e", self.take(2))[0])
        if info == 26:
            return float(struct.unpack(">f", self.take(4))[0])
        if info == 27:
            return float(struct.unpack(">d", self.take(8))[0])
        if info == _INDEFINITE:
            raise CborError("a break code appears outside an indefinite-length item")
        raise CborError(f"simple value {info} is not supported")
