"""Experiment grids: policies x scenario suites x seeds, run in parallel through Ray.

An :class:`ExperimentConfig` (YAML, ``configs/experiments/``) lists *suites*; each suite is one
scenario URI, the policies to compare on it (baseline names, ``oracle``, or exported
``*.onnx`` files) and how many episodes. Every policy of a suite sees the same episodes
(seeds ``seed .. seed + episodes - 1``: common random numbers). One Ray task evaluates one
(suite, policy) pair, so adaptive baselines keep their across-episode state as in
``persona eval``.

A results folder holds ``config.yaml``, ``per_episode.csv`` (one row per episode),
``summary.md`` / ``summary.json`` (mean TTR with 95 % CIs, success rate, ratio to the best
heuristic with a paired bootstrap CI, the quality-bar verdicts) and PNG plots. The loading,
table and plot functions here are what ``notebooks/analysis.ipynb`` calls.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agents.report import EPISODE_CSV_FIELDS, new_run_dir
from persona.errors import ConfigError
from persona.model import atomic_write_text
from persona.stats import mean_ci, paired_ratio_ci

HEURISTICS = ("critical-path", "seed-adaptive")  # the quality bar's "best heuristic"
CSV_FIELDS = ("suite", *EPISODE_CSV_FIELDS)


@dataclass(frozen=True)
class Suite:
    name: str
    scenarios: str
    policies: tuple[str, ...]
    episodes: int = 100
    seed: int = 1000


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    suites: tuple[Suite, ...]
    max_components: int = 24
    ray_address: str | None = None  # None: a local Ray instance; "auto" or host:port: join one
    num_cpus: int | None = None  # local Ray only
    learned: str | None = None  # the learned policy's file, for the quality-bar verdicts
    training_runs: tuple[str, ...] = field(default_factory=tuple)  # run folders: learning curves

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["suites"] = [asdict(s) for s in self.suites]
        return d


def config_from_dict(obj: Any, where: str = "experiment") -> ExperimentConfig:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a mapping")
    known = {f.name for f in fields(ExperimentConfig)}
    bad = sorted(set(obj) - known)
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {bad}; known: {sorted(known)}")
    if not obj.get("suites"):
        raise ConfigError(f"{where}: needs at least one suite")
    suites = []
    skn = {f.name for f in fields(Suite)}
    for k, s in enumerate(obj["suites"]):
        if (
            not isinstance(s, dict)
            or set(s) - skn
            or not {"name", "scenarios", "policies"} <= set(s)
        ):
            raise ConfigError(
                f"{where}.suites[{k}]: needs name, scenarios, policies (optional episodes, seed)"
            )
        suites.append(Suite(**{**s, "policies": tuple(s["policies"])}))
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: suite names must be unique, got {names}")
    rest = {k: v for k, v in obj.items() if k != "suites"}
    rest["training_runs"] = tuple(rest.get("training_runs") or ())
    try:
        return ExperimentConfig(suites=tuple(suites), **rest)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


def load_config(path: str | Path) -> ExperimentConfig:
    p = Path(path)
    try:
        obj = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read experiment config {p}: {e}") from e
    return config_from_dict(obj, str(p))


# ---------------------------------------------------------------------------------------
# running


def run_task(suite: Suite, policy: str, max_components: int) -> list[dict[str, Any]]:
    """Evaluate one policy on one suite; per-episode rows (also the Ray task body)."""
    import torch

    torch.set_num_threads(1)
    from agents.evaluate import evaluate

    res = evaluate(policy, suite.scenarios, suite.episodes, suite.seed, max_components)
    return [
        {
            "suite": suite.name,
            "policy": policy,
            "scenarios": suite.scenarios,
            **{k: v for k, v in asdict(e).items()},
        }
        for e in res.per_episode
    ]


def run_grid(cfg: ExperimentConfig, use_ray: bool = True) -> list[dict[str, Any]]:
    tasks = [(s, p) for s in cfg.suites for p in s.policies]
    if not use_ray:
        return [row for s, p in tasks for row in run_task(s, p, cfg.max_components)]
    import ray

    if cfg.ray_address:
        ray.init(address=cfg.ray_address, ignore_reinit_error=True, log_to_driver=False)
    else:
        ray.init(
            num_cpus=cfg.num_cpus,
            include_dashboard=False,
            ignore_reinit_error=True,
            log_to_driver=False,
            runtime_env={"working_dir": None},
        )
    try:
        remote = ray.remote(num_cpus=1)(run_task)
        refs = [remote.remote(s, p, cfg.max_components) for s, p in tasks]
        out: list[dict[str, Any]] = []
        for rows in ray.get(refs):
            out.extend(rows)
        return out
    finally:
        ray.shutdown()


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_FIELDS))
        w.writeheader()
        for r in rows:
            w.writerow({k: (int(r[k]) if k == "validated" else r[k]) for k in CSV_FIELDS})


def load_rows(results: str | Path) -> list[dict[str, Any]]:
    """``per_episode.csv`` of a results folder, typed."""
    path = Path(results) / "per_episode.csv"
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["seed"], r["n"] = int(r["seed"]), int(r["n"])
        r["failures"], r["steps"] = int(r["failures"]), int(r["steps"])
        r["ttr"], r["validated"] = float(r["ttr"]), bool(int(r["validated"]))
    return rows


# ---------------------------------------------------------------------------------------
# summary


def _by(rows: Sequence[dict[str, Any]], suite: str, policy: str) -> list[dict[str, Any]]:
    sel = [r for r in rows if r["suite"] == suite and r["policy"] == policy]
    return sorted(sel, key=lambda r: r["seed"])


def _order(rows: Sequence[dict[str, Any]], key: str) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        seen.setdefault(r[key], None)
    return list(seen)


def summarize(rows: Sequence[dict[str, Any]], learned: str | None = None) -> dict[str, Any]:
    """Per suite and policy: mean TTR + CI, success, ratio to the best heuristic (paired CI)."""
    out: dict[str, Any] = {"suites": {}}
    for suite in _order(rows, "suite"):
        pols = [p for p in _order(rows, "policy") if _by(rows, suite, p)]
        entry: dict[str, Any] = {"scenarios": _by(rows, suite, pols[0])[0]["scenarios"]}
        stats: dict[str, dict[str, Any]] = {}
        for p in pols:
            ep = _by(rows, suite, p)
            t = np.array([r["ttr"] for r in ep])
            m, lo, hi = mean_ci(t)
            stats[p] = {
                "episodes": len(ep),
                "ttr_mean": m,
                "ttr_ci95": [lo, hi],
                "success_rate": float(np.mean([r["validated"] for r in ep])),
                "failures_per_ep": float(np.mean([r["failures"] for r in ep])),
            }
        heur = [p for p in HEURISTICS if p in stats]
        best = min(heur, key=lambda p: stats[p]["ttr_mean"]) if heur else None
        entry["best_heuristic"] = best
        for p in pols:
            if best is not None and p != best:
                a = [r["ttr"] for r in _by(rows, suite, p)]
                b = [r["ttr"] for r in _by(rows, suite, best)]
                if len(a) == len(b):
                    stats[p]["ratio_to_best"] = list(paired_ratio_ci(a, b))
            if "oracle" in stats and p != "oracle":
                a = [r["ttr"] for r in _by(rows, suite, p)]
                b = [r["ttr"] for r in _by(rows, suite, "oracle")]
                stats[p]["ratio_to_oracle"] = list(paired_ratio_ci(a, b))
        entry["policies"] = stats
        if learned is not None and learned in stats:
            entry["verdicts"] = verdicts(stats, learned, best)
        out["suites"][suite] = entry
    return out


def verdicts(stats: dict[str, dict[str, Any]], learned: str, best: str | None) -> dict[str, bool]:
    """The quality bar's checks for one suite (only those that apply)."""
    L = stats[learned]
    v: dict[str, bool] = {}
    if best is not None:
        B = stats[best]
        v["mean <= 0.85x best heuristic"] = L["ttr_mean"] <= 0.85 * B["ttr_mean"]
        v["95% CIs do not overlap"] = L["ttr_ci95"][1] < B["ttr_ci95"][0]
        v["success rate no lower"] = L["success_rate"] >= B["success_rate"]
    if "oracle" in stats:
        v["within 10% of oracle"] = L["ttr_mean"] <= 1.10 * stats["oracle"]["ttr_mean"]
    return v


def label(policy: str) -> str:
    """A policy's name in tables: an ``.onnx`` file's stem; ``search(<stem>)`` for a
    search-based restorer (``search:POLICY.onnx@MODEL.json``)."""
    from persona.restorer.plan import search_fields

    parts = search_fields(policy)
    if parts is not None:
        return f"search({Path(parts[0]).stem})"
    return Path(policy).stem if policy.endswith(".onnx") else policy


def summary_markdown(summary: dict[str, Any], title: str = "") -> str:
    lines = [f"# {title}", ""] if title else []
    for suite, e in summary["suites"].items():
        lines += [f"## {suite}: `{e['scenarios']}`", ""]
        lines += [
            "| policy | episodes | TTR mean (s) | 95 % CI | success | failed attempts/ep "
            f"| ratio to {e['best_heuristic']} [95 % CI] | ratio to oracle [95 % CI] |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p, s in e["policies"].items():
            r = s.get("ratio_to_best")
            o = s.get("ratio_to_oracle")
            rs = f"{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}]" if r else "-"
            os_ = f"{o[0]:.3f} [{o[1]:.3f}, {o[2]:.3f}]" if o else "-"
            lo, hi = s["ttr_ci95"]
            lines.append(
                f"| {label(p)} | {s['episodes']} | {s['ttr_mean']:.2f} | [{lo:.2f}, {hi:.2f}] "
                f"| {s['success_rate']:.1%} | {s['failures_per_ep']:.2f} | {rs} | {os_} |"
            )
        if "verdicts" in e:
            lines += [
                "",
                "Quality bar: "
                + ", ".join(f"{k}: {'yes' if ok else 'NO'}" for k, ok in e["verdicts"].items()),
            ]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# plots


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ttr(rows: Sequence[dict[str, Any]], suite: str, path: Path) -> None:
    """Box plot of TTR per policy in one suite."""
    plt = _plt()
    pols = [p for p in _order(rows, "policy") if _by(rows, suite, p)]
    data = [[r["ttr"] for r in _by(rows, suite, p)] for p in pols]
    fig, ax = plt.subplots(figsize=(1.8 + 1.3 * len(pols), 4.0))
    ax.boxplot(data, showmeans=True, showfliers=False)
    ax.set_xticks(range(1, len(pols) + 1), [label(p) for p in pols], rotation=20)
    ax.set_ylabel("time to recovery (simulated s)")
    ax.set_title(f"TTR per policy: {suite}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_family_means(summary: dict[str, Any], path: Path) -> None:
    """Mean TTR with 95 % CI per policy, one group per suite (generalisation at a glance)."""
    plt = _plt()
    suites = list(summary["suites"])
    pols: list[str] = []
    for e in summary["suites"].values():
        for p in e["policies"]:
            if p not in pols:
                pols.append(p)
    width = 0.8 / max(len(pols), 1)
    fig, ax = plt.subplots(figsize=(2.0 + 1.6 * len(suites), 4.2))
    for k, p in enumerate(pols):
        xs, ms, errs = [], [], []
        for j, s in enumerate(suites):
            st = summary["suites"][s]["policies"].get(p)
            if st is None:
                continue
            xs.append(j + (k - (len(pols) - 1) / 2) * width)
            ms.append(st["ttr_mean"])
            errs.append([st["ttr_mean"] - st["ttr_ci95"][0], st["ttr_ci95"][1] - st["ttr_mean"]])
        if xs:
            ax.bar(xs, ms, width, yerr=np.array(errs).T, capsize=2, label=label(p))
    ax.set_xticks(range(len(suites)), suites, rotation=15)
    ax.set_ylabel("mean TTR (simulated s), 95 % CI")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_learning_curve(run_dir: str | Path) -> list[dict[str, float]]:
    with (Path(run_dir) / "eval.csv").open() as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def plot_learning_curves(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, rows in curves.items():
        x = [r["timesteps"] for r in rows]
        ax.plot(x, [r["ttr_mean"] for r in rows], marker="o", label=name)
        ax.fill_between(
            x, [r["ttr_ci_lo"] for r in rows], [r["ttr_ci_hi"] for r in rows], alpha=0.2
        )
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval mean TTR (simulated s)")
    ax.set_title("learning curves (periodic masked evaluation)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    rows: Sequence[dict[str, Any]],
    out: Path,
    title: str,
    learned: str | None = None,
    training_runs: Sequence[str] = (),
) -> dict[str, Any]:
    """summary.json, summary.md and the plots of a results folder from its rows."""
    summary = summarize(rows, learned)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    md = summary_markdown(summary, title)
    plots = []
    for suite in summary["suites"]:
        plot_ttr(rows, suite, out / f"ttr_{suite}.png")
        plots.append(f"ttr_{suite}.png")
    plot_family_means(summary, out / "ttr_by_suite.png")
    plots.append("ttr_by_suite.png")
    curves = {
        Path(r).name: read_learning_curve(r)
        for r in training_runs
        if (Path(r) / "eval.csv").exists()
    }
    if curves:
        plot_learning_curves(curves, out / "learning_curves.png")
        plots.append("learning_curves.png")
    md += "\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n"
    atomic_write_text(out / "summary.md", md)
    return summary


def run_experiment(
    cfg: ExperimentConfig, out: str | Path = "results", use_ray: bool = True
) -> Path:
    """Run the grid and write a results folder; returns it."""
    d = new_run_dir(out, cfg.name)
    atomic_write_text(d / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    t0 = time.perf_counter()
    rows = run_grid(cfg, use_ray=use_ray)
    write_csv(rows, d / "per_episode.csv")
    write_report(rows, d, f"experiment {cfg.name}", cfg.learned, cfg.training_runs)
    atomic_write_text(
        d / "run.json", json.dumps({"wall_s": time.perf_counter() - t0, "rows": len(rows)}) + "\n"
    )
    return d
