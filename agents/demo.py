"""The main job on the embedded default: the learned policy against every baseline.

Uses the shipped reference policy ``policies/sim-default.onnx`` (trained with
``configs/train/sim-default.yaml``); without it, trains a short run of that config first and
exports it. Then evaluates the learned policy and all baselines with common random numbers on
the default family, and on small scenarios next to the hindsight oracle bound - there also
the search-based restorer over the same network (``search:<policy>@policies/learned-model.json``)
- and writes ``report.md`` with the tables and plots.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
import numpy as np

from agents.baselines import POLICIES
from agents.evaluate import EvalResult, evaluate, format_table
from agents.report import new_run_dir, write_results
from envs.restore_env import DEFAULT_MAX_COMPONENTS, DEFAULT_SCENARIO
from persona.model import atomic_write_text
from persona.stats import paired_ratio_ci

SMALL = "generator://mixed-v0?components=5-7"
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "policies" / "sim-default.onnx"
LEARNED_MODEL = ROOT / "policies" / "learned-model.json"  # python -m agents.model_learning
DEFAULT_CONFIG = ROOT / "configs" / "train" / "sim-default.yaml"
SHORT_TIMESTEPS = 60_000  # a short run: ~3 minutes here


def learned_policy(run: Path, policy: Path | None, train_timesteps: int | None) -> Path:
    """The policy file to demo: the given/shipped one, or a freshly trained short run."""
    if train_timesteps is None:
        path = policy or SHIPPED
        if path.exists():
            return path
        train_timesteps = SHORT_TIMESTEPS
        click.echo(f"no shipped policy at {path}: training a short run instead")
    from agents.export import export_run
    from agents.train import load_config, train, with_overrides

    cfg = with_overrides(load_config(DEFAULT_CONFIG), timesteps=train_timesteps)
    click.echo(f"  training {cfg.name} for {train_timesteps} steps")
    res = train(cfg, out=run / "train", progress=True)
    out, _ = export_run(res.run_dir, run / "policy" / "learned.onnx", DEFAULT_MAX_COMPONENTS)
    return out


def _shown(text: str) -> str:
    """``text`` with this checkout's absolute path left out (readable commands in reports)."""
    return text.replace(f"{ROOT}/", "")


def _ratio_lines(results: list[EvalResult], learned: str, tag: str = "learned") -> list[str]:
    by = {r.policy: r for r in results}
    lines = []
    for name in ("critical-path", "seed-adaptive", "oracle"):
        if name in by and learned in by:
            m, lo, hi = paired_ratio_ci(by[learned].ttrs, by[name].ttrs)
            lines.append(f"- {tag} / {name}: {m:.3f} (95 % CI [{lo:.3f}, {hi:.3f}])")
    return lines


def run_demo(
    out: str | Path,
    episodes: int,
    seed: int,
    policy: str | Path | None = None,
    train_timesteps: int | None = None,
) -> Path:
    run = new_run_dir(out, "demo")
    click.echo(f"run folder: {run}")
    pol = learned_policy(run, Path(policy) if policy else None, train_timesteps)
    learned = f"learned ({pol.stem})"
    click.echo(f"learned policy: {pol}")

    # the search-based restorer over the same network, where the learned model is shipped
    search_spec = f"search:{pol}@{LEARNED_MODEL}" if LEARNED_MODEL.exists() else None
    search = f"search ({pol.stem})"

    def ev(name: str, scenarios: str, n: int) -> EvalResult:
        click.echo(f"  {name} on {scenarios} ({n} episodes)")
        r = evaluate(name, scenarios, n, seed)
        if name == str(pol):
            return replace(r, policy=learned)
        return replace(r, policy=search) if name == search_spec else r

    main = [ev(name, DEFAULT_SCENARIO, episodes) for name in [str(pol), *POLICIES]]
    write_results(main, run / "default", f"{DEFAULT_SCENARIO}, {episodes} episodes, seed {seed}")
    small_n = max(episodes // 4, 2)
    searched = [search_spec] if search_spec else []
    small = [ev(name, SMALL, small_n) for name in [str(pol), *searched, *POLICIES, "oracle"]]
    write_results(small, run / "small", f"{SMALL}, {small_n} episodes, seed {seed}")
    best = min(
        (r for r in main if r.policy in ("critical-path", "seed-adaptive")),
        key=lambda r: float(np.mean(r.ttrs)),
    )
    report = "\n".join(
        [
            "# persona demo: a learned restore policy against the baselines (simulator)",
            "",
            f"Learned policy: `{pol}`. Default scenario family `{DEFAULT_SCENARIO}`, "
            f"{episodes} episodes, seeds {seed}..{seed + episodes - 1} "
            "(common random numbers: every policy sees the same episodes).",
            "",
            format_table(main),
            "",
            f"Paired ratios of mean TTR (best heuristic here: {best.policy}):",
            "",
            *_ratio_lines(main, learned),
            "",
            "![TTR per policy](default/ttr.png)",
            "",
            f"Small scenarios `{SMALL}` with the hindsight oracle (a bound, not a policy):",
            "",
            format_table(small),
            "",
            *_ratio_lines(small, learned),
            *_ratio_lines(small, search, "search"),
            "",
            *(
                [
                    f"`{search}` is the search-based restorer `{_shown(search_spec)}`: at every "
                    "decision "
                    "it rolls the learned policy out over 16 futures of a hidden structure "
                    "learned from episodes (docs/learning.md).",
                    "",
                ]
                if search_spec
                else []
            ),
            "![TTR per policy, small](small/ttr.png)",
            "",
        ]
    )
    atomic_write_text(run / "report.md", report)
    click.echo(report)
    return run
