"""``persona train``: train MaskablePPO on the restore simulator from a YAML config."""

from __future__ import annotations

import click


@click.command("train")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Training config YAML (configs/train/<name>.yaml). Not needed with --resume.",
)
@click.option("--seed", type=int, default=None, help="Override the config's seed.")
@click.option(
    "--timesteps",
    type=click.IntRange(min=1),
    default=None,
    help="Override the config's total env steps.",
)
@click.option(
    "--out",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder in which the run folder <name>__<seed>__<time>/ is created.",
)
@click.option(
    "--resume",
    type=click.Path(exists=True),
    default=None,
    help="Continue a run: its folder (latest checkpoint) or a checkpoint .zip.",
)
@click.option(
    "--export",
    "export_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also export the final model to this FILE.onnx (+ FILE.json), as `persona export`.",
)
@click.option(
    "--export-max-components",
    type=click.IntRange(min=2),
    default=24,
    show_default=True,
    help="Padding size of the exported policy (with --export).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs and CI).")
def train_cmd(
    config_path: str | None,
    seed: int | None,
    timesteps: int | None,
    out: str,
    resume: str | None,
    export_path: str | None,
    export_max_components: int,
    no_progress: bool,
) -> None:
    """Train a restore policy; writes config, TensorBoard/CSV logs, checkpoints, final model."""
    from pathlib import Path

    from agents.train import load_config, load_run_config, train, with_overrides
    from persona.errors import ConfigError

    if resume is not None:
        rp = Path(resume)
        run_dir = rp if rp.is_dir() else rp.parent.parent
        cfg = load_run_config(run_dir)
        if config_path is not None:
            raise ConfigError("--resume uses the run's own config.yaml; drop --config")
    elif config_path is None:
        raise ConfigError("give --config configs/train/<name>.yaml (or --resume RUN)")
    else:
        cfg = load_config(config_path)
    cfg = with_overrides(cfg, seed=seed, timesteps=timesteps)
    click.echo(f"training {cfg.name}: seed {cfg.seed}, {cfg.timesteps} steps on {cfg.scenarios}")
    res = train(cfg, out=out, resume=resume, progress=not no_progress)
    click.echo(f"run folder: {res.run_dir}")
    click.echo(
        f"{res.timesteps} steps in {res.wall_s:.0f} s ({res.steps_per_s:.0f} env steps/s); "
        f"eval TTR {res.eval_ttr:.1f} s (best {res.best_eval_ttr:.1f} s)"
    )
    if export_path is not None:
        from agents.export import export_run

        onnx_path, side = export_run(res.run_dir, export_path, export_max_components)
        click.echo(f"wrote {onnx_path} and {side}")
