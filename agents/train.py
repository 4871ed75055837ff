"""Train MaskablePPO with :class:`~agents.extractor.GraphPolicy` on ``persona/Restore-v0``.

Everything a run needs is one typed :class:`TrainConfig` (loaded from YAML, see
``configs/train/``). :func:`train` makes the run folder ``<out>/<name>__<seed>__<time>/``::

    config.yaml        the resolved config (+ seed, timesteps, provenance)
    logs/progress.csv  SB3 metrics per rollout (losses, fps, env steps/s, episode TTR)
    logs/events.*      the same for TensorBoard
    eval.csv           periodic mask-respecting evaluation on fixed held-out seeds
    checkpoints/       model_<steps>_steps.zip every ``checkpoint_every`` steps
    best_model.zip     best periodic evaluation so far
    final_model.zip    the model after the last step
    summary.json       timesteps, wall time, steps/s, last and best evaluation

SB3 is extended through the policy/extractor and callbacks only: :class:`TrainProgress`
(progress bar + steps/s), :class:`MaskedEval` (periodic evaluation with action masks and
common random numbers) and SB3's own ``CheckpointCallback``.

Seeds: training env ``i`` of a run with seed ``S`` starts from seed
``TRAIN_SEED_BASE + 1000 * S + i`` and continues its own random stream, so evaluation
seeds below ``TRAIN_SEED_BASE`` are never training episodes.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from sb3_contrib import MaskablePPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

from agents.baselines import PolicyContext
from agents.evaluate import EpisodeResult, run_episode
from agents.extractor import GraphPolicy
from agents.masks import SafeAllocation, safe_mask
from agents.report import new_run_dir
from envs.restore_env import DEFAULT_MAX_COMPONENTS, DEFAULT_SCENARIO, RestoreEnv
from persona.errors import ConfigError
from persona.model import atomic_write_text

TRAIN_SEED_BASE = 100_000_000
EVAL_SEED = 90_000_000  # periodic evaluation during training (held out, fixed, CRN)


# ---------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class PPOConfig:
    learning_rate: float = 3e-4
    n_steps: int = 256
    batch_size: int = 512
    n_epochs: int = 4
    gamma: float = 0.999
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None


@dataclass(frozen=True)
class NetConfig:
    dim: int = 64
    heads: int = 4
    layers: int = 2
    alloc_head: bool = False  # the allocation arithmetic as explicit inputs of the head


@dataclass(frozen=True)
class EvalConfig:
    every_steps: int = 25_000
    episodes: int = 50
    seed: int = EVAL_SEED


@dataclass(frozen=True)
class TrainConfig:
    name: str = "sim-default"
    scenarios: str = DEFAULT_SCENARIO
    max_components: int = DEFAULT_MAX_COMPONENTS
    timesteps: int = 300_000
    seed: int = 0
    n_envs: int = 16
    vec_env: str = "dummy"  # dummy | subproc
    torch_threads: int = 2
    checkpoint_every: int = 50_000
    safe_allocation: bool = True  # mask allocations that over-commit the host (agents.masks)
    init: str | None = None  # start from this model's policy weights (.zip or run folder)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    net: NetConfig = field(default_factory=NetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.vec_env not in ("dummy", "subproc"):
            raise ConfigError(f"vec_env must be 'dummy' or 'subproc', got {self.vec_env!r}")
        for k in ("timesteps", "n_envs", "torch_threads", "checkpoint_every", "max_components"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{k} must be >= 1, got {getattr(self, k)}")
        if (self.n_envs * self.ppo.n_steps) % self.ppo.batch_size:
            raise ConfigError(
                f"n_envs * ppo.n_steps ({self.n_envs * self.ppo.n_steps}) must be a multiple of "
                f"ppo.batch_size ({self.ppo.batch_size})"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _build(cls: type[Any], obj: Any, where: str) -> Any:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(obj).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    kw: dict[str, Any] = {}
    nested = {"ppo": PPOConfig, "net": NetConfig, "eval": EvalConfig}
    for k, v in obj.items():
        if cls is TrainConfig and k in nested:
            kw[k] = _build(nested[k], v, f"{where}.{k}")
        else:
            kw[k] = v
    try:
        return cls(**kw)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


def config_from_dict(obj: Any, where: str = "config") -> TrainConfig:
    cfg = _build(TrainConfig, obj, where)
    assert isinstance(cfg, TrainConfig)
    return cfg


def read_yaml(path: str | Path, what: str) -> Any:
    """The YAML document at ``path`` (``{}`` when empty); ``ConfigError`` naming ``what``."""
    p = Path(path)
    try:
        return yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read {what} {p}: {e}") from e


def load_config(path: str | Path) -> TrainConfig:
    return config_from_dict(read_yaml(path, "training config"), str(path))


# ---------------------------------------------------------------------------------------
# environments


def _env_factory(scenarios: str, max_components: int, safe: bool) -> Any:
    def make() -> gym.Env[dict[str, np.ndarray], np.int64]:
        env = RestoreEnv(scenario=scenarios, max_components=max_components)
        return SafeAllocation(env) if safe else env

    return make


def make_vec_env(cfg: TrainConfig) -> VecEnv:
    fns = [
        _env_factory(cfg.scenarios, cfg.max_components, cfg.safe_allocation)
        for _ in range(cfg.n_envs)
    ]
    vec: VecEnv = SubprocVecEnv(fns) if cfg.vec_env == "subproc" else DummyVecEnv(fns)
    return VecMonitor(vec)


def seed_training_envs(vec: VecEnv, seed: int) -> None:
    vec.seed(TRAIN_SEED_BASE + 1000 * seed)


# ---------------------------------------------------------------------------------------
# the learned policy behind the evaluation Policy protocol


class Sb3Policy:
    """An SB3 MaskablePPO model as an :class:`agents.baselines.Policy` (deterministic).

    With ``safe_allocation`` the env's mask is refined by :func:`agents.masks.safe_mask`,
    as during training and inside the exported ONNX graph.
    """

    def __init__(
        self, model: MaskablePPO, name: str = "learned", safe_allocation: bool = True
    ) -> None:
        self.model = model
        self.name = name
        self.safe = safe_allocation
        self.levels: tuple[float, ...] = ()

    def begin_episode(self, ctx: PolicyContext, seed: int) -> None:
        self.levels = ctx.config.alloc_levels

    def act(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> int:
        if self.safe:
            mask = safe_mask(obs, mask, self.levels)
        action, _ = self.model.predict(obs, deterministic=True, action_masks=mask)
        return int(action)

    def end_episode(self, info: dict[str, Any]) -> None:
        pass


def evaluate_model(
    model: MaskablePPO,
    scenarios: str,
    episodes: int,
    seed: int,
    max_components: int,
    safe_allocation: bool = True,
) -> list[EpisodeResult]:
    env = RestoreEnv(scenario=scenarios, max_components=max_components)
    pol = Sb3Policy(model, safe_allocation=safe_allocation)
    return [run_episode(env, pol, seed + k) for k in range(episodes)]


# ---------------------------------------------------------------------------------------
# callbacks


class TrainProgress(BaseCallback):
    """Records ``time/env_steps_per_s`` per rollout; optionally a tqdm bar showing it."""

    def __init__(self, total: int, start: int = 0, bar: bool = True) -> None:
        super().__init__()
        self.total, self.start, self.show = total, start, bar
        self.bar: Any = None
        self.t0 = 0.0
        self.env_s = 0.0
        self._t_step = 0.0

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        if self.show:
            self.bar = tqdm(total=self.total, initial=self.start, unit="step", dynamic_ncols=True)
        self.t0 = time.perf_counter()

    def _on_rollout_start(self) -> None:
        self._t_rollout = time.perf_counter()

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(self.training_env.num_envs)
        return True

    def _on_rollout_end(self) -> None:
        dt = time.perf_counter() - self._t_rollout
        steps = self.model.n_steps * self.training_env.num_envs  # type: ignore[attr-defined]
        wall = time.perf_counter() - self.t0
        done = self.num_timesteps - self.start
        self.logger.record("time/rollout_steps_per_s", steps / max(dt, 1e-9))
        self.logger.record("time/env_steps_per_s", done / max(wall, 1e-9))
        if self.bar is not None:
            self.bar.set_postfix(steps_s=f"{done / max(wall, 1e-9):.0f}")

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


class MaskedEval(BaseCallback):
    """Every ``every_steps``: evaluate the deterministic masked policy on fixed seeds.

    Appends ``timesteps, wall_s, ttr_mean, ttr_ci_lo, ttr_ci_hi, success_rate`` to
    ``eval.csv``, records ``eval/*`` for TensorBoard and keeps ``best_model.zip``.
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        super().__init__()
        self.cfg = cfg
        self.path = run_dir / "eval.csv"
        self.best_path = run_dir / "best_model"
        self.best = float("inf")
        self.last: dict[str, float] = {}
        self.next_at = 0
        self.t0 = time.perf_counter()

    def _on_training_start(self) -> None:
        self.next_at = (
            self.num_timesteps // self.cfg.eval.every_steps + 1
        ) * self.cfg.eval.every_steps
        if not self.path.exists():
            self.path.write_text("timesteps,wall_s,ttr_mean,ttr_ci_lo,ttr_ci_hi,success_rate\n")
        else:  # resumed: keep the best so far
            rows = self.path.read_text().splitlines()[1:]
            if rows:
                self.best = min(float(r.split(",")[2]) for r in rows)

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_at:
            self.next_at += self.cfg.eval.every_steps
            self.run_eval()
        return True

    def _on_training_end(self) -> None:
        if not self.last or self.last["timesteps"] != self.num_timesteps:
            self.run_eval()

    def run_eval(self) -> None:
        from persona.stats import mean_ci

        assert isinstance(self.model, MaskablePPO)
        e = self.cfg.eval
        res = evaluate_model(
            self.model, self.cfg.scenarios, e.episodes, e.seed, self.cfg.max_components
        )
        m, lo, hi = mean_ci([r.ttr for r in res])
        succ = float(np.mean([r.validated for r in res]))
        wall = time.perf_counter() - self.t0
        self.last = {"timesteps": self.num_timesteps, "ttr_mean": m, "success_rate": succ}
        with self.path.open("a") as f:
            f.write(f"{self.num_timesteps},{wall:.1f},{m:.4f},{lo:.4f},{hi:.4f},{succ:.4f}\n")
        self.logger.record("eval/ttr_mean", m)
        self.logger.record("eval/success_rate", succ)
        if m < self.best:
            self.best = m
            self.model.save(self.best_path)


# ---------------------------------------------------------------------------------------
# runs


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    timesteps: int
    wall_s: float
    steps_per_s: float
    eval_ttr: float
    best_eval_ttr: float


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _provenance() -> dict[str, Any]:
    import gymnasium
    import sb3_contrib
    import stable_baselines3

    return {
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": str(th.__version__),
        "stable_baselines3": stable_baselines3.__version__,
        "sb3_contrib": sb3_contrib.__version__,
        "gymnasium": gymnasium.__version__,
        "host": platform.node(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def build_model(cfg: TrainConfig, env: VecEnv, tb_dir: Path | None) -> MaskablePPO:
    p = cfg.ppo
    return MaskablePPO(
        GraphPolicy,
        env,
        learning_rate=p.learning_rate,
        n_steps=p.n_steps,
        batch_size=p.batch_size,
        n_epochs=p.n_epochs,
        gamma=p.gamma,
        gae_lambda=p.gae_lambda,
        clip_range=p.clip_range,
        ent_coef=p.ent_coef,
        vf_coef=p.vf_coef,
        max_grad_norm=p.max_grad_norm,
        target_kl=p.target_kl,
        policy_kwargs={"features_extractor_kwargs": asdict(cfg.net)},
        tensorboard_log=str(tb_dir) if tb_dir else None,
        seed=cfg.seed,
        device="cpu",
        verbose=0,
    )


def _init_weights(init: str) -> dict[str, th.Tensor]:
    """The policy weights of a model ``.zip`` or a run folder's ``final_model.zip`` (warm
    start: this config's hyper-parameters, a fresh optimizer, the same network shape)."""
    p = Path(init)
    zip_ = p / "final_model.zip" if p.is_dir() else p
    if not zip_.exists():
        raise ConfigError(f"init {init}: no model there (a .zip or a run folder)")
    state: dict[str, th.Tensor] = MaskablePPO.load(zip_, device="cpu").policy.state_dict()
    return state


def latest_checkpoint(run_dir: Path) -> Path:
    cks = sorted(
        (run_dir / "checkpoints").glob("model_*_steps.zip"),
        key=lambda p: int(p.stem.split("_")[1]),
    )
    if not cks:
        raise ConfigError(f"no checkpoint in {run_dir / 'checkpoints'}; nothing to resume")
    return cks[-1]


def train(
    cfg: TrainConfig,
    out: str | Path = "runs",
    resume: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume) a run; returns where it is and how it went.

    ``resume`` is a run folder (its latest checkpoint is used) or a checkpoint ``.zip``; the
    run continues in that folder up to ``cfg.timesteps`` total steps.
    """
    th.set_num_threads(cfg.torch_threads)
    th.use_deterministic_algorithms(True)
    set_random_seed(cfg.seed)
    if resume is not None:
        rp = Path(resume)
        ckpt = latest_checkpoint(rp) if rp.is_dir() else rp
        run_dir = rp if rp.is_dir() else rp.parent.parent
        if not ckpt.exists() or not (run_dir / "config.yaml").exists():
            raise ConfigError(f"cannot resume from {resume}: need a run folder or its checkpoint")
    else:
        run_dir = new_run_dir(out, f"{cfg.name}__{cfg.seed}")
        resolved = {**cfg.to_dict(), "provenance": _provenance()}
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    env = make_vec_env(cfg)
    try:
        if resume is not None:
            model = MaskablePPO.load(ckpt, env=env, device="cpu")
            # a resumed run's envs start from a new (but still training-range) seed
            seed_training_envs(env, cfg.seed + 1 + model.num_timesteps)
        else:
            model = build_model(cfg, env, None)
            if cfg.init is not None:
                model.policy.load_state_dict(_init_weights(cfg.init))
            seed_training_envs(env, cfg.seed)
        model.set_logger(configure(str(run_dir / "logs"), ["csv", "tensorboard"]))
        start = model.num_timesteps
        remaining = cfg.timesteps - start
        if remaining <= 0:
            raise ConfigError(f"the run already has {start} >= {cfg.timesteps} timesteps")
        evaluator = MaskedEval(cfg, run_dir)
        callbacks: list[BaseCallback] = [
            evaluator,
            CheckpointCallback(
                max(cfg.checkpoint_every // cfg.n_envs, 1),
                str(run_dir / "checkpoints"),
                name_prefix="model",
            ),
        ]
        callbacks.insert(0, TrainProgress(cfg.timesteps, start, bar=progress))
        t0 = time.perf_counter()
        model.learn(remaining, callback=CallbackList(callbacks), reset_num_timesteps=resume is None)
        wall = time.perf_counter() - t0
        model.save(run_dir / "final_model")
    finally:
        env.close()
    res = TrainResult(
        run_dir=run_dir,
        timesteps=model.num_timesteps,
        wall_s=wall,
        steps_per_s=(model.num_timesteps - start) / max(wall, 1e-9),
        eval_ttr=evaluator.last.get("ttr_mean", float("nan")),
        best_eval_ttr=evaluator.best,
    )
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(res).items()}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return res


def with_overrides(
    cfg: TrainConfig, seed: int | None = None, timesteps: int | None = None
) -> TrainConfig:
    changes: dict[str, Any] = {}
    if seed is not None:
        changes["seed"] = seed
    if timesteps is not None:
        changes["timesteps"] = timesteps
    return replace(cfg, **changes)


def load_run_config(run_dir: str | Path) -> TrainConfig:
    obj = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    obj.pop("provenance", None)
    return config_from_dict(obj, str(Path(run_dir) / "config.yaml"))
