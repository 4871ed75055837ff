"""The main job on the embedded default: baselines (and the oracle bound) on the simulator."""

from __future__ import annotations

from pathlib import Path

import click

from agents.baselines import POLICIES
from agents.evaluate import evaluate, format_table
from agents.report import new_run_dir, write_results
from envs.restore_env import DEFAULT_SCENARIO
from persona.model import atomic_write_text

SMALL = "generator://mixed-v0?components=5-7"


def run_demo(out: str | Path, episodes: int, seed: int) -> Path:
    run = new_run_dir(out, "demo")
    click.echo(f"run folder: {run}")
    main = []
    for name in POLICIES:
        click.echo(f"  {name} on {DEFAULT_SCENARIO} ({episodes} episodes)")
        main.append(evaluate(name, DEFAULT_SCENARIO, episodes, seed))
    write_results(main, run / "default", f"{DEFAULT_SCENARIO}, {episodes} episodes, seed {seed}")
    small_n = max(episodes // 4, 2)
    small = []
    for name in [*POLICIES, "oracle"]:
        click.echo(f"  {name} on {SMALL} ({small_n} episodes)")
        small.append(evaluate(name, SMALL, small_n, seed))
    write_results(small, run / "small", f"{SMALL}, {small_n} episodes, seed {seed}")
    report = "\n".join(
        [
            "# persona demo: restore policies on the simulator",
            "",
            f"Default scenario family `{DEFAULT_SCENARIO}`, {episodes} episodes, seeds {seed}..{seed + episodes - 1} "
            "(common random numbers: every policy sees the same episodes).",
            "",
            format_table(main),
            "",
            "![TTR per policy](default/ttr.png)",
            "",
            f"Small scenarios `{SMALL}` with the hindsight oracle (a bound, not a policy):",
            "",
            format_table(small),
            "",
            "![TTR per policy, small](small/ttr.png)",
            "",
        ]
    )
    atomic_write_text(run / "report.md", report)
    click.echo(report)
    return run
