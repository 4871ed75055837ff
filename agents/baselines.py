"""Baseline restore policies and the hindsight oracle.

Every policy sees what a production restorer sees - the observation (captured persona,
progress) and the action mask - never the simulator's hidden truth. The exception is
:class:`Oracle`, which is a *bound*, not a policy: it searches restore orders with
hindsight knowledge of the episode's sampled durations, failures and true demands. The
``planner`` (:mod:`agents.planner`) sits between the two: it *knows the true model* (the
scenario's hidden soft dependencies and demand distribution, via ``PolicyContext.model``)
but not the episode's draws.

* ``capture-order``: restore in captured order, default (middle) allocation level.
* ``random``: a uniformly random valid action.
* ``critical-path``: the ready component with the longest remaining expected path first;
  processes get the smallest level covering their captured CPU peak that still fits the
  host's cores.
* ``seed-adaptive``: the specification's rule-based Adaptive Learning Module. Critical-path
  order and peak-based allocation, adjusted across episodes from validation results: roles
  whose restores failed are deferred (configuration priority), roles whose processes were
  starved (utilisation > 1) get a higher allocation level, roles far below (utilisation <
  0.5) a lower one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from envs import layout
from envs.sim import core
from envs.sim.params import EpisodeParams, Scenario, SimConfig, nominal_duration
from persona.errors import PolicyError
from persona.model import ROLES

ROLE_COLS = np.array([layout.COL[f"role_{r}"] for r in ROLES])


def public_state(s: core.SimState) -> core.SimState:
    """``s`` without what only the episode's draws decide: whether running attempts will fail
    or leave a latent fault, which restored components carry a latent fault, and the CPU use
    of restored processes (set by their true demands). What is left is a restorer's own
    bookkeeping: time, statuses, levels, allocations, failed attempts, back-offs, and the
    fraction of each running restore still to do (which the observation shows too)."""
    n = s.status.shape[0]
    none = np.zeros(n, dtype=bool)
    return replace(
        s, will_fail=none, will_latent=none, latent=none, background=0.0, first_alloc=None
    )


@dataclass(frozen=True)
class TrueModel:
    """What a model-knowing planner is given: the episode's scenario - the persona, the host
    and the *hidden truth's distribution* (soft dependencies, demand factors) - and the current
    :func:`public_state`. Never the episode's draws (durations, fault draws, true demands)."""

    scenario: Scenario
    state: Callable[[], core.SimState]  # the public state now


@dataclass(frozen=True)
class PolicyContext:
    """What a policy may know about the environment besides observations.

    ``model`` is given only to policies that declare ``needs_model = True`` (the planner,
    which *knows the true model*); every other policy sees ``None``."""

    config: SimConfig
    n_max: int
    model: TrueModel | None = None


class Policy(Protocol):
    name: str

    def begin_episode(self, ctx: PolicyContext, seed: int) -> None: ...

    def act(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> int: ...

    def end_episode(self, info: dict[str, Any]) -> None: ...


def _ready(mask: np.ndarray, ctx: PolicyContext) -> np.ndarray:
    L = ctx.config.n_levels
    return np.flatnonzero(mask[:-1].reshape(ctx.n_max, L).any(axis=1))


def peak_level(obs: dict[str, np.ndarray], i: int, ctx: PolicyContext, boost: int = 0) -> int:
    """Smallest level whose allocation covers the captured peak (+boost), within free cores."""
    nodes, g = obs["nodes"], obs["globals"]
    L = ctx.config.n_levels
    if nodes[i, layout.COL["kind_process"]] < 0.5:
        return L // 2
    levels = np.asarray(ctx.config.alloc_levels)
    want = int(np.searchsorted(levels, 1.0 - 1e-9))  # first multiple >= 1.0 x peak
    want = int(np.clip(want + boost, 0, L - 1))
    free = 1.0 - float(g[layout.GCOL["alloc_frac"]])  # share of host cores not yet allocated
    peak = float(nodes[i, layout.COL["peak_frac"]])
    while want > 0 and peak * levels[want] > free + 1e-9:
        want -= 1
    return want


class CaptureOrder:
    name = "capture-order"

    def begin_episode(self, ctx: PolicyContext, seed: int) -> None:
        self.ctx = ctx

    def act(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> int:
        ready = _ready(mask, self.ctx)
        if ready.size == 0:
            return len(mask) - 1
        L = self.ctx.config.n_levels
        return int(ready[0] * L + L // 2)

    def end_episode(self, info: dict[str, Any]) -> None:
        pass


class RandomPolicy:
    name = "random"

    def begin_episode(self, ctx: PolicyContext, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> int:
        return int(self.rng.choice(np.flatnonzero(mask)))

    def end_episode(self, info: dict[str, Any]) -> None:
        pass


class CriticalPath:
    name = "critical-path"

    def begin_episode(self, ctx: PolicyContext, seed: int) -> None:
        self.ctx = ctx

    def priority(self, obs: dict[str, np.ndarray], ready: np.ndarray) -> np.ndarray:
        return obs["nodes"][ready, layout.COL["critical_path_s"]]

    def level(self, obs: dict[str, np.ndarray], i: int) -> int:
        return peak_level(obs, i, self.ctx)

    def act(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> int:
        ready = _ready(mask, self.ctx)
        if ready.size == 0:
            return len(mask) - 1
        i = int(ready[int(np.argmax(self.priority(obs, ready)))])  # ties: captured order
        return i * self.ctx.config.n_levels + self.level(obs, i)

    def end_episode(self, info: dict[str, Any]) -> None:
        pass


@dataclass
class SeedAdaptive(CriticalPath):
    """The specification's ``optimizePersonaApplication`` as a rule-based policy."""

    name: str = "seed-adaptive"
    error_threshold: float = 0.0  # errorRate above this adjusts configuration priority
    defer_step: float = 0.25  # how far a failing role is pushed back (critical-path units)
    starved: float = 1.0  # utilisation above this: raise that role's allocation
    idle: float = 0.5  # utilisation below this: lower it
    defer: dict[str, float] = field(default_factory=dict)
    boost: dict[str, int] = field(default_factory=dict)
    _roles: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def priority(self, obs: dict[str, np.ndarray], ready: np.ndarray) -> np.ndarray:
        base = super().priority(obs, ready)
        roles = obs["nodes"][ready][:, ROLE_COLS].argmax(axis=1)
        return base - np.array([self.defer.get(ROLES[r], 0.0) for r in roles])

    def level(self, obs: dict[str, np.ndarray], i: int) -> int:
        role = ROLES[int(obs["nodes"][i, ROLE_COLS].argmax())]
        return peak_level(obs, i, self.ctx, boost=self.boost.get(role, 0))

    def end_episode(self, info: dict[str, Any]) -> None:
        comps = info.get("components", [])
        if not comps:
            return
        error_rate = sum(c["failed_attempts"] for c in comps) / len(comps)
        if error_rate > self.error_threshold:
            for c in comps:
                if c["failed_attempts"] > 0:
                    self.defer[c["role"]] = self.defer.get(c["role"], 0.0) + self.defer_step
        for c in comps:
            u = c.get("utilisation")
            if u is None:
                continue
            b = self.boost.get(c["role"], 0)
            if u > self.starved:
                self.boost[c["role"]] = min(b + 1, 2)
            elif u < self.idle:
                self.boost[c["role"]] = max(b - 1, -2)


# ---------------------------------------------------------------------------------------
# oracle (hindsight bound)


def hindsight_levels(p: EpisodeParams) -> np.ndarray:
    """Per component: the smallest level covering the true demand (processes), max otherwise."""
    L = p.config.n_levels
    levels = np.full(p.n, L - 1, dtype=np.int64)
    mult = np.asarray(p.config.alloc_levels)
    for i in np.flatnonzero(p.is_process):
        ok = np.flatnonzero(p.peak[i] * mult >= p.demand[i])
        levels[i] = int(ok[0]) if ok.size else L - 1
    return levels


def oracle_search(p: EpisodeParams, n_max: int, max_nodes: int = 300_000) -> tuple[float, bool]:
    """Best TTR over restore orders, waiting decisions and allocation levels, in hindsight.

    Depth-first branch-and-bound over the simulator's decision points: at each one, start a
    ready component (at any level; processes at levels covering their true demand) or wait.
    Waiting with a free slot is searched only where starting some ready component now would
    fail or leave a latent fault (known in hindsight); otherwise the slot is used.
    Starts at one instant are taken in increasing component index (equivalent orders are
    not searched twice). Returns ``(ttr, exact)``; ``exact`` is False if the node budget ran
    out before the search finished (the value is then the best found).
    Only for small scenarios (<= 7 components).
    """
    if p.n > 7:
        raise PolicyError(f"the oracle searches exhaustively and needs <= 7 components, got {p.n}")
    min_levels = hindsight_levels(p)
    L = p.config.n_levels
    wait = n_max * L
    fast, tail = _fastest(p)
    best = [p.config.max_time_s]
    # an incumbent from greedy list schedules makes the bound bite early
    for prio in (p.nominal_s, -np.arange(p.n, dtype=float)):
        best[0] = min(best[0], _greedy(p, prio, min_levels, n_max))
    nodes = [0]

    def options(i: int) -> list[int]:
        lo = int(min_levels[i]) if p.is_process[i] else 0
        # try the cheapest sufficient level first for processes, the fastest for the rest
        return list(range(lo, L)) if p.is_process[i] else list(range(L - 1, -1, -1))

    def dfs(s: core.SimState, last_started: int) -> None:
        nodes[0] += 1
        if nodes[0] > max_nodes:
            return
        if s.terminal:
            best[0] = min(best[0], s.ttr if s.validated else p.config.max_time_s)
            return
        if _lower_bound(p, s, fast, tail) >= best[0] - 1e-9:
            return
        ready = np.flatnonzero(core.startable(p, s))
        for i in ready:
            if i > last_started:
                for lv in options(int(i)):
                    nxt = core.settle(p, core.start(p, s, int(i), lv))
                    # the canonical index order holds only among starts at the same instant
                    dfs(nxt, int(i) if nxt.t == s.t else -1)
        # Idling a free slot pays only to avoid a fault that starting now would cause.
        if core.can_wait(p, s) and any(any(core.fault_draw(p, s, int(i))) for i in ready):
            nxt, _ = core.transition(p, s, wait, n_max)
            dfs(nxt, -1)

    dfs(core.settle(p, core.initial(p)), -1)
    return best[0], nodes[0] <= max_nodes


def _fastest(p: EpisodeParams) -> tuple[np.ndarray, np.ndarray]:
    """Per component: a lower bound on one attempt's duration (luckiest draw, most CPU, no
    contention), and on the longest chain of hard descendants after it."""
    cfg = p.config
    cores = np.where(p.is_process, p.peak * cfg.alloc_levels[-1], cfg.restore_cores[-1])
    cores = np.minimum(np.maximum(cores, 0.05), p.host.cpu_cores)
    nmin = p.noise.min(axis=1)
    fast = nominal_duration(
        p.cpu_work * nmin, p.io_work * nmin, p.serial, cores, p.host.io_mb_s, p.fixed * nmin
    )
    tail = np.zeros(p.n)
    for i in reversed(p.scenario.manifest.topological_indices()):
        ch = np.flatnonzero(p.parents[:, i])
        if ch.size:
            tail[i] = float((fast[ch] + tail[ch]).max())
    return fast, tail


def _lower_bound(p: EpisodeParams, s: core.SimState, fast: np.ndarray, tail: np.ndarray) -> float:
    """Admissible bound on the TTR reachable from ``s``."""
    nd = s.status != core.DONE
    if not nd.any():
        return s.t + p.config.validation_s
    start_t = np.maximum(s.t, s.ready_at[nd])
    rem = np.where(s.status[nd] == core.RUNNING, s.remaining[nd], 1.0)
    return float((start_t + rem * fast[nd] + tail[nd]).max()) + p.config.validation_s


def _greedy(p: EpisodeParams, priority: np.ndarray, levels: np.ndarray, n_max: int) -> float:
    """TTR of a list schedule: always start the ready component of highest priority."""
    s = core.settle(p, core.initial(p))
    while not s.terminal:
        ready = np.flatnonzero(core.startable(p, s))
        if ready.size:
            i = int(ready[np.argmax(priority[ready])])
            s = core.settle(p, core.start(p, s, i, int(levels[i])))
        else:
            s, _ = core.transition(p, s, n_max * p.config.n_levels, n_max)
    return s.ttr if s.validated else p.config.max_time_s


def oracle_ttr(p: EpisodeParams, n_max: int) -> float:
    return oracle_search(p, n_max)[0]


POLICIES: dict[str, type[Policy]] = {
    "capture-order": CaptureOrder,
    "random": RandomPolicy,
    "critical-path": CriticalPath,
    "seed-adaptive": SeedAdaptive,
}
BOUNDS = ("oracle",)
MODEL_POLICIES = ("planner",)  # know the scenario's true model (agents.planner)


def make_policy(name: str) -> Policy:
    """A baseline by name (learned policies are loaded by :mod:`agents.evaluate`)."""
    if name in MODEL_POLICIES:
        from agents.planner import Planner

        return Planner()
    try:
        return POLICIES[name]()
    except KeyError:
        known = ", ".join([*POLICIES, *MODEL_POLICIES, *BOUNDS])
        raise PolicyError(f"unknown policy {name!r}; use one of {known}") from None
