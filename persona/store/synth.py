"""Synthetic CRIU-like memory images for tests and the benchmark (pure, seeded).

An image is a set of mappings (VMAs) of 4 KiB pages written CRIU-style: ``pages-1.img`` holds
the present pages back to back and ``pagemap-1.img`` lists each mapping's address and page
count. Page contents follow a simple model of a process heap:

- ``zero_frac`` of pages are all-zero (untouched anonymous memory, bss);
- ``text_frac`` are low-entropy "text/structured" pages (repeated records with small counters),
  which compress well;
- the rest are "heap" pages: 8-byte words, half small integers/pointers into a few regions,
  half random bytes.

A new version dirties ``dirty_frac`` of the non-zero pages; a dirtied page gets 1-8 of its
64-byte cache lines rewritten (most in-memory updates touch a few fields), and 1 in 10 dirtied
pages is rewritten completely. Occasionally a mapping grows (new pages appended to it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from persona.store.criu import PE_PRESENT, Pagemap, PagemapEntry, write_pagemap

PAGE = 4096


@dataclass(frozen=True)
class ImageModel:
    npages: int = 16384  # 64 MiB
    zero_frac: float = 0.25
    text_frac: float = 0.30
    vmas: int = 24
    seed: int = 0


def _heap_pages(rng: np.random.Generator, n: int) -> np.ndarray:
    words = rng.integers(0, 2**63, size=(n, PAGE // 8), dtype=np.uint64)
    small = rng.random((n, PAGE // 8)) < 0.5
    ptr_base = np.uint64(0x7F0000000000)
    ptrs = ptr_base + (
        rng.integers(0, 1 << 20, size=(n, PAGE // 8), dtype=np.uint64) << np.uint64(4)
    )
    kind = rng.random((n, PAGE // 8)) < 0.5
    words = np.where(small, np.where(kind, ptrs, words & np.uint64(0xFFFF)), words)
    return words.view(np.uint8).reshape(n, PAGE)


def _text_pages(rng: np.random.Generator, n: int) -> np.ndarray:
    rec = np.frombuffer(b"user=alice;session=0000;state=active;ttl=3600;\n" * 2, dtype=np.uint8)
    base = np.resize(rec, PAGE)
    pages = np.tile(base, (n, 1))
    # a few varying digits per page
    cols = rng.integers(0, PAGE, size=(n, 16))
    pages[np.arange(n)[:, None], cols] = rng.integers(48, 58, size=(n, 16), dtype=np.uint8)
    return pages


@dataclass
class MemoryImage:
    pages: np.ndarray  # (npages, 4096) uint8
    kinds: np.ndarray  # 0 zero, 1 text, 2 heap
    vma_pages: list[int]  # pages per mapping, in order
    vma_addrs: list[int]

    def pages_bytes(self) -> bytes:
        return self.pages.tobytes()

    def pagemap_bytes(self) -> bytes:
        entries = tuple(
            PagemapEntry(a, n, flags=PE_PRESENT)
            for a, n in zip(self.vma_addrs, self.vma_pages, strict=True)
        )
        return write_pagemap(Pagemap(1, entries))


def make_image(model: ImageModel) -> MemoryImage:
    rng = np.random.default_rng(model.seed)
    kinds = rng.choice(
        3,
        size=model.npages,
        p=[model.zero_frac, model.text_frac, 1 - model.zero_frac - model.text_frac],
    )
    # zero pages come in runs: sort kinds within blocks of 64 pages so zeros cluster
    for i in range(0, model.npages, 64):
        blk = kinds[i : i + 64]
        if rng.random() < 0.5:
            blk.sort()
    pages = np.zeros((model.npages, PAGE), dtype=np.uint8)
    t = np.flatnonzero(kinds == 1)
    h = np.flatnonzero(kinds == 2)
    pages[t] = _text_pages(rng, len(t))
    pages[h] = _heap_pages(rng, len(h))
    cuts = np.sort(rng.choice(np.arange(1, model.npages), size=model.vmas - 1, replace=False))
    sizes = np.diff(np.concatenate(([0], cuts, [model.npages]))).tolist()
    addrs, a = [], 0x55550000_0000
    for n in sizes:
        addrs.append(a)
        a += (n + int(rng.integers(16, 4096))) * PAGE
    return MemoryImage(pages, kinds, sizes, addrs)


def next_version(
    img: MemoryImage, dirty_frac: float, rng: np.random.Generator, *, grow_pages: int = 0
) -> MemoryImage:
    """A new version with ``dirty_frac`` of non-zero pages modified (see module docstring)."""
    pages = img.pages.copy()
    kinds = img.kinds.copy()
    live = np.flatnonzero(kinds != 0)
    n = round(dirty_frac * len(live))
    dirty = rng.choice(live, size=n, replace=False) if n else np.zeros(0, dtype=np.int64)
    full = rng.random(n) < 0.1
    for idx, whole in zip(dirty.tolist(), full.tolist(), strict=True):
        if whole:
            pages[idx] = _heap_pages(rng, 1)[0]
        else:
            for line in rng.choice(64, size=int(rng.integers(1, 9)), replace=False).tolist():
                pages[idx, line * 64 : line * 64 + 64] = rng.integers(0, 256, 64, dtype=np.uint8)
    vma_pages = list(img.vma_pages)
    if grow_pages:
        v = int(rng.integers(0, len(vma_pages)))
        at = sum(vma_pages[: v + 1])
        pages = np.concatenate([pages[:at], _heap_pages(rng, grow_pages), pages[at:]])
        kinds = np.concatenate([kinds[:at], np.full(grow_pages, 2, dtype=kinds.dtype), kinds[at:]])
        vma_pages[v] += grow_pages
    return MemoryImage(pages, kinds, vma_pages, list(img.vma_addrs))


_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "config",
    "service",
    "error",
    "request",
    "user",
    "session",
    "cache",
    "index",
    "table",
    "value",
    "http",
    "get",
    "post",
    "json",
    "true",
    "false",
    "null",
    "usr",
    "lib",
    "bin",
    "etc",
    "var",
    "log",
]


def make_rootfs(nfiles: int, rng: np.random.Generator) -> dict[str, bytes]:
    """A synthetic container filesystem diff: text configs/logs and some binaries."""
    files: dict[str, bytes] = {}
    words = np.array(_WORDS)
    for i in range(nfiles):
        d = ["etc", "usr/lib", "var/log", "opt/app", "usr/bin"][i % 5]
        if i % 5 == 4:  # binary-ish
            size = int(rng.integers(4_000, 120_000))
            body = rng.integers(0, 256, size, dtype=np.uint8)
            body[: size // 2] = 0x90  # padding/low entropy sections, like real binaries
            files[f"{d}/f{i:05d}.bin"] = body.tobytes()
        else:
            n = int(rng.integers(50, 6000))
            text = " ".join(words[rng.integers(0, len(words), n)].tolist())
            files[f"{d}/f{i:05d}.txt"] = text.encode()
    return files


def mutate_rootfs(
    files: dict[str, bytes], frac: float, rng: np.random.Generator
) -> dict[str, bytes]:
    """Change ``frac`` of the files (append/overwrite), add and remove a few."""
    out = dict(files)
    names = sorted(out)
    k = max(1, int(frac * len(names)))
    for name in rng.choice(names, size=k, replace=False).tolist():
        data = out[name]
        if name.endswith(".txt"):
            out[name] = data + b"\nupdated " + str(int(rng.integers(0, 1 << 30))).encode()
        else:
            b = bytearray(data)
            pos = int(rng.integers(0, len(b)))
            b[pos : pos + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
            out[name] = bytes(b)
    for name in rng.choice(names, size=max(1, k // 4), replace=False).tolist():
        out.pop(name, None)
    for j in range(max(1, k // 4)):
        out[f"var/log/new-{int(rng.integers(0, 1 << 30))}-{j}.txt"] = b"log line\n" * int(
            rng.integers(10, 2000)
        )
    return out


def rootfs_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar of ``files`` (sorted, fixed metadata: deterministic bytes)."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name in sorted(files):
            ti = tarfile.TarInfo(name)
            ti.size = len(files[name])
            ti.mtime = 1_700_000_000
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(files[name]))
    return buf.getvalue()
