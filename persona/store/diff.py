"""Differences between two snapshots (pure, over manifests and extent maps)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from persona.store.manifest import ExtentMap, Snapshot


@dataclass(frozen=True)
class FileChange:
    path: str
    kind: str  # "added" | "removed" | "modified" | "type" | "mode"
    old_size: int = 0
    new_size: int = 0
    changed_bytes: int = 0  # bytes of the new file in extents not present at the same offset before


@dataclass(frozen=True)
class SnapshotDiff:
    changes: tuple[FileChange, ...]
    unchanged: int
    meta_changes: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    @property
    def changed_bytes(self) -> int:
        return sum(c.changed_bytes for c in self.changes)

    def to_json(self) -> dict[str, object]:
        return {
            "changes": [c.__dict__ for c in self.changes],
            "unchanged": self.unchanged,
            "changed_bytes": self.changed_bytes,
            "meta_changes": {k: list(v) for k, v in self.meta_changes.items()},
        }


def changed_bytes(old: ExtentMap, new: ExtentMap) -> int:
    """Bytes of ``new`` whose (offset, length, id) extent does not appear in ``old``."""
    before = set(zip(old.offsets().tolist(), old.length.tolist(), old.ids, strict=True))
    total = 0
    for off, ln, hid in zip(new.offsets().tolist(), new.length.tolist(), new.ids, strict=True):
        if (off, ln, hid) not in before:
            total += 0 if hid == "" else ln
    return total


def diff_snapshots(a: Snapshot, b: Snapshot, load_map: Callable[[str], ExtentMap]) -> SnapshotDiff:
    fa = {f.path: f for f in a.files}
    fb = {f.path: f for f in b.files}
    changes: list[FileChange] = []
    unchanged = 0
    for path in sorted(set(fa) | set(fb)):
        x, y = fa.get(path), fb.get(path)
        if x is None and y is not None:
            changes.append(FileChange(path, "added", 0, y.size, y.size))
        elif y is None and x is not None:
            changes.append(FileChange(path, "removed", x.size, 0, 0))
        elif x is not None and y is not None:
            if x.type != y.type:
                changes.append(FileChange(path, "type", x.size, y.size, y.size))
            elif x.type == "file" and x.map != y.map:
                assert x.map is not None and y.map is not None
                cb = changed_bytes(load_map(x.map), load_map(y.map))
                changes.append(FileChange(path, "modified", x.size, y.size, cb))
            elif x.type == "symlink" and x.target != y.target:
                changes.append(FileChange(path, "modified"))
            elif x.mode != y.mode:
                changes.append(FileChange(path, "mode", x.size, y.size, 0))
            else:
                unchanged += 1
    meta: dict[str, tuple[str | None, str | None]] = {}
    for k in sorted(set(a.meta) | set(b.meta)):
        if a.meta.get(k) != b.meta.get(k):
            meta[k] = (a.meta.get(k), b.meta.get(k))
    return SnapshotDiff(tuple(changes), unchanged, meta)
