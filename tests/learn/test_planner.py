"""The model-knowing rollout planner: never reads the episode's draws, valid, deterministic,
and at least as good as its base policy (a policy-improvement step)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from agents.baselines import CriticalPath, PolicyContext, make_policy
from agents.evaluate import run_episode, true_model
from agents.planner import Planner, rollout
from envs.restore_env import RestoreEnv
from envs.sim import core
from envs.sim.params import EpisodeParams, compile_episode
from persona.errors import PolicyError

SMALL = "generator://mixed-v0?components=5-7"


def _begin(env: RestoreEnv, planner: Planner, seed: int) -> None:
    env.reset(seed=seed)
    planner.begin_episode(PolicyContext(env.config, env.n_max, true_model(env)), seed)


def _set_params(env: RestoreEnv, p: EpisodeParams) -> None:
    env.params = p
    env.session.params = p  # type: ignore[attr-defined]


def _first_stop(env: RestoreEnv, planner: Planner, min_done: int) -> None:
    """Play the planner until something runs and ``min_done`` components are done."""
    for _ in range(40):
        s = env.state
        assert s is not None and not s.terminal
        if s.running and int((s.status == core.DONE).sum()) >= min_done:
            return
        env.step(planner.act({}, env.action_masks()))
    pytest.fail("no decision point with a running and a done component")


def _values(env: RestoreEnv, planner: Planner) -> np.ndarray:
    return planner.values(planner.model.state(), np.flatnonzero(env.action_masks()))


def _with_future_draws(p: EpisodeParams, s: core.SimState, seed: int) -> EpisodeParams:
    """``p`` with every draw that lies in the future of ``s`` re-drawn: attempts not started
    yet (duration noise, fault uniforms) and the true demands of processes not yet restored."""
    q = compile_episode(p.scenario, p.config, np.random.default_rng(seed))
    att = np.arange(p.noise.shape[1])[None, :]
    started = (s.status != core.PENDING)[:, None]
    future = np.where(started, att > s.attempts[:, None], att >= s.attempts[:, None])
    noise = np.where(future, q.noise, p.noise)
    demand = np.where(s.status == core.DONE, p.demand, q.demand)
    return replace(
        p,
        noise=noise,
        fail_u=np.where(future, q.fail_u, p.fail_u),
        latent_u=np.where(future, q.latent_u, p.latent_u),
        demand=demand,
        lists=replace(p.lists, noise=noise.tolist(), demand=demand.tolist()),
    )


def _ttr_from(env: RestoreEnv, p: EpisodeParams) -> float:
    assert env.state is not None
    cp = CriticalPath()
    cp.begin_episode(PolicyContext(env.config, env.n_max), 0)
    from envs import layout

    static = layout.static_obs(p, env.n_max)

    def base(pp: EpisodeParams, s: core.SimState) -> int:
        return cp.act(layout.observe(pp, s, static), core.action_mask(pp, s, env.n_max))

    return rollout(p, env.state, base, env.n_max)


def test_first_decision_ignores_the_episodes_draws():
    env = RestoreEnv(SMALL)
    planner = Planner(samples=4)
    _begin(env, planner, 11)
    assert env.params is not None
    before = _values(env, planner)
    other = compile_episode(env.params.scenario, env.config, np.random.default_rng(999))
    # the swap matters: the same restore plays out differently under the other draws
    assert _ttr_from(env, other) != _ttr_from(env, env.params)
    _set_params(env, other)
    assert np.array_equal(_values(env, planner), before)


@pytest.mark.parametrize("seed", [3, 8])
def test_mid_episode_decision_ignores_future_draws(seed):
    env = RestoreEnv(SMALL)
    planner = Planner(samples=4)
    _begin(env, planner, seed)
    _first_stop(env, planner, min_done=1)
    assert env.params is not None and env.state is not None
    before = _values(env, planner)
    changed = _with_future_draws(env.params, env.state, seed + 100)
    assert _ttr_from(env, changed) != _ttr_from(env, env.params)
    _set_params(env, changed)
    assert np.array_equal(_values(env, planner), before)


def test_hidden_outcomes_in_the_state_are_not_read():
    env = RestoreEnv(SMALL)
    planner = Planner(samples=4)
    _begin(env, planner, 5)
    _first_stop(env, planner, min_done=1)
    s = env.state
    assert s is not None
    before = _values(env, planner)
    flipped = replace(
        s,
        will_fail=~s.will_fail,
        will_latent=~s.will_latent,
        latent=~s.latent,
        background=s.background + 1.0,
    )
    env.state = flipped
    env.session.state = flipped  # type: ignore[attr-defined]
    assert np.array_equal(_values(env, planner), before)


def test_only_valid_actions_and_deterministic_for_a_seed():
    env = RestoreEnv(SMALL)
    runs = []
    for _ in range(2):
        planner = Planner(samples=3)
        actions = []
        for seed in (1, 2):
            _begin(env, planner, seed)
            while True:
                mask = env.action_masks()
                a = planner.act({}, mask)
                assert mask[a], (seed, a)
                actions.append(a)
                _, _, term, trunc, info = env.step(a)
                assert info["valid_action"]
                if term or trunc:
                    break
            actions.append(round(info["ttr"] * 1000))
        runs.append(actions)
    assert runs[0] == runs[1]


def test_no_worse_than_its_base_policy_on_average():
    env = RestoreEnv("generator://web-tier-v0?components=5")
    seeds = range(200, 208)
    base = [run_episode(env, make_policy("critical-path"), s).ttr for s in seeds]
    planner = Planner(samples=8, bases=("critical-path",))
    planned = [run_episode(env, planner, s).ttr for s in seeds]
    assert np.mean(planned) <= np.mean(base)


def test_needs_the_true_model():
    assert isinstance(make_policy("planner"), Planner)
    env = RestoreEnv(SMALL)
    env.reset(seed=0)
    with pytest.raises(PolicyError, match="true model"):
        Planner().begin_episode(PolicyContext(env.config, env.n_max), 0)
    with pytest.raises(PolicyError, match="base"):
        Planner(bases=("oracle",))


def test_revealing_every_draw_makes_every_future_the_true_episode() -> None:
    """``with_draws`` (the hindsight experiment's lever): given all of the episode's draws,
    each re-sampled future is the true episode, so one future values actions as many do."""
    from envs.sim.params import DRAWS, with_draws
    from experiments.oracle_gap import Revealing

    env = RestoreEnv(scenario=SMALL)
    env.reset(seed=11)
    true = env.params
    assert true is not None
    other = compile_episode(true.scenario, true.config, np.random.default_rng(5))
    p = with_draws(other, true, DRAWS)
    for k in DRAWS:
        assert np.array_equal(getattr(p, k), getattr(true, k))
    assert p.lists == true.lists
    with pytest.raises(Exception, match="unknown draw"):
        with_draws(other, true, ["luck"])
    values = []
    for samples in (1, 3):
        pl = Revealing(env, DRAWS, samples)
        _begin(env, pl, 11)
        actions = np.flatnonzero(env.action_masks())
        values.append(pl.values(env.state, actions))
    assert np.allclose(values[0], values[1])


def test_planner_rolls_out_a_given_policy() -> None:
    """With the base ``policy`` a planner is at least as good, per action value, as with its
    two heuristic bases alone (the value is the minimum over bases, on the same futures)."""
    from persona.restorer.policy import OnnxRestorePolicy

    env = RestoreEnv(scenario=SMALL, max_components=24)
    two = Planner(samples=2)
    three = Planner(
        samples=2,
        bases=("informed", "critical-path", "policy"),
        policy=OnnxRestorePolicy("policies/sim-default.onnx"),
    )
    for pl in (two, three):
        _begin(env, pl, 3)
    actions = np.flatnonzero(env.action_masks())
    a, b = two.values(env.state, actions), three.values(env.state, actions)
    assert np.all(b <= a + 1e-9)
