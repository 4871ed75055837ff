"""Blob encodings (pure): raw, zstd, or zstd against a base chunk (depth-1 delta).

A stored blob (before optional encryption) is one kind byte followed by the payload:

- ``0x00`` raw bytes
- ``0x01`` a zstd frame
- ``0x02`` 32-byte base id, then a zstd frame compressed with the base chunk's plaintext as a
  raw-content dictionary (handles insertions and shifted content);
- ``0x03`` 32-byte base id, then a zstd frame of ``chunk XOR base`` (over their common length;
  the rest of the chunk as is). For page chunks modified in place this is as small as the
  dictionary delta and several times cheaper to decode (no dictionary to load).

The base is always a non-delta blob, so a read needs at most two chunks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import zstandard

from persona.errors import IntegrityError

RAW, ZSTD, DELTA, XDELTA = 0, 1, 2, 3
KIND_NAMES = {RAW: "raw", ZSTD: "zstd", DELTA: "delta", XDELTA: "xor-delta"}
DELTA_KINDS = (DELTA, XDELTA)
_local = threading.local()


@dataclass(frozen=True)
class Encoded:
    kind: int
    payload: bytes  # the stored bytes (kind byte included)
    base: str | None  # hex id of the delta base


def _cctx(level: int) -> zstandard.ZstdCompressor:
    key = f"c{level}"
    c = getattr(_local, key, None)
    if c is None:
        c = zstandard.ZstdCompressor(level=level)
        setattr(_local, key, c)
    return c


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = zstandard.ZstdDecompressor()
        _local.d = d
    return d


def _xor(data: bytes | memoryview, base: bytes) -> bytes:
    x = np.frombuffer(data, dtype=np.uint8).copy()
    m = min(len(x), len(base))
    x[:m] ^= np.frombuffer(base, dtype=np.uint8, count=m)
    return x.tobytes()


def encode(
    data: bytes | memoryview,
    *,
    base: bytes | None = None,
    base_id: str | None = None,
    level: int = 1,
    good_delta: float = 0.5,
) -> Encoded:
    """Pick the smallest of raw / zstd / xor-delta / dictionary-delta against ``base``.

    Candidates are tried cheapest first; one smaller than ``good_delta`` × the input is
    accepted without trying the costlier ones.
    """
    n = len(data)
    best = Encoded(RAW, b"\x00" + bytes(data), None)
    if base is not None and base_id is not None and len(base) > 0:
        bid = bytes.fromhex(base_id)
        frame = _cctx(level).compress(_xor(data, base))
        best = min(
            best, Encoded(XDELTA, b"\x03" + bid + frame, base_id), key=lambda e: len(e.payload)
        )
        if len(frame) < good_delta * n:
            return best
        d = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        frame = zstandard.ZstdCompressor(
            level=level, dict_data=d, write_content_size=True
        ).compress(data)
        best = min(
            best, Encoded(DELTA, b"\x02" + bid + frame, base_id), key=lambda e: len(e.payload)
        )
        if len(frame) < good_delta * n:
            return best
    frame = _cctx(level).compress(data)
    if len(frame) + 1 < len(best.payload):
        best = Encoded(ZSTD, b"\x01" + frame, None)
    return best


def delta_base(stored: bytes) -> str | None:
    """The base id of a stored delta blob, else None."""
    if stored[:1] in (b"\x02", b"\x03"):
        if len(stored) < 33:
            raise IntegrityError("delta blob truncated before its base id")
        return stored[1:33].hex()
    return None


def decode(stored: bytes, base: bytes | None = None, *, raw_len: int | None = None) -> bytes:
    """Invert :func:`encode`. ``base`` is required for delta blobs."""
    if not stored:
        raise IntegrityError("empty stored blob (no kind byte)")
    kind = stored[0]
    try:
        if kind == RAW:
            return stored[1:]
        if kind == ZSTD:
            return _dctx().decompress(stored[1:], max_output_size=raw_len or 0)
        if kind == XDELTA:
            if base is None:
                raise IntegrityError("delta blob decoded without its base")
            return _xor(_dctx().decompress(stored[33:], max_output_size=raw_len or 0), base)
        if kind == DELTA:
            if base is None:
                raise IntegrityError("delta blob decoded without its base")
            d = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            return zstandard.ZstdDecompressor(dict_data=d).decompress(
                stored[33:], max_output_size=raw_len or 0
            )
    except zstandard.ZstdError as e:
        raise IntegrityError(f"cannot decompress blob: {e}") from e
    raise IntegrityError(f"unknown blob encoding {kind}")
