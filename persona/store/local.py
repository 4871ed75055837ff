"""Local-directory backend: the embedded default.

Crash safety: every put writes a temporary file in the destination directory, fsyncs it,
renames it over the final name and fsyncs the directory, so a crash at any point leaves either
the old state or the complete new blob (plus, at worst, an unlisted ``.tmp-*`` file that
``gc`` removes).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from persona.errors import StoreError
from persona.store.backend import (
    BlobInfo,
    ObjectNotFound,
    TransientStoreError,
    check_name,
    check_prefix,
    check_range,
)

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _translate(e: OSError, what: str) -> StoreError:
    if e.errno in (errno.EAGAIN, errno.EINTR, errno.EBUSY):
        return TransientStoreError(f"{what}: {e}; retry")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"{what}: disk full ({e}); free space and retry")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(f"{what}: permission denied ({e}); check the store directory's owner")
    return StoreError(f"{what}: {e}")


class LocalBackend:
    """Blobs as files under ``root`` (names map to relative paths)."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root).absolute()
        self._fsync = fsync

    @property
    def location(self) -> str:
        return str(self.root)

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def _mkdirs(self, d: Path) -> None:
        if d.is_dir():
            return
        missing = []
        p = d
        while not p.exists():
            missing.append(p)
            p = p.parent
        d.mkdir(parents=True, exist_ok=True)
        if self._fsync:
            for m in reversed(missing):
                fsync_dir(m.parent)

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        tmp = path.parent / f"{TMP_PREFIX}{path.name}.{secrets.token_hex(6)}"
        try:
            self._mkdirs(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            if self._fsync:
                fsync_dir(path.parent)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise _translate(e, f"cannot write {name!r} in {self.root}") from e

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_range(name, offset, length)
        path = self._path(name)
        try:
            with open(path, "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError as e:
            raise ObjectNotFound(name, self.location) from e
        except IsADirectoryError as e:
            raise ObjectNotFound(name, self.location) from e
        except OSError as e:
            raise _translate(e, f"cannot read {name!r} in {self.root}") from e

    def stat(self, name: str) -> BlobInfo:
        try:
            st = self._path(name).stat()
        except FileNotFoundError as e:
            raise ObjectNotFound(name, self.location) from e
        except OSError as e:
            raise _translate(e, f"cannot stat {name!r} in {self.root}") from e
        return BlobInfo(name, st.st_size, st.st_mtime)

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        check_prefix(prefix)
        # start from the deepest directory named entirely by the prefix
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / head if head else self.root
        if not start.is_dir():
            return
        out: list[BlobInfo] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for fn in filenames:
                if fn.startswith(TMP_PREFIX):
                    continue
                full = Path(dirpath) / fn
                rel = full.relative_to(self.root).as_posix()
                if not rel.startswith(prefix):
                    continue
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue
                out.append(BlobInfo(rel, st.st_size, st.st_mtime))
        out.sort(key=lambda b: b.name)
        yield from out

    def list_temporary(self) -> Iterator[BlobInfo]:
        """Leftover temporary files of interrupted puts (for gc)."""
        if not self.root.is_dir():
            return
        for dirpath, _dirs, filenames in os.walk(self.root):
            for fn in filenames:
                if fn.startswith(TMP_PREFIX):
                    full = Path(dirpath) / fn
                    try:
                        st = full.stat()
                    except FileNotFoundError:
                        continue
                    yield BlobInfo(full.relative_to(self.root).as_posix(), st.st_size, st.st_mtime)

    def remove_temporary(self, name: str) -> None:
        p = self.root / name
        if not p.name.startswith(TMP_PREFIX) or ".." in Path(name).parts:
            raise StoreError(f"{name!r} is not a temporary file")
        with contextlib.suppress(FileNotFoundError):
            p.unlink()

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise _translate(e, f"cannot delete {name!r} in {self.root}") from e
        if self._fsync:
            fsync_dir(path.parent)

    def close(self) -> None:
        pass
