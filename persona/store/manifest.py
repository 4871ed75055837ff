"""Snapshot manifests and extent maps (pure data + codecs, strict validation).

A snapshot manifest is JSON (zstd-compressed, optionally encrypted, stored under
``snapshots/<id>``; ``id`` is the hash of the JSON bytes)::

    {"format": 1, "host": "web-1", "time_ns": 1764..., "parent": "<snapshot id>" | null,
     "tags": ["nightly"], "meta": {"kernel": "6.1", "criu": "4.2", ...},
     "files": [{"path": "pages-1.img", "type": "file", "mode": 420, "size": 268435456,
                "mtime_ns": ..., "chunker": "pages", "map": "<tree blob id>"},
               {"path": "sub", "type": "dir", "mode": 493},
               {"path": "link", "type": "symlink", "target": "pages-1.img"}],
     "stats": {"bytes": ..., "added_bytes": ..., ...}}

A file's contents are described by an *extent map*, stored as a content-addressed tree blob
inside a pack (so an unchanged file's map is deduplicated): ``b"PXM1"``, a u32 count, then per
extent ``<flags u8><pos u64><length u32><id 32 bytes>`` (flags bit 0: zero extent, no id).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from persona.errors import IntegrityError, StoreError

FORMAT = 1
_MAP_MAGIC = b"PXM1"
_REC = np.dtype([("flags", "u1"), ("pos", "<u8"), ("length", "<u4"), ("id", "u1", (32,))])
FILE_TYPES = ("file", "dir", "symlink")
CHUNKERS = ("pages", "cdc", "empty")


def check_relpath(path: str) -> str:
    """A safe relative POSIX path inside a snapshot, else :class:`StoreError` (no traversal)."""
    if not isinstance(path, str) or not path:
        raise StoreError(f"invalid path {path!r} in snapshot: empty")
    if "\x00" in path or "\\" in path:
        raise StoreError(f"invalid path {path!r} in snapshot: NUL or backslash")
    if path.startswith("/"):
        raise StoreError(f"invalid path {path!r} in snapshot: absolute paths are not allowed")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid path {path!r} in snapshot: empty, '.' or '..' segment")
    return path


def check_host(host: str) -> str:
    import re

    if not isinstance(host, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", host):
        raise StoreError(
            f"invalid host name {host!r}: use 1-128 characters of [A-Za-z0-9._-], starting alphanumeric"
        )
    return host


@dataclass(frozen=True)
class ExtentMap:
    """Decoded extent map: parallel numpy arrays (offsets are cumulative lengths)."""

    zero: np.ndarray  # bool
    pos: np.ndarray  # uint64
    length: np.ndarray  # uint32
    ids: list[str]  # hex ids ("" for zero extents)

    @property
    def size(self) -> int:
        return int(self.length.sum(dtype=np.uint64))

    def offsets(self) -> np.ndarray:
        """File offset of each extent (cumulative lengths)."""
        lengths = self.length.astype(np.uint64)
        return np.cumsum(lengths) - lengths

    def __len__(self) -> int:
        return len(self.ids)


def encode_extent_map(extents: list[tuple[bool, int, int, str]]) -> bytes:
    """``extents``: (zero, pos, length, hex id) tuples in file order."""
    arr = np.zeros(len(extents), dtype=_REC)
    for i, (zero, pos, length, hid) in enumerate(extents):
        arr[i]["flags"] = 1 if zero else 0
        arr[i]["pos"] = pos
        arr[i]["length"] = length
        if not zero:
            arr[i]["id"] = np.frombuffer(bytes.fromhex(hid), dtype=np.uint8)
    return _MAP_MAGIC + struct.pack("<I", len(extents)) + arr.tobytes()


def decode_extent_map(data: bytes, what: str = "extent map") -> ExtentMap:
    if data[:4] != _MAP_MAGIC or len(data) < 8:
        raise IntegrityError(f"{what}: not an extent map (bad magic)")
    (n,) = struct.unpack_from("<I", data, 4)
    if len(data) != 8 + n * _REC.itemsize:
        raise IntegrityError(f"{what}: length {len(data)} does not match {n} extents")
    arr = np.frombuffer(data, dtype=_REC, offset=8, count=n)
    zero = (arr["flags"] & 1).astype(bool)
    hexall = arr["id"].tobytes().hex()
    ids = ["" if z else hexall[i * 64 : i * 64 + 64] for i, z in enumerate(zero.tolist())]
    return ExtentMap(zero, arr["pos"].copy(), arr["length"].copy(), ids)


@dataclass(frozen=True)
class FileEntry:
    path: str
    type: str  # "file" | "dir" | "symlink"
    mode: int = 0o644
    size: int = 0
    mtime_ns: int = 0
    chunker: str | None = None
    map: str | None = None  # tree blob id of the extent map (files only)
    target: str | None = None  # symlink target

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "type": self.type, "mode": self.mode}
        if self.type == "file":
            d.update(size=self.size, mtime_ns=self.mtime_ns, chunker=self.chunker, map=self.map)
        elif self.type == "symlink":
            d["target"] = self.target
        elif self.type == "dir":
            d["mtime_ns"] = self.mtime_ns
        return d


@dataclass(frozen=True)
class Snapshot:
    host: str
    time_ns: int
    files: tuple[FileEntry, ...]
    parent: str | None = None
    tags: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "host": self.host,
            "time_ns": self.time_ns,
            "parent": self.parent,
            "tags": list(self.tags),
            "meta": dict(self.meta),
            "files": [f.to_json() for f in self.files],
            "stats": dict(self.stats),
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files if f.type == "file")

    def file(self, path: str) -> FileEntry | None:
        for f in self.files:
            if f.path == path:
                return f
        return None


def _req(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise IntegrityError(f"{where}: missing field {key!r}")
    v = d[key]
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise IntegrityError(f"{where}: field {key!r} has wrong type {type(v).__name__}")
    return v


def _is_hex_id(v: object) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def decode_snapshot(data: bytes, what: str = "snapshot") -> Snapshot:
    """Parse and validate a manifest; any problem raises :class:`IntegrityError` naming it."""
    try:
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise IntegrityError(f"malformed {what}: not JSON ({e})") from e
    if not isinstance(d, dict):
        raise IntegrityError(f"malformed {what}: top level is not an object")
    fmt = _req(d, "format", int, what)
    if fmt != FORMAT:
        raise IntegrityError(f"{what}: unsupported manifest format {fmt}; upgrade persona")
    host = _req(d, "host", str, what)
    try:
        check_host(host)
        files = []
        seen: set[str] = set()
        for i, fd in enumerate(_req(d, "files", list, what)):
            w = f"{what}: files[{i}]"
            if not isinstance(fd, dict):
                raise IntegrityError(f"{w}: not an object")
            path = check_relpath(_req(fd, "path", str, w))
            if path in seen:
                raise IntegrityError(f"{w}: duplicate path {path!r}")
            seen.add(path)
            typ = _req(fd, "type", str, w)
            mode = _req(fd, "mode", int, w)
            if typ == "file":
                chunker = _req(fd, "chunker", str, w)
                if chunker not in CHUNKERS:
                    raise IntegrityError(f"{w}: unknown chunker {chunker!r}")
                mid = _req(fd, "map", str, w)
                if not _is_hex_id(mid):
                    raise IntegrityError(f"{w}: map is not a 64-hex-digit id")
                size = _req(fd, "size", int, w)
                if size < 0:
                    raise IntegrityError(f"{w}: negative size")
                files.append(
                    FileEntry(path, typ, mode, size, _req(fd, "mtime_ns", int, w), chunker, mid)
                )
            elif typ == "dir":
                files.append(FileEntry(path, typ, mode, mtime_ns=int(fd.get("mtime_ns", 0))))
            elif typ == "symlink":
                files.append(FileEntry(path, typ, mode, target=_req(fd, "target", str, w)))
            else:
                raise IntegrityError(f"{w}: unknown type {typ!r}")
    except StoreError as e:
        if isinstance(e, IntegrityError):
            raise
        raise IntegrityError(f"malformed {what}: {e}") from e
    parent = d.get("parent")
    if parent is not None and not _is_hex_id(parent):
        raise IntegrityError(f"{what}: parent is not a snapshot id")
    tags = _req(d, "tags", list, what)
    meta = _req(d, "meta", dict, what)
    stats = d.get("stats", {})
    if not all(isinstance(t, str) for t in tags) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise IntegrityError(f"{what}: tags and meta must be strings")
    if not isinstance(stats, dict) or not all(isinstance(v, int) for v in stats.values()):
        raise IntegrityError(f"{what}: stats must map names to integers")
    return Snapshot(
        host, _req(d, "time_ns", int, what), tuple(files), parent, tuple(tags), meta, stats
    )
