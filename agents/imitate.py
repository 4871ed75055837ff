"""Imitate the model-knowing planner (DAgger) into the graph policy of :mod:`agents.train`.

The rollout planner (:mod:`agents.planner`) knows the scenario's true model (not the
episode's draws) and is 1.08x the hindsight oracle on <= 7 components, where the PPO policy is
1.21x. Its knowledge - which roles to wait for, how much CPU a role needs - is a property of
the training distribution, so a policy that sees only the observation can learn much of it.
:func:`imitate` does, starting from a trained run's weights (``init``):

for each of ``iterations`` rounds,

1. **collect**: run the *current* policy (deterministic, safe mask) on ``episodes`` fresh
   small episodes (``scenarios``); at every state with more than one valid action, ask the
   planner for the value (mean TTR over re-sampled futures) of every valid action and store a
   soft target ``softmax(-(Q - min Q) / temperature)`` (``temperature`` 0: the planner's
   argmax); :meth:`~agents.planner.Planner.record` tells it what the policy did instead;
2. **anchor**: run it on ``anchor_episodes`` episodes of ``anchor_scenarios`` (the larger
   personas, too slow to label) and store the *initial* policy's action distribution there, so
   what the initial policy does well on them is kept (distillation);
3. **fit**: behaviour-clone on everything collected so far (DAgger's aggregate): cross-entropy
   to the targets, plus ``value_weight`` x the squared error of the value head to the
   observed return (the undiscounted ``-reward_scale x`` time left, so PPO can fine-tune the
   result), ``epochs`` passes with SB3's policy optimizer. ``loss: regret`` (cost-sensitive)
   replaces the cross-entropy on planner states by the policy's expected planner regret in
   seconds (the planner's values are stored with every state) + ``ce_weight`` x cross-entropy.

``--fork RUN`` continues an imitation run (or a ``--distill``-ed student) with another fit or
labelling in a new folder; ``--diagnose RUN`` sets the policy's regret on fresh
planner-labelled episodes next to its training states'. ``planner_bases`` with ``policy``
makes the teacher roll out the current student too (expert iteration); ``workers`` labels a
round in that many processes (the same data as one).

Everything goes through SB3's policy API (``get_distribution``, ``predict_values``, the policy's
optimizer); the result is a MaskablePPO model with the same :class:`~agents.extractor.GraphPolicy`,
so ``persona export``, the ONNX restorer and PPO fine-tuning (``persona train --resume``-style
loading) keep working. A run folder ``<out>/<name>__<seed>__<time>/`` holds ``config.yaml``
(the base run's training config, so ``persona export --run`` works), ``imitate.yaml`` (this
config + provenance), ``data.npz`` (every labelled state), ``eval.csv`` (per round: held-out
TTR on the small and the anchor family), ``final_model.zip`` and ``summary.json``.

Seeds: collection episodes use ``IMITATE_SEED_BASE + 1_000_000 * seed + 10_000 * round + k``
(>= the training seed base, so evaluation seeds are never imitation episodes).

    python -m agents.imitate --config configs/train/sim-imitate.yaml \\
        [--init runs/sim-default__0__<time>] [--export policies/sim-imitate.onnx]

Without ``--init`` the base run is trained first from the config's ``base`` training config.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import yaml
from sb3_contrib import MaskablePPO
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.baselines import PolicyContext
from agents.evaluate import true_model
from agents.extractor import GraphPolicy
from agents.masks import safe_mask
from agents.planner import BASES, KNOWN_BASES, Planner
from agents.report import new_run_dir
from agents.train import (
    TRAIN_SEED_BASE,
    _provenance,
    build_model,
    evaluate_model,
    load_config,
    load_run_config,
    read_yaml,
    train,
)
from envs.restore_env import RestoreEnv
from persona.errors import ConfigError
from persona.model import atomic_write_text

IMITATE_SEED_BASE = TRAIN_SEED_BASE + 500_000_000
EVAL_SEED = 91_000_000  # held-out evaluation after each round (below TRAIN_SEED_BASE)
KEYS = ("nodes", "adjacency", "node_mask", "globals")
LOSSES = ("ce", "regret")
# the knobs of the fit alone: a fork (``imitate(..., fork=run)``) may change only these
FIT_KEYS = (
    "name",
    "iterations",
    "epochs",
    "batch_size",
    "learning_rate",
    "value_weight",
    "anchor_weight",
    "loss",
    "regret_cap",
    "ce_weight",
    "torch_threads",
)
# what a fork may change besides the fit: how new rounds are labelled (and how fast)
LABEL_KEYS = ("planner_bases", "workers")


@dataclass(frozen=True)
class ImitateConfig:
    name: str = "sim-imitate"
    base: str = "configs/train/sim-default.yaml"  # trained first when no init run is given
    scenarios: str = "generator://mixed-v0?components=5-7"  # labelled by the planner
    anchor_scenarios: str = "generator://mixed-v0?components=8-16"  # distilled from init
    seed: int = 0
    iterations: int = 3
    episodes: int = 600  # planner-labelled episodes per round
    anchor_episodes: int = 150  # per round
    samples: int = 16  # planner futures per decision
    temperature: float = 0.25  # seconds of planner value per e-fold of target probability
    beta: float = 0.0  # first round: share of states where the planner's action is taken
    epochs: int = 8
    batch_size: int = 128
    learning_rate: float = 3e-4
    value_weight: float = 0.5
    anchor_weight: float = 1.0
    torch_threads: int = 1
    eval_episodes: int = 100
    eval_seed: int = EVAL_SEED
    loss: str = "ce"  # "ce": cross-entropy to the soft targets; "regret": cost-sensitive
    regret_cap: float = 30.0  # s: a planner-labelled action's regret counts at most this
    ce_weight: float = 0.1  # "regret" loss: + this x cross-entropy on planner states
    # --distill only (a fresh student fitted on a run's labelled states):
    net: dict[str, Any] | None = None  # the student's extractor (dim/heads/layers); None: base's
    holdout: float = 0.1  # share of the labelled episodes kept out of the fit (validation)
    weight_decay: float = 0.0  # Adam's L2 penalty on the student's weights
    # the planner's base policies; "policy" adds the current student (exported to ONNX each
    # round): expert iteration - the teacher is one step of policy improvement over it too
    planner_bases: list[str] = field(default_factory=lambda: list(BASES))
    workers: int = 1  # processes labelling a round's episodes (the same data for any number)

    def __post_init__(self) -> None:
        bad = [b for b in self.planner_bases if b not in KNOWN_BASES]
        if bad or not self.planner_bases:
            raise ConfigError(f"planner_bases: unknown {bad}; use some of {', '.join(KNOWN_BASES)}")
        for k in (
            "iterations",
            "episodes",
            "samples",
            "epochs",
            "batch_size",
            "torch_threads",
            "workers",
        ):
            if getattr(self, k) < 1:
                raise ConfigError(f"{k} must be >= 1, got {getattr(self, k)}")
        for k in ("anchor_episodes", "eval_episodes"):
            if getattr(self, k) < 0:
                raise ConfigError(f"{k} must be >= 0, got {getattr(self, k)}")
        if self.temperature < 0 or self.learning_rate <= 0 or not 0 <= self.beta <= 1:
            raise ConfigError("need temperature >= 0, learning_rate > 0, 0 <= beta <= 1")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.regret_cap <= 0 or self.ce_weight < 0:
            raise ConfigError("need regret_cap > 0 and ce_weight >= 0")
        if not 0 < self.holdout < 1 or self.weight_decay < 0:
            raise ConfigError("need 0 < holdout < 1 and weight_decay >= 0")
        if self.net is not None and set(self.net) - {"dim", "heads", "layers", "alloc_head"}:
            raise ConfigError(f"net: only dim, heads, layers, alloc_head, got {sorted(self.net)}")


def imitate_config_from_dict(obj: Any, where: str = "config") -> ImitateConfig:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(obj).__name__}")
    known = {f.name for f in fields(ImitateConfig)}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    try:
        return ImitateConfig(**obj)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


def load_imitate_config(path: str | Path) -> ImitateConfig:
    return imitate_config_from_dict(read_yaml(path, "imitation config"), str(path))


# ---------------------------------------------------------------------------------------
# data


@dataclass
class Dataset:
    """Labelled states: observation arrays, the safe action mask, a target distribution over
    actions, the planner's regret of every action (its value minus the best value, s; 0 on
    anchor states and unsafe actions), the observed return to go, and whether the target is
    the planner's (1) or the initial policy's (0)."""

    obs: dict[str, list[np.ndarray]] = field(default_factory=lambda: {k: [] for k in KEYS})
    mask: list[np.ndarray] = field(default_factory=list)
    target: list[np.ndarray] = field(default_factory=list)
    regret: list[np.ndarray] = field(default_factory=list)
    ret: list[float] = field(default_factory=list)
    planner: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.mask)

    def add(
        self,
        obs: dict[str, np.ndarray],
        mask: np.ndarray,
        target: np.ndarray,
        ret: float,
        planner: bool,
        regret: np.ndarray | None = None,
    ) -> None:
        for k in KEYS:
            self.obs[k].append(np.asarray(obs[k], dtype=np.float32))
        self.mask.append(mask.astype(bool))
        self.target.append(target.astype(np.float32))
        r = np.zeros(mask.size, dtype=np.float32) if regret is None else regret
        self.regret.append(r.astype(np.float32))
        self.ret.append(ret)
        self.planner.append(planner)

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], temperature: float = 0.25, cap: float = 30.0
    ) -> Dataset:
        """From :meth:`arrays`; data saved before regrets were stored gets them recovered from
        the soft targets (:func:`regret_from_target`)."""
        d = cls()
        for k in KEYS:
            d.obs[k] = list(arrays[k])
        d.mask = list(arrays["mask"])
        d.target = list(arrays["target"])
        if "regret" in arrays:
            d.regret = list(arrays["regret"])
        else:
            r = regret_from_target(arrays["target"], arrays["mask"], temperature, cap)
            r[~np.asarray(arrays["planner"], dtype=bool)] = 0.0
            d.regret = list(r)
        d.ret = [float(x) for x in arrays["ret"]]
        d.planner = [bool(x) for x in arrays["planner"]]
        return d

    def extend(self, arrays: dict[str, np.ndarray]) -> None:
        """Append the states of :meth:`arrays` (of another dataset), in order."""
        for k in KEYS:
            self.obs[k].extend(arrays[k])
        self.mask.extend(arrays["mask"])
        self.target.extend(arrays["target"])
        self.regret.extend(arrays["regret"])
        self.ret.extend(float(x) for x in arrays["ret"])
        self.planner.extend(bool(x) for x in arrays["planner"])

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: np.stack(v) for k, v in self.obs.items()}
        out["mask"] = np.stack(self.mask)
        out["target"] = np.stack(self.target)
        out["regret"] = np.stack(self.regret)
        out["ret"] = np.asarray(self.ret, dtype=np.float32)
        out["planner"] = np.asarray(self.planner, dtype=bool)
        return out


def soft_target(actions: np.ndarray, values: np.ndarray, n: int, temperature: float) -> np.ndarray:
    """A distribution over ``n`` actions from the planner's values of ``actions`` (lower is
    better): ``softmax(-(values - min) / temperature)``, or the argmax (first on ties) at 0."""
    t = np.zeros(n, dtype=np.float64)
    if temperature <= 0:
        t[actions[int(np.argmin(values))]] = 1.0
        return t
    z = np.exp(-(values - values.min()) / temperature)
    t[actions] = z / z.sum()
    return t


def regret_from_target(
    target: np.ndarray, mask: np.ndarray, temperature: float, cap: float
) -> np.ndarray:
    """The planner's regrets recovered from :func:`soft_target` targets (``temperature`` > 0):
    ``-temperature x log(target / max target)`` on the masked-in actions, at most ``cap`` (a
    float32 target underflows to 0 beyond about 100 x ``temperature`` s)."""
    if temperature <= 0:
        raise ConfigError("regrets cannot be recovered from hard (temperature 0) targets")
    t = np.asarray(target, dtype=np.float64)
    top = t.max(-1, keepdims=True)
    with np.errstate(divide="ignore"):
        r = -temperature * np.log(np.where(t > 0, t / top, 0.0))
    r = np.minimum(r, cap)
    return np.where(mask, r, 0.0).astype(np.float32)


def _tensors(obs: dict[str, np.ndarray]) -> dict[str, th.Tensor]:
    return {k: th.as_tensor(obs[k][None], dtype=th.float32) for k in KEYS}


def _probs(policy: GraphPolicy, obs: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
    with th.no_grad():
        dist = policy.get_distribution(_tensors(obs), action_masks=mask[None])
        p = th.softmax(_logits(dist), dim=-1)
    return np.asarray(p[0].numpy(), dtype=np.float64)


def _logits(dist: Any) -> th.Tensor:
    """The masked logits of a :class:`MaskableCategoricalDistribution` (masked: -1e8)."""
    d = dist.distribution
    assert isinstance(d, th.distributions.Categorical)
    return d.logits


def _act(policy: GraphPolicy, obs: dict[str, np.ndarray], mask: np.ndarray) -> int:
    """The deterministic masked action (what ``Sb3Policy`` and the ONNX graph take)."""
    with th.no_grad():
        dist = policy.get_distribution(_tensors(obs), action_masks=mask[None])
        return int(dist.get_actions(deterministic=True)[0])


def collect(
    env: RestoreEnv,
    policy: GraphPolicy,
    seeds: list[int],
    data: Dataset,
    planner: Planner | None = None,
    teacher: GraphPolicy | None = None,
    temperature: float = 0.25,
    beta: float = 0.0,
) -> list[float]:
    """Roll out ``policy`` on ``seeds``; label its states with ``planner`` (values of every
    safe action) or ``teacher`` (its distribution). With probability ``beta`` per labelled
    state the planner's choice is taken instead of the policy's (DAgger's mixture; 1: roll
    out the planner itself). Returns each episode's TTR."""
    assert (planner is None) != (teacher is None), "label with the planner or a teacher"
    assert beta == 0.0 or planner is not None, "beta mixes in the planner's actions"
    levels = env.config.alloc_levels
    scale = env.config.reward_scale
    ttrs = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        if planner is not None:
            planner.begin_episode(PolicyContext(env.config, env.n_max, true_model(env)), seed)
        rows: list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, Any, float]] = []
        mix = np.random.default_rng([seed, 0xBE7A])
        while True:
            mask = safe_mask(obs, env.action_masks(), levels)
            actions = np.flatnonzero(mask)
            expert: int | None = None
            if actions.size > 1:
                regret = None
                if planner is not None:
                    q = planner.values(planner.model.state(), actions)
                    target = soft_target(actions, q, mask.size, temperature)
                    regret = np.zeros(mask.size, dtype=np.float32)
                    regret[actions] = q - q.min()
                    if beta > 0 and mix.random() < beta:
                        expert = int(actions[int(np.argmin(q))])
                else:
                    assert teacher is not None
                    target = _probs(teacher, obs, mask)
                assert env.state is not None
                rows.append((obs, mask, target, regret, float(env.state.t)))
            action = _act(policy, obs, mask) if expert is None else expert
            if planner is not None:
                planner.record(action)
            obs, _, term, trunc, info = env.step(action)
            if term or trunc:
                break
        ttr = float(info["ttr"])
        ttrs.append(ttr)
        for o, m, t, g, now in rows:
            data.add(o, m, t, -scale * (ttr - now), planner is not None, g)
    return ttrs


def make_planner(cfg: ImitateConfig, student: str | Path | None = None) -> Planner:
    """The labelling planner of ``cfg``; ``student``: the current policy's ONNX file, for the
    base ``policy`` (loaded with the torch-free restorer: fast single-state inference)."""
    if "policy" not in cfg.planner_bases:
        return Planner(samples=cfg.samples, bases=cfg.planner_bases)
    from persona.restorer.policy import OnnxRestorePolicy

    if student is None:
        raise ConfigError("planner base 'policy' needs the student's ONNX file")
    return Planner(samples=cfg.samples, bases=cfg.planner_bases, policy=OnnxRestorePolicy(student))


def _collect_chunk(
    job: tuple[ImitateConfig, str, str | None, int, list[int], float],
) -> tuple[dict[str, np.ndarray] | None, list[float]]:
    """One worker's share of a round (a fresh process: the model from its .zip)."""
    cfg, model_zip, student, n_max, seeds, beta = job
    th.set_num_threads(1)
    th.use_deterministic_algorithms(True)
    policy = MaskablePPO.load(model_zip, device="cpu").policy
    assert isinstance(policy, GraphPolicy)
    policy.set_training_mode(False)
    env = RestoreEnv(scenario=cfg.scenarios, max_components=n_max)
    data = Dataset()
    ttrs = collect(
        env,
        policy,
        seeds,
        data,
        planner=make_planner(cfg, student),
        temperature=cfg.temperature,
        beta=beta,
    )
    return (data.arrays() if len(data) else None), ttrs


def label_round(
    cfg: ImitateConfig,
    model: MaskablePPO,
    run_dir: Path,
    n_max: int,
    seeds: list[int],
    data: Dataset,
    beta: float,
) -> list[float]:
    """Collect a round's planner-labelled states into ``data`` (:func:`collect`), in
    ``cfg.workers`` processes (contiguous shares of ``seeds``, merged in seed order: every
    episode is determined by its seed, so the data do not depend on the number of workers).
    With the base ``policy`` the current model is exported to ``run_dir/student.onnx``."""
    student = None
    if cfg.workers > 1 or "policy" in cfg.planner_bases:
        model.save(run_dir / "final_model")  # the workers' (and the export's) copy
    if "policy" in cfg.planner_bases:
        from agents.export import export_run

        student = str(export_run(run_dir, run_dir / "student.onnx")[0])
    zip_path = str(run_dir / "final_model.zip")
    if cfg.workers == 1:
        policy = model.policy
        assert isinstance(policy, GraphPolicy)
        env = RestoreEnv(scenario=cfg.scenarios, max_components=n_max)
        planner = make_planner(cfg, student)
        return collect(
            env, policy, seeds, data, planner=planner, temperature=cfg.temperature, beta=beta
        )
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    shares = [list(c) for c in np.array_split(np.asarray(seeds, dtype=np.int64), cfg.workers)]
    jobs = [(cfg, zip_path, student, n_max, [int(x) for x in c], beta) for c in shares if c]
    ttrs: list[float] = []
    with ProcessPoolExecutor(len(jobs), mp_context=mp.get_context("spawn")) as pool:
        for arrays, t in pool.map(_collect_chunk, jobs):
            if arrays is not None:
                data.extend(arrays)
            ttrs += t
    return ttrs


# ---------------------------------------------------------------------------------------
# fitting


def fit(
    policy: GraphPolicy,
    arrays: dict[str, np.ndarray],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    value_weight: float,
    anchor_weight: float,
    rng: np.random.Generator,
    loss: str = "ce",
    regret_cap: float = 30.0,
    ce_weight: float = 0.1,
    score: bool = True,
) -> dict[str, float]:
    """Behaviour cloning with SB3's policy optimizer, + ``value_weight`` x value MSE.

    ``loss="ce"``: cross-entropy to the targets (anchor states weighted ``anchor_weight``).
    ``loss="regret"`` (cost-sensitive): on planner states the policy's expected regret
    ``sum_a pi(a) min(regret(a), regret_cap)`` in seconds + ``ce_weight`` x cross-entropy, on
    anchor states ``anchor_weight`` x cross-entropy to the teacher (a weighted mean over
    states either way). Returns the last epoch's mean losses, the agreement of the policy's
    argmax with the target's and the mean regret of its argmax on planner states."""
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    policy.set_training_mode(True)
    opt = policy.optimizer
    for g in opt.param_groups:
        g["lr"] = learning_rate
    n = arrays["mask"].shape[0]
    obs = {k: th.as_tensor(arrays[k]) for k in KEYS}
    mask = arrays["mask"]
    target = th.as_tensor(arrays["target"])
    ret = th.as_tensor(arrays["ret"])
    is_planner = th.as_tensor(arrays["planner"])
    regret = th.as_tensor(arrays["regret"]).clamp(max=regret_cap)
    w = th.as_tensor(np.where(arrays["planner"], 1.0, anchor_weight).astype(np.float32))
    stats: dict[str, float] = {}
    for _ in range(epochs):
        order = rng.permutation(n)
        tot = {"ce": 0.0, "exp_regret": 0.0, "value": 0.0}
        for start in range(0, n, batch_size):
            idx = th.as_tensor(order[start : start + batch_size])
            o = {k: v[idx] for k, v in obs.items()}
            dist = policy.get_distribution(o, action_masks=mask[idx.numpy()])
            logp = th.log_softmax(_logits(dist), dim=-1)
            # masked actions have probability 0 in the target: keep 0 * -inf out of the sum
            ce = -(target[idx] * logp.clamp(min=-1e4)).sum(-1)
            er = (logp.exp() * regret[idx]).sum(-1)  # expected regret (0 on anchor states)
            per = ce if loss == "ce" else th.where(is_planner[idx], er + ce_weight * ce, ce)
            pl = (w[idx] * per).sum() / w[idx].sum()
            v = policy.predict_values(o).flatten()
            vl = th.mean((v - ret[idx]) ** 2)
            total = pl + value_weight * vl
            opt.zero_grad()
            total.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
            opt.step()
            k = idx.numel()
            tot["ce"] += float(ce.detach().mean()) * k
            tot["value"] += float(vl.detach()) * k
            tot["exp_regret"] += float(er.detach().sum())
        stats = {k: v / n for k, v in tot.items()}
        stats["exp_regret"] = tot["exp_regret"] / max(int(is_planner.sum()), 1)
    policy.set_training_mode(False)
    if score:  # ``score=False``: skip the two passes over the data
        stats["agreement"] = agreement(policy, arrays)
        stats["regret"] = argmax_regret(policy, arrays)
    return stats


def _argmax(policy: GraphPolicy, arrays: dict[str, np.ndarray], batch: int = 1024) -> np.ndarray:
    out = []
    n = arrays["mask"].shape[0]
    with th.no_grad():
        for s in range(0, n, batch):
            o = {k: th.as_tensor(arrays[k][s : s + batch]) for k in KEYS}
            dist = policy.get_distribution(o, action_masks=arrays["mask"][s : s + batch])
            out.append(dist.get_actions(deterministic=True).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def argmax_regret(policy: GraphPolicy, arrays: dict[str, np.ndarray]) -> float:
    """Mean planner regret (s) of the policy's deterministic action on planner states."""
    sel = np.asarray(arrays["planner"], dtype=bool)
    if not sel.any():
        return float("nan")
    a = _argmax(policy, {k: v[sel] for k, v in arrays.items()})
    return float(np.mean(arrays["regret"][sel][np.arange(a.size), a]))


def fit_config(
    policy: GraphPolicy,
    arrays: dict[str, np.ndarray],
    cfg: ImitateConfig,
    rng: np.random.Generator,
    epochs: int,
    learning_rate: float,
    score: bool = True,
) -> dict[str, float]:
    """:func:`fit` with the fit settings of ``cfg`` (batch size, loss and its weights)."""
    return fit(
        policy,
        arrays,
        epochs,
        cfg.batch_size,
        learning_rate,
        cfg.value_weight,
        cfg.anchor_weight,
        rng,
        cfg.loss,
        cfg.regret_cap,
        cfg.ce_weight,
        score=score,
    )


def agreement(policy: GraphPolicy, arrays: dict[str, np.ndarray], batch: int = 1024) -> float:
    """Share of labelled states where the policy's deterministic action is the target's mode."""
    n = arrays["mask"].shape[0]
    a = _argmax(policy, arrays, batch)
    return int((a == arrays["target"].argmax(-1)).sum()) / max(n, 1)


# ---------------------------------------------------------------------------------------
# runs


@dataclass(frozen=True)
class ImitateResult:
    run_dir: Path
    states: int
    wall_s: float
    eval_ttr: float
    eval_anchor_ttr: float


def _init_model(init: Path) -> tuple[MaskablePPO, Path]:
    zip_ = init / "final_model.zip" if init.is_dir() else init
    run = init if init.is_dir() else init.parent
    if not zip_.exists() or not (run / "config.yaml").exists():
        raise ConfigError(f"init {init}: need a training run folder (config.yaml, final_model.zip)")
    return MaskablePPO.load(zip_, device="cpu"), run


HEADER = "round,states,wall_s,train_ttr,ttr_small,ttr_anchor,ce,value,agreement,regret"


def held_out_ttr(model: MaskablePPO, cfg: ImitateConfig, n_max: int) -> tuple[float, float]:
    """Mean TTR on ``cfg.eval_episodes`` held-out episodes of the labelled family and of the
    anchor family (nan, nan when ``eval_episodes`` is 0)."""
    if cfg.eval_episodes == 0:
        return float("nan"), float("nan")
    a = evaluate_model(model, cfg.scenarios, cfg.eval_episodes, cfg.eval_seed, n_max)
    b = evaluate_model(model, cfg.anchor_scenarios, cfg.eval_episodes, cfg.eval_seed, n_max)
    return float(np.mean([r.ttr for r in a])), float(np.mean([r.ttr for r in b]))


def _config_diff(cfg: ImitateConfig, old: dict[str, Any], free: tuple[str, ...]) -> list[str]:
    """The settings of ``cfg`` that differ from a parent run's config ``old`` (as
    :func:`_parent_config` reads it), outside ``free``."""
    return sorted(k for k, v in asdict(cfg).items() if k not in free and old.get(k) != v)


def _data_run(run: Path, prov: dict[str, Any]) -> Path:
    """Where an imitation run's labelled states and rounds are: its own folder, or for a
    distilled run (:func:`distill`: a fresh student, no rounds of its own) its source run's."""
    if (run / "eval.csv").exists() or "distilled_from" not in prov:
        return run
    return Path(prov["distilled_from"])


def _parent_config(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """An imitation run's config (keys added since it was made: their defaults) and provenance."""
    old = yaml.safe_load((run / "imitate.yaml").read_text())
    prov = old.pop("provenance", {})
    return {**asdict(ImitateConfig()), **old}, prov


def imitate(
    cfg: ImitateConfig,
    init: str | Path,
    out: str | Path = "runs",
    log: Any = print,
    resume: str | Path | None = None,
    fork: str | Path | None = None,
) -> ImitateResult:
    """DAgger from the run ``init`` (a training run folder or its model .zip).

    ``resume``: an imitation run folder to continue up to ``cfg.iterations`` rounds (every
    other setting must be the run's own); the result is the same as one uninterrupted run.
    ``fork``: an imitation run folder to continue in a *new* run folder from its last round -
    its model, its labelled states (regrets recovered from the targets if it did not store
    them) and its anchor teacher - with a config that may differ from the run's only in
    :data:`FIT_KEYS` (the loss and the fit); rounds are numbered on from the run's, so new
    rounds label fresh episodes. ``init`` must be the forked run's own ``init``."""
    if resume is not None and fork is not None:
        raise ConfigError("resume a run or fork one, not both")
    th.set_num_threads(cfg.torch_threads)
    th.use_deterministic_algorithms(True)
    set_random_seed(cfg.seed)
    model, base_run = _init_model(Path(init))
    done_rounds: list[list[str]] = []
    src = resume if resume is not None else fork
    parent = None if src is None else Path(src)
    old: dict[str, Any] = {}
    old_prov: dict[str, Any] = {}
    if parent is not None:
        old, old_prov = _parent_config(parent)
        free = ("iterations", "workers") if resume is not None else (*FIT_KEYS, *LABEL_KEYS)
        diff = _config_diff(cfg, old, free)
        if diff:
            what = "resume" if resume is not None else "fork"
            raise ConfigError(f"cannot {what} {parent}: config differs in {diff}")
        if Path(old_prov.get("init", init)).resolve() != Path(init).resolve():
            raise ConfigError(f"{parent} was made from init {old_prov.get('init')}, not {init}")
        model = MaskablePPO.load(parent / "final_model.zip", device="cpu")
        data_run = _data_run(parent, old_prov)
        done_rounds = [r.split(",") for r in (data_run / "eval.csv").read_text().splitlines()[2:]]
    policy = model.policy
    if not isinstance(policy, GraphPolicy):
        raise ConfigError(f"init {init}: not a GraphPolicy model")
    teacher = MaskablePPO.load(_zip(init), device="cpu")  # the fixed anchor targets
    teacher_policy = teacher.policy
    assert isinstance(teacher_policy, GraphPolicy)
    teacher_policy.set_training_mode(False)
    policy.set_training_mode(False)
    base_cfg = load_run_config(base_run)
    n_max = base_cfg.max_components
    if resume is None:
        run_dir = new_run_dir(out, f"{cfg.name}__{cfg.seed}")
        # a fork keeps its parent's training config (a distilled parent's has its own net)
        base_yaml = yaml.safe_load(((parent or base_run) / "config.yaml").read_text())
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(base_yaml, sort_keys=False))
        prov = {**_provenance(), "init": str(Path(init).resolve())}
        if fork is not None:
            prov["forked_from"] = str(Path(fork).resolve())
            prov["forked_at_round"] = len(done_rounds)
    else:
        run_dir = Path(resume)
        prov = old_prov
        prov.setdefault("resumed", []).append(_provenance())
    atomic_write_text(
        run_dir / "imitate.yaml",
        yaml.safe_dump({**asdict(cfg), "provenance": prov}, sort_keys=False),
    )
    anchor_env = RestoreEnv(scenario=cfg.anchor_scenarios, max_components=n_max)
    rng = np.random.default_rng([cfg.seed, 0x494D4954])
    data = Dataset()
    evals = [HEADER]
    t0 = time.perf_counter()
    if parent is not None:
        arr = dict(np.load(data_run / "data.npz"))
        data = Dataset.from_arrays(arr, old["temperature"], cfg.regret_cap)
        lines = (data_run / "eval.csv").read_text().splitlines()
        width = HEADER.count(",") + 1
        evals += [r + ",nan" * (width - r.count(",") - 1) for r in lines[1:]]
        if resume is not None:  # replay the fits' shuffles: the same stream as one run
            for row in done_rounds[int(prov.get("forked_at_round", 0)) :]:
                for _ in range(cfg.epochs):
                    rng.permutation(int(row[1]))
        t0 -= float(done_rounds[-1][2]) if done_rounds else 0.0

    def evaluate() -> tuple[float, float]:
        return held_out_ttr(model, cfg, n_max)

    if parent is None:
        small, anchor = evaluate()
        evals.append(f"0,0,0.0,nan,{small:.4f},{anchor:.4f},nan,nan,nan,nan")
        log(f"round 0 (init): small {small:.2f} s, anchor {anchor:.2f} s")
    else:
        small, anchor = (float(x) for x in evals[-1].split(",")[4:6])
    for r in range(len(done_rounds) + 1, cfg.iterations + 1):
        base = IMITATE_SEED_BASE + 1_000_000 * cfg.seed + 10_000 * r
        ttrs = label_round(
            cfg,
            model,
            run_dir,
            n_max,
            [base + k for k in range(cfg.episodes)],
            data,
            beta=cfg.beta if r == 1 else 0.0,
        )
        if cfg.anchor_episodes:
            collect(
                anchor_env,
                policy,
                [base + 5_000 + k for k in range(cfg.anchor_episodes)],
                data,
                teacher=teacher_policy,
            )
        arrays = data.arrays()
        st = fit_config(policy, arrays, cfg, rng, cfg.epochs, cfg.learning_rate)
        small, anchor = evaluate()
        wall = time.perf_counter() - t0
        evals.append(
            f"{r},{len(data)},{wall:.1f},{np.mean(ttrs):.4f},{small:.4f},{anchor:.4f},"
            f"{st['ce']:.5f},{st['value']:.5f},{st['agreement']:.4f},{st['regret']:.4f}"
        )
        atomic_write_text(run_dir / "eval.csv", "\n".join(evals) + "\n")
        np.savez_compressed(run_dir / "data.npz", **arrays)  # type: ignore[arg-type]
        model.save(run_dir / "final_model")  # every round: a run can be resumed
        log(
            f"round {r}: {len(data)} states, {wall:.0f} s, rollout {np.mean(ttrs):.2f} s, "
            f"eval small {small:.2f} s, anchor {anchor:.2f} s, ce {st['ce']:.4f}, "
            f"agreement {st['agreement']:.3f}, argmax regret {st['regret']:.3f} s"
        )
    wall = time.perf_counter() - t0
    res = ImitateResult(run_dir, len(data), wall, small, anchor)
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(res).items()}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return res


def episode_ids(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The episode of every labelled state (states are stored episode by episode, and the
    return to go grows within one): a new episode where it drops or the label source changes."""
    ret, pl = arrays["ret"], np.asarray(arrays["planner"], dtype=bool)
    new = np.r_[True, (ret[1:] < ret[:-1]) | (pl[1:] != pl[:-1])]
    return np.cumsum(new) - 1


DISTILL_HEADER = "epoch,wall_s,lr,ce,exp_regret,val_regret,val_agreement,best"


def distill(
    cfg: ImitateConfig, run: str | Path, out: str | Path = "runs", log: Any = print
) -> ImitateResult:
    """A *fresh* student (the base run's training config, extractor ``cfg.net``) fitted on the
    labelled states of the imitation run ``run`` - no new planner labels: the anchor states
    keep the targets stored with them. ``cfg.holdout`` of the episodes are kept out of the
    fit; after every epoch (``cfg.learning_rate`` cosine-annealed to 0 over ``cfg.epochs``,
    Adam ``weight_decay``) the student's argmax regret on their planner states is measured
    and the best epoch is the run's ``final_model.zip`` (early stopping). ``cfg`` must equal
    the run's config except in :data:`FIT_KEYS` and the distillation keys."""
    run = Path(run)
    th.set_num_threads(cfg.torch_threads)
    th.use_deterministic_algorithms(True)
    set_random_seed(cfg.seed)
    old, old_prov = _parent_config(run)
    free = (*FIT_KEYS, *LABEL_KEYS, "net", "holdout", "weight_decay", "eval_episodes")
    diff = _config_diff(cfg, old, free)
    if diff:
        raise ConfigError(f"cannot distill {run}: config differs in {diff}")
    base_cfg = load_run_config(run)
    net = replace(base_cfg.net, **(cfg.net or {}))
    tcfg = replace(base_cfg, net=net, seed=cfg.seed)
    n_max = tcfg.max_components
    venv = DummyVecEnv([lambda: RestoreEnv(scenario=cfg.scenarios, max_components=n_max)])
    model = build_model(tcfg, venv, None)
    policy = model.policy
    assert isinstance(policy, GraphPolicy)
    for g in policy.optimizer.param_groups:
        g["weight_decay"] = cfg.weight_decay
    arrays = Dataset.from_arrays(
        dict(np.load(_data_run(run, old_prov) / "data.npz")), old["temperature"], cfg.regret_cap
    ).arrays()
    ep = episode_ids(arrays)
    rng = np.random.default_rng([cfg.seed, 0x44495354])
    val_ep = rng.random(int(ep.max()) + 1) < cfg.holdout
    is_val = val_ep[ep]
    train_arr = {k: v[~is_val] for k, v in arrays.items()}
    val_arr = {k: v[is_val] for k, v in arrays.items()}
    run_dir = new_run_dir(out, f"{cfg.name}__{cfg.seed}")
    base_yaml = yaml.safe_load((run / "config.yaml").read_text())
    base_yaml["net"] = asdict(net)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(base_yaml, sort_keys=False))
    prov = {
        **_provenance(),
        "init": old_prov.get("init"),
        "distilled_from": str(run.resolve()),
        "states": {"train": int((~is_val).sum()), "validation": int(is_val.sum())},
    }
    atomic_write_text(
        run_dir / "imitate.yaml",
        yaml.safe_dump({**asdict(cfg), "provenance": prov}, sort_keys=False),
    )
    log(f"{run_dir}: {len(train_arr['mask'])} training states, {int(is_val.sum())} held out")
    rows = [DISTILL_HEADER]
    best = float("inf")
    t0 = time.perf_counter()
    for e in range(1, cfg.epochs + 1):
        lr = float(cfg.learning_rate * 0.5 * (1.0 + np.cos(np.pi * (e - 1) / cfg.epochs)))
        st = fit_config(policy, train_arr, cfg, rng, 1, lr, score=False)
        vr, va = argmax_regret(policy, val_arr), agreement(policy, val_arr)
        better = not vr >= best  # (nan: no planner states held out - the latest)
        if better:
            best = vr
            model.save(run_dir / "final_model")
        wall = time.perf_counter() - t0
        rows.append(
            f"{e},{wall:.1f},{lr:.3g},{st['ce']:.5f},{st['exp_regret']:.5f},{vr:.5f},{va:.4f},"
            f"{int(better)}"
        )
        atomic_write_text(run_dir / "distill.csv", "\n".join(rows) + "\n")
        log(
            f"epoch {e}: {wall:.0f} s, lr {lr:.2g}, ce {st['ce']:.4f}, expected regret "
            f"{st['exp_regret']:.4f} s, validation argmax regret {vr:.4f} s, agreement {va:.3f}"
            + (" (best)" if better else "")
        )
    model = MaskablePPO.load(run_dir / "final_model.zip", device="cpu")
    small, anchor = held_out_ttr(model, cfg, n_max)
    log(f"best validation argmax regret {best:.4f} s; held-out TTR {small:.2f} / {anchor:.2f} s")
    res = ImitateResult(run_dir, len(train_arr["mask"]), time.perf_counter() - t0, small, anchor)
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(res).items()}
    summary["val_regret"] = best
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return res


DIAGNOSE_SEED = 95_000_000  # fresh labelled episodes for :func:`diagnose` (no run uses them)


def regret_breakdown(
    policy: GraphPolicy, arrays: dict[str, np.ndarray], n_levels: int
) -> dict[str, Any]:
    """Where the policy's deterministic action loses against the planner on planner-labelled
    states: its mean regret per decision, the share of the total in the 5 % worst decisions,
    and the total split by kind of mistake (another level of the planner's component, another
    component, waiting instead of starting, starting instead of waiting)."""
    sel = np.asarray(arrays["planner"], dtype=bool)
    arr = {k: v[sel] for k, v in arrays.items()}
    a = _argmax(policy, arr)
    reg = arr["regret"][np.arange(a.size), a].astype(np.float64)
    best = np.where(arr["mask"], arr["regret"], np.inf).argmin(-1)
    wait = arr["mask"].shape[1] - 1
    kinds = {"level": 0.0, "component": 0.0, "wait_instead": 0.0, "start_instead": 0.0}
    for x, y, r in zip(a.tolist(), best.tolist(), reg.tolist(), strict=True):
        if r <= 0:
            continue
        if x == wait:
            kinds["wait_instead"] += r
        elif y == wait:
            kinds["start_instead"] += r
        elif x // n_levels == y // n_levels:
            kinds["level"] += r
        else:
            kinds["component"] += r
    top = np.sort(reg)[::-1][: max(1, int(np.ceil(0.05 * reg.size)))]
    return {
        "states": int(reg.size),
        "regret_per_decision": float(reg.mean()) if reg.size else float("nan"),
        "agreement": float((a == arr["target"].argmax(-1)).mean()) if reg.size else float("nan"),
        "worst_5pct_share": float(top.sum() / max(reg.sum(), 1e-12)),
        "by_kind_s": kinds,
    }


def diagnose(
    run: str | Path, episodes: int = 100, seed: int = DIAGNOSE_SEED, log: Any = print
) -> dict[str, Any]:
    """Training fit vs generalisation of an imitation run's policy: the planner labels
    ``episodes`` fresh episodes of the run's ``scenarios`` on the policy's own rollouts (as a
    DAgger round would), and the policy's regret per decision on them is set next to its
    regret on the run's own training states. Writes ``diagnose.json`` in the run folder."""
    run = Path(run)
    cfg = imitate_config_from_dict(_parent_config(run)[0], str(run / "imitate.yaml"))
    th.set_num_threads(cfg.torch_threads)
    model = MaskablePPO.load(run / "final_model.zip", device="cpu")
    policy = model.policy
    assert isinstance(policy, GraphPolicy)
    policy.set_training_mode(False)
    n_max = load_run_config(run).max_components
    env = RestoreEnv(scenario=cfg.scenarios, max_components=n_max)
    fresh = Dataset()
    ttrs = collect(
        env,
        policy,
        [seed + k for k in range(episodes)],
        fresh,
        planner=Planner(samples=cfg.samples),
        temperature=cfg.temperature,
    )
    data_run = _data_run(run, _parent_config(run)[1])  # a distilled run: its source's states
    train_arr = Dataset.from_arrays(
        dict(np.load(data_run / "data.npz")), cfg.temperature, cfg.regret_cap
    ).arrays()
    levels = env.config.n_levels
    held = regret_breakdown(policy, fresh.arrays(), levels)
    held["regret_per_episode"] = held["regret_per_decision"] * held["states"] / episodes
    out = {
        "run": str(run),
        "episodes": episodes,
        "seed": seed,
        "ttr_mean": float(np.mean(ttrs)),
        "heldout": held,
        "train": regret_breakdown(policy, train_arr, levels),
    }
    atomic_write_text(run / "diagnose.json", json.dumps(out, indent=2) + "\n")
    log(json.dumps(out, indent=2))
    return out


def _zip(init: str | Path) -> Path:
    p = Path(init)
    return p / "final_model.zip" if p.is_dir() else p


def export_imitation(run: str | Path, out: str | Path, max_components: int = 24) -> Path:
    """``persona export`` of an imitation run, with the imitation config in the sidecar."""
    from agents.export import export_run

    onnx, side = export_run(run, out, max_components)
    meta = json.loads(side.read_text())
    imit = yaml.safe_load((Path(run) / "imitate.yaml").read_text())
    meta["imitation"] = imit
    meta["provenance"]["imitation_summary"] = json.loads((Path(run) / "summary.json").read_text())
    atomic_write_text(side, json.dumps(meta, indent=2) + "\n")
    return onnx


def main(argv: list[str] | None = None) -> ImitateResult | None:
    ap = argparse.ArgumentParser(description="Imitate the model-knowing planner (DAgger).")
    ap.add_argument("--config", help="imitation config (required unless --diagnose)")
    ap.add_argument("--init", help="trained run folder to start from (default: train `base`)")
    ap.add_argument("--resume", help="imitation run folder to continue to the config's rounds")
    ap.add_argument(
        "--fork",
        help="imitation run folder to continue in a new run (the config may change "
        "only the fit - loss, epochs, learning rate, ... - and the labelling: planner_bases, "
        "workers)",
    )
    ap.add_argument(
        "--distill",
        metavar="RUN",
        help="fit a fresh student (the config's net) on the imitation run's labelled states, "
        "with a held-out split of its episodes for early stopping (no new labels)",
    )
    ap.add_argument("--out", default="runs")
    ap.add_argument("--export", help="write the result to this .onnx (+ .json sidecar)")
    ap.add_argument("--max-components", type=int, default=24, help="export padding")
    ap.add_argument(
        "--diagnose",
        metavar="RUN",
        help="label fresh episodes with the planner and compare the run's policy's regret on "
        "them with its regret on its training states (writes RUN/diagnose.json)",
    )
    ap.add_argument("--episodes", type=int, default=100, help="--diagnose: fresh episodes")
    args = ap.parse_args(argv)
    if args.diagnose is not None:
        diagnose(args.diagnose, args.episodes)
        return None
    if args.config is None:
        ap.error("--config is required")
    cfg = load_imitate_config(args.config)

    def log(m: str) -> None:
        print(m, flush=True)

    if args.distill is not None:
        res = distill(cfg, args.distill, args.out, log)
    else:
        init = args.init
        parent = args.resume or args.fork
        if parent is not None:
            init = _parent_config(Path(parent))[1]["init"]
        if init is None:
            base = load_config(cfg.base)
            log(f"training the base run from {cfg.base} (seed {base.seed})")
            init = train(base, out=args.out, progress=False).run_dir
        res = imitate(cfg, init, args.out, log, args.resume, args.fork)
    print(f"run folder {res.run_dir}")
    if args.export:
        onnx = export_imitation(res.run_dir, args.export, args.max_components)
        print(f"exported {onnx} (+ {onnx.with_suffix('.json').name})")
    return res


if __name__ == "__main__":
    main()
