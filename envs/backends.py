"""The small backend contract behind ``persona/Restore-v0`` (after CompilerGym's session API).

A backend owns one episode of restoring a persona. It speaks the simulator's vocabulary on
both modes: the episode's static description is an :class:`~envs.sim.params.EpisodeParams`
and its progress a :class:`~envs.sim.core.SimState`, so :mod:`envs.layout` builds the same
observations (same spaces) for the simulator and for the live lab.

* ``reset(rng)``  -> :class:`Episode`: static params, the state at the first decision point,
  and an info dict.
* ``apply(action)`` -> :class:`Applied`: the new state at the next decision point, the
  seconds that passed (simulated or measured) and whether the action was valid.
* ``observe()`` -> the current state (frozen; never mutated).
* ``fork()`` -> an independent backend at the same point (the simulator copies its pure
  state; the live backend cannot and raises :class:`~persona.errors.ScenarioError`).
* ``close()`` -> release what the backend created.

:class:`SimBackend` is a thin shell over :mod:`envs.sim.core`: it holds no dynamics.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from envs.scenarios import ScenarioSource
from envs.sim import core
from envs.sim.params import EpisodeParams, SimConfig, compile_episode
from persona.errors import ScenarioError


class Episode(NamedTuple):
    params: EpisodeParams
    state: core.SimState
    info: dict[str, Any]


class Applied(NamedTuple):
    state: core.SimState
    elapsed_s: float  # seconds charged for the step (reward = -reward_scale * elapsed_s)
    valid: bool
    info: dict[str, Any]


@runtime_checkable
class RestoreBackend(Protocol):
    """What :class:`envs.restore_env.RestoreEnv` needs from a mode."""

    n_max: int

    def reset(self, rng: np.random.Generator) -> Episode: ...
    def apply(self, action: int) -> Applied: ...
    def observe(self) -> core.SimState: ...
    def fork(self) -> RestoreBackend: ...
    def close(self) -> None: ...


def elapsed(before: core.SimState, after: core.SimState) -> float:
    """Seconds a step costs: a finished, not validated episode is charged up to its TTR."""
    return (after.ttr if after.terminal else after.t) - before.t


class SimBackend:
    """The simulator: ``apply`` is :func:`envs.sim.core.transition`, nothing more."""

    def __init__(self, source: ScenarioSource, config: SimConfig, n_max: int) -> None:
        self.source = source
        self.config = config
        self.n_max = n_max
        self.params: EpisodeParams | None = None
        self.state: core.SimState | None = None

    def reset(self, rng: np.random.Generator) -> Episode:
        scenario = self.source.sample(rng)
        self.params = p = compile_episode(scenario, self.config, rng)
        self.state = core.settle(p, core.initial(p))
        info = {"scenario": scenario.name, "family": scenario.family, "n": p.n, "t": 0.0}
        return Episode(p, self.state, info)

    def apply(self, action: int) -> Applied:
        p, before = self.params, self.state
        if p is None or before is None:
            raise ScenarioError("SimBackend.apply() before reset(): call reset() first")
        after, valid = core.transition(p, before, action, self.n_max)
        self.state = after
        t_after = after.ttr if after.terminal else after.t
        return Applied(after, t_after - before.t, valid, {})

    def observe(self) -> core.SimState:
        if self.state is None:
            raise ScenarioError("SimBackend.observe() before reset(): call reset() first")
        return self.state

    def fork(self) -> SimBackend:
        """An independent copy at the same point (states are immutable: sharing is a copy)."""
        other = SimBackend(self.source, self.config, self.n_max)
        other.params, other.state = self.params, self.state
        return other

    def close(self) -> None:
        self.params = self.state = None
