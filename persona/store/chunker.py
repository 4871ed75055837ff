"""Chunking (pure functions over bytes): page-aligned CDC for CRIU page images, FastCDC else.

Page images: the image is viewed as 4 KiB pages. All-zero pages are elided (recorded as zero
extents, never stored). Non-zero pages are grouped into chunks whose cut points are chosen by
the content of each page (a cut follows a page whose fingerprint has its low ``mask_bits`` bits
zero), bounded by ``max_pages`` and forced at pagemap entry boundaries. Dirtying
one page therefore changes one small chunk, and inserting pages shifts nothing after the next
content-defined cut.

Every extent carries ``pos``: the key used to find its positional parent in the previous
version (the virtual address of its first page when the pagemap is known, else its offset).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from pyfastcdc import FastCDC

PAGE = 4096
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class PageChunking:
    # a cut after ~1 in 8 pages: ~32 KiB average chunks. With delta compression against the
    # positional parent a changed chunk costs about its changed bytes, so chunks larger than a
    # dedup-only store would pick cost little space and save per-chunk time (16 KiB chunks
    # stored somewhat fewer bytes at 1 % dirty pages but ingested and restored more slowly)
    mask_bits: int = 3
    max_pages: int = 64

    def to_json(self) -> dict[str, int]:
        return {"mask_bits": self.mask_bits, "max_pages": self.max_pages}


@dataclass(frozen=True)
class CdcChunking:
    avg_size: int = 64 * 1024
    min_size: int = 16 * 1024
    max_size: int = 256 * 1024

    def to_json(self) -> dict[str, int]:
        return {"avg_size": self.avg_size, "min_size": self.min_size, "max_size": self.max_size}


@dataclass(frozen=True)
class Extent:
    """A byte range of a file: ``zero`` ranges are not stored, others are one chunk."""

    offset: int
    length: int
    zero: bool
    pos: int


def page_fingerprints(pages: np.ndarray) -> np.ndarray:
    """One 64-bit fingerprint per page (rows of 512 uint64 words)."""
    x = np.bitwise_xor.reduce(pages[:, ::3], axis=1) ^ pages[:, 1]
    with np.errstate(over="ignore"):
        x = x * _GOLDEN
        x ^= x >> np.uint64(29)
        x = x * _GOLDEN
    return x >> np.uint64(32)


def page_extents(
    buf: bytes | memoryview,
    params: PageChunking = PageChunking(),
    *,
    vaddrs: np.ndarray | None = None,
    boundaries: Iterable[int] = (),
) -> list[Extent]:
    """Split a page image into zero and data extents (see module docstring)."""
    size = len(buf)
    npages = size // PAGE
    out: list[Extent] = []
    if vaddrs is not None and len(vaddrs) != npages:
        vaddrs = None  # pagemap does not describe this file: fall back to offsets
    if npages:
        pages = np.frombuffer(buf, dtype=np.uint64, count=npages * (PAGE // 8)).reshape(
            npages, PAGE // 8
        )
        nonzero = np.asarray(pages.any(axis=1), dtype=bool)
        mask = np.uint64((1 << params.mask_bits) - 1)
        cut_after = np.asarray((page_fingerprints(pages) & mask) == 0, dtype=bool)
        forced = np.zeros(npages + 1, dtype=bool)
        for b in boundaries:
            if 0 < b < npages:
                forced[b] = True
        # cut before page i when: zero/non-zero changes, forced boundary, or content cut after i-1
        start_flags = np.zeros(npages, dtype=bool)
        start_flags[0] = True
        start_flags[1:] = (
            (nonzero[1:] != nonzero[:-1]) | forced[1:npages] | (cut_after[:-1] & nonzero[:-1])
        )
        starts = np.flatnonzero(start_flags).tolist()
        starts.append(npages)
        nz = nonzero.tolist()
        va = vaddrs.tolist() if vaddrs is not None else None
        for a, b in itertools.pairwise(starts):
            zero = not nz[a]
            if zero:
                out.append(Extent(a * PAGE, (b - a) * PAGE, True, va[a] if va else a * PAGE))
                continue
            i = a  # split long data runs at max_pages
            while i < b:
                j = min(b, i + params.max_pages)
                out.append(Extent(i * PAGE, (j - i) * PAGE, False, va[i] if va else i * PAGE))
                i = j
    tail = size - npages * PAGE
    if tail:
        off = npages * PAGE
        zero = not any(bytes(buf[off:]))
        out.append(Extent(off, tail, zero, off))
    return out


def cdc_extents(buf: bytes | memoryview, params: CdcChunking = CdcChunking()) -> Iterator[Extent]:
    """FastCDC extents for ordinary files (tars, diffs)."""
    if len(buf) == 0:
        return
    if len(buf) <= params.min_size:
        yield Extent(0, len(buf), False, 0)
        return
    cdc = FastCDC(avg_size=params.avg_size, min_size=params.min_size, max_size=params.max_size)
    for c in cdc.cut_buf(buf):
        yield Extent(c.offset, c.length, False, c.offset)


def is_pages_image(name: str) -> bool:
    return name.startswith("pages-") and name.endswith(".img")


def is_pagemap_image(name: str) -> bool:
    return name.startswith("pagemap-") and name.endswith(".img")
