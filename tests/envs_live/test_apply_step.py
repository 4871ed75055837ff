"""persona.provision's per-step entry (Session.apply_step / finish) against the typed fake
engine of tests/provision: the same calls and lock rule as apply_persona, one step at a time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fakes import FakeEngine, persona_dir

from persona.errors import RestoreError
from persona.model import PersonaManifest, load_manifest
from persona.provision import plan as P
from persona.provision.apply import ApplyOptions, Session, Trace, apply_persona

FIX = Path(__file__).parent.parent / "provision" / "fixtures" / "demo-manifest.json"


@pytest.fixture(scope="module")
def m() -> PersonaManifest:
    return load_manifest(FIX)


def _session(e: FakeEngine, m: PersonaManifest, data: Path) -> Session:
    tr = Trace(m.host.name, "step", "v1", time.time())
    return Session(e, m, data, tr, ApplyOptions(), time.perf_counter)


def test_step_by_step_makes_the_same_calls_as_the_whole_plan(m, tmp_path):
    plan = P.plan_from_policy(m, "critical-path")
    whole = FakeEngine()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    apply_persona(whole, m, persona_dir(tmp_path / "a", FIX), plan, "v1")
    steps = FakeEngine()
    s = _session(steps, m, persona_dir(tmp_path / "b", FIX))
    s.provision()
    for st in plan.steps:
        rec = s.apply_step(st.component, st.level, plan.levels)
        assert rec.outcome in ("ok", "unsupported") and rec.name == st.component
    assert s.finish().outcome == "ok"
    assert steps.calls == whole.calls
    assert ("lock",) in steps.calls and not steps.locked
    assert s.trace.lock["release_after"] is not None


def test_a_failed_step_raises_and_rollback_removes_what_was_created(m, tmp_path):
    plan = P.plan_from_policy(m, "critical-path")
    e = FakeEngine(fail_restore={c for c in P.replacement(m).process_container.values()})
    s = _session(e, m, persona_dir(tmp_path, FIX))
    s.provision()
    with pytest.raises(RestoreError, match="boom"):
        for st in plan.steps:
            s.apply_step(st.component, st.level, plan.levels)
    assert s.trace.steps[-1].outcome == "failed"
    s.rollback()
    assert e.containers == {} and not e.locked


def test_unknown_component_or_level_is_a_clear_error(m, tmp_path):
    s = _session(FakeEngine(), m, persona_dir(tmp_path, FIX))
    s.provision()
    with pytest.raises(RestoreError, match="not a component"):
        s.apply_step("nope", 0, P.ALLOC_LEVELS)
    with pytest.raises(RestoreError, match="allocation level 7"):
        s.apply_step(m.components[0].name, 7, P.ALLOC_LEVELS)
