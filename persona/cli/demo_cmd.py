"""``persona demo``: the main job on the embedded default (simulator)."""

from __future__ import annotations

import click


@click.command("demo")
@click.option(
    "--out",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder in which the run folder is created.",
)
@click.option("--episodes", default=200, show_default=True, type=click.IntRange(min=2))
@click.option("--seed", default=10_000, show_default=True, type=int)
@click.option(
    "--policy",
    type=click.Path(dir_okay=False, exists=True),
    help="Learned policy (.onnx) to show; default: the shipped policies/sim-default.onnx.",
)
@click.option(
    "--train-timesteps",
    type=click.IntRange(min=1000),
    help="Train (and export) a short run of configs/train/sim-default.yaml instead.",
)
def demo(
    out: str, episodes: int, seed: int, policy: str | None, train_timesteps: int | None
) -> None:
    """Compare the learned restore policy with every baseline and write a report.

    Evaluates the learned policy (shipped, given, or freshly trained) and all baselines with
    common random numbers on the default scenario family, and on small scenarios next to the
    hindsight oracle bound. Writes results.json, per_episode.csv, table.md, ttr.png and
    report.md into <out>/demo__<time>/.
    """
    from agents.demo import run_demo

    run_dir = run_demo(out, episodes, seed, policy=policy, train_timesteps=train_timesteps)
    click.echo(f"report: {run_dir / 'report.md'}")
