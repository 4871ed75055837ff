"""Captures go into the persona store: one version per capture, metadata filled, and a failed
write leaves no visible version and no temp folder (no daemon needed)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from test_assemble import host_obs

from persona.capture.assemble import build_manifest, summary_json
from persona.capture.run import version_meta
from persona.capture.sink import StoreSink, VersionInfo, open_sink
from persona.errors import CaptureError, StoreError
from persona.store import Repository, restore
from persona.store.memory import MemoryBackend


class FailingBackend(MemoryBackend):
    """A memory backend whose writes of one kind of object fail (like a full disk)."""

    def __init__(self, fail_prefix: str) -> None:
        super().__init__("failing-" + secrets.token_hex(4))
        self.fail_prefix = fail_prefix
        self.armed = False

    def put(self, name: str, data: bytes) -> None:
        if self.armed and name.startswith(self.fail_prefix):
            raise StoreError(f"{name}: disk full")
        super().put(name, data)


def staged(sink: StoreSink, host: str, payload: bytes) -> Path:
    d = sink.begin(host)
    (d / "process" / "redis" / "checkpoint").mkdir(parents=True)
    (d / "process" / "redis" / "checkpoint" / "pages-1.img").write_bytes(payload)
    (d / "manifest.json").write_text("{}")
    return d


def test_each_capture_is_a_new_store_version_with_metadata(tmp_path: Path) -> None:
    sink = open_sink(str(tmp_path / "store"), tmp_root=tmp_path / "tmp")
    info = VersionInfo(time_ns=1_700_000_000_000_000_000, tags=("capture", "trigger:interval"),
                       meta={"kernel": "6.18", "criu": "4.2.1"})
    d1 = staged(sink, "h", b"\1" * 8192)
    assert sink.publish("h", d1, info) == "1"
    assert not d1.exists(), "temp folder left behind"
    d2 = staged(sink, "h", b"\2" * 8192)
    assert sink.publish("h", d2, info) == "2"
    assert sink.versions("h") == ["1", "2"]
    repo = Repository.open(str(tmp_path / "store"))  # an independent reader sees both
    v = repo.resolve("h", "latest")
    snap = repo.load_snapshot(v.snapshot)
    assert snap.meta == {"kernel": "6.18", "criu": "4.2.1"}
    assert snap.tags == ("capture", "trigger:interval") and snap.time_ns == info.time_ns
    restore(repo, v, tmp_path / "out")
    assert (tmp_path / "out" / "process/redis/checkpoint/pages-1.img").read_bytes() == b"\2" * 8192
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("fail_prefix", ["data/", "index/", "snapshots/", "refs/"])
def test_failed_write_leaves_no_visible_version(tmp_path: Path, fail_prefix: str) -> None:
    backend = FailingBackend(fail_prefix)
    sink = StoreSink(backend, tmp_root=tmp_path / "tmp")
    sink.publish("h", staged(sink, "h", b"\1" * 8192), VersionInfo(time_ns=1))
    backend.armed = True
    d = staged(sink, "h", b"\3" * 8192)
    with pytest.raises(CaptureError, match="no version was added"):
        sink.publish("h", d, VersionInfo(time_ns=2))
    assert not d.exists()
    assert sink.versions("h") == ["1"]


def test_bad_store_url_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="store ftp://x"):
        open_sink("ftp://x/y", tmp_root=tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("not a store")
    with pytest.raises(CaptureError, match="not empty"):
        open_sink(str(tmp_path / "junk"), tmp_root=tmp_path)


def test_version_meta_covers_host_apps_dependencies_and_sizes() -> None:
    m = build_manifest(host_obs())
    s = summary_json(m, "", 123.4, "mem", {})
    meta = version_meta(m, s, "cid-1", "20.10")
    assert meta["kernel"] == "6.18" and meta["criu"] == "4.2.1" and meta["docker"] == "20.10"
    assert meta["freeze_ms"] == "123.4" and meta["capture_id"] == "cid-1"
    assert meta["captured_at"] == "2026-01-01T00:00:00Z"
    assert meta["app.api"] == "img"
    assert "redis.process" in meta["needs.api.process"].split(",")
    assert meta["size.api.process"] == "12345"
    assert int(meta["size.total"]) == s["total_bytes"] > 0
    assert all(k and "=" not in k and isinstance(v, str) for k, v in meta.items())
