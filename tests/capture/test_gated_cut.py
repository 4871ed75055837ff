"""The gated cut against a typed fake: dumps start before the freeze and are held at the gate;
the host is frozen only once all wait there; thaw only after every released dump has ended;
every fault path thaws and leaves no checkpoint folder or gate behind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from persona.capture.cut import Member, gated_cut, plan_cut
from persona.errors import CaptureError

M = [Member("p", "h-pause", "pause"), Member("r", "h-redis", "redis"),
     Member("a", "h-api", "api"), Member("w", "h-worker", "worker")]


@dataclass
class FakeDump:
    eng: FakeGatedEngine
    cid: str
    directory: Path
    name: str
    polls_until_ready: int = 2
    released: bool | None = None
    done: bool = False

    def ready(self) -> bool:
        if self.cid == self.eng.fail_before_gate:
            raise CaptureError(f"runc checkpoint of {self.cid} failed: criu missing")
        self.polls_until_ready -= 1
        return self.polls_until_ready <= 0

    def release(self, go: bool) -> None:
        if self.released is not None:
            return
        self.released = go
        self.eng.calls.append(f"{'go' if go else 'abort'} {self.cid}")
        if go:
            assert all(s == "paused" for s in self.eng.states.values()), \
                "a dump was released while part of the host still runs: not a consistent cut"

    def wait(self) -> None:
        if not self.released:
            raise CaptureError(f"{self.cid} aborted at the gate")
        if not self.done:
            self.done = True
            self.eng.calls.append(f"done {self.cid}")
            if self.cid == self.eng.fail_dump:
                raise CaptureError(f"criu dump of {self.cid} failed")
            (self.directory / self.name).mkdir(parents=True)
            (self.directory / self.name / "pages-1.img").write_bytes(b"\1" * 4096)


@dataclass
class FakeGatedEngine:
    states: dict[str, str] = field(default_factory=lambda: {m.cid: "running" for m in M})
    calls: list[str] = field(default_factory=list)
    dumps: dict[str, FakeDump] = field(default_factory=dict)
    fail_before_gate: str | None = None
    fail_dump: str | None = None
    gate: Path | None = None

    def pause(self, cid: str) -> None:
        self.calls.append(f"pause {cid}")
        self.states[cid] = "paused"

    def unpause(self, cid: str) -> None:
        self.calls.append(f"unpause {cid}")
        assert all(d.done or not d.released for d in self.dumps.values()), \
            "thawed while a released dump still runs (it would re-freeze the container)"
        self.states[cid] = "running"

    def state(self, cid: str) -> str:
        return self.states[cid]

    def checkpoint(self, cid: str, name: str, directory: str) -> None:
        raise AssertionError("the gated cut starts dumps with start_checkpoint")

    def open_gate(self, gate: Path) -> None:
        self.gate = gate

    def lock_network(self, netns_pid: int) -> Callable[[], None]:
        assert all(s == "running" for s in self.states.values()), "lock is outside the window"
        self.calls.append(f"lock {netns_pid}")

        def unlock() -> None:
            assert all(s != "paused" for s in self.states.values()), "unlock before the thaw"
            self.calls.append(f"unlock {netns_pid}")

        return unlock

    def start_checkpoint(self, cid: str, name: str, directory: str) -> FakeDump:
        assert self.gate is not None and self.gate.is_dir()
        assert all(s == "running" for s in self.states.values()), "started after the freeze"
        self.calls.append(f"start {cid}")
        d = FakeDump(self, cid, Path(directory), name)
        self.dumps[cid] = d
        return d


def test_dumps_start_before_the_freeze_and_run_after_it(tmp_path: Path) -> None:
    eng = FakeGatedEngine()
    inside_ran: list[dict[str, str]] = []
    cut = gated_cut(eng, plan_cut(M), tmp_path / "ck", "c1",
                    inside=lambda: inside_ran.append(dict(eng.states)))
    starts = [i for i, c in enumerate(eng.calls) if c.startswith("start")]
    pauses = [i for i, c in enumerate(eng.calls) if c.startswith("pause")]
    gos = [i for i, c in enumerate(eng.calls) if c.startswith("go")]
    thaws = [i for i, c in enumerate(eng.calls) if c.startswith("unpause")]
    assert max(starts) < min(pauses) and max(pauses) < min(gos) and max(gos) < min(thaws)
    assert len(pauses) == 4 and len(thaws) == 4 and len(gos) == 3  # the pause ctr isn't dumped
    assert all(s == "running" for s in eng.states.values())
    assert inside_ran == [{m.cid: "paused" for m in M}], "inside must run while all are frozen"
    assert set(cut.dump_ms) == {"h-redis", "h-api", "h-worker"} and cut.prepare_ms >= 0
    assert (tmp_path / "ck" / "h-api" / "c1" / "pages-1.img").exists()
    assert not list(tmp_path.glob(".gate-*")), "gate folder left behind"


def test_a_dump_failing_before_the_gate_freezes_nothing(tmp_path: Path) -> None:
    eng = FakeGatedEngine(fail_before_gate="a")
    with pytest.raises(CaptureError, match="criu missing"):
        gated_cut(eng, plan_cut(M), tmp_path / "ck", "c1")
    assert not any(c.startswith("pause") for c in eng.calls)
    assert {c for c in eng.calls if c.startswith("abort")} == {"abort r", "abort a", "abort w"}
    assert not (tmp_path / "ck").exists() and not list(tmp_path.glob(".gate-*"))


def test_a_failed_dump_thaws_only_after_the_others_end(tmp_path: Path) -> None:
    eng = FakeGatedEngine(fail_dump="r")
    with pytest.raises(CaptureError, match="criu dump of r failed"):
        gated_cut(eng, plan_cut(M), tmp_path / "ck", "c1")
    assert all(s == "running" for s in eng.states.values())
    assert all(d.done for d in eng.dumps.values())  # the fake asserts none was thawed early
    assert not (tmp_path / "ck").exists()


def test_failure_inside_the_cut_thaws_and_cleans_up(tmp_path: Path) -> None:
    eng = FakeGatedEngine()

    def boom() -> None:
        raise OSError("disk full")

    with pytest.raises(CaptureError, match="reading files inside the cut failed: disk full"):
        gated_cut(eng, plan_cut(M), tmp_path / "ck", "c1", inside=boom)
    assert all(s == "running" for s in eng.states.values())
    assert not (tmp_path / "ck").exists()


def test_a_container_that_stopped_is_not_frozen_and_nothing_dumps(tmp_path: Path) -> None:
    eng = FakeGatedEngine()
    eng.states["w"] = "exited"
    with pytest.raises(CaptureError, match="h-worker is exited"):
        gated_cut(eng, plan_cut(M), tmp_path / "ck", "c1")
    assert not any(c.startswith(("start", "go")) for c in eng.calls)
    assert all(s in ("running", "exited") for s in eng.states.values())


def test_network_lock_wraps_the_window_in_every_path(tmp_path: Path) -> None:
    eng = FakeGatedEngine()
    gated_cut(eng, plan_cut(M), tmp_path / "ck", "c1", netns_pid=42)
    lock, unlock = eng.calls.index("lock 42"), eng.calls.index("unlock 42")
    assert lock < min(i for i, c in enumerate(eng.calls) if c.startswith("pause"))
    assert unlock > max(i for i, c in enumerate(eng.calls) if c.startswith("unpause"))
    eng = FakeGatedEngine(fail_dump="a")
    with pytest.raises(CaptureError):
        gated_cut(eng, plan_cut(M), tmp_path / "ck2", "c1", netns_pid=42)
    assert eng.calls[-1] == "unlock 42"
    eng = FakeGatedEngine(fail_before_gate="a")  # failing before the lock: nothing to undo
    with pytest.raises(CaptureError):
        gated_cut(eng, plan_cut(M), tmp_path / "ck3", "c1", netns_pid=42)
    assert not any(c.startswith(("lock", "unlock")) for c in eng.calls)
