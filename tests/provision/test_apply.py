"""Applying a plan against a typed fake engine: order, lock window, trace, retries, rollback."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fakes import FakeEngine, persona_dir

from persona.model import ComponentKind, PersonaManifest, load_manifest
from persona.provision import plan as P
from persona.provision.apply import (
    ApplyOptions,
    StepFailed,
    apply_persona,
    cold_start,
    sha256_tree,
)
from persona.provision.warm import Check, prove_warm

FIX = Path(__file__).parent / "fixtures" / "demo-manifest.json"


@pytest.fixture(scope="module")
def m() -> PersonaManifest:
    return load_manifest(FIX)


def test_success_path_order_lock_and_trace(m: PersonaManifest, tmp_path: Path) -> None:
    e = FakeEngine()
    data = persona_dir(tmp_path, FIX)
    plan = P.plan_from_policy(m, "critical-path")
    tr = apply_persona(e, m, data, plan, "v1")
    assert tr.outcome == "ok" and not tr.rolled_back
    kinds = [c[0] for c in e.calls]
    # the namespace owner is created and started before anything else; others only created
    assert e.calls[:2] == [
        ("create", "persona-rx61-pause", "10.77.0.61", "None"),
        ("start", "persona-rx61-pause"),
    ]
    assert kinds.count("start") == 1
    # every restore ran under the lock, and the lock went right after the last connection end
    restores = [c for c in e.calls if c[0] == "restore"]
    assert [c[2] for c in restores] == ["locked"] * 3
    assert kinds.index("unlock") == max(i for i, k in enumerate(kinds) if k == "restore") + 1
    assert tr.lock["release_after"] == plan.order[-1] or tr.lock["release_after"] in plan.order
    assert tr.lock["window_s"] >= 0 and not e.locked
    # CPU: the captured limits are floors; redis had none and stays unlimited
    assert e.cpu == {
        "persona-rx61-redis": None,
        "persona-rx61-api": pytest.approx(0.6),
        "persona-rx61-worker": pytest.approx(0.3),
    }
    # every step timed, in order, with CRIU stats on restores
    d = tr.to_dict()
    assert all(s["outcome"] in ("ok", "unsupported") for s in d["steps"])
    assert all(s["end_s"] >= s["start_s"] for s in d["steps"])
    starts = [s["start_s"] for s in d["steps"]]
    assert starts == sorted(starts)
    assert {s["name"] for s in d["steps"] if s["kind"] == "process"} == {
        "redis.process",
        "api.process",
        "worker.process",
    }
    assert all(s["criu"]["pages_restored"] == 10 for s in d["steps"] if s["kind"] == "process")
    assert d["steps"][-1]["action"] == "check listening sockets"
    assert set(d["phases"]) == {"provision_s", "apply_s"}
    # config files written with the captured content
    assert (
        e.files[("persona-rx61-api", "/etc/demo/api.json")]
        == (FIX.parent / "config/persona-rx61-api/etc/demo/api.json").read_bytes()
    )


def test_failed_restore_rolls_back_everything_and_leaves_the_persona_untouched(
    m: PersonaManifest, tmp_path: Path
) -> None:
    e = FakeEngine(fail_restore={"persona-rx61-api"})
    data = persona_dir(tmp_path, FIX)
    before = sha256_tree(data)
    with pytest.raises(StepFailed, match="rolled back: CRIU restore") as ei:
        apply_persona(e, m, data, P.captured_order_plan(m), "v1")
    tr = ei.value.trace
    assert tr.outcome == "failed" and tr.rolled_back
    assert e.containers == {} and not e.locked  # nothing left, lock rule dropped
    # 4 containers, plus the api container replaced once for the retry
    assert [c[0] for c in e.calls].count("remove") == 5
    failed = [s for s in tr.steps if s.outcome == "failed"]
    assert [(s.name, s.kind) for s in failed] == [("api.process", "process")] * 2
    assert sha256_tree(data) == before


def test_a_failed_restore_is_retried_in_a_fresh_container(
    m: PersonaManifest, tmp_path: Path
) -> None:
    """CRIU's intermittent restore error: the container is replaced, what was written into it
    (filesystem diff, configs) is written again, its CPU quota set again, and the restore
    retried - once."""
    e = FakeEngine(fail_restore_times=1)
    tr = apply_persona(e, m, persona_dir(tmp_path, FIX), P.captured_order_plan(m), "v1")
    assert tr.outcome == "ok"
    acts = [(s.name, s.action, s.outcome) for s in tr.steps]
    i = next(k for k, a in enumerate(acts) if a[2] == "failed")
    failed_proc = acts[i][0]
    ctr = P.replacement(m).process_container[failed_proc]
    assert acts[i + 1] == (ctr, "recreate after failed restore", "ok")
    redone = [a for a in acts[i + 2 :] if a[1] in ("unpack diff", "write + verify")]
    fs_of_ctr = [n for n, c in P.replacement(m).fs_container.items() if c == ctr]
    assert {a[0] for a in redone} >= set(fs_of_ctr)
    tail = [a for a in acts[i + 1 :] if a[0] == failed_proc]
    assert [a[1] for a in tail] == ["cgroup cpu quota (fresh container)", "CRIU restore"]
    assert tail[-1][2] == "ok"
    assert tr.containers[ctr] in e.containers  # the fresh one is the replacement's
    # every file the old container had, the fresh one has too
    assert all(
        (ctr, path) in e.files
        for c, path, _ in [x for v in P.replacement(m).config_files.values() for x in v]
        if c == ctr
    )


def test_restore_retries_zero_fails_at_once(m: PersonaManifest, tmp_path: Path) -> None:
    e = FakeEngine(fail_restore_times=1)
    opts = ApplyOptions(restore_retries=0)
    with pytest.raises(StepFailed):
        apply_persona(e, m, persona_dir(tmp_path, FIX), P.captured_order_plan(m), "v1", opts)


def test_transient_step_failure_is_retried_and_counted(m: PersonaManifest, tmp_path: Path) -> None:
    e = FakeEngine(fail_extract_times=1)
    tr = apply_persona(e, m, persona_dir(tmp_path, FIX), P.captured_order_plan(m), "v1")
    first_fs = next(s for s in tr.steps if s.kind == "filesystem")
    assert first_fs.retries == 1 and first_fs.outcome == "ok"


def test_retries_exhausted_fail_the_restore(m: PersonaManifest, tmp_path: Path) -> None:
    e = FakeEngine(fail_extract_times=2)
    with pytest.raises(StepFailed):
        apply_persona(
            e,
            m,
            persona_dir(tmp_path, FIX),
            P.captured_order_plan(m),
            "v1",
            ApplyOptions(retries=1),
        )
    assert e.containers == {}


def test_an_old_copy_still_present_stops_the_restore_before_anything_is_created(
    m: PersonaManifest, tmp_path: Path
) -> None:
    e = FakeEngine(existing={"persona-rx61-api"})
    with pytest.raises(StepFailed, match="fence the old host first"):
        apply_persona(e, m, persona_dir(tmp_path, FIX), P.captured_order_plan(m), "v1")
    assert not any(c[0] == "create" for c in e.calls)


def test_network_checks_catch_a_missing_address_and_a_missing_listener(
    m: PersonaManifest, tmp_path: Path
) -> None:
    e = FakeEngine(addrs=["127.0.0.1/8"])
    with pytest.raises(StepFailed, match="lacks captured address"):
        apply_persona(e, m, persona_dir(tmp_path, FIX), P.captured_order_plan(m), "v1")
    e2 = FakeEngine(listening_set={"127.0.0.1:6379"})
    b = tmp_path / "b"
    b.mkdir()
    with pytest.raises(StepFailed, match=r"not listening on captured 0\.0\.0\.0:8080"):
        apply_persona(e2, m, persona_dir(b, FIX), P.captured_order_plan(m), "v1")
    assert e2.containers == {}


def test_config_that_does_not_match_the_capture_fails(m: PersonaManifest, tmp_path: Path) -> None:
    data = persona_dir(tmp_path, FIX)
    (data / "config/persona-rx61-api/etc/demo/api.json").write_text("{}")
    with pytest.raises(StepFailed, match="sha256"):
        apply_persona(FakeEngine(), m, data, P.captured_order_plan(m), "v1")


def test_overrides_inject_faults_into_the_trace(m: PersonaManifest, tmp_path: Path) -> None:
    e = FakeEngine()
    tr = apply_persona(
        e,
        m,
        persona_dir(tmp_path, FIX),
        P.captured_order_plan(m),
        "v1",
        ApplyOptions(
            cpu_override={"api.process": 0.02}, config_override={"/etc/demo/api.json": b"{}"}
        ),
    )
    assert e.cpu["persona-rx61-api"] == 0.02
    assert e.files[("persona-rx61-api", "/etc/demo/api.json")] == b"{}"
    assert any("OVERRIDDEN" in s.detail for s in tr.steps)


def test_kernel_modules_are_reported_unsupported_not_faked(
    m: PersonaManifest, tmp_path: Path
) -> None:
    from persona.model import Component, ComponentKind

    km = Component(
        name="kmod.nf_nat", kind=ComponentKind.KERNEL_MODULE, size_bytes=1, role="system"
    )
    m2 = m.with_components([km, *m.components])
    plan = P.captured_order_plan(m2)
    tr = apply_persona(FakeEngine(), m2, persona_dir(tmp_path, FIX), plan, "v1")
    step = next(s for s in tr.steps if s.name == "kmod.nf_nat")
    assert step.outcome == "unsupported" and "cannot load" in step.detail


def test_no_lock_option_restores_unlocked(m: PersonaManifest, tmp_path: Path) -> None:
    e = FakeEngine()
    apply_persona(
        e, m, persona_dir(tmp_path, FIX), P.captured_order_plan(m), "v1", ApplyOptions(lock=False)
    )
    assert not any(c[0] in ("lock", "unlock") for c in e.calls)
    assert {c[2] for c in e.calls if c[0] == "restore"} == {"unlocked"}


def test_cold_start_starts_fresh_containers_with_captured_limits(m: PersonaManifest) -> None:
    e = FakeEngine()
    tr = cold_start(e, m)
    assert tr.outcome == "ok" and not any(c[0] == "restore" for c in e.calls)
    assert ("create", "persona-rx61-api", "None", "0.5") in e.calls
    assert [c[0] for c in e.calls].count("start") == 4


def test_cold_start_from_disk_unpacks_diffs_and_configs_before_fresh_starts(
    m: PersonaManifest, tmp_path: Path
) -> None:
    """The cold start of a host from its images *and its disk*: every captured filesystem diff
    and config file goes into the new containers (captured mtimes kept), then each process is
    started fresh; never a CRIU restore."""
    e = FakeEngine()
    tr = cold_start(e, m, persona_dir(tmp_path, FIX), version="disk of v1")
    assert tr.outcome == "ok" and tr.version == "disk of v1"
    kinds = [c[0] for c in e.calls]
    assert "restore" not in kinds and "cpu" not in kinds  # limits come with the create
    extracts = {c[1] for c in e.calls if c[0] == "extract"}
    fs = [c for c in m.components if c.kind == ComponentKind.FILESYSTEM and c.data]
    assert len(extracts) == len(fs) > 0
    cfg = [c for c in m.components if c.kind == ComponentKind.CONFIG and c.data]
    assert {p for (_ctr, p) in e.files} == {f"/{d.split('/', 2)[2]}" for c in cfg for d in c.data}
    for (_ctr, path), (mtime, _mode) in e.file_meta.items():
        want = next(c for c in cfg if any(d.endswith(path) for d in c.data))
        assert mtime == want.attributes["files"][path].get("mtime_ns")
    first_start = next(i for i, c in enumerate(e.calls) if c[0] == "start" and "pause" not in c[1])
    last_disk = max(i for i, c in enumerate(e.calls) if c[0] in ("extract", "write"))
    assert last_disk < first_start  # the disk is in place before any process starts
    assert kinds.count("start") == 4


def test_cold_start_from_disk_rolls_back_on_a_failed_unpack(
    m: PersonaManifest, tmp_path: Path
) -> None:
    e = FakeEngine(fail_extract_times=5)
    with pytest.raises(StepFailed, match="disk hiccup"):
        cold_start(e, m, persona_dir(tmp_path, FIX))
    assert e.containers == {} and not any(c[0] == "start" and "api" in c[1] for c in e.calls)


def test_rollback_on_a_plan_for_another_persona(m: PersonaManifest, tmp_path: Path) -> None:
    plan = P.captured_order_plan(m)
    bad = replace(plan, steps=(*plan.steps[:-1], replace(plan.steps[-1], component="ghost")))
    e = FakeEngine()
    with pytest.raises(StepFailed, match="not a component"):
        apply_persona(e, m, persona_dir(tmp_path, FIX), bad, "v1")
    assert e.containers == {}


class Probe:
    def __init__(self, started: float, reconnects: str = "", uptime: int = 10**6) -> None:
        self.started, self.reconnects, self.uptime = started, reconnects, uptime

    def introspect(self) -> dict[str, object]:
        return {"started": self.started, "pool": {"size": 4}, "errors": 0}

    def redis(self, *args: str) -> str:
        return {
            "GET demo:worker:ticks": "50",
            "GET demo:worker:reconnects": self.reconnects,
            "DBSIZE": "2003",
            "INFO server": f"redis_version:7\nuptime_in_seconds:{self.uptime}",
        }[" ".join(args)]


def test_warm_proof_distinguishes_a_restore_from_a_restart(m: PersonaManifest) -> None:
    started = 1795897407.3040338
    assert prove_warm(m, Probe(started)).warm
    cold = prove_warm(m, Probe(started + 60, reconnects="1", uptime=3))
    assert not cold.warm
    assert {c.name for c in cold.checks if not c.ok} == {
        "api start time preserved",
        "worker connection survived (no reconnect)",
        "redis start time preserved",
    }
    assert isinstance(cold.checks[0], Check)


def test_config_files_keep_their_captured_mtime_and_mode(tmp_path: Path) -> None:
    """An app that reloads on config mtime must not see the restore as a config change."""
    import json

    d = json.loads(FIX.read_text())
    for c in d["components"]:
        if c["kind"] == "config":
            for f in c["attributes"]["files"].values():
                f["mtime_ns"], f["mode"] = 1_700_000_000_123_456_789, 0o640
    fix = tmp_path / "manifest.json"
    fix.write_text(json.dumps(d))
    for rel in {r for c in d["components"] for r in c["data"] if c["kind"] == "config"}:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((FIX.parent / rel).read_bytes())
    m2 = load_manifest(fix)
    e = FakeEngine()
    (tmp_path / "p").mkdir()
    tr = apply_persona(
        e, m2, persona_dir(tmp_path / "p", fix), P.plan_from_policy(m2, "critical-path"), "v1"
    )
    assert tr.outcome == "ok"
    assert e.file_meta[("persona-rx61-api", "/etc/demo/api.json")] == (
        1_700_000_000_123_456_789,
        0o640,
    )


def test_criu_log_errors_keeps_the_reason(tmp_path: Path) -> None:
    from persona.provision.engine import criu_log_errors

    log = tmp_path / "restore.log"
    log.write_text(
        "(00.000001) Version: 4.2.1\n"
        "(00.001000) Error (criu/cr-restore.c:1480): 7 killed by signal 9\n"
        "(00.002000) Error (criu/cr-restore.c:2500): Restoring FAILED.\n"
    )
    why = criu_log_errors([tmp_path / "missing.log", log])
    assert "killed by signal 9" in why and "Restoring FAILED" in why
    assert criu_log_errors([tmp_path / "missing.log"]) == ""


def test_log_tail_keeps_a_log_its_writer_deletes(tmp_path: Path) -> None:
    import time

    from persona.provision.engine import LogTail, criu_log_errors

    log = tmp_path / "work" / "restore.log"
    with LogTail([log], period_s=0.005) as tail:
        time.sleep(0.03)  # not there yet
        log.parent.mkdir()
        log.write_text("(00.1) Restoring\n(00.2) Error (criu/cr-restore.c:1): boom\n")
        time.sleep(0.1)
        log.unlink()  # what runc does with its work dir when the restore fails
        time.sleep(0.05)
    assert tail.text is not None and "boom" in tail.text
    assert criu_log_errors([log], text=tail.text).endswith("boom")


def _with_ready_file(m: PersonaManifest, name: str, path: str) -> PersonaManifest:
    comps = tuple(
        replace(c, attributes={**c.attributes, "ready_file": path}) if c.name == name else c
        for c in m.components
    )
    return replace(m, components=comps)


def test_ready_since_reads_only_a_fresh_ready_heartbeat() -> None:
    from persona.provision.apply import ready_since

    assert ready_since(b"ready 100.5", 100.0)
    assert not ready_since(b"ready 99.9", 100.0)  # the captured, stale heartbeat
    assert not ready_since(b"checking 3000", 0.0)
    assert not ready_since(b"", 0.0) and not ready_since(b"ready soon", 0.0)


def test_a_process_with_a_ready_file_is_done_when_its_heartbeat_is_fresh(
    m: PersonaManifest, tmp_path: Path
) -> None:
    m2 = _with_ready_file(m, "api.process", "/tmp/persona-ready")
    e = FakeEngine()
    e.files[("persona-rx61-api", "/tmp/persona-ready")] = b"ready 99999999999"
    tr = apply_persona(e, m2, persona_dir(tmp_path, FIX), P.captured_order_plan(m2), "v1")
    waits = [s for s in tr.steps if s.action == "wait until ready"]
    assert [s.name for s in waits] == ["api.process"] and waits[0].outcome == "ok"
    restore = next(i for i, s in enumerate(tr.steps) if s.action == "CRIU restore"
                   and s.name == "api.process")
    assert tr.steps[restore + 1] is waits[0]  # right after its restore, before the next step
    # the last connection end back: the lock goes before the wait, not after it
    m3 = _with_ready_file(m, "worker.process", "/tmp/persona-ready")
    e3 = FakeEngine()
    e3.files[("persona-rx61-worker", "/tmp/persona-ready")] = b"ready 99999999999"
    (tmp_path / "b").mkdir()
    apply_persona(e3, m3, persona_dir(tmp_path / "b", FIX), P.captured_order_plan(m3), "v1")
    kinds = [c[0] for c in e3.calls]
    assert kinds.index("unlock") < kinds.index("read")
    assert ("read", "persona-rx61-api", "/tmp/persona-ready") in e.calls


def test_a_process_that_never_gets_ready_fails_the_restore_and_rolls_back(
    m: PersonaManifest, tmp_path: Path
) -> None:
    m2 = _with_ready_file(m, "api.process", "/tmp/persona-ready")
    e = FakeEngine()
    e.files[("persona-rx61-api", "/tmp/persona-ready")] = b"ready 1.0"  # only the stale one
    with pytest.raises(StepFailed, match=r"api\.process not ready 0 s after its restore"):
        apply_persona(e, m2, persona_dir(tmp_path, FIX), P.captured_order_plan(m2), "v1",
                      ApplyOptions(ready_timeout_s=0.2))
    assert not e.containers  # rolled back
