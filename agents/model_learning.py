"""Learn the simulator's hidden structure from episodes: a model a restorer can plan with.

The rollout planner (:mod:`agents.planner`) is given each scenario's *true* hidden structure:
which processes fault when started before which others (soft dependencies), and how far a
process's true CPU demand sits from its captured peak. A restorer is not. This module learns
both from experience, keyed on what a persona shows - the components' roles:

* **soft dependencies**: every restore attempt of a process of role ``a`` started while
  processes of roles ``b1, b2, ...`` were not restored yet is one sample of a noisy-OR: it
  fails with ``P = (1 - latent_fraction) x (1 - prod_k (1 - p[a, b_k]))`` (the simulator's
  fault physics: a share ``latent_fraction`` of soft-dependency faults stays latent instead
  of failing the attempt); ``p`` is the maximum-likelihood fit (:func:`fit_soft`, one
  problem per role in ``log(1 - p)``). A failed attempt is what a restorer sees at once;
  attempts past the retry limit (which cannot fail) are not samples;
* **demand**: ``log(demand / captured peak)`` of every restored process is one sample of a
  normal per role (:func:`fit_demand`; a restorer measures the CPU a restored process uses).

:meth:`LearnedModel.scenario` puts the learned structure into a scenario in place of the
hidden one (keeping the persona, the host and the calibrated step physics), so the planner can
plan with it (``Planner(..., learned=model)``) without ever reading the hidden truth.

    python -m agents.model_learning --episodes 10000 --seed 0 --out policies/learned-model.json

(the shipped file, reproduced byte for byte; ``--scenarios`` defaults to the mixed family
of 5-16 components).

Episodes use seeds ``TRAIN_SEED_BASE + 700_000_000 + 1_000_000 x seed + k`` (training seeds:
never evaluation episodes), rolled out by the ``random`` baseline (every order is tried).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from agents.baselines import PolicyContext, make_policy
from envs.restore_env import RestoreEnv
from envs.sim import core
from envs.sim.params import Scenario, SimConfig, SoftDependency
from persona.errors import ConfigError
from persona.model import atomic_write_text

SEED_OFFSET = 700_000_000  # + agents.train.TRAIN_SEED_BASE (torch-free import here)
P_MIN = 0.02  # a fitted p below this is dropped (no dependency): noise, not structure
FORMAT = "persona-learned-model/v1"


@dataclass(frozen=True)
class Attempt:
    """One restore attempt of a process: its role, the roles of the processes not restored
    when it started, and whether it failed."""

    role: str
    missing: tuple[str, ...]
    failed: bool


@dataclass(frozen=True)
class LearnedModel:
    soft: dict[tuple[str, str], float]  # (role, needed role) -> P(fault) if started before
    demand: dict[str, tuple[float, float]]  # role -> (mu, sigma) of log(demand / peak)
    meta: dict[str, Any] = field(default_factory=dict)

    def scenario(self, base: Scenario) -> Scenario:
        """``base`` (its persona, host and step physics) with the learned hidden structure in
        place of its own: soft dependencies between every two processes by their roles, and
        demand factors by role (a role never seen: the mean over roles)."""
        procs = [c for c in base.manifest.components if c.is_process]
        soft = tuple(
            SoftDependency(a.name, b.name, self.soft[(a.role, b.role)])
            for a in procs
            for b in procs
            if a.name != b.name and (a.role, b.role) in self.soft
        )
        mus = [m for m, _ in self.demand.values()] or [0.0]
        sds = [s for _, s in self.demand.values()] or [0.1]
        fallback = (float(np.mean(mus)), float(np.mean(sds)))
        dem = {c.name: self.demand.get(c.role, fallback) for c in procs}
        return replace(
            base,
            soft_dependencies=soft,
            demand_mu={k: v[0] for k, v in dem.items()},
            demand_sigma={k: v[1] for k, v in dem.items()},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "soft": [
                {"role": a, "needs": b, "p_fault": p} for (a, b), p in sorted(self.soft.items())
            ],
            "demand": {r: {"mu": m, "sigma": s} for r, (m, s) in sorted(self.demand.items())},
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, obj: Any, where: str = "learned model") -> LearnedModel:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ConfigError(f"{where}: not a {FORMAT} file (python -m agents.model_learning)")
        try:
            soft = {(d["role"], d["needs"]): float(d["p_fault"]) for d in obj["soft"]}
            demand = {r: (float(d["mu"]), float(d["sigma"])) for r, d in obj["demand"].items()}
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{where}: malformed ({e})") from e
        return cls(soft, demand, dict(obj.get("meta", {})))

    @classmethod
    def load(cls, path: str | Path) -> LearnedModel:
        p = Path(path)
        if not p.exists():
            raise ConfigError(
                f"learned model {p} does not exist; make it with agents.model_learning"
            )
        return cls.from_json(json.loads(p.read_text()), str(p))


# ---------------------------------------------------------------------------------------
# fitting (pure)


def fit_soft(
    attempts: Iterable[Attempt], scale: float = 1.0, p_min: float = P_MIN
) -> dict[tuple[str, str], float]:
    """Maximum-likelihood noisy-OR: per role ``a``, ``q[b] = log(1 - p[a, b]) <= 0`` maximises
    ``sum_fails log(scale (1 - exp(n . q))) + sum_others log(1 - scale (1 - exp(n . q)))``
    (``n``: missing processes per role; ``scale``: the share of faults that fail the attempt,
    1 for a plain noisy-OR). Pairs fitted below ``p_min`` are left out."""
    by_role: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_role[a.role].append(a)
    out: dict[tuple[str, str], float] = {}
    for role, rows in sorted(by_role.items()):
        needed = sorted({b for r in rows for b in r.missing})
        if not needed:
            continue
        col = {b: k for k, b in enumerate(needed)}
        n = np.zeros((len(rows), len(needed)))
        for i, r in enumerate(rows):
            for b in r.missing:
                n[i, col[b]] += 1.0
        y = np.array([r.failed for r in rows], dtype=bool)

        def nll(q: np.ndarray, n: np.ndarray = n, y: np.ndarray = y) -> tuple[float, np.ndarray]:
            z = np.minimum(n @ q, 0.0)  # log P(no fault)
            f = np.clip(-scale * np.expm1(z), 1e-12, 1.0 - 1e-12)  # P(fail)
            loss = -np.sum(np.log(f[y])) - np.sum(np.log1p(-f[~y]))
            df_dz = -scale * np.exp(z)  # d P(fail) / dz
            dl_df = np.where(y, -1.0 / f, 1.0 / (1.0 - f))
            return float(loss), (dl_df * df_dz) @ n

        res = minimize(
            nll,
            np.full(len(needed), -0.1),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-8.0, 0.0)] * len(needed),
        )
        for b, qb in zip(needed, res.x, strict=True):
            p = float(-np.expm1(qb))
            if p >= p_min:
                out[(role, b)] = round(p, 4)
    return out


def fit_demand(samples: Iterable[tuple[str, float]]) -> dict[str, tuple[float, float]]:
    """Per role: mean and standard deviation of ``log(demand / peak)``."""
    by: dict[str, list[float]] = defaultdict(list)
    for role, x in samples:
        by[role].append(x)
    return {
        r: (round(float(np.mean(v)), 4), round(float(np.std(v, ddof=1)) if len(v) > 1 else 0.1, 4))
        for r, v in sorted(by.items())
    }


# ---------------------------------------------------------------------------------------
# experience (the simulator)


def collect(
    scenarios: str, episodes: int, seed: int, policy: str = "random"
) -> tuple[list[Attempt], list[tuple[str, float]]]:
    """Roll ``policy`` out on ``episodes`` training episodes; every process start is an
    :class:`Attempt`, every process a demand sample."""
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    from agents.train import TRAIN_SEED_BASE  # (torch: only when collecting)

    env = RestoreEnv(scenario=scenarios)
    pol = make_policy(policy)
    attempts: list[Attempt] = []
    demand: list[tuple[str, float]] = []
    L, R = env.config.n_levels, env.config.max_attempts
    for k in range(episodes):
        s_ = TRAIN_SEED_BASE + SEED_OFFSET + 1_000_000 * seed + k
        obs, _ = env.reset(seed=s_)
        p = env.params
        assert p is not None
        pol.begin_episode(PolicyContext(env.config, env.n_max, None), s_)
        roles = [c.role for c in p.scenario.manifest.components]
        procs = np.flatnonzero(p.is_process)
        for i in procs:
            demand.append((roles[i], float(np.log(p.demand[i] / p.peak[i]))))
        while True:
            action = pol.act(obs, env.action_masks())
            before = env.state
            assert before is not None
            obs, _, term, trunc, _ = env.step(action)
            c = int(action // L)
            if action < env.n_max * L and p.is_process[c] and before.attempts[c] < R:
                after = env.state
                assert after is not None
                missing = tuple(roles[j] for j in procs if j != c and before.status[j] != core.DONE)
                attempts.append(Attempt(roles[c], missing, bool(after.will_fail[c])))
            if term or trunc:
                break
    return attempts, demand


def learn(scenarios: str, episodes: int, seed: int, policy: str = "random") -> LearnedModel:
    attempts, demand = collect(scenarios, episodes, seed, policy)
    scale = 1.0 - SimConfig().latent_fraction
    soft, dem = fit_soft(attempts, scale), fit_demand(demand)
    meta = {
        "scenarios": scenarios,
        "episodes": episodes,
        "seed": seed,
        "policy": policy,
        "attempts": len(attempts),
        "failed": int(sum(a.failed for a in attempts)),
        "latent_fraction": SimConfig().latent_fraction,
    }  # (no wall time: the file is reproducible byte for byte)
    return LearnedModel(soft, dem, meta)


def main(argv: list[str] | None = None) -> LearnedModel:
    ap = argparse.ArgumentParser(description="Learn soft dependencies and demand by role.")
    ap.add_argument("--scenarios", default="generator://mixed-v0?components=5-16")
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policy", default="random", help="the baseline that explores")
    ap.add_argument("--out", default="runs/learned-model.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    model = learn(args.scenarios, args.episodes, args.seed, args.policy)
    atomic_write_text(Path(args.out), json.dumps(model.to_json(), indent=2) + "\n")
    print(json.dumps(model.to_json(), indent=2))
    print(f"wrote {args.out} ({time.perf_counter() - t0:.1f} s)")
    return model


if __name__ == "__main__":
    main()
