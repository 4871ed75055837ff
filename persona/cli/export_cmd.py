"""``persona export``: a trained run to ONNX + JSON sidecar for the production restorer."""

from __future__ import annotations

import click


@click.command("export")
@click.option(
    "--run",
    "run",
    required=True,
    type=click.Path(exists=True),
    help="Run folder (uses final_model.zip) or a model .zip.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output FILE.onnx; the sidecar is written next to it as FILE.json.",
)
@click.option(
    "--max-components",
    type=click.IntRange(min=2),
    default=None,
    help="Padding size N of the exported policy (default: as trained; larger re-pads).",
)
def export_cmd(run: str, out: str, max_components: int | None) -> None:
    """Export a trained policy: observation arrays + action mask in, masked action + logits out."""
    from agents.export import export_run

    onnx_path, side = export_run(run, out, max_components)
    click.echo(f"wrote {onnx_path} and {side}")
