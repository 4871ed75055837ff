"""A model-knowing, non-clairvoyant planner: Monte-Carlo rollouts over re-sampled futures.

The hindsight oracle (:func:`agents.baselines.oracle_search`) knows every draw of the episode.
This planner knows the scenario's *true model* - the persona, the host, the hidden soft
dependencies and the distribution of true CPU demands (:class:`~envs.sim.params.Scenario`) -
but not the episode's draws. It measures how much of the gap to the oracle any policy could
close without hindsight.

At each decision point (:meth:`Planner.act`), with the current :func:`~agents.baselines.public_state`:

1. draw ``samples`` futures: a fresh :func:`~envs.sim.params.compile_episode` of the scenario
   (new duration noise, fault uniforms, true demands), with the hidden outcome of what already
   happened re-drawn from it: whether each running attempt will fail or leave a latent fault,
   and whether each restored component carries a latent fault, both by
   :func:`envs.sim.core.fault_draw` at the public state its attempt started from (a restored
   component is known not to have failed, so it is drawn with failure excluded); the CPU use
   of restored processes follows from the new demands (:func:`envs.sim.core._mark_done`);
2. for every valid action and every future (common random numbers across actions), apply the
   action with :func:`envs.sim.core.transition`, then follow each base policy to the end;
3. pick the action with the lowest mean TTR under its best base policy (ties: lowest index).

With ``learned`` (:class:`agents.model_learning.LearnedModel`) the futures come from the
persona and host with a hidden structure *learned from episodes* instead of the true one: the
planner then knows nothing a restorer could not (a search-based restorer).

With the base ``policy`` (a learned observation policy, e.g. an ONNX one) the planner is one
step of policy improvement over that policy too: expert iteration (:mod:`agents.imitate`
``planner_bases``) makes the student's own rollouts part of its teacher.

The dynamics are only core's pure functions; the planner keeps none of its own. Base
policies: ``critical-path`` (:class:`~agents.baselines.CriticalPath` on the observation) and
``informed``, a model-aware rule (:class:`Informed`: critical-path order, but a process whose
soft dependencies are not up yet waits when it can; processes at the smallest level that
covers ``demand_quantile`` of their demand distribution, within the host's free cores).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import norm

from agents.baselines import CriticalPath, PolicyContext, TrueModel
from envs import layout
from envs.sim import core
from envs.sim.params import EpisodeParams, Scenario, SimConfig, compile_episode
from persona.errors import PolicyError

if TYPE_CHECKING:
    from agents.model_learning import LearnedModel

Base = Callable[[EpisodeParams, core.SimState], int]
BASES = ("informed", "critical-path")  # the default bases
KNOWN_BASES = (*BASES, "policy")  # "policy": a given observation policy (expert iteration)


@dataclass
class Informed:
    """A base policy that knows the scenario's true model (acts on the simulator state)."""

    n_max: int
    cp: np.ndarray  # critical path (nominal s) per component
    levels: np.ndarray  # per component: level covering ``demand_quantile`` of its demand

    @classmethod
    def build(
        cls, p: EpisodeParams, static: layout.StaticObs, n_max: int, demand_quantile: float
    ) -> Informed:
        cfg, sc = p.config, p.scenario
        L = cfg.n_levels
        z = float(norm.ppf(demand_quantile))
        mult = np.asarray(cfg.alloc_levels)
        levels = np.full(p.n, L // 2, dtype=np.int64)
        for i, c in enumerate(sc.manifest.components):
            if p.is_process[i]:
                mu, sd = sc.demand_mu.get(c.name, 0.0), sc.demand_sigma.get(c.name, 0.1)
                need = float(np.exp(mu + sd * min(z, 2.5)))  # demand / captured peak
                ok = np.flatnonzero(mult >= need - 1e-9)
                levels[i] = int(ok[0]) if ok.size else L - 1
        cp = static.nodes[: p.n, layout.COL["critical_path_s"]].astype(np.float64)
        return cls(n_max, cp, levels)

    def __call__(self, p: EpisodeParams, s: core.SimState) -> int:
        L = p.config.n_levels
        wait = self.n_max * L
        ready = np.flatnonzero(core.startable(p, s))
        if ready.size == 0:
            return wait
        risk = np.array([_fault_risk(p, s, int(i)) for i in ready])
        safe = ready[risk == 0.0]
        if safe.size:
            i = int(safe[int(np.argmax(self.cp[safe]))])
        elif core.can_wait(p, s):
            return wait
        else:
            i = int(ready[int(np.argmin(risk))])
        lv = int(self.levels[i])
        if p.is_process[i]:
            free = p.host.cpu_cores - float(s.alloc.sum())
            while lv > 0 and core.allocation(p, i, lv) > free + 1e-9:
                lv -= 1
        return i * L + lv


def _fault_risk(p: EpisodeParams, s: core.SimState, i: int) -> float:
    """Probability that starting ``i`` now faults (from the true model's soft dependencies)."""
    ok = 1.0
    for j, pj in p.lists.soft_parents[i]:
        if s.status[j] != core.DONE:
            ok *= 1.0 - pj
    return 1.0 - ok


def _critical_path_base(ctx: PolicyContext, static: layout.StaticObs) -> Base:
    pol = CriticalPath()
    pol.begin_episode(ctx, 0)

    def act(p: EpisodeParams, s: core.SimState) -> int:
        return pol.act(layout.observe(p, s, static), core.action_mask(p, s, ctx.n_max))

    return act


def _policy_base(ctx: PolicyContext, static: layout.StaticObs, policy: Any) -> Base:
    """A base that follows an observation policy (``act(obs, mask)``, e.g. a learned one)."""

    def act(p: EpisodeParams, s: core.SimState) -> int:
        return int(policy.act(layout.observe(p, s, static), core.action_mask(p, s, ctx.n_max)))

    return act


def rollout(p: EpisodeParams, s: core.SimState, base: Base, n_max: int) -> float:
    """TTR of following ``base`` from ``s`` to the end of the episode ``p``."""
    while not s.terminal:
        s, _ = core.transition(p, s, base(p, s), n_max)
    return float(s.ttr)


def resample(
    scenario: Scenario,
    config: SimConfig,
    s: core.SimState,
    started: dict[int, core.SimState],
    rng: np.random.Generator,
    reveal: Callable[[EpisodeParams], EpisodeParams] | None = None,
) -> tuple[EpisodeParams, core.SimState]:
    """A future consistent with the public state ``s``: fresh draws of the scenario, and the
    hidden outcomes of past starts (``started[i]``: the public state attempt ``i`` started
    from) re-drawn from them. ``reveal`` (hindsight experiment only) replaces some of the fresh
    draws by the true episode's before the outcomes are re-drawn."""
    p = compile_episode(scenario, config, rng)
    if reveal is not None:
        p = reveal(p)
    n = p.n
    will_fail = np.zeros(n, dtype=bool)
    will_latent = np.zeros(n, dtype=bool)
    for i in s.running:
        will_fail[i], will_latent[i] = core.fault_draw(p, started.get(i, s), i)
    done = [int(i) for i in np.flatnonzero(s.status == core.DONE)]
    if done:
        survived = replace(p, fail_u=np.ones_like(p.fail_u))  # it is known not to have failed
        for i in done:
            if i in started:
                will_latent[i] = core.fault_draw(survived, started[i], i)[1]
    s = replace(s, will_fail=will_fail, will_latent=will_latent)
    if done:
        ch = core._mark_done(p, s, done, s.status.copy())  # latent faults + restored CPU use
        s = replace(s, latent=ch["latent"], background=ch["background"])
    return p, s


class Planner:
    """Rollout planner that *knows the true model* (``needs_model``), not the episode's draws."""

    name = "planner"
    needs_model = True

    def __init__(
        self,
        samples: int = 16,
        bases: Sequence[str] = BASES,
        demand_quantile: float = 0.9,
        policy: Any = None,
        learned: LearnedModel | None = None,
    ) -> None:
        unknown = [b for b in bases if b not in KNOWN_BASES]
        if unknown or not bases:
            raise PolicyError(
                f"unknown planner base {unknown}; use some of {', '.join(KNOWN_BASES)}"
            )
        if ("policy" in bases) != (policy is not None):
            raise PolicyError("the planner base 'policy' and a policy go together: give both")
        if samples < 1:
            raise PolicyError(f"planner samples must be >= 1, got {samples}")
        self.samples = samples
        self.base_names = tuple(bases)
        self.demand_quantile = demand_quantile
        self.policy = policy  # the "policy" base: stateless between calls (e.g. ONNX)
        # plan with a learned hidden structure instead of the scenario's true one
        self.learned = learned
        # experiments.oracle_gap --reveal only: the futures get some of the true draws
        self.reveal: Callable[[EpisodeParams], EpisodeParams] | None = None

    def begin_episode(self, ctx: PolicyContext, seed: int) -> None:
        if ctx.model is None:
            raise PolicyError(
                "the planner knows the scenario's true model: evaluate it through "
                "agents.evaluate (simulator backend), which gives it PolicyContext.model"
            )
        self.ctx = ctx
        self.model: TrueModel = ctx.model
        # the futures' scenario: the true one, or the persona + host with the learned structure
        self.scenario = (
            ctx.model.scenario
            if self.learned is None
            else self.learned.scenario(ctx.model.scenario)
        )
        self.seed = seed
        self.decision = 0
        self.started: dict[int, core.SimState] = {}
        self.bases: list[Base] | None = None

    def _make_bases(self, p: EpisodeParams) -> list[Base]:
        static = layout.static_obs(p, self.ctx.n_max)  # draw-free: persona, host, nominal
        out: list[Base] = []
        for b in self.base_names:
            if b == "informed":
                out.append(Informed.build(p, static, self.ctx.n_max, self.demand_quantile))
            elif b == "policy":
                self.policy.begin_episode(self.ctx, self.seed)
                out.append(_policy_base(self.ctx, static, self.policy))
            else:
                out.append(_critical_path_base(self.ctx, static))
        return out

    def values(self, s: core.SimState, actions: np.ndarray) -> np.ndarray:
        """Mean TTR of each action (then the best base) over ``samples`` re-sampled futures."""
        rng = np.random.default_rng([self.seed, self.decision, 0x504C4E])
        n_max = self.ctx.n_max
        total = np.zeros((len(self.base_names), actions.size))
        for _ in range(self.samples):
            p, sk = resample(self.scenario, self.ctx.config, s, self.started, rng, self.reveal)
            if self.bases is None:
                self.bases = self._make_bases(p)
            for a, action in enumerate(actions.tolist()):
                s1, _ = core.transition(p, sk, int(action), n_max)
                for b, base in enumerate(self.bases):
                    total[b, a] += rollout(p, s1, base, n_max)
        return np.asarray(total.min(axis=0) / self.samples)

    def act(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> int:
        actions = np.flatnonzero(mask)
        if actions.size == 0:
            return len(mask) - 1
        action = int(actions[0])
        if actions.size > 1:
            action = int(actions[int(np.argmin(self.values(self.model.state(), actions)))])
        self.record(action)
        return action

    def record(self, action: int) -> None:
        """Note that ``action`` is taken now (before the env steps): by :meth:`act`, or by
        another policy whose states the planner labels (:mod:`agents.imitate`), so later
        decisions re-draw the hidden outcome of what was started from the right state."""
        self.decision += 1
        L = self.ctx.config.n_levels
        if action < self.ctx.n_max * L:
            self.started[action // L] = self.model.state()

    def end_episode(self, info: dict[str, Any]) -> None:
        pass
