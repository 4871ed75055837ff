"""The live backend against the real lab: the conformance suite, the env checker, the error
path, and a calibration round trip (traces -> calibrated scenario -> simulator -> sim-gap)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml
from backend_conformance import check_fork, observation_space, run_episode
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from agents import simgap
from envs.backends import RestoreBackend
from envs.calibration import calibrate_live, load_traces
from envs.live import TRACE_FORMAT, LiveBackend, LiveConfig
from envs.restore_env import RestoreEnv
from envs.scenarios import load_scenario_file
from envs.sim import core
from envs.sim.params import SimConfig
from persona.lab import demo

pytestmark = [pytest.mark.live, pytest.mark.slow]
N_MAX = 24


def _cfg(host: str, traces: Path, **kw: Any) -> LiveConfig:
    return LiveConfig(host=host, trace_dir=str(traces), remove_host=True, policy="random", **kw)


def _running(lab: Any, host: str) -> list[str]:
    return [c["Id"] for c in demo.host_containers(lab, host) if c["State"] == "running"]


def test_live_backend_conformance_and_calibration_round_trip(lab, test_host, tmp_path):
    traces = tmp_path / "traces"
    b = LiveBackend(_cfg(test_host, traces), SimConfig(), N_MAX, client=lab)
    assert isinstance(b, RestoreBackend)
    try:
        check_fork(b, seed=0)  # refused: a host cannot be copied (this reset is abandoned)
        states = []
        for seed in (1, 2):
            state, steps = run_episode(b, observation_space(N_MAX), seed, max_steps=80)
            states.append(state)
            assert state.validated, steps[-1].info
            assert steps[-1].info.get("trace")
            # the validated replacement is the host now and serves the next episode
            assert _running(lab, test_host)
    finally:
        b.close()
    assert not demo.host_containers(lab, test_host), "close() left containers of the host"

    found = load_traces(traces)
    assert len(found) == 3  # the abandoned episode is traced too
    done = [t for t in found if t["validated"]]
    assert len(done) == 2
    for t in done:
        assert t["format"] == TRACE_FORMAT
        assert {s["kind"] for s in t["steps"]} >= {"process", "filesystem", "config", "network"}
        assert all(s["seconds"] > 0 for s in t["steps"])
        assert sum(s["seconds"] for s in t["steps"]) < t["ttr_s"]
        assert t["validation"][0]["passed"]
    abandoned = next(t for t in found if not t["validated"])
    assert "abandoned" in abandoned["error"] and abandoned["ended"] == "abandoned"
    # completed by the backend in captured order, so the host lived on warm
    assert abandoned["completed_by_backend"]
    assert abandoned["steps"] and {s["by"] for s in abandoned["steps"]} == {"backend"}

    scenario, report = calibrate_live(found, "roundtrip")
    out = tmp_path / "roundtrip.yaml"
    out.write_text(yaml.safe_dump(scenario, sort_keys=False))
    sc = load_scenario_file(out)
    assert sc.host.slots == 1 and sc.kind_models and sc.sim_overrides
    assert report["step_fit"]["process"]["steps"] >= 6
    # the calibrated simulator predicts the live episodes it was fitted on closely
    res = simgap.sim_gap(str(out), done, episodes=30, seed=0)
    (row,) = res["policies"]
    assert row["policy"] == "random"
    assert abs(row["rel_error"]) < 0.5, res
    # the calibrated scenario drives the env like any other (same spaces)
    env = RestoreEnv(scenario=str(out))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_live_env_passes_the_env_checker(lab, test_host, tmp_path):
    env = gym.make(
        "persona/RestoreLive-v0",
        host=test_host,
        live={"trace_dir": str(tmp_path), "remove_host": True, "validate_budget_s": 4.0},
    )
    assert env.spec is not None and env.spec.nondeterministic
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()
    assert not demo.host_containers(lab, test_host)


def test_a_step_that_times_out_ends_the_episode_and_rolls_back(lab, test_host, tmp_path):
    env = RestoreEnv(
        backend="live",
        live=_cfg(test_host, tmp_path, step_timeout_s=1e-4),
    )
    try:
        _, info = env.reset(seed=0)
        assert info["family"] == "live" and info["version"]
        mask = env.action_masks()
        _, r, term, trunc, info = env.step(int(np.flatnonzero(mask)[0]))
        assert term and not trunc
        assert not info["validated"]
        assert "step timeout" in info["error"]
        assert r == pytest.approx(-env.config.reward_scale * env.config.max_time_s, rel=0.05)
        # rolled back: nothing of the replacement runs; the stored persona is untouched
        assert not _running(lab, test_host)
        trace = json.loads(Path(info["trace"]).read_text())
        assert trace["steps"][0]["outcome"] == "failed"
        assert "step timeout" in trace["error"]
        # what the rolled-back containers wrote is kept for the post-mortem
        assert any(name.endswith("-pause") for name in trace["logs"])
        with pytest.raises(gym.error.ResetNeeded):
            env.step(0)
    finally:
        env.close()
    assert not demo.host_containers(lab, test_host)


def test_live_eval_runs_policies_interleaved(lab, test_host, tmp_path):
    from agents.evaluate import evaluate_live

    live = LiveConfig(host=test_host, trace_dir=str(tmp_path), remove_host=True)
    res = evaluate_live(["capture-order", "critical-path"], 1, 0, live)
    assert [r.policy for r in res] == ["capture-order", "critical-path"]
    for r in res:
        d = r.to_dict()
        assert d["scenarios"] == f"live://{test_host}"
        assert set(d) >= {"policy", "ttr_mean", "ttr_ci95", "success_rate", "per_episode"}
        assert r.success_rate == 1.0
    labels = sorted(t["policy"] for t in load_traces(tmp_path))
    assert labels == ["capture-order", "critical-path"]
    assert not demo.host_containers(lab, test_host)
    assert core.CHECKS  # the checks the traces' validation rounds map onto


def test_a_self_checking_api_is_restored_when_its_heartbeat_is_fresh(lab, check_host, tmp_path):
    """demo-check's api re-verifies index entries after the pause (CPU-bound) and only then
    writes a ready heartbeat; the restore step of that process waits for it, so the step
    lasts at least the check's CPU time over the quota the policy's level gave it."""
    b = LiveBackend(_cfg(check_host, tmp_path), SimConfig(), N_MAX, client=lab)

    def api_last(mask: np.ndarray, rng: np.random.Generator) -> int:
        # the api is the last connection end back, so the lock goes before its wait (restored
        # earlier, it would wait under the lock: see docs/live.md on demo-check)
        assert b.params is not None
        api = b.params.scenario.manifest.names.index("api.process")
        ok = np.flatnonzero(mask)
        rest = ok[ok // b.params.config.n_levels != api]
        return int(rng.choice(rest if rest.size else ok))

    try:
        state, _ = run_episode(b, observation_space(N_MAX), 7, max_steps=80, choose=api_last)
        assert state.validated, [t.get("validation") for t in load_traces(tmp_path)]
        resume = demo.introspect(lab, check_host)["resume"]
    finally:
        b.close()
    assert not demo.host_containers(lab, check_host)
    (trace,) = load_traces(tmp_path)
    (api,) = [s for s in trace["steps"] if s["component"] == "api.process"]
    actions = [r["action"] for r in api["records"]]
    assert actions[-2:] == ["CRIU restore", "wait until ready"], actions
    assert api["records"][-1]["outcome"] == "ok"
    assert trace["lock"]["release_after"] == "api.process"
    assert trace["lock"]["released_s"] <= api["records"][-1]["start_s"]  # unlocked, then waited
    # the self-check ran after the restore, over the configured entries, after a real pause
    assert resume["checks"] >= 1 and resume["items"] == 3000 and resume["gap_s"] > 2.0
    # a CPU quota can only slow it: wall time >= CPU time / quota (less one CFS period)
    assert api["alloc_cores"] is not None
    assert api["seconds"] >= resume["cpu_seconds"] / api["alloc_cores"] - 0.15, (api, resume)
