"""One conformance suite for every :class:`envs.backends.RestoreBackend` (sim and live).

The checks hold for any mode: the first state is a decision point, observations built with
:mod:`envs.layout` fit the env's spaces, ``observe()`` is what ``apply`` returned, time never
runs backwards, an invalid action is reported (never crashes), the seconds charged add up to
the episode's TTR, and ``fork`` either gives an independent copy or refuses with
``ScenarioError``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from gymnasium import spaces

from envs import layout
from envs.backends import Applied, RestoreBackend
from envs.restore_env import RestoreEnv
from envs.sim import core
from persona.errors import ScenarioError

Chooser = Callable[[np.ndarray, np.random.Generator], int]


def random_valid(mask: np.ndarray, rng: np.random.Generator) -> int:
    return int(rng.choice(np.flatnonzero(mask)))


def invalid_action(p: object, s: core.SimState, n_max: int, n_levels: int) -> int | None:
    """A start action for a component that may not start now (None if every one may)."""
    ok = core.startable(p, s)  # type: ignore[arg-type]
    bad = np.flatnonzero(~ok)
    return None if bad.size == 0 else int(bad[0]) * n_levels


def run_episode(
    backend: RestoreBackend,
    space: spaces.Space,  # the env's observation space for this n_max
    seed: int,
    max_steps: int,
    choose: Chooser = random_valid,
    try_invalid: bool = True,
) -> tuple[core.SimState, list[Applied]]:
    rng = np.random.default_rng(seed)
    params, state, info = backend.reset(rng)
    n_max = backend.n_max
    assert 1 <= params.n <= n_max
    assert isinstance(info, dict)
    assert backend.observe() is state
    assert state.t >= 0.0
    static = layout.static_obs(params, n_max)
    L = params.config.n_levels
    steps: list[Applied] = []
    if try_invalid and not state.terminal:
        bad = invalid_action(params, state, n_max, L)
        if bad is not None:
            out = backend.apply(bad)
            assert out.valid is False
            assert out.elapsed_s >= 0.0
            assert out.state.t >= state.t
            steps.append(out)
            state = out.state
    while not state.terminal:
        assert len(steps) < max_steps, f"episode did not end within {max_steps} steps"
        obs = layout.observe(params, state, static)
        assert space.contains(obs), "observation outside the env's observation space"
        mask = core.action_mask(params, state, n_max)
        assert mask.any(), "a non-terminal state must offer an action"
        out = backend.apply(choose(mask, rng))
        assert out.valid is True
        assert out.elapsed_s >= 0.0
        assert out.state.t >= state.t
        assert backend.observe() is out.state
        steps.append(out)
        state = out.state
    total = sum(a.elapsed_s for a in steps)
    assert np.isclose(total, state.ttr, rtol=1e-9, atol=1e-6), (total, state.ttr)
    assert bool(state.validated) == (state.ttr < params.config.max_time_s)
    return state, steps


def check_fork(backend: RestoreBackend, seed: int) -> None:
    """After reset: a fork is independent and replays identically, or fork is refused."""
    rng = np.random.default_rng(seed)
    params, state, _ = backend.reset(rng)
    try:
        twin = backend.fork()
    except ScenarioError as e:
        assert "fork" in str(e)
        return
    assert twin.observe() is state
    mask = core.action_mask(params, state, backend.n_max)
    a = int(np.flatnonzero(mask)[0])
    mine, theirs = backend.apply(a), twin.apply(a)
    assert mine.elapsed_s == theirs.elapsed_s
    assert np.array_equal(mine.state.status, theirs.state.status)
    twin.apply(int(np.flatnonzero(core.action_mask(params, theirs.state, backend.n_max))[0]))
    assert backend.observe() is mine.state, "stepping the fork moved the original"


def observation_space(n_max: int) -> spaces.Space:
    return RestoreEnv(max_components=n_max).observation_space
