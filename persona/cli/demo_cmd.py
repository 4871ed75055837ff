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
def demo(out: str, episodes: int, seed: int) -> None:
    """Compare the baselines on the default scenario family and write a report.

    Writes results.json, per_episode.csv, table.md, ttr.png and report.md into
    <out>/demo__<time>/. Also compares them with the hindsight oracle on small scenarios.
    """
    from agents.demo import run_demo

    run_dir = run_demo(out, episodes, seed)
    click.echo(f"report: {run_dir / 'report.md'}")
