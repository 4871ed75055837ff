"""``verify``, ``prune`` and ``gc``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from blake3 import blake3

from persona.errors import IntegrityError
from persona.store.backend import ObjectNotFound
from persona.store.delta import DELTA_KINDS, Encoded
from persona.store.local import LocalBackend
from persona.store.locks import LeaseLock, read_locks
from persona.store.policy import Policy, Version, apply_policy
from persona.store.repository import IndexEntry, PackSession, Repository, pack_name
from persona.store.url import unwrap

log = logging.getLogger("persona.store")
DEFAULT_GRACE_S = 3600.0
TMP_MIN_AGE_S = 600.0


@dataclass
class VerifyReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "counts": self.counts,
        }


def verify(repo: Repository, *, read_data: bool = False) -> VerifyReport:
    """Check the store's structure (and with ``read_data`` every byte). Read-only."""
    rep = VerifyReport()
    # 1. index files
    try:
        repo.load_index()
    except IntegrityError as e:
        rep.errors.append(str(e))
        return rep
    packs = {b.name.rsplit("/", 1)[1]: b.size for b in repo.backend.list("data/")}
    indexed_packs: dict[str, int] = {}
    for pid, es in repo.pack_entries.items():
        indexed_packs[pid] = max((e.offset + e.length for e in es), default=0)
    missing_packs = set()
    for pid, end in sorted(indexed_packs.items()):
        if pid not in packs:
            missing_packs.add(pid)
        elif packs[pid] < end:
            rep.errors.append(f"pack {pid} is truncated ({packs[pid]} bytes, index needs {end})")
    for pid in sorted(set(packs) - set(indexed_packs)):
        rep.warnings.append(
            f"pack {pid} is not indexed (left by an interrupted write; gc removes it)"
        )
    # 2. versions -> snapshots -> extent maps -> blobs
    users: dict[str, str] = {}  # blob -> first "snapshot ... file ..." that needs it
    versions = repo.list_versions()
    referenced = set()
    for v in versions:
        label = f"snapshot {v.snapshot} (host {v.host} version {v.version})"
        referenced.add(v.snapshot)
        try:
            snap = repo.load_snapshot(v.snapshot)
        except IntegrityError as e:
            rep.errors.append(f"{label}: {e}")
            continue
        for f in snap.files:
            if f.type != "file" or f.map is None:
                continue
            where = f"{label} file {f.path!r}"
            ok = _check_blob(repo, f.map, where, missing_packs, rep, users)
            if not ok:
                continue
            try:
                em = repo.read_extent_map(f.map)
            except IntegrityError as e:
                rep.errors.append(f"{where}: extent map: {e}")
                continue
            if em.size != f.size:
                rep.errors.append(
                    f"{where}: extent map covers {em.size} bytes, manifest says {f.size}"
                )
            for bid in set(em.ids):
                if bid:
                    _check_blob(repo, bid, where, missing_packs, rep, users)
    for sid in repo.list_snapshot_ids():
        if sid not in referenced:
            rep.warnings.append(
                f"snapshot {sid} has no version ref (interrupted put or prune; gc removes it)"
            )
    # 3. all data
    if read_data:
        for pid in sorted(indexed_packs):
            if pid in missing_packs:
                continue
            try:
                data = repo.backend.get(pack_name(pid))
            except ObjectNotFound:
                continue
            if blake3(data).hexdigest() != pid:
                rep.errors.append(f"pack {pid}: content does not match its id (corrupted)")
        repo.drop_cache()
        for bid, ent in sorted(repo.index.items(), key=lambda kv: (kv[1].pack, kv[1].offset)):
            if ent.pack in missing_packs:
                continue
            try:
                repo.read_blob(bid)
            except IntegrityError as err:
                who = users.get(bid, "no snapshot")
                rep.errors.append(f"{who}: {err}")
        rep.counts["blobs_read"] = len(repo.index)
    rep.counts.update(
        versions=len(versions), packs=len(packs), blobs=len(repo.index), blobs_referenced=len(users)
    )
    return rep


def _check_blob(
    repo: Repository,
    bid: str,
    where: str,
    missing_packs: set[str],
    rep: VerifyReport,
    users: dict[str, str],
) -> bool:
    first = bid not in users
    users.setdefault(bid, where)
    e = repo.index.get(bid)
    if e is None:
        rep.errors.append(f"{where}: blob {bid} is missing (not in any index)")
        return False
    if e.pack in missing_packs:
        if first:
            rep.errors.append(f"{where}: blob {bid} is in pack {e.pack}, which is missing")
        return False
    if e.kind in DELTA_KINDS:
        if e.base is None or e.base not in repo.index:
            rep.errors.append(f"{where}: delta blob {bid} has a missing base {e.base}")
            return False
        if repo.index[e.base].kind in DELTA_KINDS:
            rep.errors.append(f"{where}: delta blob {bid} has a delta base (chain too deep)")
            return False
        users.setdefault(e.base, where)
        if repo.index[e.base].pack in missing_packs:
            rep.errors.append(
                f"{where}: delta base {e.base} of blob {bid} is in missing pack {repo.index[e.base].pack}"
            )
            return False
    return True


# ------------------------------------------------------------------ prune / gc
@dataclass(frozen=True)
class PruneResult:
    keep: list[Version]
    forget: list[Version]
    dry_run: bool


def prune(
    repo: Repository,
    policy: Policy,
    *,
    host: str | None = None,
    now_ns: int | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Forget versions outside ``policy`` (per host). Run ``gc`` afterwards to reclaim space."""
    versions = repo.list_versions(host)
    keep, forget = apply_policy(versions, policy, now_ns if now_ns is not None else time.time_ns())
    if not dry_run:
        for v in forget:
            repo.forget(v)
    return PruneResult(keep, forget, dry_run)


@dataclass
class GcResult:
    deleted_packs: int = 0
    repacked_packs: int = 0
    deleted_snapshots: int = 0
    deleted_index_files: int = 0
    deleted_temp_files: int = 0
    freed_bytes: int = 0
    kept_young_packs: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def gc(
    repo: Repository,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    repack_threshold: float = 0.5,
    lock_wait: float = 300.0,
    now: Callable[[], float] = time.time,
    dry_run: bool = False,
) -> GcResult:
    """Remove what no version needs. Holds an exclusive lease lock; objects younger than
    ``grace_s`` are never deleted (protection for writers that lost their lease)."""
    res = GcResult()
    with LeaseLock(repo.backend, "exclusive", wait=lock_wait):
        t_now = now()

        def young(mtime: float) -> bool:
            return t_now - mtime < grace_s

        repo.load_index()
        index_files = dict(repo.index_files)
        versions = repo.list_versions()
        live_snaps = {v.snapshot for v in versions}
        snap_objs = {b.name.split("/", 1)[1]: b for b in repo.backend.list("snapshots/")}
        for sid, b in snap_objs.items():
            if sid not in live_snaps and young(b.mtime):
                live_snaps.add(sid)  # maybe a put between its snapshot and its ref
        # mark
        live: set[str] = set()
        for sid in sorted(live_snaps):
            try:
                snap = repo.load_snapshot(sid)
            except IntegrityError as e:
                raise IntegrityError(
                    f"gc stopped, nothing deleted: {e}; run `persona store verify`"
                ) from e
            for f in snap.files:
                if f.type == "file" and f.map:
                    live.add(f.map)
                    try:
                        em = repo.read_extent_map(f.map)
                    except IntegrityError as e:
                        raise IntegrityError(
                            f"gc stopped, nothing deleted: snapshot {sid} file {f.path!r}: {e}"
                        ) from e
                    live.update(i for i in em.ids if i)
        for bid in list(live):
            ent = repo.index.get(bid)
            if ent is None:
                raise IntegrityError(
                    f"gc stopped, nothing deleted: blob {bid} is missing; run verify"
                )
            if ent.kind in DELTA_KINDS and ent.base:
                live.add(ent.base)
        # sweep plan
        pack_info = {b.name.rsplit("/", 1)[1]: b for b in repo.backend.list("data/")}
        keep_entries: list[IndexEntry] = []
        delete_packs: list[str] = []
        repack: list[IndexEntry] = []
        for pid, es in sorted(repo.pack_entries.items()):
            mine = [e for e in es if e.id in live and repo.index[e.id].pack == pid]
            info = pack_info.get(pid)
            total = sum(e.length for e in es) or 1
            dead = 1 - sum(e.length for e in mine) / total
            if info is not None and young(info.mtime) and dead > 0:
                res.kept_young_packs += 1
                keep_entries.extend(mine)
                continue
            if not mine:
                delete_packs.append(pid)
            elif dead >= repack_threshold:
                repack.extend(mine)
                delete_packs.append(pid)
            else:
                keep_entries.extend(mine)
        unindexed = [
            pid
            for pid, b in pack_info.items()
            if pid not in repo.pack_entries and not young(b.mtime)
        ]
        if dry_run:
            res.deleted_packs = len(delete_packs) + len(unindexed)
            res.repacked_packs = len({e.pack for e in repack})
            return res
        # write: repacked blobs into new packs, then one new index, then delete
        session = PackSession(repo)
        for ent in repack:
            repo.read_blob(ent.id)  # never copy a corrupted blob into a new pack
            stored = repo.read_stored(ent)
            session.add(ent.id, ent.type, Encoded(ent.kind, stored, ent.base), ent.raw_len)
        session.flush()
        new_packs = session.packs
        by_pack: dict[str, list[IndexEntry]] = {}
        for ent in keep_entries:
            by_pack.setdefault(ent.pack, []).append(ent)
        all_packs = [
            (pid, pack_info[pid].size if pid in pack_info else 0, es)
            for pid, es in sorted(by_pack.items())
        ]
        all_packs += new_packs
        if all_packs:
            doc = {
                "packs": [
                    {"id": p, "size": s, "blobs": [e.to_row() for e in es]}
                    for p, s, es in all_packs
                ]
            }
            new_index = "index/" + repo.put_object(
                "index", json.dumps(doc, separators=(",", ":")).encode()
            )
        else:
            new_index = ""
        for name in index_files:
            if name != new_index:
                repo.backend.delete(name)
                res.deleted_index_files += 1
        for pid in delete_packs + unindexed:
            res.freed_bytes += pack_info[pid].size if pid in pack_info else 0
            repo.backend.delete(pack_name(pid))
        res.deleted_packs = len(delete_packs) + len(unindexed)
        res.repacked_packs = len({e.pack for e in repack})
        for sid, b in snap_objs.items():
            if sid not in live_snaps:
                repo.backend.delete(b.name)
                res.deleted_snapshots += 1
        inner = unwrap(repo.backend)
        if isinstance(inner, LocalBackend):
            for t in inner.list_temporary():
                # lock files are written outside the lock protocol, so a temp file may belong
                # to a live process whatever the grace period: require TMP_MIN_AGE_S too
                if t_now - t.mtime < max(grace_s, TMP_MIN_AGE_S):
                    continue
                inner.remove_temporary(t.name)
                res.deleted_temp_files += 1
        # stale locks are ignored by everyone once expired; clean them up
        for lk in read_locks(repo.backend):
            if not lk.live(t_now) and t_now - lk.expires > grace_s:
                repo.backend.delete(lk.name)
        repo.drop_cache()
        repo.load_index()
    return res
