"""Repository behaviour end to end on every backend: put/restore, dedup, delta, verify,
corruption, encryption, prune/gc, bad input."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persona.errors import IntegrityError, StoreError
from persona.store import Policy, PutOptions, Repository, gc, prune, put, restore, verify
from persona.store.repository import pack_name

from .conftest import tree_bytes


def test_put_restore_roundtrip_every_backend(
    store_url: str, image_versions: list[Path], tmp_path: Path
) -> None:
    repo = Repository.init(store_url)
    vs = [
        put(repo, d, "web-1", PutOptions(tags=("t",), meta={"kernel": "6.1"}))
        for d in image_versions
    ]
    assert [v.version for v in vs] == [1, 2, 3]
    repo2 = Repository.open(store_url)
    for v, d in zip(vs, image_versions, strict=True):
        out = tmp_path / f"out{v.version}"
        r = restore(repo2, repo2.resolve("web-1", v.version), out)
        assert tree_bytes(out) == tree_bytes(d)
        assert r.bytes == sum(
            p.stat().st_size for p in d.rglob("*") if p.is_file() and not p.is_symlink()
        )
    assert repo2.resolve("web-1", "latest") == vs[-1]
    rep = verify(repo2, read_data=True)
    assert rep.ok, rep.errors


def test_dedup_delta_and_zero_elision(tmp_path: Path, image_versions: list[Path]) -> None:
    repo = Repository.init(str(tmp_path / "s"))
    v1 = put(repo, image_versions[0], "h")
    v2 = put(repo, image_versions[1], "h")
    s1, s2 = repo.load_snapshot(v1.snapshot), repo.load_snapshot(v2.snapshot)
    assert s1.stats["zero_bytes"] > 0
    assert s2.stats["delta_blobs"] > 0
    # 1 % of pages dirtied: the second version adds a small fraction of the first
    assert s2.stats["added_bytes"] < s1.stats["added_bytes"] / 10
    # same input again: nothing new but the (tiny) extent maps' absence -> 0 bytes
    v3 = put(repo, image_versions[1], "h")
    assert repo.load_snapshot(v3.snapshot).stats["added_bytes"] == 0
    # every delta's base is a full chunk (depth 1)
    repo.load_index()
    for e in repo.index.values():
        if e.base:
            assert repo.index[e.base].base is None


def test_encryption(
    tmp_path: Path, image_versions: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(tmp_path / "enc")
    monkeypatch.setenv("PERSONA_STORE_KEY", "correct horse battery staple")
    repo = Repository.init(url, encrypt=True)
    v = put(repo, image_versions[0], "h")
    # contents and plain ids do not appear in the store
    plain = Repository.init(str(tmp_path / "plain"))
    vp = put(plain, image_versions[0], "h")
    assert v.snapshot != vp.snapshot
    text = (image_versions[0] / "pages-1.img").read_bytes()
    needle = text[text.find(b"user=alice") : text.find(b"user=alice") + 40]
    assert needle
    for p in (tmp_path / "enc").rglob("*"):
        if p.is_file() and p.name != "config":
            assert needle not in p.read_bytes()
    out = tmp_path / "out"
    restore(Repository.open(url), v, out)
    assert (out / "pages-1.img").read_bytes() == text
    monkeypatch.setenv("PERSONA_STORE_KEY", "wrong")
    with pytest.raises(StoreError, match="wrong encryption key"):
        Repository.open(url)
    monkeypatch.delenv("PERSONA_STORE_KEY")
    with pytest.raises(StoreError, match="encrypted"):
        Repository.open(url)
    kf = tmp_path / "key"
    kf.write_text("correct horse battery staple\n")
    assert verify(Repository.open(url, key_file=str(kf)), read_data=True).ok


def _only_data_pack(root: Path) -> list[Path]:
    return sorted(p for p in (root / "data").rglob("*") if p.is_file())


def test_flipped_byte_detected_on_read_and_verify(
    tmp_path: Path, image_versions: list[Path]
) -> None:
    root = tmp_path / "s"
    repo = Repository.init(str(root))
    v = put(repo, image_versions[0], "web-1")
    repo.load_index()
    # flip a byte inside a data blob of pages-1.img
    snap = repo.load_snapshot(v.snapshot)
    fe = snap.file("pages-1.img")
    assert fe is not None and fe.map is not None
    em = repo.read_extent_map(fe.map)
    victim = next(i for i in em.ids if i)
    ent = repo.index[victim]
    p = root / pack_name(ent.pack)
    data = bytearray(p.read_bytes())
    data[ent.offset + ent.length // 2] ^= 0x01
    p.write_bytes(bytes(data))
    fresh = Repository.open(str(root))
    with pytest.raises(IntegrityError) as ei:
        restore(fresh, v, tmp_path / "out")
    msg = str(ei.value)
    assert v.snapshot in msg and "pages-1.img" in msg and victim in msg
    rep = verify(Repository.open(str(root)), read_data=True)
    assert not rep.ok
    assert any(victim in e and v.snapshot in e for e in rep.errors), rep.errors
    assert any(ent.pack in e for e in rep.errors)


def test_missing_pack_detected(tmp_path: Path, image_versions: list[Path]) -> None:
    root = tmp_path / "s"
    repo = Repository.init(str(root), pack_size=256 * 1024)
    v = put(repo, image_versions[0], "web-1")
    victim = _only_data_pack(root)[0]
    victim.unlink()
    rep = verify(Repository.open(str(root)))
    assert not rep.ok
    assert any(victim.name in e and v.snapshot in e and "missing" in e for e in rep.errors), (
        rep.errors
    )
    with pytest.raises(IntegrityError, match=v.snapshot):
        restore(Repository.open(str(root)), v, tmp_path / "out")


def test_corrupt_manifest_and_index_detected(tmp_path: Path, image_versions: list[Path]) -> None:
    root = tmp_path / "s"
    repo = Repository.init(str(root))
    v = put(repo, image_versions[0], "web-1")
    snap_file = root / "snapshots" / v.snapshot
    good = snap_file.read_bytes()
    snap_file.write_bytes(good[:-3])
    rep = verify(Repository.open(str(root)))
    assert any(v.snapshot in e for e in rep.errors)
    with pytest.raises(IntegrityError, match=v.snapshot):
        restore(Repository.open(str(root)), v, tmp_path / "o")
    # a well-formed object whose JSON is malformed (correct id for its content)
    bad = Repository.open(str(root))
    sid = bad.put_object("snapshots", json.dumps({"format": 1, "host": "x"}).encode())
    with pytest.raises(IntegrityError, match="missing field"):
        bad.load_snapshot(sid)
    snap_file.write_bytes(good)
    idx = next((root / "index").iterdir())
    idx.write_bytes(b"garbage")
    rep = verify(Repository.open(str(root)))
    assert not rep.ok and idx.name in rep.errors[0]


def test_path_traversal_in_manifest_refused(tmp_path: Path, image_versions: list[Path]) -> None:
    root = tmp_path / "s"
    repo = Repository.init(str(root))
    v = put(repo, image_versions[0], "web-1")
    snap = json.loads(repo.get_object("snapshots", v.snapshot))
    snap["files"][0]["path"] = "../escaped"
    sid = repo.put_object("snapshots", json.dumps(snap).encode())
    evil = repo.add_ref("web-1", sid, v.time_ns + 1)
    with pytest.raises(IntegrityError, match=r"\.\."):
        restore(repo, evil, tmp_path / "out")
    assert not (tmp_path / "escaped").exists()
    # symlink inside the destination pointing outside: files are never written through it
    snap = json.loads(repo.get_object("snapshots", v.snapshot))
    files = snap["files"]
    f = next(x for x in files if x["path"] == "fs/rootfs-diff.tar")
    files.append(
        {"path": "fs2", "type": "symlink", "mode": 0o777, "target": str(tmp_path / "outside")}
    )
    files.append({**f, "path": "fs2/x.tar"})
    sid = repo.put_object("snapshots", json.dumps(snap).encode())
    evil2 = repo.add_ref("web-1", sid, v.time_ns + 2)
    (tmp_path / "outside").mkdir()
    dest = tmp_path / "out2"
    dest.mkdir()
    (dest / "fs2").symlink_to(tmp_path / "outside")
    with pytest.raises(StoreError, match="symlink"):
        restore(repo, evil2, dest)
    assert list((tmp_path / "outside").iterdir()) == []


def test_prune_and_gc_reclaim_space(tmp_path: Path, image_versions: list[Path]) -> None:
    root = tmp_path / "s"
    repo = Repository.init(str(root), pack_size=128 * 1024)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "random.bin").write_bytes(os.urandom(1_000_000))  # only in version 1: dies by prune
    for d in [junk, *image_versions]:
        put(repo, d, "h")
    put(repo, image_versions[0], "other")
    before = sum(p.stat().st_size for p in _only_data_pack(root))
    res = prune(repo, Policy(keep_last=1))
    assert [v.version for v in res.forget] == [1, 2, 3]
    g0 = gc(repo)  # default grace: everything is young, nothing deleted
    assert g0.deleted_packs == 0 and g0.kept_young_packs > 0
    g = gc(repo, grace_s=0)
    after = sum(p.stat().st_size for p in _only_data_pack(root))
    assert g.deleted_packs > 0 and g.deleted_snapshots == 0
    assert before - after >= 900_000
    fresh = Repository.open(str(root))
    assert verify(fresh, read_data=True).ok
    for host, src in (("h", image_versions[2]), ("other", image_versions[0])):
        out = tmp_path / f"o-{host}"
        restore(fresh, fresh.resolve(host, "latest"), out)
        assert tree_bytes(out) == tree_bytes(src)
    # pruning everything but latest of a host with one version is a no-op
    assert prune(fresh, Policy(keep_last=1), host="other").forget == []


def test_gc_repacks_mostly_dead_packs(tmp_path: Path) -> None:
    root = tmp_path / "s"
    repo = Repository.init(str(root))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    keep = os.urandom(60_000)
    (a / "junk.bin").write_bytes(os.urandom(200_000))
    (a / "keep.bin").write_bytes(keep)
    (b / "keep.bin").write_bytes(keep)
    put(repo, a, "h")
    put(repo, b, "h")
    assert len(_only_data_pack(root)) == 1  # version 2 added nothing
    prune(repo, Policy(keep_last=1))
    g = gc(repo, grace_s=0)
    assert g.repacked_packs == 1 and g.deleted_packs == 1
    assert sum(p.stat().st_size for p in _only_data_pack(root)) < 100_000
    fresh = Repository.open(str(root))
    assert verify(fresh, read_data=True).ok
    restore(fresh, fresh.resolve("h", "latest"), tmp_path / "out")
    assert (tmp_path / "out" / "keep.bin").read_bytes() == keep


def test_gc_removes_crash_leftovers(tmp_path: Path, image_versions: list[Path]) -> None:
    root = tmp_path / "s"
    repo = Repository.init(str(root))
    put(repo, image_versions[0], "h")
    (root / "data" / "ff").mkdir(exist_ok=True)
    orphan = root / "data" / "ff" / ("ff" * 32)
    orphan.write_bytes(b"half a pack")
    tmp = root / "data" / "ff" / ".tmp-xyz.123"
    tmp.write_bytes(b"partial")
    young_tmp = root / "data" / "ff" / ".tmp-abc.456"
    young_tmp.write_bytes(b"being written right now")
    old = time.time() - 3600
    os.utime(tmp, (old, old))
    rep = verify(Repository.open(str(root)))
    assert rep.ok and any("not indexed" in w for w in rep.warnings)
    g = gc(repo, grace_s=0)
    assert not orphan.exists() and not tmp.exists() and g.deleted_temp_files == 1
    assert young_tmp.exists()  # temp files younger than TMP_MIN_AGE_S may belong to a live put
    assert verify(Repository.open(str(root)), read_data=True).ok


def test_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StoreError, match="unknown store URL scheme"):
        Repository.open("ftp://x/y")
    with pytest.raises(StoreError, match="no persona store"):
        Repository.open(str(tmp_path / "none"))
    with pytest.raises(StoreError, match="unknown S3 URL parameter"):
        Repository.open("s3://b/p?endpont=http://127.0.0.1:1")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "nocreds"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "noconfig"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StoreError, match="no S3 credentials"):
        Repository.open("s3://bucket/p?endpoint=http://127.0.0.1:9")
    repo = Repository.init(str(tmp_path / "s"))
    with pytest.raises(StoreError, match="already exists"):
        Repository.init(str(tmp_path / "s"))
    with pytest.raises(StoreError, match="invalid host"):
        put(repo, tmp_path, "../etc")
    with pytest.raises(StoreError, match="does not exist"):
        put(repo, tmp_path / "missing", "h")
    with pytest.raises(StoreError, match="no versions"):
        repo.resolve("h", "latest")
    (tmp_path / "src").mkdir()
    put(repo, tmp_path / "src", "h")
    with pytest.raises(StoreError, match="no version 7"):
        repo.resolve("h", 7)
    with pytest.raises(StoreError, match="invalid version"):
        repo.resolve("h", "yesterday")
    (tmp_path / "s" / "config").write_bytes(b"{]")
    with pytest.raises(StoreError, match="malformed store config"):
        Repository.open(str(tmp_path / "s"))


def test_s3_store_unreachable_endpoint_is_clear(s3_env: None) -> None:
    from persona.store.url import open_backend
    from persona.store.wrappers import RetryBackend

    b = open_backend("s3://bucket/p?endpoint=http://127.0.0.1:9")
    assert isinstance(b, RetryBackend)
    b.base_delay = 0.001
    with pytest.raises(StoreError, match="cannot reach"):
        b.get("config")


def test_empty_and_special_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "empty").write_bytes(b"")
    (src / "pages-9.img").write_bytes(bytes(8192) + b"x" * 5)  # zero pages + odd tail, no pagemap
    (src / "exec.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "exec.sh", 0o750)
    os.mkfifo(src / "fifo")
    repo = Repository.init(f"memory://{tmp_path.name}")
    v = put(repo, src, "h")
    assert repo.load_snapshot(v.snapshot).stats["skipped"] == 1
    out = tmp_path / "out"
    restore(repo, v, out)
    (src / "fifo").unlink()
    assert tree_bytes(out) == tree_bytes(src)


def test_threaded_pipeline_matches_serial(
    tmp_path: Path, image_versions: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    maps = []
    for threads in ("1", "3"):
        monkeypatch.setenv("PERSONA_STORE_THREADS", threads)
        repo = Repository.init(str(tmp_path / f"s{threads}"))
        for d in image_versions:
            v = put(repo, d, "h")
        snap = repo.load_snapshot(v.snapshot)
        maps.append({f.path: f.map for f in snap.files})
        out = tmp_path / f"out{threads}"
        restore(Repository.open(str(tmp_path / f"s{threads}")), v, out)
        assert tree_bytes(out) == tree_bytes(image_versions[-1])
    assert maps[0] == maps[1]  # identical chunking, ids and extent maps


def test_put_files_and_folders_under_their_names(
    tmp_path: Path, image_versions: list[Path]
) -> None:
    repo = Repository.init(str(tmp_path / "s"))
    src = image_versions[0]
    v = put(repo, [src / "pages-1.img", src / "pagemap-1.img", src / "fs"], "h")
    snap = repo.load_snapshot(v.snapshot)
    assert {f.path for f in snap.files} == {
        "pages-1.img",
        "pagemap-1.img",
        "fs",
        "fs/rootfs-diff.tar",
        "fs/empty",
        "fs/sub",
    }
    out = tmp_path / "out"
    restore(repo, v, out)
    assert (out / "pages-1.img").read_bytes() == (src / "pages-1.img").read_bytes()
    assert tree_bytes(out / "fs") == tree_bytes(src / "fs")
    with pytest.raises(StoreError, match="both named"):
        put(repo, [src / "fs", image_versions[1] / "fs"], "h")
    with pytest.raises(StoreError, match="nothing to put"):
        put(repo, [], "h")


_PAGE_KINDS = st.sampled_from(
    [b"\x00" * 4096, b"\x01" * 4096, bytes(range(256)) * 16, b"ab" * 2048]
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pages=st.lists(st.lists(_PAGE_KINDS, max_size=40), min_size=1, max_size=3),
    blobs=st.dictionaries(
        st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8})?", fullmatch=True),
        st.binary(max_size=5000),
        max_size=4,
    ),
)
def test_property_put_restore_roundtrip(
    tmp_path_factory: pytest.TempPathFactory, pages: list, blobs: dict
) -> None:
    """Any sequence of page images and small files restores byte-identically, every version."""
    base = tmp_path_factory.mktemp("prop")
    repo = Repository.init(f"memory://{base.name}")
    srcs = []
    for i, plist in enumerate(pages):
        src = base / f"src{i}"
        src.mkdir()
        (src / "pages-1.img").write_bytes(b"".join(plist))
        for name, data in blobs.items():
            p = src / "files" / name
            if p.parent.exists() and not p.parent.is_dir():
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_dir():
                continue
            p.write_bytes(data + bytes([i]))
        srcs.append((put(repo, src, "h"), src))
    for v, src in srcs:
        out = base / f"out{v.version}"
        restore(repo, v, out)
        assert tree_bytes(out) == tree_bytes(src)
