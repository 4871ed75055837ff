"""The consistent cut against a typed fake engine: order, and unfreeze in every path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from persona.capture.cut import Member, consistent_cut, plan_cut
from persona.errors import CaptureError

M = [Member("p", "h-pause", "pause"), Member("r", "h-redis", "redis"),
     Member("a", "h-api", "api"), Member("w", "h-worker", "worker")]


@dataclass
class FakeEngine:
    """Tracks container states; can fail a chosen call to exercise fault paths."""

    states: dict[str, str] = field(default_factory=lambda: {m.cid: "running" for m in M})
    calls: list[str] = field(default_factory=list)
    fail_checkpoint: str | None = None
    fail_pause: str | None = None
    fail_unpause: str | None = None
    exit_during_checkpoint: str | None = None

    def pause(self, cid: str) -> None:
        self.calls.append(f"pause {cid}")
        if cid == self.fail_pause:
            self.states[cid] = "paused"  # paused, then the call errored
            raise RuntimeError("pause timed out")
        self.states[cid] = "paused"

    def unpause(self, cid: str) -> None:
        self.calls.append(f"unpause {cid}")
        if self.states[cid] != "paused":
            raise RuntimeError(f"{cid} is not paused")
        if cid == self.fail_unpause:
            raise RuntimeError("engine hiccup")
        self.states[cid] = "running"

    def state(self, cid: str) -> str:
        return self.states[cid]

    def checkpoint(self, cid: str, name: str, directory: str) -> None:
        self.calls.append(f"checkpoint {cid}")
        assert all(s == "paused" for s in self.states.values() if s != "exited"), \
            "checkpoint while some member runs: the cut is not consistent"
        if cid == self.exit_during_checkpoint:
            self.states[cid] = "exited"
            raise RuntimeError("container exited")
        if cid == self.fail_checkpoint:
            raise RuntimeError("criu dump failed")
        (Path(directory) / name).mkdir(parents=True)
        (Path(directory) / name / "pages-1.img").write_bytes(b"\0" * 4096)


def test_plan_freezes_clients_first_and_skips_pause_dump() -> None:
    p = plan_cut(M)
    assert [m.role for m in p.freeze] == ["api", "worker", "redis", "pause"]
    assert "pause" not in [m.role for m in p.dump]
    assert p.thaw == tuple(reversed(p.freeze))
    with pytest.raises(CaptureError, match="no containers"):
        plan_cut([])


@pytest.mark.parametrize("parallel", [False, True])
def test_cut_success_leaves_everything_running(tmp_path: Path, parallel: bool) -> None:
    e = FakeEngine()
    r = consistent_cut(e, plan_cut(M), tmp_path / "ck", "c1", parallel=parallel)
    assert set(e.states.values()) == {"running"}
    assert set(r.dump_ms) == {"h-redis", "h-api", "h-worker"}
    assert (tmp_path / "ck" / "h-redis" / "c1" / "pages-1.img").exists()
    first_ck = next(i for i, c in enumerate(e.calls) if c.startswith("checkpoint"))
    assert sum(c.startswith("pause") for c in e.calls[:first_ck]) == 4
    assert r.freeze_ms >= r.pause_ms >= 0


@pytest.mark.parametrize("fault", ["fail_checkpoint", "exit_during_checkpoint", "fail_pause"])
@pytest.mark.parametrize("parallel", [False, True])
def test_cut_failure_unfreezes_and_leaves_nothing(tmp_path: Path, fault: str, parallel: bool) -> None:
    e = FakeEngine(**{fault: "w"})
    with pytest.raises(CaptureError):
        consistent_cut(e, plan_cut(M), tmp_path / "ck", "c1", parallel=parallel)
    assert "paused" not in e.states.values(), e.states
    assert not (tmp_path / "ck").exists(), "a failed cut left checkpoint data behind"


def test_cut_refuses_a_member_that_is_not_running(tmp_path: Path) -> None:
    e = FakeEngine()
    e.states["r"] = "exited"
    with pytest.raises(CaptureError, match="h-redis is exited"):
        consistent_cut(e, plan_cut(M), tmp_path / "ck", "c1")
    assert "paused" not in e.states.values()
    assert not any(c.startswith("checkpoint") for c in e.calls)


def test_unpause_failure_is_reported_and_others_still_thawed(tmp_path: Path) -> None:
    e = FakeEngine(fail_unpause="r")
    with pytest.raises(CaptureError, match="could not unpause h-redis"):
        consistent_cut(e, plan_cut(M), tmp_path / "ck", "c1")
    assert [cid for cid, s in e.states.items() if s == "paused"] == ["r"]


def test_keyboard_interrupt_mid_cut_still_thaws(tmp_path: Path) -> None:
    class Interrupting(FakeEngine):
        def checkpoint(self, cid: str, name: str, directory: str) -> None:
            raise KeyboardInterrupt

    e = Interrupting()
    with pytest.raises(KeyboardInterrupt):
        consistent_cut(e, plan_cut(M), tmp_path / "ck", "c1")
    assert "paused" not in e.states.values()
