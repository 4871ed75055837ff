"""``persona eval``: evaluate policies on scenarios with common random numbers."""

from __future__ import annotations

import click


@click.command("eval")
@click.option(
    "--policy",
    "policies",
    multiple=True,
    required=True,
    help="Policy name (capture-order, random, critical-path, seed-adaptive, oracle). "
    "Repeat or comma-separate to compare several in one table.",
)
@click.option(
    "--scenarios",
    default="generator://mixed-v0",
    show_default=True,
    help="Scenario URI: generator://<family>-v0?components=N, scenario://<name>, or a file.",
)
@click.option("--episodes", default=100, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Episode k uses seed S+k (same for every policy).",
)
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), help="Write results JSON here."
)
@click.option("--max-components", default=24, show_default=True, type=click.IntRange(min=2))
def eval_cmd(
    policies: tuple[str, ...],
    scenarios: str,
    episodes: int,
    seed: int,
    json_out: str | None,
    max_components: int,
) -> None:
    """Evaluate policies on seeded episodes; print a table, optionally write JSON.

    With one policy the JSON is an object {"policy", "scenarios", "episodes", "seed",
    "ttr_mean", "ttr_ci95", "success_rate", "per_episode"}; with several, a list of them.
    """
    from agents.evaluate import evaluate, format_table, write_json

    names = [n.strip() for p in policies for n in p.split(",") if n.strip()]
    results = [evaluate(n, scenarios, episodes, seed, max_components) for n in names]
    click.echo(format_table(results))
    if json_out:
        write_json(results, json_out)
        click.echo(f"wrote {json_out}")
