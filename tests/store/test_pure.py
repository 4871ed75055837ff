"""Pure logic: chunking, pagemap codec, delta encoding, manifests, retention policy, diff."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persona.errors import IntegrityError, StoreError
from persona.store.chunker import PAGE, CdcChunking, PageChunking, cdc_extents, page_extents
from persona.store.criu import (
    Pagemap,
    PagemapEntry,
    PagemapFormatError,
    parse_pagemap,
    write_pagemap,
)
from persona.store.delta import DELTA, DELTA_KINDS, RAW, XDELTA, ZSTD, decode, delta_base, encode
from persona.store.diff import changed_bytes, diff_snapshots
from persona.store.manifest import (
    FileEntry,
    Snapshot,
    check_relpath,
    decode_extent_map,
    decode_snapshot,
    encode_extent_map,
)
from persona.store.policy import Policy, Version, apply_policy, parse_duration

rng = np.random.default_rng(0)


def _pages(n: int, zero_every: int = 0) -> bytearray:
    buf = bytearray(rng.integers(0, 256, n * PAGE, dtype=np.uint8).tobytes())
    if zero_every:
        for i in range(0, n, zero_every):
            buf[i * PAGE : (i + 1) * PAGE] = bytes(PAGE)
    return buf


def _tiles(extents: list, size: int) -> None:
    off = 0
    for e in extents:
        assert e.offset == off and e.length > 0
        off += e.length
    assert off == size


# ---------------------------------------------------------------- chunking
def test_page_extents_tile_align_and_elide_zeros() -> None:
    buf = _pages(400, zero_every=7)
    ex = page_extents(bytes(buf))
    _tiles(ex, len(buf))
    for e in ex:
        assert e.offset % PAGE == 0 and e.length % PAGE == 0
        chunk = buf[e.offset : e.offset + e.length]
        assert e.zero == (not any(chunk))
        if not e.zero:
            assert e.length <= PageChunking().max_pages * PAGE
    assert sum(e.length for e in ex if e.zero) == len(range(0, 400, 7)) * PAGE


def test_one_dirty_page_changes_one_chunk() -> None:
    buf = _pages(2000)
    a = page_extents(bytes(buf))
    buf[1234 * PAGE + 100] ^= 0xFF
    b = page_extents(bytes(buf))
    ra = {(e.offset, e.length) for e in a}
    changed = [
        e
        for e in b
        if (e.offset, e.length) not in ra or 1234 * PAGE in range(e.offset, e.offset + e.length)
    ]
    # the dirty page's chunk, plus at most one neighbour whose cut point moved
    assert 1 <= len(changed) <= 3
    assert sum(e.length for e in changed) <= 3 * PageChunking().max_pages * PAGE


def test_inserted_pages_resynchronise() -> None:
    buf = bytes(_pages(1000))
    old = {buf[e.offset : e.offset + e.length] for e in page_extents(buf) if not e.zero}
    new_buf = buf[: 300 * PAGE] + bytes(_pages(5)) + buf[300 * PAGE :]
    new = [new_buf[e.offset : e.offset + e.length] for e in page_extents(new_buf) if not e.zero]
    same = sum(1 for c in new if c in old)
    # content-defined cuts: only chunks around the insertion differ
    assert len(new) - same <= 4
    assert same >= len(old) - 3


def test_vaddrs_and_forced_boundaries() -> None:
    buf = _pages(64)
    vaddrs = np.concatenate(
        [
            0x1000_0000 + np.arange(32, dtype=np.uint64) * PAGE,
            0x9000_0000 + np.arange(32, dtype=np.uint64) * PAGE,
        ]
    )
    ex = page_extents(
        bytes(buf), PageChunking(mask_bits=20, max_pages=64), vaddrs=vaddrs, boundaries=[32]
    )
    assert [(e.offset, e.pos) for e in ex] == [(0, 0x1000_0000), (32 * PAGE, 0x9000_0000)]
    # a pagemap that does not describe the file is ignored
    ex2 = page_extents(bytes(buf), vaddrs=vaddrs[:10])
    assert ex2[0].pos == 0


def test_page_extents_odd_tail() -> None:
    buf = bytes(_pages(3)) + b"tail"
    ex = page_extents(buf)
    _tiles(ex, len(buf))
    assert ex[-1].length == 4 and not ex[-1].zero


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=0, max_size=300_000))
def test_cdc_extents_tile(data: bytes) -> None:
    ex = list(cdc_extents(data, CdcChunking(avg_size=4096, min_size=1024, max_size=16384)))
    _tiles(ex, len(data))
    assert all(e.length <= 16384 for e in ex)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**32),
    st.lists(
        st.tuples(
            st.integers(0, 2**48),
            st.integers(0, 5000),
            st.booleans(),
            st.one_of(st.none(), st.integers(0, 7)),
        ),
        max_size=20,
    ),
)
def test_pagemap_roundtrip(pages_id: int, entries: list) -> None:
    pm = Pagemap(pages_id, tuple(PagemapEntry(*e) for e in entries))
    assert parse_pagemap(write_pagemap(pm)) == pm


def test_pagemap_rejects_garbage() -> None:
    with pytest.raises(PagemapFormatError):
        parse_pagemap(b"\x00" * 16)
    with pytest.raises(PagemapFormatError):
        parse_pagemap(write_pagemap(Pagemap(1, (PagemapEntry(4096, 3),)))[:-2])


def test_pagemap_addresses_skip_parent_pages() -> None:
    pm = Pagemap(
        1,
        (
            PagemapEntry(0x1000, 2, flags=4),
            PagemapEntry(0x8000, 5, flags=1),
            PagemapEntry(0x20000, 1, flags=4),
        ),
    )
    assert pm.page_vaddrs().tolist() == [0x1000, 0x2000, 0x20000]
    assert pm.entry_starts() == [0, 2]


# ---------------------------------------------------------------- delta
@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=20000), st.one_of(st.none(), st.binary(min_size=1, max_size=20000)))
def test_encode_decode_roundtrip(data: bytes, base: bytes | None) -> None:
    enc = encode(data, base=base, base_id="ab" * 32 if base else None)
    base_used = base if enc.kind in DELTA_KINDS else None
    assert decode(enc.payload, base_used, raw_len=len(data)) == data
    assert len(enc.payload) <= len(data) + 1  # never worse than raw


def test_delta_chosen_when_smaller() -> None:
    base = os.urandom(16384)
    new = bytearray(base)
    new[100:164] = os.urandom(64)
    enc = encode(bytes(new), base=base, base_id="cd" * 32)
    # modified in place: the cheap xor delta wins
    assert enc.kind == XDELTA and enc.base == "cd" * 32 and delta_base(enc.payload) == "cd" * 32
    assert len(enc.payload) < 1000
    assert decode(enc.payload, base, raw_len=len(new)) == bytes(new)
    # shifted content: xor is useless, the dictionary delta finds the match
    shifted = b"xyz" + base[:-3]
    enc = encode(shifted, base=base, base_id="ef" * 32)
    assert enc.kind == DELTA and len(enc.payload) < 1000
    assert decode(enc.payload, base, raw_len=len(shifted)) == shifted
    # unrelated base: plain encodings
    assert encode(os.urandom(5000), base=os.urandom(5000), base_id="00" * 32).kind == RAW
    assert encode(b"a" * 5000).kind == ZSTD


def test_decode_rejects_corruption() -> None:
    enc = encode(b"hello world " * 1000)
    assert enc.kind == ZSTD
    with pytest.raises(IntegrityError):
        decode(enc.payload[:-5], raw_len=12000)  # truncated frame
    with pytest.raises(IntegrityError):
        decode(b"\x09abc")  # unknown kind
    with pytest.raises(IntegrityError):
        decode(b"\x02" + b"\x00" * 40)  # delta without its base
    with pytest.raises(IntegrityError):
        decode(b"")


# ---------------------------------------------------------------- manifests
@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.integers(0, 2**63),
            st.integers(1, 2**31),
            st.binary(min_size=32, max_size=32),
        ),
        max_size=50,
    )
)
def test_extent_map_roundtrip(rows: list) -> None:
    ext = [(z, p, n, "" if z else i.hex()) for z, p, n, i in rows]
    em = decode_extent_map(encode_extent_map(ext))
    assert (
        list(zip(em.zero.tolist(), em.pos.tolist(), em.length.tolist(), em.ids, strict=True)) == ext
    )


def test_extent_map_rejects_bad_bytes() -> None:
    with pytest.raises(IntegrityError):
        decode_extent_map(b"nope")
    with pytest.raises(IntegrityError):
        decode_extent_map(encode_extent_map([(True, 0, 1, "")])[:-1])


def _snap() -> Snapshot:
    return Snapshot(
        "web-1",
        123,
        (
            FileEntry("a/b.img", "file", 0o600, 10, 5, "pages", "0" * 64),
            FileEntry("a", "dir", 0o755),
            FileEntry("l", "symlink", 0o777, target="a/b.img"),
        ),
        parent="f" * 64,
        tags=("x",),
        meta={"kernel": "6.1"},
        stats={"bytes": 10},
    )


def test_snapshot_roundtrip() -> None:
    s = _snap()
    assert decode_snapshot(s.encode()) == s


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("host"),
        lambda d: d.update(host="../evil"),
        lambda d: d.update(format=99),
        lambda d: d["files"][0].update(path="../../etc/passwd"),
        lambda d: d["files"][0].update(path="/etc/passwd"),
        lambda d: d["files"][0].update(path="a/./b"),
        lambda d: d["files"][0].update(map="xyz"),
        lambda d: d["files"][0].update(size="10"),
        lambda d: d["files"][0].update(type="device"),
        lambda d: d["files"].append(dict(d["files"][1])),
        lambda d: d.update(tags=[1]),
        lambda d: d.update(parent="nope"),
    ],
)
def test_malformed_manifests_rejected(mutate) -> None:  # type: ignore[no-untyped-def]
    import json

    d = json.loads(_snap().encode())
    mutate(d)
    with pytest.raises(IntegrityError):
        decode_snapshot(json.dumps(d).encode(), "snapshot X")


def test_manifest_not_json() -> None:
    with pytest.raises(IntegrityError, match="snapshot Y"):
        decode_snapshot(b"{not json", "snapshot Y")


@pytest.mark.parametrize("p", ["", "/x", "..", "a/../b", "a//b", "a\\b", "./a"])
def test_check_relpath(p: str) -> None:
    with pytest.raises(StoreError):
        check_relpath(p)


# ---------------------------------------------------------------- policy
def _versions(n: int, host: str = "h", step_s: int = 3600) -> list[Version]:
    return [Version(host, i + 1, i * step_s * 10**9, f"{i:064x}") for i in range(n)]


def test_keep_last() -> None:
    vs = _versions(5) + _versions(2, "g")
    keep, forget = apply_policy(vs, Policy(keep_last=2), now_ns=10**18)
    assert [(v.host, v.version) for v in keep] == [("g", 1), ("g", 2), ("h", 4), ("h", 5)]
    assert [v.version for v in forget] == [1, 2, 3]


def test_keep_within_always_keeps_latest() -> None:
    vs = _versions(5)
    now = 4 * 3600 * 10**9
    keep, forget = apply_policy(vs, Policy(keep_within_s=2 * 3600), now_ns=now)
    assert [v.version for v in keep] == [3, 4, 5]
    keep, _ = apply_policy(vs, Policy(keep_within_s=1), now_ns=10**20)
    assert [v.version for v in keep] == [5]
    assert len(forget) == 2


def test_policy_errors_and_durations() -> None:
    with pytest.raises(StoreError):
        Policy()
    with pytest.raises(StoreError):
        Policy(keep_last=0)
    assert parse_duration("1d12h") == 36 * 3600
    assert parse_duration("90s") == 90
    with pytest.raises(StoreError):
        parse_duration("soon")


# ---------------------------------------------------------------- diff
def test_diff_snapshots() -> None:
    m1 = encode_extent_map([(False, 0, 10, "a" * 64), (True, 10, 5, ""), (False, 15, 10, "b" * 64)])
    m2 = encode_extent_map([(False, 0, 10, "a" * 64), (True, 10, 5, ""), (False, 15, 10, "c" * 64)])
    maps = {"1" * 64: decode_extent_map(m1), "2" * 64: decode_extent_map(m2)}
    assert changed_bytes(maps["1" * 64], maps["2" * 64]) == 10
    a = Snapshot(
        "h",
        1,
        (FileEntry("f", "file", 0o644, 25, 0, "pages", "1" * 64), FileEntry("gone", "dir", 0o755)),
        meta={"k": "1"},
    )
    b = Snapshot(
        "h",
        2,
        (
            FileEntry("f", "file", 0o644, 25, 0, "pages", "2" * 64),
            FileEntry("new", "symlink", 0o777, target="f"),
        ),
        meta={"k": "2"},
    )
    d = diff_snapshots(a, b, maps.__getitem__)
    assert [(c.path, c.kind) for c in d.changes] == [
        ("f", "modified"),
        ("gone", "removed"),
        ("new", "added"),
    ]
    assert d.changed_bytes == 10 and d.meta_changes == {"k": ("1", "2")}


def test_extent_map_offsets() -> None:
    em = decode_extent_map(
        encode_extent_map([(False, 0, 10, "a" * 64), (True, 9, 5, ""), (False, 7, 3, "b" * 64)])
    )
    assert em.offsets().tolist() == [0, 10, 15] and em.size == 18
    empty = decode_extent_map(encode_extent_map([]))
    assert empty.offsets().tolist() == [] and empty.size == 0 and len(empty) == 0
