"""The fast cut route's pure parts and its freezer adapter against cgroup files in a temp
folder laid out like cgroup v1 (no daemon needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona.capture.cut import Member, consistent_cut, plan_cut
from persona.capture.docker_engine import FastEngine, freezer_state_file, runc_checkpoint_cmd
from persona.errors import CaptureError
from persona.lab import criu_cache


class FakeClient:
    """The two Engine API calls FastEngine makes besides the freezer (inspect, checkpoint)."""

    def __init__(self, cids: list[str]) -> None:
        self.running = set(cids)

    def inspect_container(self, cid: str) -> dict[str, object]:
        return {"State": {"Status": "running" if cid in self.running else "exited",
                          "Paused": False}}


def cgroups(tmp_path: Path, cids: list[str]) -> Path:
    for cid in cids:
        d = tmp_path / "freezer" / "docker" / cid
        d.mkdir(parents=True)
        (d / "freezer.state").write_text("THAWED\n")
    return tmp_path


def test_runc_checkpoint_leaves_the_container_running_with_tcp() -> None:
    cmd = runc_checkpoint_cmd("abc", "/i", "/w")
    assert cmd[:4] == ["runc", "--root", "/run/docker/runtime-runc/moby", "checkpoint"]
    assert "--leave-running" in cmd and "--tcp-established" in cmd and cmd[-1] == "abc"
    assert cmd[cmd.index("--image-path") + 1] == "/i" and cmd[cmd.index("--work-path") + 1] == "/w"


def test_freezer_engine_freezes_and_thaws_through_the_cgroup(tmp_path: Path) -> None:
    root = cgroups(tmp_path, ["a", "b"])
    eng = FastEngine(FakeClient(["a", "b"]), "freezer", "runc", cgroup_root=root)
    eng.pause("a")
    assert freezer_state_file("a", root).read_text() == "FROZEN"
    assert eng.state("a") == "paused" and eng.state("b") == "running"
    eng.unpause("a")
    assert eng.state("a") == "running"


def test_missing_freezer_is_a_clear_error(tmp_path: Path) -> None:
    eng = FastEngine(FakeClient(["a"]), "freezer", "runc", cgroup_root=tmp_path)
    with pytest.raises(CaptureError, match=r"no cgroup v1 freezer.*--cut engine"):
        eng.pause("a")


def test_freezer_with_engine_checkpoints_is_refused() -> None:
    with pytest.raises(CaptureError, match="Engine's own pause"):
        FastEngine(FakeClient([]), "freezer", "engine")
    with pytest.raises(CaptureError, match="unknown dump route"):
        FastEngine(FakeClient([]), "freezer", "criu")


def test_failed_runc_dump_thaws_every_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    cids = ["p", "r", "a"]
    root = cgroups(tmp_path / "cg", cids)
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))  # runc missing -> the dump fails
    eng = FastEngine(FakeClient(cids), "freezer", "runc", cgroup_root=root)
    plan = plan_cut([Member("p", "h-pause", "pause"), Member("r", "h-redis", "redis"),
                     Member("a", "h-api", "api")])
    with pytest.raises(CaptureError, match="runc is not on PATH"):
        consistent_cut(eng, plan, tmp_path / "ck", "c1", parallel=True)
    assert [freezer_state_file(c, root).read_text() for c in cids] == ["THAWED"] * 3
    assert not (tmp_path / "ck").exists()


def test_kdat_cache_kept_for_the_same_boot(tmp_path: Path) -> None:
    boot = criu_cache.BOOT_ID.read_text().strip()
    (tmp_path / "criu.kdat").write_bytes(b"x" * 16)
    (tmp_path / "persona-criu-kdat.bootid").write_text(boot + "\n")
    assert "present for this boot" in criu_cache.ensure_kdat_cache(tmp_path)
    assert (tmp_path / "criu.kdat").read_bytes() == b"x" * 16


FAKE_RUNC = """#!/bin/sh
# stands in for runc+CRIU: runs CRIU's pre-dump action script from CRIU_CONFIG_FILE, then
# writes an image and a dump.log like CRIU's
while [ $# -gt 0 ]; do
  case "$1" in --image-path) img=$2; shift;; --work-path) work=$2; shift;; esac; shift
done
script=$(sed -n 's/^action-script //p' "$CRIU_CONFIG_FILE")
grep -qx 'network-lock skip' "$CRIU_CONFIG_FILE" || { echo "no network-lock skip" >&2; exit 3; }
printf '(00.000100) Running pre-dump scripts\\n' > "$work/dump.log"
CRTOOLS_SCRIPT_ACTION=pre-dump CRTOOLS_INIT_PID=4242 "$script" || { echo "pre-dump script failed" >&2; exit 1; }
printf 'x' > "$img/pages-1.img"
printf '(00.002000) Seized task 1\\n(00.003000) Dumping finished successfully\\n' >> "$work/dump.log"
"""


class PidClient(FakeClient):
    def inspect_container(self, cid: str) -> dict[str, object]:
        return {"State": {"Status": "running", "Paused": False, "Pid": 4242}}


def gated_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import os

    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "runc").write_text(FAKE_RUNC)
    (bin_ / "runc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    gate = tmp_path / "gate"
    gate.mkdir()
    return gate


def test_gated_dump_waits_at_the_gate_until_released(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from persona.capture.docker_engine import CRIU_LOG_NAME, GatedEngine

    gate = gated_engine(tmp_path, monkeypatch)
    eng = GatedEngine(PidClient(["a"]))
    eng.open_gate(gate)
    d = eng.start_checkpoint("a", "c1", str(tmp_path / "ck"))
    deadline = time.monotonic() + 10
    while not d.ready():
        assert time.monotonic() < deadline, "never reached the gate"
        time.sleep(0.01)
    time.sleep(0.2)
    assert d.proc.poll() is None, "the dump did not wait at the gate"
    assert not (tmp_path / "ck" / "c1" / "pages-1.img").exists()
    d.release(True)
    d.wait()
    assert (tmp_path / "ck" / "c1" / "pages-1.img").read_text() == "x"
    assert "Dumping finished" in (tmp_path / "ck" / "c1" / CRIU_LOG_NAME).read_text()


def test_gated_dump_aborted_at_the_gate_fails_untouched(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from persona.capture.docker_engine import GatedEngine

    gate = gated_engine(tmp_path, monkeypatch)
    eng = GatedEngine(PidClient(["a"]))
    eng.open_gate(gate)
    d = eng.start_checkpoint("a", "c1", str(tmp_path / "ck"))
    deadline = time.monotonic() + 10
    while not d.ready():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    d.release(False)
    with pytest.raises(CaptureError, match="pre-dump script failed"):
        d.wait()
    assert not (tmp_path / "ck" / "c1" / "pages-1.img").exists()
