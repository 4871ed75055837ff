"""The backend conformance suite against the simulator, and RestoreEnv going through it."""

from __future__ import annotations

import numpy as np
import pytest
from backend_conformance import check_fork, observation_space, run_episode

from envs.backends import RestoreBackend, SimBackend
from envs.restore_env import RestoreEnv
from envs.scenarios import resolve
from envs.sim import core
from envs.sim.params import SimConfig

N_MAX = 24


def _backend(uri: str) -> SimBackend:
    return SimBackend(resolve(uri), SimConfig(), N_MAX)


@pytest.mark.parametrize(
    "uri",
    ["generator://mixed-v0?components=5-16", "scenario://lab-demo", "generator://db-heavy-v0"],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sim_backend_conformance(uri, seed):
    b = _backend(uri)
    assert isinstance(b, RestoreBackend)
    run_episode(b, observation_space(N_MAX), seed, max_steps=2000)


@pytest.mark.parametrize("seed", [0, 3])
def test_sim_backend_fork_is_independent(seed):
    check_fork(_backend("generator://mixed-v0?components=5-16"), seed)


def test_sim_backend_apply_is_core_transition():
    """No dynamics of its own: apply == core.transition, elapsed == -reward / scale."""
    b = _backend("scenario://lab-demo")
    p, s, _ = b.reset(np.random.default_rng(7))
    rng = np.random.default_rng(7)
    while not s.terminal:
        a = int(rng.choice(np.flatnonzero(core.action_mask(p, s, N_MAX))))
        want, valid = core.transition(p, s, a, N_MAX)
        out = b.apply(a)
        assert out.valid == valid
        assert np.array_equal(out.state.status, want.status) and out.state.t == want.t
        assert -p.config.reward_scale * out.elapsed_s == core.reward(p, s, want)
        s = out.state


def test_env_return_is_minus_scaled_ttr_through_backend():
    env = RestoreEnv(scenario="scenario://lab-demo")
    assert isinstance(env.session, SimBackend)
    env.reset(seed=5)
    rng = np.random.default_rng(5)
    total = 0.0
    while True:
        a = int(rng.choice(np.flatnonzero(env.action_masks())))
        _, r, term, trunc, info = env.step(a)
        total += r
        if term or trunc:
            break
    assert total == pytest.approx(-env.config.reward_scale * info["ttr"])
    assert env.state is env.session.observe()


def test_sim_backend_before_reset_raises_clear_error():
    from persona.errors import ScenarioError

    with pytest.raises(ScenarioError, match="reset"):
        _backend("scenario://lab-demo").apply(0)
