"""Capture against the real lab: every facet, continuous capture, and the fault paths
(host never left frozen, no partial version visible)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from persona.capture.run import CaptureOptions, capture_host
from persona.capture.sink import open_sink
from persona.errors import CaptureError
from persona.lab import demo, spec
from persona.model import load_manifest
from persona.store import Repository, restore, verify

pytestmark = [pytest.mark.live, pytest.mark.slow]
CLI = [str(Path(sys.executable).parent / "persona")]


def nothing_paused(client: Any, host: str) -> None:
    for c in demo.host_containers(client, host):
        assert client.inspect_container(c["Id"])["State"]["Paused"] is False, c["Names"]


def visible_versions(root: Path, host: str) -> list[str]:
    """Versions of ``host`` that a reader of the store at ``root`` sees (none: no store yet)."""
    if not (root / "config").exists():
        return []
    return [str(v.version) for v in Repository.open(str(root)).list_versions(host)]


def test_capture_cli_every_facet(lab: Any, test_host: str, tmp_path: Path) -> None:
    out = tmp_path / "cap.json"
    r = subprocess.run([*CLI, "capture", "--host", test_host, "--store", str(tmp_path / "st"),
                        "--json", str(out)], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "freeze" in r.stdout and "process" in r.stdout
    s = json.loads(out.read_text())
    assert s["host"] == test_host and s["freeze_ms"] > 0
    comps = {c["name"]: c for c in s["components"]}
    assert {c["kind"] for c in s["components"]} >= {"process", "filesystem", "network", "config"}
    assert "redis.process" in comps["api.process"]["depends_on"]
    assert "redis.process" in comps["worker.process"]["depends_on"]
    assert "no loadable modules" in s["kernel_modules"]
    assert visible_versions(tmp_path / "st", test_host) == [s["version"]] == ["1"]
    # the version is in the real store: its metadata is queryable, it restores on its own
    repo = Repository.open(str(tmp_path / "st"))
    v = repo.resolve(test_host, "latest")
    snap = repo.load_snapshot(v.snapshot)
    assert "capture" in snap.tags and snap.host == test_host
    assert snap.meta["criu"].startswith("4.") and snap.meta["kernel"] == os.uname().release
    assert snap.meta["app.api"].startswith("demo-api/") and snap.meta["docker"]
    assert "redis.process" in snap.meta["needs.api.process"].split(",")
    assert int(snap.meta["size.total"]) == s["total_bytes"]
    assert float(snap.meta["freeze_ms"]) == s["freeze_ms"]
    vdir = tmp_path / "restored"
    restore(repo, v, vdir)
    m = load_manifest(vdir / "manifest.json")
    assert json.loads((vdir / "capture.json").read_text())["capture_id"] == s["capture_id"]
    api = m.component("api.process")
    assert api.attributes["memory_pages"] > 100
    assert any(x["dst_port"] == 6379 for x in api.attributes["inet_sockets"])
    assert api.resources is not None and api.resources.cpu_limit_cores == 0.5
    assert api.resources.memory_limit_bytes == 128 << 20 and api.resources.samples >= 2
    # the fast cut ran as designed: CRIU used the kdat cache and skipped its own network lock
    assert s["cut"] == {"freeze": "freezer", "dump": "gated", "parallel": True,
                        "files_in_cut": True}
    assert s["timings"]["netlock_ms"] > 0 and s["timings"]["prepare_ms"] > 0
    log = (vdir / api.data[0] / "criu-dump.log").read_text()
    assert "Loaded kdat cache" in log and "iptables" not in log
    assert set(api.attributes["criu_phases_ms"]) >= {"memory", "cgroups_mounts_ns"}
    cfg = m.component("api.config")
    assert cfg.attributes["live"]["pool"]["size"] == 4
    assert "/etc/demo/api.json" in cfg.attributes["files"]
    net = m.component("network")
    assert any(a["addr"].startswith("10.77.0.") for a in net.attributes["addresses"])
    assert "127.0.0.1:6379" in net.attributes["listening"]
    for c in m.components:
        for d in c.data:
            assert (vdir / d).exists(), d
        assert c.size_bytes > 0 or c.kind == "config"
    assert (vdir / "cpuinfo.img").exists() and m.host.criu_version
    assert not verify(repo, read_data=True).errors
    nothing_paused(lab, test_host)
    # the host keeps serving after the capture
    body = json.loads(demo.http_get_in_netns(demo.netns_pid(lab, test_host),
                                             "http://127.0.0.1:8080/item/3"))
    assert body["key"] == "3"


def test_watch_captures_on_interval_and_config_change(lab: Any, test_host: str,
                                                      tmp_path: Path) -> None:
    log = tmp_path / "watch.jsonl"
    p = subprocess.Popen([*CLI, "watch", "--host", test_host, "--interval", "1h", "--count", "2",
                          "--store", str(tmp_path / "st"), "--log", str(log)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (log.exists() and log.read_text().strip()):
            time.sleep(0.5)
        assert log.exists(), "watch made no first capture"
        api = next(c for c in demo.host_containers(lab, test_host)
                   if c["Labels"][spec.ROLE_LABEL] == "api")
        pid = lab.inspect_container(api["Id"])["State"]["Pid"]
        cfg = Path(f"/proc/{pid}/root/etc/demo/api.json")
        d = json.loads(cfg.read_text())
        d["pool_size"] = 6
        cfg.write_text(json.dumps(d))
        p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["reason"].split(":")[0] for r in recs] == ["interval", "config"], recs
    assert all(r["version"] and r["freeze_ms"] > 0 for r in recs)
    assert visible_versions(tmp_path / "st", test_host) == ["1", "2"]
    repo = Repository.open(str(tmp_path / "st"))
    tags = [repo.load_snapshot(v.snapshot).tags for v in repo.list_versions(test_host)]
    assert tags == [("capture", "trigger:interval"), ("capture", "trigger:config")]
    time.sleep(1.5)
    assert demo.introspect(lab, test_host)["pool"]["size"] == 6  # the app applied it


def test_watch_captures_on_engine_event(lab: Any, test_host: str, tmp_path: Path) -> None:
    """An engine event about one of the host's containers (here `docker update --cpus 0.75`
    of the api) triggers a capture, and that version already sees the new limit."""
    log = tmp_path / "watch.jsonl"
    st = tmp_path / "st"
    p = subprocess.Popen([*CLI, "watch", "--host", test_host, "--interval", "1h", "--count", "2",
                          "--store", str(st), "--log", str(log)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (log.exists() and log.read_text().strip()):
            time.sleep(0.5)
        assert log.exists(), "watch made no first capture"
        api = next(c["Id"] for c in demo.host_containers(lab, test_host)
                   if c["Labels"][spec.ROLE_LABEL] == "api")
        res = lab._post_json(lab._url("/containers/{0}/update", api),
                             data={"NanoCpus": 750_000_000})
        lab._raise_for_status(res)
        p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["reason"].split(":")[0] for r in recs] == ["interval", "event"], recs
    assert recs[1]["reason"] == f"event:update persona-{test_host}-api" and recs[1]["version"]
    repo = Repository.open(str(st))
    v1, v2 = repo.list_versions(test_host)
    assert repo.load_snapshot(v2.snapshot).tags == ("capture", "trigger:event")
    limits = []
    for v in (v1, v2):
        restore(repo, v, tmp_path / f"v{v.version}")
        res_ = load_manifest(tmp_path / f"v{v.version}" / "manifest.json").component(
            "api.process").resources
        assert res_ is not None
        limits.append(res_.cpu_limit_cores)
    assert limits == [0.5, 0.75]


def test_kdat_cache_is_recomputed_for_a_new_boot_id() -> None:
    """A cache tagged with another boot (maybe another kernel) is replaced by one from
    `criu check`, which CRIU then loads."""
    from persona.lab import criu_cache

    marker = Path("/run/persona-criu-kdat.bootid")
    marker.write_text("another-boot\n")
    assert "computed" in criu_cache.ensure_kdat_cache()
    assert marker.read_text().strip() == criu_cache.BOOT_ID.read_text().strip()
    assert Path("/run/criu.kdat").stat().st_size > 100
    assert "present for this boot" in criu_cache.ensure_kdat_cache()


def test_unknown_host_and_engine_down_are_clear_errors() -> None:
    r = subprocess.run([*CLI, "capture", "--host", "no-such-host"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown host 'no-such-host'" in r.stderr
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    r = subprocess.run([*CLI, "capture", "--host", "demo"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "Docker engine is not running" in r.stderr
    assert "persona lab up" in r.stderr


def test_criu_too_old_refused_before_freezing(lab: Any, test_host: str, tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "criu").write_text("#!/bin/sh\necho 'Version: 3.17.1'\n")
    (fake / "criu").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    r = subprocess.run([*CLI, "capture", "--host", test_host, "--store", str(tmp_path / "st")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "criu 3.17.1 is too old" in r.stderr
    (fake / "criu").unlink()
    env["PATH"] = str(fake)  # criu missing entirely (python found by absolute path)
    r = subprocess.run([*CLI, "capture", "--host", test_host, "--store", str(tmp_path / "st")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "criu is not on PATH" in r.stderr, r.stderr
    assert visible_versions(tmp_path / "st", test_host) == []
    nothing_paused(lab, test_host)


def test_container_exiting_mid_capture(lab: Any, test_host: str, tmp_path: Path) -> None:
    worker = f"persona-{test_host}-worker"
    threading.Timer(0.7, lambda: lab.kill(worker)).start()
    sink = open_sink(str(tmp_path / "st"), tmp_root=tmp_path / "tmp")
    with pytest.raises(CaptureError, match="worker"):
        capture_host(lab, test_host, sink, CaptureOptions(window_s=2.5))
    nothing_paused(lab, test_host)
    assert visible_versions(tmp_path / "st", test_host) == []
    assert os.listdir(tmp_path / "tmp") == [], "temp capture folder left behind"


def test_disk_full_leaves_no_version_and_no_frozen_host(lab: Any, test_host: str,
                                                       tmp_path: Path) -> None:
    """The store's disk fills up while the version is written: no visible version, the
    store verifies clean, and the host was unfrozen long before."""
    store = tmp_path / "small"
    store.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(store)], check=True)
    try:
        sink = open_sink(str(store), tmp_root=tmp_path / "tmp")
        with pytest.raises(CaptureError, match="disk full"):
            capture_host(lab, test_host, sink, CaptureOptions(window_s=0.5))
        nothing_paused(lab, test_host)
        assert visible_versions(store, test_host) == []
        assert not verify(Repository.open(str(store))).errors
        assert os.listdir(tmp_path / "tmp") == [], "temp capture folder left behind"
    finally:
        subprocess.run(["umount", str(store)], check=True)
