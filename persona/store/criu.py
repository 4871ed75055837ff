"""Minimal, dependency-free reader/writer for CRIU ``pagemap-*.img`` files (pure functions).

A pagemap image is: one or two little-endian u32 magics, then length-prefixed protobuf
messages: a ``pagemap_head`` (field 1: ``pages_id``) followed by ``pagemap_entry`` messages
(1: ``vaddr`` u64, 2: ``nr_pages`` u32, 3: ``in_parent`` bool, 4: ``flags`` u32). Entries whose
pages are in the matching ``pages-<pages_id>.img`` are stored there back to back, in order.
We use this to give every page of a pages image its virtual address: chunk cut points are forced
at mapping boundaries and the delta parent of a chunk is looked up by address, so a mapping
that grows or shrinks does not shift every later chunk.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

IMG_COMMON_MAGIC = 0x54564319
IMG_SERVICE_MAGIC = 0x55105940
PAGEMAP_MAGIC = 0x56084025
PE_PARENT = 1
PE_LAZY = 2
PE_PRESENT = 4
PAGE = 4096


class PagemapFormatError(ValueError):
    """The bytes are not a pagemap image we understand."""


@dataclass(frozen=True)
class PagemapEntry:
    vaddr: int
    nr_pages: int
    in_parent: bool = False
    flags: int | None = None

    @property
    def in_pages_file(self) -> bool:
        if self.flags is not None:
            return bool(self.flags & PE_PRESENT)
        return not self.in_parent


@dataclass(frozen=True)
class Pagemap:
    pages_id: int
    entries: tuple[PagemapEntry, ...]

    def page_vaddrs(self) -> np.ndarray:
        """Virtual address of each page stored in the pages file, in file order."""
        parts = [
            np.uint64(e.vaddr) + np.arange(e.nr_pages, dtype=np.uint64) * np.uint64(PAGE)
            for e in self.entries
            if e.in_pages_file and e.nr_pages > 0
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)

    def entry_starts(self) -> list[int]:
        """Page indexes (in the pages file) where a pagemap entry begins."""
        out, idx = [], 0
        for e in self.entries:
            if e.in_pages_file and e.nr_pages > 0:
                out.append(idx)
                idx += e.nr_pages
        return out


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise PagemapFormatError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise PagemapFormatError("varint too long")


def _fields(msg: bytes) -> dict[int, int]:
    out: dict[int, int] = {}
    i = 0
    while i < len(msg):
        key, i = _varint(msg, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _varint(msg, i)
            out[field] = val
        elif wire == 1:
            i += 8
        elif wire == 2:
            ln, i = _varint(msg, i)
            i += ln
        elif wire == 5:
            i += 4
        else:
            raise PagemapFormatError(f"unsupported protobuf wire type {wire}")
        if i > len(msg):
            raise PagemapFormatError("truncated protobuf field")
    return out


def parse_pagemap(data: bytes) -> Pagemap:
    if len(data) < 8:
        raise PagemapFormatError("too short for a CRIU image")
    (m0,) = struct.unpack_from("<I", data, 0)
    i = 8 if m0 in (IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC) else 4
    (magic,) = struct.unpack_from("<I", data, i - 4)
    if magic != PAGEMAP_MAGIC:
        raise PagemapFormatError(f"not a pagemap image (magic {magic:#x})")
    msgs: list[bytes] = []
    while i < len(data):
        if i + 4 > len(data):
            raise PagemapFormatError("truncated entry size")
        (size,) = struct.unpack_from("<I", data, i)
        i += 4
        if i + size > len(data):
            raise PagemapFormatError("truncated entry")
        msgs.append(data[i : i + size])
        i += size
    if not msgs:
        raise PagemapFormatError("pagemap image has no head")
    head = _fields(msgs[0])
    entries = []
    for m in msgs[1:]:
        f = _fields(m)
        if 1 not in f or 2 not in f:
            raise PagemapFormatError("pagemap entry without vaddr/nr_pages")
        entries.append(PagemapEntry(f[1], f[2], bool(f.get(3, 0)), f.get(4)))
    return Pagemap(head.get(1, 0), tuple(entries))


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _msg(fields: list[tuple[int, int]]) -> bytes:
    return b"".join(_enc_varint(f << 3) + _enc_varint(v) for f, v in fields)


def write_pagemap(pm: Pagemap) -> bytes:
    """Serialise a pagemap the way CRIU does (used by tests and the benchmark generator)."""
    parts = [struct.pack("<II", IMG_COMMON_MAGIC, PAGEMAP_MAGIC)]
    head = _msg([(1, pm.pages_id)])
    parts.append(struct.pack("<I", len(head)) + head)
    for e in pm.entries:
        fields = [(1, e.vaddr), (2, e.nr_pages)]
        if e.in_parent:
            fields.append((3, 1))
        if e.flags is not None:
            fields.append((4, e.flags))
        m = _msg(fields)
        parts.append(struct.pack("<I", len(m)) + m)
    return b"".join(parts)
