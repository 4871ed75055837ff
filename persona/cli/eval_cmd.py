"""``persona eval``: evaluate policies on scenarios with common random numbers."""

from __future__ import annotations

import click


@click.command("eval")
@click.option(
    "--policy",
    "policies",
    multiple=True,
    required=True,
    help="Policy name (capture-order, random, critical-path, seed-adaptive, planner, oracle), "
    "a learned FILE.onnx, or search:FILE.onnx@MODEL.json[@SAMPLES[@MAX_COMPONENTS]] (the search-based "
    "restorer: rollouts of FILE.onnx in a hidden structure learned by agents.model_learning). "
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
@click.option(
    "--backend",
    type=click.Choice(["sim", "live"]),
    default="sim",
    show_default=True,
    help="live: every episode restores the lab host HOST for real (Docker + CRIU).",
)
@click.option("--host", default="demo", show_default=True, help="Live: the lab host.")
@click.option("--ip", default=None, help="Live: the host's IP if the backend has to create it.")
@click.option(
    "--trace-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Live: write one JSON trace per episode here (input of persona calibrate).",
)
@click.option("--store", "store_url", default=None, help="Live: store for the resets' captures.")
@click.option(
    "--calibration",
    default=None,
    help="Live: a calibrated scenario of the host (persona calibrate) for the observations' "
    "step-duration features.",
)
def eval_cmd(
    policies: tuple[str, ...],
    scenarios: str,
    episodes: int,
    seed: int,
    json_out: str | None,
    max_components: int,
    backend: str,
    host: str,
    ip: str | None,
    trace_dir: str | None,
    store_url: str | None,
    calibration: str | None,
) -> None:
    """Evaluate policies on seeded episodes; print a table, optionally write JSON.

    With one policy the JSON is an object {"policy", "scenarios", "episodes", "seed",
    "ttr_mean", "ttr_ci95", "success_rate", "per_episode"}; with several, a list of them.
    With --backend live the episodes of the policies are interleaved (round k runs each
    policy once) and "scenarios" is live://HOST.
    """
    from agents.evaluate import evaluate, evaluate_live, format_table, write_json

    names = [n.strip() for p in policies for n in p.split(",") if n.strip()]
    if backend == "live":
        from envs.live import LiveConfig
        from envs.scenarios import scenario_path

        live = LiveConfig(
            host=host,
            ip=ip,
            store=store_url,
            scenario=scenario_path(calibration) if calibration else None,
            trace_dir=trace_dir,
        )
        results = evaluate_live(names, episodes, seed, live, max_components)
    else:
        results = [evaluate(n, scenarios, episodes, seed, max_components) for n in names]
    click.echo(format_table(results))
    if json_out:
        write_json(results, json_out)
        click.echo(f"wrote {json_out}")
