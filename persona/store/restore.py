"""``restore``: write a version back to a folder, byte-identical, every chunk verified."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from persona.errors import IntegrityError, StoreError
from persona.store.manifest import check_relpath
from persona.store.parallel import ordered_map
from persona.store.policy import Version
from persona.store.repository import Repository


@dataclass(frozen=True)
class RestoreResult:
    version: Version
    files: int
    bytes: int


def _write_batch(repo: Repository, fd: int, batch: list[tuple[int, str]]) -> None:
    for off, bid in batch:
        os.pwrite(fd, repo.read_blob(bid), off)


def _safe_target(dest: Path, rel: str) -> Path:
    """``dest/rel`` after checking that no existing component below ``dest`` is a symlink."""
    check_relpath(rel)
    cur = dest
    parts = rel.split("/")
    for part in parts[:-1]:
        cur = cur / part
        if cur.is_symlink():
            raise StoreError(f"refusing to restore {rel!r}: {cur} is a symlink (path traversal)")
    return dest / rel


def restore(repo: Repository, version: Version, dest: str | os.PathLike[str]) -> RestoreResult:
    """Restore ``version`` into ``dest`` (created if missing; existing files are replaced)."""
    label = f"snapshot {version.snapshot} (host {version.host} version {version.version})"
    try:
        snap = repo.load_snapshot(version.snapshot)
    except IntegrityError as e:
        raise IntegrityError(f"{label}: {e}") from e
    repo.load_index()
    out = Path(dest).absolute()
    out.mkdir(parents=True, exist_ok=True)
    nbytes = nfiles = 0
    dirs = [f for f in snap.files if f.type == "dir"]
    for f in dirs:
        t = _safe_target(out, f.path)
        if t.is_symlink():
            t.unlink()
        t.mkdir(exist_ok=True)
    for f in snap.files:
        if f.type != "file":
            continue
        t = _safe_target(out, f.path)
        if t.is_symlink() or t.is_dir():
            raise StoreError(
                f"refusing to restore {f.path!r}: {t} exists and is not a regular file"
            )
        assert f.map is not None
        try:
            em = repo.read_extent_map(f.map)
            if em.size != f.size:
                raise IntegrityError(f"extent map covers {em.size} bytes, manifest says {f.size}")
            fd = os.open(t, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                offs = em.offsets().tolist()
                todo = [
                    (o, bid)
                    for o, z, bid in zip(offs, em.zero.tolist(), em.ids, strict=True)
                    if not z
                ]
                batches = [todo[i : i + 32] for i in range(0, len(todo), 32)]
                for _ in ordered_map(functools.partial(_write_batch, repo, fd), batches, window=8):
                    pass
                os.ftruncate(fd, f.size)
            finally:
                os.close(fd)
        except IntegrityError as e:
            raise IntegrityError(f"{label} file {f.path!r}: {e}") from e
        except OSError as e:
            raise StoreError(f"cannot write {t}: {e}") from e
        os.chmod(t, f.mode)
        os.utime(t, ns=(f.mtime_ns, f.mtime_ns))
        nfiles += 1
        nbytes += f.size
    for f in snap.files:
        if f.type == "symlink":
            t = _safe_target(out, f.path)
            if t.is_symlink() or t.exists():
                if t.is_dir() and not t.is_symlink():
                    raise StoreError(f"refusing to replace directory {t} with a symlink")
                t.unlink()
            assert f.target is not None
            os.symlink(f.target, t)
    for f in reversed(dirs):
        t = out / f.path
        os.chmod(t, f.mode)
        os.utime(t, ns=(f.mtime_ns, f.mtime_ns))
    return RestoreResult(version, nfiles, nbytes)
