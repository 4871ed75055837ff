"""Learning the hidden structure from episodes (agents/model_learning.py), and planning with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agents.model_learning import Attempt, LearnedModel, fit_demand, fit_soft, learn, main
from envs.scenarios import ROLE_DEMAND, SOFT_RULES
from persona.errors import ConfigError


def _synthetic(rng: np.random.Generator, n: int, scale: float) -> list[Attempt]:
    """Attempts of role "a" drawn from a known noisy-OR: p[a, b] = 0.6, p[a, c] = 0.3."""
    truth = {"b": 0.6, "c": 0.3, "d": 0.0}
    out = []
    for _ in range(n):
        missing = tuple(r for r in truth for _ in range(int(rng.integers(0, 3))))
        ok = np.prod([1.0 - truth[r] for r in missing])
        out.append(Attempt("a", missing, bool(rng.random() < scale * (1.0 - ok))))
    return out


@pytest.mark.parametrize("scale", [1.0, 0.65])
def test_fit_soft_recovers_a_known_noisy_or(scale: float) -> None:
    fit = fit_soft(_synthetic(np.random.default_rng(0), 20000, scale), scale)
    assert fit[("a", "b")] == pytest.approx(0.6, abs=0.03)
    assert fit[("a", "c")] == pytest.approx(0.3, abs=0.03)
    assert ("a", "d") not in fit  # fitted ~0: dropped


def test_fit_demand() -> None:
    rng = np.random.default_rng(1)
    xs = [("db", float(x)) for x in rng.normal(0.35, 0.08, 5000)]
    mu, sd = fit_demand(xs)["db"]
    assert mu == pytest.approx(0.35, abs=0.01) and sd == pytest.approx(0.08, abs=0.01)


def test_learned_from_episodes_is_close_to_the_truth(tmp_path: Path) -> None:
    """From simulated episodes alone (random restores), the role rules and demand factors
    come out near the generator's hidden ones; the file round-trips."""
    model = learn("generator://web-tier-v0?components=5-12", 1500, seed=3)
    for (a, b), p in SOFT_RULES.items():
        if (a, b) in model.soft:
            assert model.soft[(a, b)] == pytest.approx(p, abs=0.12), (a, b)
    assert len(model.soft) >= 3
    for role, (mu, sd) in model.demand.items():
        assert mu == pytest.approx(ROLE_DEMAND[role][0], abs=0.02), role
        assert sd == pytest.approx(ROLE_DEMAND[role][1], abs=0.02), role
    out = tmp_path / "m.json"
    main(
        [
            "--scenarios",
            "generator://web-tier-v0?components=5-6",
            "--episodes",
            "20",
            "--out",
            str(out),
        ]
    )
    again = LearnedModel.load(out)
    assert again.to_json() == json.loads(out.read_text())
    with pytest.raises(ConfigError, match="persona-learned-model"):
        LearnedModel.from_json({"soft": []})
    with pytest.raises(ConfigError, match="does not exist"):
        LearnedModel.load(tmp_path / "none.json")


def test_planner_with_a_learned_model_never_reads_the_hidden_truth() -> None:
    """The learned model replaces every hidden field of the scenario; a planner using it
    gives the same action values whatever the scenario's own hidden structure says."""
    from dataclasses import replace

    from agents.baselines import PolicyContext
    from agents.evaluate import true_model
    from agents.planner import Planner
    from envs.restore_env import RestoreEnv

    model = LearnedModel({("app", "db"): 0.5, ("app", "cache"): 0.7}, {"app": (0.05, 0.08)})
    env = RestoreEnv(scenario="generator://web-tier-v0?components=6")
    env.reset(seed=4)
    tm = true_model(env)
    values = []
    for sc in (
        tm.scenario,
        replace(tm.scenario, soft_dependencies=(), demand_mu={}, demand_sigma={}),
    ):
        pl = Planner(samples=2, learned=model)
        pl.begin_episode(PolicyContext(env.config, env.n_max, replace(tm, scenario=sc)), 4)
        values.append(pl.values(env.state, np.flatnonzero(env.action_masks())))
        learned_sc = pl.scenario
        assert {d.p_fail for d in learned_sc.soft_dependencies} <= {0.5, 0.7}
    np.testing.assert_array_equal(values[0], values[1])


def test_search_restorer_by_spec(tmp_path: Path) -> None:
    """``search:POLICY.onnx@MODEL.json[@SAMPLES]`` loads the search-based restorer wherever a
    policy name goes (persona eval, experiments), with a clear error for a bad spec."""
    from agents.evaluate import SearchRestorer, evaluate, load_policy
    from agents.experiment import label
    from persona.errors import PolicyError

    path = tmp_path / "m.json"
    path.write_text(json.dumps(LearnedModel({("app", "db"): 0.6}, {"db": (0.35, 0.08)}).to_json()))
    spec = f"search:policies/sim-default.onnx@{path}@2"
    pol = load_policy(spec)
    assert isinstance(pol, SearchRestorer) and pol.max_components == 7
    assert pol.planner.samples == 2 and pol.planner.learned is not None
    assert "policy" in pol.planner.base_names and label(spec) == "search(sim-default)"
    res = evaluate(spec, "generator://web-tier-v0?components=5", 2, 7)
    assert res.policy == spec and all(e.validated for e in res.per_episode)
    # above MAX_COMPONENTS the learned policy acts alone: the same episodes as the network's
    big = "generator://web-tier-v0?components=8-9"
    alone = evaluate("policies/sim-default.onnx", big, 2, 7)
    assert evaluate(spec, big, 2, 7).ttrs.tolist() == alone.ttrs.tolist()
    assert evaluate(f"{spec}@9", big, 2, 7).ttrs.tolist() != alone.ttrs.tolist()
    for bad in (
        "search:policies/sim-default.onnx",
        f"search:x.zip@{path}",
        f"{spec}@9@1",
        f"{spec}@x",
    ):
        with pytest.raises(PolicyError, match=r"search:POLICY\.onnx@MODEL\.json|integers"):
            load_policy(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(f"search:policies/sim-default.onnx@{tmp_path / 'none.json'}")
    from agents.baselines import PolicyContext
    from envs.sim.params import SimConfig

    with pytest.raises(PolicyError, match="simulator backend"):  # e.g. --backend live
        pol.begin_episode(PolicyContext(SimConfig(), 24, None), 0)


def test_shipped_learned_model_is_reproduced_by_its_command(tmp_path: Path) -> None:
    """policies/learned-model.json is what its documented command writes, byte for byte:
    python -m agents.model_learning --episodes 10000 --seed 0 --out policies/learned-model.json"""
    out = tmp_path / "learned-model.json"
    main(["--episodes", "10000", "--seed", "0", "--out", str(out)])
    shipped = Path(__file__).parents[2] / "policies" / "learned-model.json"
    assert out.read_bytes() == shipped.read_bytes()
