"""``put``: turn a folder into a snapshot and a new version of a host.

Per regular file: choose a chunker (pages images: page-aligned CDC with zero-page elision and
pagemap addresses; everything else: FastCDC), hash every chunk, store only chunks the store
does not have, each compressed on its own or against its positional parent chunk in the
host's previous version when that is smaller (depth-1 delta). The file's extent map becomes a
tree blob. Writes are ordered: packs, index, snapshot manifest, ref.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from persona.errors import IntegrityError, StoreError
from persona.store.chunker import (
    Extent,
    cdc_extents,
    is_pagemap_image,
    is_pages_image,
    page_extents,
)
from persona.store.criu import Pagemap, PagemapFormatError, parse_pagemap
from persona.store.delta import Encoded, encode
from persona.store.locks import LeaseLock
from persona.store.manifest import (
    ExtentMap,
    FileEntry,
    Snapshot,
    check_host,
    check_relpath,
    encode_extent_map,
)
from persona.store.parallel import ordered_map
from persona.store.policy import Version
from persona.store.repository import PackSession, Repository

log = logging.getLogger("persona.store")


@dataclass
class PutOptions:
    tags: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)
    time_ns: int | None = None
    delta: bool = True
    lock_wait: float = 300.0
    # test hook: called after each file is chunked (crash tests kill the process around it)
    on_file: Callable[[str], None] | None = None


class _ParentMap:
    """Positional lookup into the parent version's extent map of one file."""

    def __init__(self, repo: Repository, em: ExtentMap) -> None:
        self.repo = repo
        keep = ~em.zero
        order = np.argsort(em.pos[keep], kind="stable")
        self.pos = em.pos[keep][order]
        self.end = self.pos + em.length[keep][order].astype(np.uint64)
        ids = [h for h, z in zip(em.ids, em.zero.tolist(), strict=True) if not z]
        self.ids = [ids[i] for i in order.tolist()]

    def lookup(self, pos: int) -> str | None:
        if not self.ids:
            return None
        j = int(np.searchsorted(self.pos, np.uint64(pos), side="right")) - 1
        if j < 0 or pos >= int(self.end[j]):
            return None
        return self.ids[j]


def _walk(root: Path, prefix: str = "") -> list[tuple[str, Path, os.stat_result]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        d = Path(dirpath)
        for name in sorted(dirnames) + sorted(filenames):
            p = d / name
            rel = prefix + p.relative_to(root).as_posix()
            check_relpath(rel)
            out.append((rel, p, p.lstat()))
    out.sort(key=lambda t: t[0])
    return out


def collect(sources: list[Path]) -> list[tuple[str, Path, os.stat_result]]:
    """What a put stores: one folder's contents, or several files/folders under their names."""
    if len(sources) == 1 and sources[0].is_dir() and not sources[0].is_symlink():
        return _walk(sources[0])
    out: list[tuple[str, Path, os.stat_result]] = []
    seen: set[str] = set()
    for src in sources:
        name = src.absolute().name
        if name in seen:
            raise StoreError(f"two sources are both named {name!r}; put them in one folder instead")
        seen.add(name)
        try:
            st = src.lstat()
        except OSError as e:
            raise StoreError(f"cannot read {src}: {e}") from e
        check_relpath(name)
        out.append((name, src, st))
        if src.is_dir() and not src.is_symlink():
            out.extend(_walk(src, name + "/"))
    out.sort(key=lambda t: t[0])
    return out


def _pagemaps(entries: list[tuple[str, Path, os.stat_result]]) -> dict[tuple[str, int], Pagemap]:
    """(directory, pages_id) -> parsed pagemap, for every readable pagemap-*.img."""
    out: dict[tuple[str, int], Pagemap] = {}
    for rel, p, st in entries:
        if stat.S_ISREG(st.st_mode) and is_pagemap_image(p.name):
            try:
                pm = parse_pagemap(p.read_bytes())
            except (PagemapFormatError, OSError) as e:
                log.warning("ignoring unreadable pagemap %s: %s", rel, e)
                continue
            out[(str(Path(rel).parent), pm.pages_id)] = pm
    return out


def _pages_id(name: str) -> int | None:
    try:
        return int(name[len("pages-") : -len(".img")])
    except ValueError:
        return None


def put(
    repo: Repository,
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    host: str,
    opts: PutOptions | None = None,
) -> Version:
    """Store ``source`` as the next version of ``host``; returns the new version.

    ``source`` is a folder (its contents are stored) or a list of files and folders (each
    stored under its own name)."""
    opts = opts or PutOptions()
    check_host(host)
    sources = [Path(source)] if isinstance(source, str | os.PathLike) else [Path(p) for p in source]
    if not sources:
        raise StoreError("nothing to put: give a folder or files")
    for src in sources:
        if not src.exists() and not src.is_symlink():
            raise StoreError(f"{src} does not exist; put stores a folder or files")
    for k in opts.meta:
        if not k or "=" in k:
            raise StoreError(f"invalid metadata key {k!r}")
    with LeaseLock(repo.backend, "shared", wait=opts.lock_wait):
        repo.load_index()
        parent: Version | None = None
        parent_snap: Snapshot | None = None
        versions = repo.list_versions(host)
        if versions:
            parent = versions[-1]
            try:
                parent_snap = repo.load_snapshot(parent.snapshot)
            except IntegrityError as e:
                log.warning(
                    "parent version %s of %s is unreadable (%s); storing without delta",
                    parent.version,
                    host,
                    e,
                )
                parent_snap = None
        entries = collect(sources)
        pagemaps = _pagemaps(entries)
        session = PackSession(repo)
        files: list[FileEntry] = []
        total = zero_bytes = dedup_bytes = 0
        skipped = 0
        for rel, path, st in entries:
            if stat.S_ISDIR(st.st_mode):
                files.append(
                    FileEntry(rel, "dir", stat.S_IMODE(st.st_mode), mtime_ns=st.st_mtime_ns)
                )
            elif stat.S_ISLNK(st.st_mode):
                files.append(FileEntry(rel, "symlink", 0o777, target=os.readlink(path)))
            elif stat.S_ISREG(st.st_mode):
                pmap = None
                if parent_snap is not None and opts.delta:
                    pf = parent_snap.file(rel)
                    if pf is not None and pf.type == "file" and pf.map and repo.has_blob(pf.map):
                        try:
                            pmap = _ParentMap(repo, repo.read_extent_map(pf.map))
                        except IntegrityError as e:
                            log.warning("parent of %s unreadable (%s); no delta for it", rel, e)
                fe, zb, db = _put_file(repo, session, rel, path, pmap, pagemaps)
                files.append(fe)
                total += fe.size
                zero_bytes += zb
                dedup_bytes += db
                if opts.on_file is not None:
                    opts.on_file(rel)
            else:
                skipped += 1
                log.warning("skipping %s: not a regular file, directory or symlink", rel)
        session.commit()
        snap = Snapshot(
            host=host,
            time_ns=opts.time_ns if opts.time_ns is not None else time.time_ns(),
            files=tuple(files),
            parent=parent.snapshot if parent else None,
            tags=tuple(opts.tags),
            meta=dict(opts.meta),
            stats={
                "files": sum(1 for f in files if f.type == "file"),
                "bytes": total,
                "zero_bytes": zero_bytes,
                "dedup_bytes": dedup_bytes,
                "added_bytes": session.added_bytes,
                "new_blobs": session.new_blobs,
                "delta_blobs": session.delta_blobs,
                "skipped": skipped,
            },
        )
        sid = repo.save_snapshot(snap)
        return repo.add_ref(host, sid, snap.time_ns)


def _read(path: Path, size: int) -> tuple[bytes | memoryview, mmap.mmap | None]:
    if size == 0:
        return b"", None
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return memoryview(m), m


def _put_file(
    repo: Repository,
    session: PackSession,
    rel: str,
    path: Path,
    parent: _ParentMap | None,
    pagemaps: dict[tuple[str, int], Pagemap],
) -> tuple[FileEntry, int, int]:
    try:
        st = path.stat()
        buf, mm = _read(path, st.st_size)
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e}") from e
    try:
        extents: list[Extent]
        if st.st_size == 0:
            extents, chunker = [], "empty"
        elif is_pages_image(path.name):
            pid = _pages_id(path.name)
            pm = pagemaps.get((str(Path(rel).parent), pid)) if pid is not None else None
            extents = page_extents(
                buf,
                repo.page_chunking,
                vaddrs=pm.page_vaddrs() if pm else None,
                boundaries=pm.entry_starts() if pm else (),
            )
            chunker = "pages"
        else:
            extents, chunker = list(cdc_extents(buf, repo.cdc_chunking)), "cdc"
        rows: list[tuple[bool, int, int, str]] = []
        zero_bytes = dedup_bytes = 0
        codec = repo.codec

        def chunk(ex: Extent) -> tuple[str, Encoded | None]:
            """Hash one extent; encode it (maybe against its positional parent) if it is new."""
            data = buf[ex.offset : ex.offset + ex.length]
            bid = codec.id_of(data)
            if session.has(bid):
                return bid, None
            base = base_id = None
            if parent is not None:
                pid_ = parent.lookup(ex.pos)
                if pid_ is not None and pid_ != bid:
                    base_id = repo.full_base(pid_)
                    try:
                        base = repo.read_blob(base_id)
                    except IntegrityError as e:
                        log.warning(
                            "delta base %s unreadable (%s); storing %s whole", base_id, e, rel
                        )
                        base = base_id = None
            return bid, encode(data, base=base, base_id=base_id)

        data_extents = [ex for ex in extents if not ex.zero]
        results = iter(ordered_map(chunk, data_extents))
        for ex in extents:
            if ex.zero:
                rows.append((True, ex.pos, ex.length, ""))
                zero_bytes += ex.length
                continue
            bid, enc = next(results)
            rows.append((False, ex.pos, ex.length, bid))
            if enc is None or session.has(bid):
                dedup_bytes += ex.length
                continue
            session.add(bid, "data", enc, ex.length)
        mapbytes = encode_extent_map(rows)
        mid = codec.id_of(mapbytes)
        if not session.has(mid):
            session.add(mid, "tree", encode(mapbytes, level=3), len(mapbytes))
        fe = FileEntry(
            rel, "file", stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns, chunker, mid
        )
        return fe, zero_bytes, dedup_bytes
    finally:
        if mm is not None:
            if isinstance(buf, memoryview):
                buf.release()
            with contextlib.suppress(
                BufferError
            ):  # a slice still referenced: closed when collected
                mm.close()
