"""The live mode's pure parts, without a lab: trace fitting, demand fit, sim-gap statistics,
scenario files with calibrated models, the manifest mapping, and the backend's contract
errors (no Docker is touched before reset())."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from agents import simgap
from envs.calibration import (
    LIVE_TRACE_FORMAT,
    calibrate_live,
    fit_demand,
    fit_live_kind_models,
    load_traces,
)
from envs.live import LiveBackend, LiveConfig, live_scenario, sim_manifest
from envs.restore_env import RestoreEnv
from envs.scenarios import load_scenario_file, resolve
from envs.sim import core
from envs.sim.params import KindModel, SimConfig, compile_episode
from persona.errors import ScenarioError
from persona.model import ComponentKind, manifest_to_dict

LAB_DEMO = resolve("scenario://lab-demo").scenario  # type: ignore[attr-defined]


def _proc_step(size_mb: float, sim_alloc: float, level: int, seconds: float) -> dict:
    return {
        "component": "p",
        "kind": "process",
        "size_bytes": int(size_mb * 1024 * 1024),
        "level": level,
        "alloc_cores": sim_alloc,
        "sim_alloc": sim_alloc,
        "seconds": seconds,
        "outcome": "ok",
    }


def test_step_fit_recovers_a_known_model():
    """seconds = 0.2 + 0.03 * MB + 0.1 / min(c, 1): NNLS recovers the terms."""
    rng = np.random.default_rng(0)
    steps = []
    for _ in range(200):
        mb, c, lv = rng.uniform(1, 60), rng.uniform(0.2, 1.5), int(rng.integers(3))
        sec = (0.2 + 0.03 * mb + 0.1 / min(c, 1.0)) * math.exp(rng.normal(0, 0.05))
        steps.append(_proc_step(mb, c, lv, sec))
    models, stats = fit_live_kind_models(steps, SimConfig())
    m = models[ComponentKind.PROCESS]
    assert m.fixed_s == pytest.approx(0.2, abs=0.05)
    assert m.fixed_s_per_mb == pytest.approx(0.03, rel=0.1)
    assert m.cpu_base_s == pytest.approx(0.1, abs=0.04)
    assert m.sigma == pytest.approx(0.05, abs=0.02)
    assert stats["process"]["steps"] == 200
    # kinds without measurements keep the defaults; failed steps are not fitted
    assert (
        models[ComponentKind.KERNEL_MODULE] == SimConfig().kind_models[ComponentKind.KERNEL_MODULE]
    )
    bad = [{**s, "outcome": "failed", "seconds": 99.0} for s in steps[:50]]
    assert fit_live_kind_models(steps + bad, SimConfig())[0][ComponentKind.PROCESS] == m


def test_step_fit_rejects_a_malformed_step():
    with pytest.raises(ScenarioError, match="step 0"):
        fit_live_kind_models([{"kind": "process", "outcome": "ok"}], SimConfig())


def _episode(levels: list[int], perf: bool) -> dict:
    return {
        "steps": [_proc_step(5, 0.5, lv, 0.3) for lv in levels],
        "validation": [{"round": 0, "checks": {"performance": perf}}],
    }


def test_demand_fit_places_demand_between_the_failing_and_passing_levels():
    cfg = SimConfig()  # levels 0.8, 1.2, 1.8
    eps = [_episode([0, 1], False) for _ in range(10)] + [_episode([1, 2], True) for _ in range(10)]
    mu, _sd, n = fit_demand(eps, cfg)
    assert n == 20
    assert math.log(0.8) < mu < math.log(1.2)
    # all passing at every level: the demand sits below the lowest level
    mu2, _, _ = fit_demand([_episode([0, 0], True)] * 5, cfg)
    assert mu2 < math.log(0.8)


def test_ranks_agree_and_spearman():
    live = {"a": (5.0, 4.8, 5.2), "b": (7.0, 6.5, 7.5), "c": (7.2, 6.6, 7.8)}
    agree = simgap.ranks_agree({"a": 1.0, "b": 2.0, "c": 3.0}, live)
    assert agree["same_ranking"] and agree["separated_pairs"] == 2
    swap = simgap.ranks_agree({"a": 1.0, "b": 3.0, "c": 2.0}, live)
    assert not swap["same_ranking"] and swap["separated_pairs_agree"]  # b~c overlap live
    wrong = simgap.ranks_agree({"a": 9.0, "b": 3.0, "c": 2.0}, live)
    assert not wrong["separated_pairs_agree"]
    assert simgap.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert simgap.spearman([1, 2], [1, 2]) is None


def test_sim_manifest_uses_the_provisioners_need():
    m = sim_manifest(LAB_DEMO.manifest)
    for a, b in zip(LAB_DEMO.manifest.components, m.components, strict=True):
        if a.is_process and a.resources is not None:
            lim = a.resources.cpu_limit_cores
            want = max(lim, a.resources.cpu_peak_cores) if lim is not None else None
            got = b.resources.cpu_peak_cores  # type: ignore[union-attr]
            assert got == pytest.approx(
                want if want is not None else max(a.resources.cpu_peak_cores, 0.05)
            )
    sc = live_scenario(LAB_DEMO.manifest, cpu_cores=2.0)
    assert sc.host.slots == 1 and sc.family == "live"


def _traces(tmp_path, n: int = 4) -> list[dict]:
    """Traces as the live backend writes them, of the lab-demo persona (synthetic timings)."""
    out = []
    rng = np.random.default_rng(1)
    cfg = SimConfig()
    p = compile_episode(live_scenario(LAB_DEMO.manifest, cpu_cores=2.0), cfg, rng)
    for k in range(n):
        steps = []
        for i, c in enumerate(LAB_DEMO.manifest.components):
            lv = int(rng.integers(3))
            steps.append(
                {
                    "component": c.name,
                    "kind": c.kind.value,
                    "size_bytes": c.size_bytes,
                    "level": lv,
                    "alloc_cores": 0.5 if c.is_process else None,
                    "sim_alloc": core.allocation(p, i, lv),
                    "seconds": float(rng.uniform(0.2, 0.6) if c.is_process else 0.01),
                    "outcome": "ok",
                }
            )
        tr = {
            "format": LIVE_TRACE_FORMAT,
            "host": "demo",
            "policy": "capture-order",
            "started_at": 1000.0 + k,
            "cpu_count": 2,
            "steps": steps,
            "validation": [
                {"round": 0, "seconds": 6.0, "passed": True, "checks": {"performance": True}}
            ],
            "finish_s": 0.1,
            "validated": True,
            "ttr_s": 8.0 + 0.1 * k,
            "max_time_s": cfg.max_time_s,
            "manifest": manifest_to_dict(LAB_DEMO.manifest),
        }
        (tmp_path / f"t{k}.json").write_text(__import__("json").dumps(tr))
        out.append(tr)
    return out


def test_calibrated_scenario_round_trips_and_predicts(tmp_path):
    _traces(tmp_path)
    traces = load_traces(tmp_path)
    scenario, report = calibrate_live(traces, "demo-cal")
    f = tmp_path / "demo-cal.yaml"
    f.write_text(yaml.safe_dump(scenario, sort_keys=False))
    sc = load_scenario_file(f)
    assert sc.host.slots == 1
    assert sc.sim_overrides == {"validation_s": pytest.approx(6.1)}
    assert sc.kind_models is not None and ComponentKind.PROCESS in sc.kind_models
    assert report["episodes"] == 4 and report["failed_steps"] == 0
    res = simgap.sim_gap(str(f), traces, episodes=40, seed=0)
    (row,) = res["policies"]
    assert row["live_episodes"] == 4
    assert abs(row["rel_error"]) < 0.25, row
    assert "error_le_20pct" in res["targets"]


def test_load_traces_explains_an_empty_folder(tmp_path):
    with pytest.raises(ScenarioError, match="no live episode traces"):
        load_traces(tmp_path)
    with pytest.raises(ScenarioError, match="does not exist"):
        load_traces(tmp_path / "nope")


def test_scenario_file_kind_models_and_sim_are_checked(tmp_path):
    base = {"name": "x", "persona": manifest_to_dict(LAB_DEMO.manifest)}
    f = tmp_path / "x.yaml"
    f.write_text(yaml.safe_dump({**base, "kind_models": {"disk": {}}}))
    with pytest.raises(ScenarioError, match=r"kind_models\.disk: unknown kind"):
        load_scenario_file(f)
    f.write_text(yaml.safe_dump({**base, "kind_models": {"process": {"speed": 1}}}))
    with pytest.raises(ScenarioError, match=r"kind_models\.process"):
        load_scenario_file(f)
    f.write_text(yaml.safe_dump({**base, "sim": {"max_attempts": 3}}))
    with pytest.raises(ScenarioError, match=r"sim\.max_attempts cannot be set"):
        load_scenario_file(f)
    good = KindModel(0.0, 1e9, 0.0, 1.0, 0.1, fixed_s=2.0)
    f.write_text(
        yaml.safe_dump(
            {
                **base,
                "kind_models": {"process": good.__dict__},
                "sim": {"validation_s": 1.5},
            }
        )
    )
    sc = load_scenario_file(f)
    p = compile_episode(sc, SimConfig(), np.random.default_rng(0))
    assert p.config.validation_s == 1.5
    procs = np.flatnonzero(p.is_process)
    assert np.allclose(p.fixed[procs], 2.0) and np.allclose(p.nominal_s[procs], 2.0)


def test_complete_and_fail_keep_the_simulators_bookkeeping():
    p = compile_episode(LAB_DEMO, SimConfig(), np.random.default_rng(0))
    s = core.initial(p)
    i = int(np.flatnonzero(core.startable(p, s))[0])
    s2 = core.complete(p, s, i, 1, 2.5)
    assert s2.t == 2.5 and s2.status[i] == core.DONE and s2.level[i] == 1
    assert (s2.parents_left == s.parents_left - p.parents[:, i]).all()
    assert s.status[i] == core.PENDING  # frozen: the old state is untouched
    f = core.fail(p, s2, i, 0, 1.0)
    assert f.terminal and not f.validated and f.ttr == p.config.max_time_s
    assert f.n_failures == 1


def test_live_backend_contract_without_a_lab(tmp_path):
    with pytest.raises(ScenarioError, match="unknown live option 'hots'"):
        LiveConfig.from_kwargs(None, {"hots": "x"})
    with pytest.raises(ScenarioError, match="options of backend='live'"):
        RestoreEnv(host="demo")
    env = RestoreEnv(backend="live", host="nosuchhost", live={"trace_dir": str(tmp_path)})
    b = env.session
    assert isinstance(b, LiveBackend)
    assert b._work_dir is None  # nothing is created before the first reset
    with pytest.raises(ScenarioError, match="cannot fork"):
        b.fork()
    with pytest.raises(ScenarioError, match="before reset"):
        b.apply(0)
    with pytest.raises(ScenarioError, match="before reset"):
        b.observe()
    env.close()  # nothing was created: nothing to remove, no error


def test_component_fit_gives_a_self_checking_process_its_own_model(tmp_path):
    """One process's restore takes 0.2 + 1.2 / min(c, 1) s (a CPU-bound self-check), the
    others 0.25 s flat: each gets its own model, and the scenario file carries them."""
    from envs.calibration import fit_component_models

    rng = np.random.default_rng(3)
    steps = []
    for _ in range(12):
        for name, cpu in (("slow", 1.2), ("fast", 0.0)):
            c = float(rng.choice([0.4, 0.6, 0.9]))
            sec = (0.2 + cpu / min(c, 1.0) if cpu else 0.25) * math.exp(rng.normal(0, 0.03))
            steps.append({**_proc_step(20, c, 0, sec), "component": name})
    models, stats = fit_component_models(steps, SimConfig())
    assert models["slow"].cpu_base_s == pytest.approx(1.2, rel=0.1)
    assert models["slow"].fixed_s == pytest.approx(0.2, abs=0.15)
    assert models["fast"].cpu_base_s < 0.02 and models["fast"].fixed_s == pytest.approx(0.25, 0.1)
    assert stats["slow"]["steps"] == 12
    assert fit_component_models(steps[:4], SimConfig())[0] == {}  # too few steps: none
    # a scenario's component model overrides its kind's model, by name
    name = next(c.name for c in LAB_DEMO.manifest.components if c.is_process)
    base = {"name": "x", "persona": manifest_to_dict(LAB_DEMO.manifest)}
    f = tmp_path / "x.yaml"
    own = KindModel(2.0, 1e9, 0.0, 1.0, 0.1, fixed_s=0.5)
    f.write_text(yaml.safe_dump({**base, "component_models": {name: own.__dict__}}))
    sc = load_scenario_file(f)
    p = compile_episode(sc, SimConfig(), np.random.default_rng(0))
    i = sc.manifest.names.index(name)
    others = [j for j in np.flatnonzero(p.is_process) if j != i]
    assert p.fixed[i] == pytest.approx(0.5) and p.cpu_work[i] == pytest.approx(2.0)
    assert all(p.cpu_work[j] != pytest.approx(2.0) for j in others)
    f.write_text(yaml.safe_dump({**base, "component_models": {"nope": own.__dict__}}))
    with pytest.raises(ScenarioError, match="component_models names unknown component 'nope'"):
        load_scenario_file(f)


def test_weak_ranking_treats_overlapping_cis_as_ties():
    live = {"a": (5.0, 4.8, 5.2), "b": (7.0, 6.5, 7.5), "c": (7.2, 6.6, 7.8)}
    sim = {"a": (5.1, 5.0, 5.2), "b": (7.1, 7.0, 7.2), "c": (7.1, 7.0, 7.2)}  # b, c: same acts
    res = simgap.weak_ranks_agree(sim, live)
    assert res["weak_ranking_agrees"] and res["pairs_ordered_in_both"] == 2
    sim_sep = {**sim, "c": (9.0, 8.9, 9.1)}  # the simulator tells b and c apart, live does not
    res2 = simgap.weak_ranks_agree(sim_sep, live)
    assert not res2["weak_ranking_agrees"]
    (off,) = [p for p in res2["pair_verdicts"] if not p["agree"]]
    assert off["pair"] == ["b", "c"] and off["sim"] == -1 and off["live"] == 0


def test_a_calibrated_live_host_reports_no_simulated_utilisation():
    """The live backend measures no utilisation, so the simulator of a live host (family
    live) gives policies none either: seed-adaptive acts on the same information in both."""
    from agents.baselines import CaptureOrder, PolicyContext

    def final_info(scenario: str) -> dict:
        env = RestoreEnv(scenario=scenario)
        obs, _ = env.reset(seed=0)
        pol = CaptureOrder()
        pol.begin_episode(PolicyContext(env.config, env.n_max), 0)
        done, info = False, {}
        while not done:
            obs, _, term, trunc, info = env.step(pol.act(obs, env.action_masks()))
            done = term or trunc
        return info

    live = final_info("scenario://lab-check-live")
    assert live["validated"]
    assert all("utilisation" not in c for c in live["components"])
    other = final_info("scenario://lab-demo")
    assert any("utilisation" in c for c in other["components"] if c["kind"] == "process")
