"""Blob encodings (pure): raw, zstd, or zstd against a base chunk (depth-1 delta).

A stored blob (before optional encryption) is one kind byte followed by the payload:

- ``0x00`` raw bytes
- ``0x01`` a zstd frame
- ``0x02`` 32-byte base id, then a zstd frame compressed with the base chunk's plaintext as a
  raw-content dictionary. The base is always a non-delta blob, so a read needs at most two
  chunks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import zstandard

from persona.errors import IntegrityError

RAW, ZSTD, DELTA = 0, 1, 2
KIND_NAMES = {RAW: "raw", ZSTD: "zstd", DELTA: "delta"}
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


def encode(
    data: bytes | memoryview,
    *,
    base: bytes | None = None,
    base_id: str | None = None,
    level: int = 1,
    good_delta: float = 0.5,
) -> Encoded:
    """Pick the smallest of raw / zstd / delta-against-``base``.

    A delta smaller than ``good_delta`` × the input is accepted without also trying plain zstd
    (that second compression rarely wins and costs time).
    """
    n = len(data)
    best = Encoded(RAW, b"\x00" + bytes(data), None)
    if base is not None and base_id is not None and len(base) > 0:
        d = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        frame = zstandard.ZstdCompressor(
            level=level, dict_data=d, write_content_size=True
        ).compress(data)
        cand = Encoded(DELTA, b"\x02" + bytes.fromhex(base_id) + frame, base_id)
        if len(cand.payload) < len(best.payload):
            best = cand
        if len(frame) < good_delta * n:
            return best
    frame = _cctx(level).compress(data)
    if len(frame) + 1 < len(best.payload):
        best = Encoded(ZSTD, b"\x01" + frame, None)
    return best


def delta_base(stored: bytes) -> str | None:
    """The base id of a stored delta blob, else None."""
    if stored[:1] == b"\x02":
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
