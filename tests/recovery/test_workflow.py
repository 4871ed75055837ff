"""The recovery workflow with typed fakes: version choice, rollback and retry, cold fallback,
phase timing, the adaptive record (SeedAdaptive's rules) and its persistence."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine, persona_dir

from persona.errors import RestoreError
from persona.model import PersonaManifest
from persona.provision.apply import ApplyOptions, sha256_tree
from persona.provision.warm import Check, WarmProof
from persona.recovery import adaptive
from persona.recovery.workflow import (
    CpuSample,
    RecoveryOptions,
    ValidationResult,
    candidates,
    make_plan,
    recover,
)

FIX = Path(__file__).parent.parent / "provision" / "fixtures" / "demo-manifest.json"


@dataclass
class FakeSource:
    root: Path
    vers: list[str]
    meta: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "fake://"

    def versions(self, host: str) -> list[str]:
        return list(self.vers)

    def fetch(self, host: str, version: str, dest: Path) -> Path:
        self.fetched.append(version)
        out = dest / version
        shutil.copytree(self.root, out)
        return out

    def read_meta(self, host: str, name: str) -> dict[str, Any] | None:
        return self.meta.get((host, name))

    def write_meta(self, host: str, name: str, data: dict[str, Any]) -> None:
        self.meta[(host, name)] = data


@dataclass
class FakeHooks:
    verdicts: list[bool]
    clock: list[float]
    usage_cores: float = 0.1
    throttled: float = 0.0
    validated: list[str] = field(default_factory=list)
    cpu_calls: int = 0
    ready_timeouts: list[float] = field(default_factory=list)

    def wait_ready(self, host: str, timeout_s: float) -> None:
        self.ready_timeouts.append(timeout_s)
        self.clock[0] += 0.5

    def prove_warm(self, manifest: PersonaManifest) -> WarmProof:
        return WarmProof(True, (Check("x", True, ""),))

    def cpu(self, cid: str) -> CpuSample:
        self.cpu_calls += 1
        k = self.cpu_calls // 4  # before (4 containers) then after
        return CpuSample(t=10.0 * k, usage_ns=int(self.usage_cores * 10e9 * k),
                         periods=100 * k, throttled=int(100 * k * self.throttled))

    def validate(self, manifest: PersonaManifest) -> ValidationResult:
        self.clock[0] += 2.0
        ok = self.verdicts.pop(0)
        self.validated.append("pass" if ok else "fail")
        return ValidationResult(ok, 90.0 if ok else 40.0, {"passed": ok},
                                () if ok else ("latency",))


@pytest.fixture
def src(tmp_path: Path) -> FakeSource:
    return FakeSource(persona_dir(tmp_path, FIX), ["1", "2", "3"])


def test_candidates_newest_valid_first_then_cold() -> None:
    assert candidates(["1", "2", "3"], [], 2, True) == ["3", "2", None]
    assert candidates(["1", "2", "3"], ["3"], 2, False) == ["2", "1"]
    assert candidates(["1", "2"], [], 5, True, pinned="1") == ["1", None]
    assert candidates(["1", "2"], [], 5, False, pinned="latest") == ["2"]
    with pytest.raises(RestoreError, match="version 9 not found"):
        candidates(["1"], [], 2, True, pinned="9")


def test_first_try_validated(src: FakeSource) -> None:
    clock = [100.0]
    e = FakeEngine()
    h = FakeHooks([True], clock)
    res = recover("rx61", src, e, h, RecoveryOptions(), t_failure=99.0, detect_s=0.7,
                  now=lambda: clock[0])
    assert res.validated and res.warm and len(res.attempts) == 1
    assert res.attempts[0].version == "3" and src.fetched == ["3"]
    assert res.phases["detect_s"] == 0.7 and res.phases["validate_s"] == pytest.approx(2.0)
    assert res.ttr_s == pytest.approx(2.5 + 1.0)  # from failure: ready 0.5 + validation 2
    assert set(e.containers.values()) == {"persona-rx61-pause", "persona-rx61-api",
                                          "persona-rx61-redis", "persona-rx61-worker"}
    d = res.to_dict()
    assert set(d) >= {"validated", "warm", "ttr_s", "phases", "verdict", "attempts"}
    assert set(d["phases"]) == {"detect_s", "retrieve_s", "provision_s", "apply_s", "validate_s"}


def test_failed_validation_rolls_back_and_retries_the_previous_version(src: FakeSource) -> None:
    clock = [0.0]
    e = FakeEngine()
    before = sha256_tree(src.root)
    res = recover("rx61", src, e, FakeHooks([False, True], clock), RecoveryOptions(), 0.0,
                  now=lambda: clock[0])
    assert res.validated
    assert [(a.version, a.outcome) for a in res.attempts] == [("3", "validation-failed"),
                                                              ("2", "validated")]
    assert res.attempts[0].trace is not None and res.attempts[0].trace.rolled_back
    assert len(e.containers) == 4  # only the second replacement is left
    assert sha256_tree(src.root) == before  # stored persona untouched
    rec = adaptive.AdaptiveRecord.from_dict(src.meta[("rx61", "adaptive")], "rx61")
    assert rec.bad_versions == ("3",)
    # and the next recovery skips the known-bad version
    e2 = FakeEngine()
    recover("rx61", src, e2, FakeHooks([True], clock), RecoveryOptions(), 0.0, now=lambda: clock[0])
    assert src.fetched[-1] == "2"


def test_restore_failures_fall_back_to_a_cold_start(src: FakeSource) -> None:
    clock = [0.0]
    e = FakeEngine(fail_restore={"persona-rx61-redis"})
    res = recover("rx61", src, e, FakeHooks([True], clock), RecoveryOptions(), 0.0,
                  now=lambda: clock[0])
    assert [(a.method, a.outcome) for a in res.attempts] == [
        ("persona", "restore-failed"), ("persona", "restore-failed"), ("cold-start", "validated")]
    assert res.validated and not res.warm
    assert not any(c[0] == "restore" for c in e.calls[-12:] if c[1] != "persona-rx61-redis")


def test_a_cold_start_gets_the_newest_disk_and_time_to_warm_up(src: FakeSource) -> None:
    """The cold start is the images plus the newest captured disk (its filesystem diffs and
    configs unpacked, processes started fresh), and its readiness wait covers the apps'
    warm-up (data load, index build), which a restore from a checkpoint does not have."""
    clock = [0.0]
    e = FakeEngine()
    hooks = FakeHooks([True], clock)
    res = recover("rx61", src, e, hooks, RecoveryOptions(policy="cold-start"), 0.0,
                  now=lambda: clock[0])
    (at,) = res.attempts
    assert at.method == "cold-start" and at.outcome == "validated" and res.validated
    assert at.trace is not None and at.trace.version == "disk of 3" and src.fetched == ["3"]
    assert any(c[0] == "extract" for c in e.calls) and not any(c[0] == "restore" for c in e.calls)
    assert hooks.ready_timeouts == [RecoveryOptions().cold_ready_timeout_s]
    assert RecoveryOptions().cold_ready_timeout_s > RecoveryOptions().ready_timeout_s


def test_nothing_validates_reports_failure_with_every_attempt(src: FakeSource) -> None:
    clock = [0.0]
    e = FakeEngine()
    res = recover("rx61", src, e, FakeHooks([False, False, False], clock), RecoveryOptions(), 0.0,
                  now=lambda: clock[0])
    assert not res.validated and res.ttr_s is None and len(res.attempts) == 3
    assert e.containers == {}  # every replacement rolled back


def test_an_injected_fault_is_not_blamed_on_the_version(src: FakeSource) -> None:
    clock = [0.0]
    opts = RecoveryOptions(first_attempt=ApplyOptions(cpu_override={"api.process": 0.02}),
                           injected=True)
    res = recover("rx61", src, FakeEngine(), FakeHooks([False, True], clock), opts, 0.0,
                  now=lambda: clock[0])
    assert [a.version for a in res.attempts] == ["3", "2"]
    rec = adaptive.AdaptiveRecord.from_dict(src.meta[("rx61", "adaptive")], "rx61")
    assert rec.bad_versions == ()


def test_no_persona_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RestoreError, match="capture one first"):
        recover("rx61", FakeSource(tmp_path, []), FakeEngine(), FakeHooks([], [0.0]),
                RecoveryOptions(), 0.0)


def test_adaptive_rules_are_seed_adaptives() -> None:
    rec = adaptive.AdaptiveRecord("h")
    obs = [adaptive.ComponentObservation("api.process", "app", 0, 1.6),
           adaptive.ComponentObservation("worker.process", "worker", 2, 0.1),
           adaptive.ComponentObservation("redis.process", "cache", 0, None)]
    r1 = adaptive.update(rec, "5", obs, validated=False, failed_metrics=("latency",))
    assert r1.boost == {"app": 1, "worker": -1}
    assert r1.defer == {"worker": 0.25}
    assert r1.bad_versions == ("5",) and r1.history[-1]["failed_metrics"] == ["latency"]
    r2 = adaptive.update(r1, "6", obs, validated=True)
    assert r2.boost == {"app": 2, "worker": -2} and r2.defer == {"worker": 0.5}
    assert r2.bad_versions == ("5",)
    assert adaptive.AdaptiveRecord.from_dict(r2.to_dict(), "h") == r2


def test_utilisation_reports_throttling_as_starvation() -> None:
    assert adaptive.utilisation(0.25, 0.5, 0.0) == 0.5
    assert adaptive.utilisation(0.5, 0.5, 0.9) == pytest.approx(1.9)
    assert adaptive.utilisation(0.5, None, 0.9) is None


def test_starved_processes_get_more_cpu_on_the_next_restore(src: FakeSource) -> None:
    clock = [0.0]
    h = FakeHooks([True], clock, usage_cores=0.6, throttled=0.8)
    recover("rx61", src, FakeEngine(), h, RecoveryOptions(), 0.0, now=lambda: clock[0])
    rec = adaptive.AdaptiveRecord.from_dict(src.meta[("rx61", "adaptive")], "rx61")
    assert rec.boost.get("app") == 1 and rec.boost.get("worker") == 1
    e = FakeEngine()
    recover("rx61", src, e, FakeHooks([True], clock), RecoveryOptions(), 0.0, now=lambda: clock[0])
    before = FakeEngine()
    from persona.model import load_manifest
    m = load_manifest(FIX)
    plain = make_plan(m, "critical-path", 0, None)
    tuned = make_plan(m, "critical-path", 0, rec)
    lv = {s.component: s.level for s in tuned.steps}
    assert lv["api.process"] == min({s.component: s.level for s in plain.steps}["api.process"] + 1, 2)
    assert e.cpu["persona-rx61-api"] > 0.5 and before.cpu == {}
