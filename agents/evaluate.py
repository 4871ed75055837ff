"""Evaluate policies on scenarios with common random numbers.

Episode ``k`` of an evaluation with seed ``S`` resets the env with seed ``S + k``: the
scenario instance and every random draw of the episode (durations, failures, demands) are
the same for every policy, so differences between policies are differences of decisions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.baselines import (
    BOUNDS,
    Policy,
    PolicyContext,
    TrueModel,
    make_policy,
    oracle_ttr,
    public_state,
)
from envs.restore_env import DEFAULT_MAX_COMPONENTS, RestoreEnv
from envs.sim.core import SimState
from persona.errors import PolicyError
from persona.model import atomic_write_text
from persona.restorer.plan import search_fields
from persona.stats import mean_ci


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    ttr: float
    validated: bool
    scenario: str
    family: str
    n: int
    failures: int
    steps: int


@dataclass(frozen=True)
class EvalResult:
    policy: str
    scenarios: str
    episodes: int
    seed: int
    per_episode: tuple[EpisodeResult, ...]

    @property
    def ttrs(self) -> np.ndarray:
        return np.array([e.ttr for e in self.per_episode])

    @property
    def success_rate(self) -> float:
        return float(np.mean([e.validated for e in self.per_episode]))

    def to_dict(self) -> dict[str, Any]:
        m, lo, hi = mean_ci(self.ttrs)
        return {
            "policy": self.policy,
            "scenarios": self.scenarios,
            "episodes": self.episodes,
            "seed": self.seed,
            "ttr_mean": m,
            "ttr_ci95": [lo, hi],
            "success_rate": self.success_rate,
            "per_episode": [asdict(e) for e in self.per_episode],
        }


def true_model(env: RestoreEnv) -> TrueModel:
    """The scenario of the episode ``env`` is in and a reader of its :func:`public_state`:
    what a policy that *knows the true model* (``needs_model``) is given; sim backend only."""
    if env.backend != "sim" or env.params is None:
        raise PolicyError("the true model exists only for a reset simulator env")
    scenario = env.params.scenario

    def state() -> SimState:
        assert env.state is not None
        return public_state(env.state)

    return TrueModel(scenario, state)


def run_episode(env: RestoreEnv, policy: Any, seed: int) -> EpisodeResult:
    obs, info0 = env.reset(seed=seed)
    model = true_model(env) if getattr(policy, "needs_model", False) else None
    policy.begin_episode(PolicyContext(env.config, env.n_max, model), seed)
    steps = 0
    while True:
        action = policy.act(obs, env.action_masks())
        obs, _, term, trunc, info = env.step(action)
        steps += 1
        if term or trunc:
            break
    policy.end_episode(info)
    return EpisodeResult(
        seed=seed,
        ttr=float(info["ttr"]),
        validated=bool(info["validated"]),
        scenario=info0["scenario"],
        family=info0["family"],
        n=int(info0["n"]),
        failures=int(info["n_failures"]),
        steps=steps,
    )


def _oracle_episode(env: RestoreEnv, seed: int) -> EpisodeResult:
    _, info0 = env.reset(seed=seed)
    assert env.params is not None
    ttr = oracle_ttr(env.params, env.n_max)
    return EpisodeResult(
        seed=seed,
        ttr=ttr,
        validated=ttr < env.config.max_time_s,
        scenario=info0["scenario"],
        family=info0["family"],
        n=int(info0["n"]),
        failures=0,
        steps=0,
    )


SEARCH_MAX_COMPONENTS = 7  # larger personas: the learned policy alone


class SearchRestorer:
    """The search-based restorer: a :class:`~agents.planner.Planner` that plans in a learned
    hidden structure and rolls out the learned policy too, on personas of at most
    ``max_components`` components; larger ones are restored by the learned policy alone
    (the search's cost grows steeply with the persona, and its 16 futures rarely hold the
    tail of the demand draws a large host can fail on: docs/learning.md)."""

    needs_model = True

    def __init__(self, name: str, planner: Any, network: Policy, max_components: int) -> None:
        self.name, self.planner, self.network = name, planner, network
        self.max_components = max_components
        self.current: Any = network

    def begin_episode(self, ctx: PolicyContext, seed: int) -> None:
        if ctx.model is None:
            raise PolicyError(
                f"{self.name}: the search-based restorer plans in the simulator of the persona; "
                "evaluate it on the simulator backend (or plan with persona.restorer.plan_restore)"
            )
        small = ctx.model.scenario.n <= self.max_components
        self.current = self.planner if small else self.network
        self.current.begin_episode(ctx, seed)

    def act(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> int:
        return int(self.current.act(obs, mask))

    def end_episode(self, info: dict[str, Any]) -> None:
        self.current.end_episode(info)


def load_policy(policy: str) -> Policy:
    """A baseline by name, a learned policy exported by ``persona export`` (``*.onnx``), or
    ``search:POLICY.onnx@MODEL.json[@SAMPLES[@MAX_COMPONENTS]]``: the search-based restorer
    (:class:`SearchRestorer`) - at every decision the planner rolls out the learned policy (and
    its two heuristic bases) over ``SAMPLES`` (16) futures drawn from a hidden structure learned
    from episodes (:mod:`agents.model_learning`), never the scenario's true one; personas of
    more than ``MAX_COMPONENTS`` (7) components are restored by the learned policy alone."""
    parts = search_fields(policy)
    if parts is not None:
        from agents.model_learning import LearnedModel
        from agents.planner import BASES, Planner

        if not 2 <= len(parts) <= 4 or not parts[0].endswith(".onnx"):
            raise PolicyError(
                f"{policy!r}: expected search:POLICY.onnx@MODEL.json[@SAMPLES[@MAX_COMPONENTS]] "
                "(MODEL.json from python -m agents.model_learning)"
            )
        try:
            samples = int(parts[2]) if len(parts) > 2 else 16
            max_n = int(parts[3]) if len(parts) > 3 else SEARCH_MAX_COMPONENTS
        except ValueError:
            raise PolicyError(f"{policy!r}: SAMPLES and MAX_COMPONENTS are integers") from None
        base = load_policy(parts[0])
        planner = Planner(
            samples, (*BASES, "policy"), policy=base, learned=LearnedModel.load(parts[1])
        )
        return SearchRestorer(policy, planner, base, max_n)
    if policy.endswith(".onnx"):
        from persona.restorer.policy import OnnxRestorePolicy

        return OnnxRestorePolicy(policy)
    return make_policy(policy)


def evaluate(
    policy: str,
    scenarios: str,
    episodes: int,
    seed: int,
    max_components: int = DEFAULT_MAX_COMPONENTS,
) -> EvalResult:
    """Evaluate one policy (a baseline name, ``oracle`` or an ``.onnx`` file) on seeded episodes."""
    if episodes < 1:
        raise PolicyError(f"episodes must be >= 1, got {episodes}")
    env = RestoreEnv(scenario=scenarios, max_components=max_components)
    results = []
    if policy in BOUNDS:
        results = [_oracle_episode(env, seed + k) for k in range(episodes)]
    else:
        pol = load_policy(policy)
        results = [run_episode(env, pol, seed + k) for k in range(episodes)]
    return EvalResult(policy, scenarios, episodes, seed, tuple(results))


def evaluate_live(
    policies: list[str],
    episodes: int,
    seed: int,
    live: Any,
    max_components: int = DEFAULT_MAX_COMPONENTS,
) -> list[EvalResult]:
    """Evaluate policies on the live backend (``live``: an :class:`envs.live.LiveConfig`).

    Live episodes cannot share random numbers, so they are interleaved instead: round ``k``
    runs every policy once, in an order rotated by ``k``, so slow drifts of the shared machine
    (load, the host's growing data) reach every policy alike. Same JSON shape as the sim."""
    from envs.live import LiveBackend

    if episodes < 1:
        raise PolicyError(f"episodes must be >= 1, got {episodes}")
    bad = [p for p in policies if p in BOUNDS]
    if bad:
        raise PolicyError(
            f"{bad[0]} needs the episode's future (hindsight); it has no live counterpart"
        )
    pols = {name: load_policy(name) for name in policies}
    env = RestoreEnv(backend="live", live=live, max_components=max_components)
    backend = env.session
    assert isinstance(backend, LiveBackend)
    out: dict[str, list[EpisodeResult]] = {name: [] for name in policies}
    try:
        for k in range(episodes):
            r = k % len(policies)
            for name in policies[r:] + policies[:r]:
                backend.label(name)
                out[name].append(run_episode(env, pols[name], seed + k))
    finally:
        env.close()
    where = f"live://{backend.cfg.host}"
    return [EvalResult(n, where, episodes, seed, tuple(out[n])) for n in policies]


def write_json(results: list[EvalResult], path: str | Path) -> None:
    """One result: the JSON object; several: a list of them (same shape each)."""
    obj: Any = results[0].to_dict() if len(results) == 1 else [r.to_dict() for r in results]
    atomic_write_text(Path(path), json.dumps(obj, indent=2) + "\n")


def format_table(results: list[EvalResult]) -> str:
    """A markdown table: policy, mean TTR with 95 % CI, success rate, failed attempts."""
    rows = [
        "| policy | scenarios | episodes | TTR mean (s) | 95 % CI | success | failed attempts/ep |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m, lo, hi = mean_ci(r.ttrs)
        fails = np.mean([e.failures for e in r.per_episode])
        rows.append(
            f"| {r.policy} | {r.scenarios} | {r.episodes} | {m:.1f} | [{lo:.1f}, {hi:.1f}] "
            f"| {r.success_rate:.0%} | {fails:.2f} |"
        )
    return "\n".join(rows)
